"""Child processes of an agent: started in process groups of their own, tied to the
agent's life, signalled as groups, and read line by line.

Why a run's processes die with the agent, even on ``kill -9`` (otherwise a killed
agent's script keeps running while the server gives its run to another agent):

1. Each child is started with ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` (``preexec_fn``,
   through ctypes): the kernel kills it when its parent goes. The signal is tied to the
   parent *thread*, so children are always started from the event loop's thread, which
   lives as long as the agent (never from ``asyncio.to_thread``). A parent that died
   between the fork and the ``prctl`` is caught by comparing ``getppid``.
2. That covers the group leader only; what it started (a shell's commands, a
   DataLoader's workers) lives in its process group (``start_new_session=True``). A
   ``Watchdog`` process (``python -m ingest.agent.watchdog``) is told each group that
   starts and ends over a pipe; when the pipe closes because the agent died, however it
   died, it SIGKILLs every group still listed.

On Linux both hold; elsewhere (no ``prctl``) only the watchdog does.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

__all__ = [
    "MAX_LINE_BYTES",
    "Watchdog",
    "kill_group",
    "pump_lines",
    "signal_group",
    "spawn",
]

logger = logging.getLogger(__name__)

#: A line longer than this (no newline yet) is passed on in pieces of this size.
MAX_LINE_BYTES = 64 * 1024
_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    prctl: Callable[..., int] = libc.prctl
    return prctl


#: Resolved once, before any fork: the child only calls it.
_PRCTL = _load_prctl()


def _die_with_parent_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child die (SIGKILL) when this process does."""
    prctl = _PRCTL
    if prctl is None:
        return None
    parent = os.getpid()

    def die_with_parent() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: nobody will tell us
            os.kill(os.getpid(), signal.SIGKILL)

    return die_with_parent


async def spawn(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
) -> asyncio.subprocess.Process:
    """Start ``argv`` (never through a shell) in a new session and process group, stdin
    from /dev/null, stdout and stderr piped, dying with this process. Call it from the
    event loop's thread (see the module docstring)."""
    return await asyncio.create_subprocess_exec(
        *argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=dict(env),
        start_new_session=True,
        preexec_fn=_die_with_parent_hook(),
    )


def signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to process group ``pgid``; False when the group is gone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member changed its uid: signal at least the leader
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pgid, sig)
    return True


def kill_group(pgid: int) -> bool:
    return signal_group(pgid, signal.SIGKILL)


def _decode(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace")
    return text[:-1] if text.endswith("\r") else text


async def pump_lines(reader: asyncio.StreamReader, on_line: Callable[[str], None]) -> None:
    """Call ``on_line`` with each line ``reader`` yields (without its newline), as soon as
    it is complete; a last line without a newline at the end too."""
    pending = b""
    while True:
        chunk = await reader.read(MAX_LINE_BYTES)
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            on_line(_decode(line))
        while len(pending) >= MAX_LINE_BYTES:
            on_line(_decode(pending[:MAX_LINE_BYTES]))
            pending = pending[MAX_LINE_BYTES:]
    if pending:
        on_line(_decode(pending))


class Watchdog:
    """The process that kills the agent's process groups when the agent dies (see the
    module docstring). ``add``/``remove`` a group; ``stop`` when nothing runs any more."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._groups: set[int] = set()

    def start(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "ingest.agent.watchdog"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            start_new_session=True,  # the terminal's ^C goes to the agent, not to it
        )
        for pgid in self._groups:  # a restarted watchdog learns what runs
            self._send(f"+{pgid}")

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _send(self, line: str) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None:
            return
        try:
            proc.stdin.write(f"{line}\n".encode())
            proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            logger.warning("the agent's watchdog process is gone; starting a new one")
            self._proc = None
            self.start()

    def add(self, pgid: int) -> None:
        self._groups.add(pgid)
        self._send(f"+{pgid}")

    def remove(self, pgid: int) -> None:
        self._groups.discard(pgid)
        self._send(f"-{pgid}")

    def stop(self) -> None:
        """Close the pipe (the watchdog kills what is still listed, then exits) and reap it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
