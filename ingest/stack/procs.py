"""Process bookkeeping for the local stack: pid files, port probes, clean stops.

Every process ``runstream up`` starts is recorded in ``<home>/stack/<name>.pid`` together
with a marker string that must appear in its command line. ``down`` only signals a pid
whose command line still carries the marker, so a recycled pid or someone else's process
is never touched.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ManagedProcess",
    "StackError",
    "port_open",
    "progress",
    "wait_for",
]


class StackError(RuntimeError):
    """The local stack could not be brought up; the message says what to do."""


def progress(message: str) -> None:
    """One progress line on stderr (stdout stays machine-readable for ``--json``)."""
    print(f"runstream: {message}", file=sys.stderr, flush=True)


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def wait_for(predicate: Callable[[], bool], *, timeout_s: float, interval_s: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return bool(predicate())


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


@dataclass(frozen=True)
class ManagedProcess:
    """A background process owned by the stack, identified by pid file + cmdline marker."""

    name: str
    pid_file: Path
    marker: str

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        state = ""
        with contextlib.suppress(OSError):
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state in ("", "Z", "X") or self.marker not in _cmdline(pid):
            return None
        return pid

    def running(self) -> bool:
        return self.pid() is not None

    def spawn(
        self,
        argv: Sequence[str],
        *,
        log_file: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> int:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "ab") as log:
            proc = subprocess.Popen(  # noqa: S603 - argv is built by the stack, not user input
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,  # survives the CLI; not killed by the terminal's ^C
            )
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.write_text(f"{proc.pid}\n")
        return proc.pid

    def stop(self, *, timeout_s: float = 30.0) -> bool:
        """SIGTERM, wait, then SIGKILL. Returns True when a process was stopped."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not wait_for(lambda: self.pid() is None, timeout_s=timeout_s, interval_s=0.1):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_for(lambda: self.pid() is None, timeout_s=5.0, interval_s=0.1)
        # Reap it if it happens to be our child (tests start and stop in one process).
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        self.pid_file.unlink(missing_ok=True)
        return True
