"""Which process a stack pid file names (ingest/stack/procs.py), on a process table of the
test's own: a recycled pid or a look-alike is never signalled.

Pids beyond any kernel's ``pid_max`` (2**22) keep every signal and wait off real processes.
"""

from __future__ import annotations

import signal
from pathlib import Path

from ingest.stack.procs import ManagedProcess

PID = 90_000_001
HOME_FLAG = "--stack-home=/srv/rs/home"


def process(proc: Path, pid: int, argv: list[str], *, started: int, state: str = "S") -> None:
    """A ``/proc/<pid>`` entry: ``cmdline`` and ``stat`` (state: field 3, start time: 22)."""
    entry = proc / str(pid)
    entry.mkdir(parents=True, exist_ok=True)
    (entry / "cmdline").write_bytes("\0".join(argv).encode() + b"\0")
    fields = [state, *["0"] * 18, str(started), *["0"] * 30]
    (entry / "stat").write_text(f"{pid} (python3) {' '.join(fields)}\n")


def service(name: str) -> list[str]:
    return ["/usr/bin/python3", "-m", "ingest.cli", name, HOME_FLAG]


class Signals:
    """``kill`` for ManagedProcess: records, and lets the target exit (a zombie)."""

    def __init__(self, proc: Path) -> None:
        self.proc = proc
        self.sent: list[tuple[int, int]] = []

    def __call__(self, pid: int, sig: int) -> None:
        self.sent.append((pid, sig))
        stat = self.proc / str(pid) / "stat"
        head, rest = stat.read_text().rsplit(")", 1)
        stat.write_text(f"{head}) Z {rest.split(maxsplit=1)[1]}")
        (self.proc / str(pid) / "cmdline").write_bytes(b"")


def managed(tmp_path: Path, name: str, recorded: str) -> tuple[ManagedProcess, Signals]:
    proc = tmp_path / "proc"
    proc.mkdir(exist_ok=True)
    pid_file = tmp_path / "stack" / f"{name}.pid"
    pid_file.parent.mkdir(exist_ok=True)
    pid_file.write_text(recorded)
    signals = Signals(proc)
    return ManagedProcess(name, pid_file, HOME_FLAG, proc=proc, kill=signals), signals


def test_our_process_is_found_and_stopped(tmp_path: Path) -> None:
    api, signals = managed(tmp_path, "api", f"{PID} 1000\n")
    process(tmp_path / "proc", PID, service("api"), started=1000)
    assert api.pid() == PID
    assert api.stop(timeout_s=1) is True
    assert signals.sent == [(PID, signal.SIGTERM)]
    assert not api.pid_file.exists()


def test_a_recycled_pid_is_never_signalled_even_by_a_look_alike(tmp_path: Path) -> None:
    # The worker died and left its pid file; its pid now belongs to the same home's API,
    # whose command line carries the very same marker.
    ingest, signals = managed(tmp_path, "ingest", f"{PID} 1000\n")
    process(tmp_path / "proc", PID, service("api"), started=5000)
    assert ingest.pid() is None
    assert not ingest.running()
    assert ingest.stop(timeout_s=1) is False
    assert signals.sent == []
    assert not ingest.pid_file.exists()  # the stale pid file goes


def test_a_process_still_in_exec_is_found_by_its_start_time(tmp_path: Path) -> None:
    # Right after Popen returns, the child's new argument list may not be set up yet:
    # /proc/<pid>/cmdline is empty for a moment. It is running all the same (up took it
    # for "exited at start", and the down after that stopped the API just started).
    api, signals = managed(tmp_path, "api", f"{PID} 1000\n")
    process(tmp_path / "proc", PID, [], started=1000, state="R")
    (tmp_path / "proc" / str(PID) / "cmdline").write_bytes(b"")
    assert api.running()
    assert api.pid() == PID
    # Without a start time (an older pid file) there is nothing to tell it by yet.
    api.pid_file.write_text(f"{PID}\n")
    assert not api.running()
    assert signals.sent == []


def test_a_marker_is_an_argument_not_a_substring(tmp_path: Path) -> None:
    api, signals = managed(tmp_path, "api", f"{PID}\n")  # an older pid file: no start time
    other_home = ["/usr/bin/python3", "-m", "ingest.cli", "api", HOME_FLAG + "2"]
    process(tmp_path / "proc", PID, other_home, started=1000)
    assert api.pid() is None
    assert api.stop(timeout_s=1) is False
    assert signals.sent == []
    process(tmp_path / "proc", PID, service("api"), started=1000)
    api.pid_file.write_text(f"{PID}\n")
    assert api.pid() == PID  # an older pid file still names its own process


def test_gone_zombie_and_garbled_entries_are_not_running(tmp_path: Path) -> None:
    api, _ = managed(tmp_path, "api", f"{PID} 1000\n")
    assert api.pid() is None  # no such process
    process(tmp_path / "proc", PID, service("api"), started=1000, state="Z")
    assert api.pid() is None
    for garbled in ("", "not-a-pid\n", f"{PID} later\n"):
        api.pid_file.write_text(garbled)
        assert api.pid() is None, garbled
