"""A real ``runstream agent`` process for the tests (``AgentProcess``): on a test's own
pipeline (``ReadPipeline.env``), a target of the test's own, logs under a folder of its
own, stoppable the way an operator stops one (SIGTERM to drain, a second to cancel) or
killed with SIGKILL. Used by tests/integration/test_agent_jobs.py and the studio's
browser tests (tests/browser/test_studio_live_pages.py).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from pathlib import Path

from tests.integration.pipelines import ReadPipeline

__all__ = ["AgentProcess"]


class AgentProcess:
    """``runstream agent --target TARGET --slots N`` on the test's pipeline."""

    def __init__(self, pipeline: ReadPipeline, target: str, slots: int, root: Path,
                 name: str) -> None:
        self.target, self.slots, self.root, self.name = target, slots, root, name
        self.env = {**pipeline.env(f"agent-{name}"), "PYTHONUNBUFFERED": "1"}
        self.starts = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def log(self) -> Path:
        return self.root / f"agent-{self.name}.{self.starts}.log"

    def start(self) -> None:
        self.starts += 1
        self.root.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ingest.cli", "agent", "--target", self.target,
                 "--slots", str(self.slots), "--grace-s", "2",
                 "--work-dir", str(self.root / f"work-{self.name}")],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def output(self) -> str:
        return "".join(p.read_text(errors="replace")
                       for p in sorted(self.root.glob(f"agent-{self.name}.*.log")))

    def stop(self) -> int | None:
        """SIGTERM (drain), a second (cancel), then SIGKILL."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return None if proc is None else proc.returncode
        for wait_s in (10.0, 20.0):
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                return proc.wait(wait_s)
        proc.kill()
        return proc.wait()
