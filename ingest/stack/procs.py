"""Process bookkeeping for the local stack: pid files, port probes, clean stops.

Every process ``runstream up`` starts is recorded in ``<home>/stack/<name>.pid``: its pid
and its start time (``/proc/<pid>/stat`` field 22, clock ticks since boot, set at fork and
kept through exec). ``down`` only signals a pid that is still that very process — same
start time — so a recycled pid or someone else's process is never touched. A pid file
without a start time (written by an older version) is trusted only for a process that
has the marker (e.g. ``--stack-home=<home>``) as one of its arguments.

Why not the marker alone, as before:

- Pids are recycled quickly. With the kernel's default ``pid_max`` of 32768 on a small
  machine, a test session (JVM threads take pids too) wraps around within minutes, so a
  pid file left behind can name an unrelated process moments later; and a marker does
  not tell look-alikes apart (the ingest worker and the API of one home share theirs; a
  marker merely contained in a command line matched longer paths: ``--stack-home=/x/home``
  is inside ``--stack-home=/x/home2``).
- Right after ``spawn`` the marker is not there yet. ``Popen`` returns once the child's
  exec has passed its point of no return (its close-on-exec error pipe is closed), but
  the kernel sets up the new argument list a little later: for that moment
  ``/proc/<pid>/cmdline`` is empty (about once in 200 spawns on a busy 2-core machine).
  ``up`` then took the API it had just started for one that had exited ("api exited at
  start"), and the ``down`` that followed stopped it a fraction of a second after it
  began listening.
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


@dataclass(frozen=True)
class ManagedProcess:
    """A background process owned by the stack, identified by its pid file (pid and start
    time) and a marker among its arguments. ``proc`` and ``kill`` are the kernel's process
    table and signal call (tests pass their own)."""

    name: str
    pid_file: Path
    marker: str
    proc: Path = Path("/proc")
    kill: Callable[[int, int], None] = os.kill

    def _stat(self, pid: int) -> tuple[str, int] | None:
        """(state, start time) of ``pid``, or None when there is no such process."""
        try:
            fields = (self.proc / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
            return fields[0], int(fields[19])  # fields 3 and 22 of proc(5)
        except (OSError, IndexError, ValueError):
            return None

    def _argv(self, pid: int) -> list[str]:
        try:
            raw = (self.proc / str(pid) / "cmdline").read_bytes()
        except OSError:
            return []
        return raw.decode(errors="replace").split("\0")

    def _recorded(self) -> tuple[int, int | None] | None:
        """(pid, start time or None) from the pid file."""
        try:
            fields = self.pid_file.read_text().split()
            return int(fields[0]), int(fields[1]) if len(fields) > 1 else None
        except (OSError, IndexError, ValueError):
            return None

    @staticmethod
    def _same(started: int | None, stat: tuple[str, int] | None) -> bool:
        """Whether ``stat`` is of the process the pid file recorded (not a recycled pid)."""
        return stat is not None and (started is None or stat[1] == started)

    def pid(self) -> int | None:
        """The pid of our process if it still runs, else None."""
        recorded = self._recorded()
        if recorded is None:
            return None
        pid, started = recorded
        stat = self._stat(pid)
        if stat is None or stat[0] in ("Z", "X") or not self._same(started, stat):
            return None
        if started is not None:
            # Same pid and start time: this very process. Its command line is not asked:
            # right after spawn it can still be empty (see the module docstring).
            return pid
        return pid if self.marker in self._argv(pid) else None

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
        stat = self._stat(proc.pid)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.pid_file.with_name(self.pid_file.name + ".tmp")
        tmp.write_text(f"{proc.pid} {stat[1]}\n" if stat is not None else f"{proc.pid}\n")
        tmp.replace(self.pid_file)  # never half-written for a concurrent reader
        return proc.pid

    def stop(self, *, timeout_s: float = 30.0, resignal_after_s: float | None = None) -> bool:
        """SIGTERM, wait, then SIGKILL. Returns True when a process was stopped.

        ``resignal_after_s``: send a second SIGTERM when the process still runs after that
        many seconds (an agent: the first stops taking work, the second cancels its runs).
        """
        recorded = self._recorded()
        pid = self.pid()
        if pid is None or recorded is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        with contextlib.suppress(ProcessLookupError):
            self.kill(pid, signal.SIGTERM)
        if resignal_after_s is not None and not wait_for(
            lambda: self.pid() is None, timeout_s=resignal_after_s, interval_s=0.1
        ):
            with contextlib.suppress(ProcessLookupError):
                self.kill(pid, signal.SIGTERM)
        if not wait_for(lambda: self.pid() is None, timeout_s=timeout_s, interval_s=0.1):
            with contextlib.suppress(ProcessLookupError):
                self.kill(pid, signal.SIGKILL)
            wait_for(lambda: self.pid() is None, timeout_s=5.0, interval_s=0.1)
        # Reap it if it is our child (tests start and stop in one process) and still the
        # same process: a zombie with its start time (never another child's status).
        stat = self._stat(pid)
        if stat is not None and stat[0] == "Z" and recorded[1] is not None and self._same(
            recorded[1], stat
        ):
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
        self.pid_file.unlink(missing_ok=True)
        return True
