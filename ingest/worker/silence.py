"""Runs whose process died without a word end Failed: "no heartbeat for N min".

A run's process sends a heartbeat every 10 s while the run is open, and ends the run
itself on exit, Ctrl-C and SIGTERM (the SDK's ``_exit.py``). A process killed outright
(SIGKILL, the OOM killer, a lost host) says nothing: its run shows NotResponding once its
newest event is older than ``not_responding_after`` (the ``runstream.runs`` view), and
after ``fail_after_no_heartbeat`` (``runstream_data.settings``, default 30 minutes,
migration 0014) with no event at all the workers end it Failed, so it no longer counts as
running on its compute target.

The Failed event travels like any status (Kafka → worker → PostgreSQL): a worker opens
the run as a producer of its own through the SDK (``Run.open`` at the run's attempt) and
fails it, so the decision is ordered, replayed and deduplicated with the run's other
events, and the usual merge holds — if the process was only cut off and ended the run
itself before that moment, its own end, being earlier, is the one that sticks. Events
that come later (a spool drained after a long outage) are stored and counted as logged
after the end, never dropped.

Every worker looks every tenth of the setting, its looks 1 s to 5 s apart (one indexed
query: migration 0014's partial index of open runs), reading the setting each time; two
workers may both send a run's Failed event, which merges into one status. The runs looked
at are Running and Finalizing ones; queued and preparing runs are their agents' (leases,
``db/jobs.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Final

from ingest.settings import Settings
from ingest.worker.store import Store
from producer import Experiment, ProducerTimeoutError, Run, Workspace

__all__ = ["SilentRuns", "silence_text"]

logger = logging.getLogger(__name__)

#: At most this many runs are failed per look (the oldest first).
BATCH: Final = 100
#: The longest between two looks (the setting is read at each).
MAX_INTERVAL_S: Final = 5.0

SQL_SILENT: Final = """
WITH setting AS (
    SELECT coalesce((SELECT value::interval FROM runstream_data.settings
                     WHERE key = 'fail_after_no_heartbeat'), interval '30 minutes') AS after
)
SELECT r.run_id, r.experiment, r.workspace, r.attempt, r.last_event_at, s.after
FROM runstream_data.runs r, setting s
WHERE r.status IN ('Running', 'Finalizing') AND r.last_event_at < now() - s.after
ORDER BY r.last_event_at
LIMIT $1
"""
SQL_AFTER: Final = """
SELECT coalesce((SELECT value::interval FROM runstream_data.settings
                 WHERE key = 'fail_after_no_heartbeat'), interval '30 minutes')
"""


def silence_text(after: timedelta) -> str:
    """The Failed run's error: "no heartbeat for 30 min" (seconds when not whole minutes)."""
    seconds = after.total_seconds()
    if seconds >= 60 and seconds % 60 == 0:
        return f"no heartbeat for {int(seconds // 60)} min"
    return f"no heartbeat for {seconds:g} s"


class SilentRuns:
    """Looks for silent runs and fails them (``run`` until ``stop``)."""

    def __init__(self, store: Store, settings: Settings, *, flush_timeout_s: float = 10.0) -> None:
        self._store = store
        self._settings = settings
        self._home = settings.home / "worker-producer"
        self._flush_timeout_s = flush_timeout_s
        self._workspaces: dict[str, Workspace] = {}
        self._lock = threading.Lock()
        #: Runs failed here lately: not sent again while the event is on its way.
        self._sent: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"SilentRuns(topic={self._settings.topic!r})"

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                interval_s = MAX_INTERVAL_S
                try:
                    after = await self._store.pool.fetchval(SQL_AFTER)
                    interval_s = min(max(after.total_seconds() / 10, 1.0), MAX_INTERVAL_S)
                    await self.sweep()
                except Exception:
                    logger.exception("failing silent runs failed; trying again in %.0f s",
                                     interval_s)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval_s)
        finally:
            await asyncio.to_thread(self.close)

    async def sweep(self) -> list[str]:
        """Fail the runs silent for longer than the setting; their ids."""
        now = time.monotonic()
        self._sent = {k: t for k, t in self._sent.items() if now - t < 300.0}
        failed = []
        for row in await self._store.pool.fetch(SQL_SILENT, BATCH):
            run_id = row["run_id"]
            if run_id in self._sent:
                continue
            error = (f"{silence_text(row['after'])}: its last event was at "
                     f"{row['last_event_at'].isoformat()}; the process was killed or cut off "
                     "(fail_after_no_heartbeat)")
            logger.warning("run %s: %s", run_id, error)
            await asyncio.to_thread(self._fail, row["workspace"], row["experiment"], run_id,
                                    int(row["attempt"]), error)
            self._sent[run_id] = time.monotonic()
            failed.append(run_id)
        return failed

    def _fail(self, workspace: str, experiment: str, run_id: str, attempt: int,
              error: str) -> None:
        run = Run.open(Experiment(self._workspace(workspace), experiment), run_id,
                       status="Running", attempt=attempt)
        run.fail(error)
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
                    name=name, kafka_bootstrap=self._settings.kafka_bootstrap,
                    topic=self._settings.topic, home=Path(self._home) / name,
                    kafka_security=self._settings.kafka_security)
            return ws

    def close(self) -> None:
        with self._lock:
            workspaces = list(self._workspaces.values())
            self._workspaces.clear()
        for ws in workspaces:
            ws.close(self._flush_timeout_s)
