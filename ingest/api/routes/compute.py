"""``/v1/compute``: queue state per compute target, and a target's active runs.

QueueState comes from the ``runstream.compute_targets`` view: queued / preparing /
running (not-responding included) / not-responding counts, the oldest queued run's age,
queue-wait p50/p95 over runs that left the queue in the last 24 h, and runs completed,
failed and canceled in the last hour. A target's active runs are those queued,
preparing, running (or not responding), finalizing or cancel-requested; a run that ended
leaves the list.

``QueueGaugeRefresher`` puts the same numbers on the API's ``/metrics`` (labels: target and
state only), refreshed when scraped — at most every ``min_interval_s``. The API is the one
process that exports them; ingest workers do not (N workers would report them N times).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Final

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge

from ingest.api.auth import grant_of
from ingest.api.http import RouteSpec
from ingest.api.params import UNAVAILABLE, json_ok, not_found, path_param
from ingest.api.shapes import queue_state, ref, run_summary, schemas_for
from ingest.db.queues import QueueState
from ingest.db.reads import ReadStore

__all__ = ["ComputeRoutes", "QueueGaugeRefresher", "QueueGauges"]

QUEUE_STATES: Final = ("queued", "preparing", "running", "not_responding")

logger = logging.getLogger(__name__)

_TARGET_PARAMETER: Final = {
    "name": "target", "in": "path", "required": True, "description": "Compute target name.",
    "schema": {"type": "string", "minLength": 1},
}
_TARGETS: Final = {
    "type": "object",
    "required": ["targets"],
    "properties": {"targets": {"type": "array", "items": ref("QueueState")}},
}
_TARGET: Final = {
    "allOf": [
        ref("QueueState"),
        {
            "type": "object",
            "required": ["active_runs"],
            "properties": {"active_runs": {"type": "array", "items": ref("RunSummary")}},
        },
    ],
}


class ComputeRoutes:
    def __init__(self, *, reads: ReadStore) -> None:
        self._reads = reads

    def specs(self) -> list[RouteSpec]:
        return [
            RouteSpec(
                method="GET", path="/v1/compute", handler=self.targets,
                operation_id="listComputeTargets",
                summary="Queue state of every compute target that has runs.",
                responses={**UNAVAILABLE, 200: "The targets, by name."},
                response_content={200: {"application/json": {"schema": _TARGETS}}},
                schemas=schemas_for("QueueState"),
            ),
            RouteSpec(
                method="GET", path="/v1/compute/{target}", handler=self.target,
                operation_id="getComputeTarget",
                summary="One compute target's queue state and its active runs (oldest first).",
                responses={**UNAVAILABLE, 200: "The target.", 404: "No run ever used this target."},
                response_content={200: {"application/json": {"schema": _TARGET}}},
                extra={"parameters": [_TARGET_PARAMETER]},
                schemas=schemas_for("QueueState", "RunSummary"),
            ),
        ]

    async def targets(self, request: web.Request) -> web.StreamResponse:
        rows = await self._reads.queues()
        return json_ok({"targets": [queue_state(r) for r in rows]})

    async def target(self, request: web.Request) -> web.StreamResponse:
        target = path_param(request, "target", "compute target")
        row, active = await asyncio.gather(
            self._reads.queue(target),
            self._reads.active_runs(target, grant_of(request).sorted()),
        )
        if row is None:
            raise not_found(f"no compute target {target!r}")
        return json_ok({**queue_state(row), "active_runs": [run_summary(r) for r in active]})


class QueueGauges:
    """Queue state per compute target, labelled by target (and state) only — never a run.

    Only the API exports these (one process, however many workers ingest).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.runs = Gauge(
            "runstream_queue_runs",
            "Runs per compute target and queue state.",
            ["compute_target", "state"],
            registry=registry,
        )
        self.oldest_age_seconds = Gauge(
            "runstream_queue_oldest_age_seconds",
            "Age of the oldest queued run per compute target (0 when none is queued).",
            ["compute_target"],
            registry=registry,
        )

    def set(self, states: Iterable[QueueState]) -> None:
        """Replace every value (targets that are gone disappear)."""
        self.runs.clear()
        self.oldest_age_seconds.clear()
        for s in states:
            for state in QUEUE_STATES:
                self.runs.labels(s.compute_target, state).set(getattr(s, state))
            self.oldest_age_seconds.labels(s.compute_target).set(s.oldest_queued_age_s or 0)


class QueueGaugeRefresher:
    """The queue gauges on the API's registry, refreshed from the database on scrape."""

    def __init__(
        self, *, reads: ReadStore, registry: CollectorRegistry, min_interval_s: float = 5.0,
        timeout_s: float = 2.0,
    ) -> None:
        self._reads = reads
        self._min_interval_s = min_interval_s
        self._timeout_s = timeout_s
        self._refreshed_at: float | None = None
        self._lock = asyncio.Lock()
        self.gauges = QueueGauges(registry)

    async def refresh(self) -> None:
        """Re-read the queues unless that was done less than ``min_interval_s`` ago; a
        database failure leaves the previous values and is logged, never raised."""
        async with self._lock:
            now = time.monotonic()
            if self._refreshed_at is not None and now - self._refreshed_at < self._min_interval_s:
                return
            try:
                async with asyncio.timeout(self._timeout_s):
                    rows = await self._reads.queues()
            except Exception:
                logger.warning("queue gauges not refreshed", exc_info=True)
                return
            self._refreshed_at = now
            self.gauges.set(rows)
