"""``StatusEmitter``: the status events the API itself sends for submitted runs.

Statuses travel as events like everything else (Kafka → worker → PostgreSQL), so when the
API decides a run's fate — a queued run canceled, a running one asked to cancel, a lease
that expired (requeued, or Failed "agent lost") — it reports it the way an agent would:
through the SDK, opening the run as a new producer (``Run.open``) of a ``Workspace`` per
workspace name. Sending waits (in a thread, bounded by ``flush_timeout_s``) until Kafka
has the events or the SDK spooled them to ``home``; ``db/jobs.py`` calls it inside the
transaction that records the decision, so a crash in between repeats the event, which is
harmless (statuses merge idempotently), and never loses it.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from producer import Experiment, KafkaSecurity, ProducerTimeoutError, Run, Workspace

__all__ = ["StatusEmitter"]


class StatusEmitter:
    """Sends Canceled / CancelRequested / Queued (retry) / Failed events for runs."""

    def __init__(self, *, kafka_bootstrap: str, topic: str, home: Path,
                 kafka_security: KafkaSecurity | None = None,
                 flush_timeout_s: float = 10.0) -> None:
        self._bootstrap = kafka_bootstrap
        self._topic = topic
        self._home = home
        self._security = kafka_security
        self._flush_timeout_s = flush_timeout_s
        self._workspaces: dict[str, Workspace] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"StatusEmitter(topic={self._topic!r})"

    async def send(self, *, workspace: str, experiment: str, run_id: str, attempt: int,
                   action: str, error: str | None = None) -> None:
        """``action``: canceled, cancel_requested, requeued or failed."""
        await asyncio.to_thread(self._send, workspace, experiment, run_id, attempt, action, error)

    def _send(self, workspace: str, experiment: str, run_id: str, attempt: int, action: str,
              error: str | None) -> None:
        run = Run.open(Experiment(self._workspace(workspace), experiment), run_id,
                       status="Queued", attempt=attempt)
        if action == "canceled":
            run.cancel()
        elif action == "cancel_requested":
            run.set_status("CancelRequested")
        elif action == "failed":
            run.fail(error)
        elif action != "requeued":
            raise ValueError(f"unknown action {action!r}")
        try:
            run.flush(self._flush_timeout_s)
        except ProducerTimeoutError:
            pass  # kept by the SDK (queued, or spooled on close) and delivered later
        finally:
            run.close(self._flush_timeout_s)

    def _workspace(self, name: str) -> Workspace:
        with self._lock:
            ws = self._workspaces.get(name)
            if ws is None:
                ws = self._workspaces[name] = Workspace(
                    name=name, kafka_bootstrap=self._bootstrap, topic=self._topic,
                    home=self._home / name, kafka_security=self._security)
            return ws

    def close(self) -> None:
        with self._lock:
            workspaces = list(self._workspaces.values())
            self._workspaces.clear()
        for ws in workspaces:
            ws.close(self._flush_timeout_s)
