"""``python -m ingest.agent.watchdog``: kills an agent's process groups when it dies.

The agent writes ``+<pgid>`` when a run's process group starts and ``-<pgid>`` when it
has ended, one per line, on this process's stdin. End of input means the agent is gone
(its end of the pipe closes however it exits, ``kill -9`` included): every group still
listed gets SIGKILL, then the watchdog exits. SIGINT and SIGTERM are ignored (a
terminal's ^C or a stop of the agent's process group is the agent's to handle).
Standard library only, so it starts fast.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    groups: set[int] = set()
    for raw in sys.stdin.buffer:
        line = raw.strip()
        with contextlib.suppress(ValueError):
            if line.startswith(b"+"):
                groups.add(int(line[1:]))
            elif line.startswith(b"-"):
                groups.discard(int(line[1:]))
    for pgid in groups:
        if pgid > 1:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
