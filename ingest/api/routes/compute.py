"""``/v1/compute``: queue state per compute target, and a target's active runs.

QueueState comes from the ``runstream.compute_targets`` view: queued / preparing /
running (not-responding included) / not-responding counts, the oldest queued run's age,
queue-wait p50/p95 over runs that left the queue in the last 24 h, and runs completed,
failed and canceled in the last hour. A target's active runs are those queued,
preparing, running (or not responding), finalizing or cancel-requested; a run that ended
leaves the list. With the job queue (``routes/jobs.py``) a target also shows its
submitted runs waiting in lease order (``queue``: position, priority, age), the runs
agents hold (``leased``), and its agents (slots, busy, last heartbeat, alive); a target
that only has agents so far is found too.

``QueueGaugeRefresher`` puts the same numbers on the API's ``/metrics`` (labels: target and
state only), with the live agents and their busy and free slots per target
(``runstream_agents``, ``runstream_agent_slots``), refreshed when scraped — at most every
``min_interval_s``. The API is the one process that exports them; ingest workers do not
(N workers would report them N times).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any, Final

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge

from ingest.api.auth import grant_of
from ingest.api.http import RouteSpec
from ingest.api.params import UNAVAILABLE, json_ok, not_found, path_param
from ingest.api.shapes import empty_queue_state, queue_state, ref, run_summary, schemas_for
from ingest.db.jobs import JobStore
from ingest.db.queues import QueueState
from ingest.db.reads import ReadStore
from ingest.db.values import iso

__all__ = ["ComputeRoutes", "QueueGaugeRefresher", "QueueGauges"]

QUEUE_STATES: Final = ("queued", "preparing", "running", "not_responding")

logger = logging.getLogger(__name__)

_TARGET_PARAMETER: Final = {
    "name": "target", "in": "path", "required": True, "description": "Compute target name.",
    "schema": {"type": "string", "minLength": 1},
}
_AGENT_COUNTS: Final = {
    "type": "object",
    "description": "Live agents serving the target, their slots, and the slots busy.",
    "required": ["alive", "slots", "busy"],
    "properties": {"alive": {"type": "integer"}, "slots": {"type": "integer"},
                   "busy": {"type": "integer"}},
}
_TARGETS: Final = {
    "type": "object",
    "required": ["targets"],
    "properties": {"targets": {"type": "array", "items": {"allOf": [
        ref("QueueState"),
        {"type": "object", "properties": {"agents": _AGENT_COUNTS}},
    ]}}},
}
_TARGET: Final = {
    "allOf": [
        ref("QueueState"),
        {
            "type": "object",
            "required": ["active_runs"],
            "properties": {
                "active_runs": {"type": "array", "items": ref("RunSummary")},
                "queue": {"type": "array", "items": {"type": "object"},
                          "description": "Submitted runs waiting, in the order agents take "
                          "them: run_id, experiment, position, priority, attempt, "
                          "submitted_at, age_s."},
                "leased": {"type": "array", "items": {"type": "object"},
                           "description": "Submitted runs an agent holds: run_id, "
                           "experiment, agent_id, attempt, leased_at, lease_expires_at, "
                           "cancel_requested."},
                "agents": {"type": "array", "items": {"type": "object"},
                           "description": "Agents serving the target (seen in the last "
                           "hour): agent_id, hostname, pid, slots, busy, started_at, "
                           "last_heartbeat_at, alive."},
            },
        },
    ],
}


class ComputeRoutes:
    def __init__(self, *, reads: ReadStore, jobs: JobStore | None = None,
                 agent_alive_s: float = 60.0) -> None:
        self._reads = reads
        self._jobs = jobs
        self._agent_alive_s = agent_alive_s

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
        if self._jobs is None:
            return json_ok({"targets": [queue_state(r) for r in rows]})
        agents = await self._jobs.agent_counts(self._agent_alive_s)
        idle = {"alive": 0, "slots": 0, "busy": 0}
        states = [queue_state(r) for r in rows]
        states += [empty_queue_state(t)
                   for t in sorted(set(agents) - {r.compute_target for r in rows})]
        states.sort(key=lambda s: s["compute_target"])
        return json_ok({"targets": [{**s, "agents": agents.get(s["compute_target"], idle)}
                                    for s in states]})

    async def target(self, request: web.Request) -> web.StreamResponse:
        target = path_param(request, "target", "compute target")
        workspaces = grant_of(request).sorted()
        row, active = await asyncio.gather(
            self._reads.queue(target),
            self._reads.active_runs(target, workspaces),
        )
        document: dict[str, Any] = {}
        if self._jobs is not None:
            queued, leased, agents = await asyncio.gather(
                self._jobs.queue(target, workspaces), self._jobs.leased(target, workspaces),
                self._jobs.agents(target, self._agent_alive_s))
            document = {
                "queue": [{"run_id": q["run_id"], "experiment": q["experiment"],
                           "position": i, "priority": q["priority"], "attempt": q["attempt"],
                           "submitted_at": iso(q["submitted_at"]), "age_s": q["age_s"]}
                          for i, q in enumerate(queued, 1)],
                "leased": [{"run_id": r["run_id"], "experiment": r["experiment"],
                            "agent_id": r["agent_id"], "attempt": r["attempt"],
                            "leased_at": iso(r["leased_at"]),
                            "lease_expires_at": iso(r["lease_expires_at"]),
                            "cancel_requested": r["cancel_requested"]} for r in leased],
                "agents": [{"agent_id": a["agent_id"], "hostname": a["hostname"],
                            "pid": a["pid"], "slots": a["slots"], "busy": int(a["busy"]),
                            "started_at": iso(a["started_at"]),
                            "last_heartbeat_at": iso(a["last_heartbeat_at"]),
                            "alive": a["alive"]} for a in agents],
            }
        if row is None and not any(document.values()):
            raise not_found(f"no compute target {target!r}")
        state = queue_state(row) if row is not None else empty_queue_state(target)
        return json_ok({**state, "active_runs": [run_summary(r) for r in active], **document})


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
        self.agents = Gauge(
            "runstream_agents",
            "Live agents per compute target.",
            ["compute_target"],
            registry=registry,
        )
        self.agent_slots = Gauge(
            "runstream_agent_slots",
            "Slots of the live agents per compute target, busy (running a run) or free.",
            ["compute_target", "state"],
            registry=registry,
        )

    def set(self, states: Iterable[QueueState],
            agents: dict[str, dict[str, int]] | None = None) -> None:
        """Replace every value (targets that are gone disappear)."""
        self.runs.clear()
        self.oldest_age_seconds.clear()
        self.agents.clear()
        self.agent_slots.clear()
        for s in states:
            for state in QUEUE_STATES:
                self.runs.labels(s.compute_target, state).set(getattr(s, state))
            self.oldest_age_seconds.labels(s.compute_target).set(s.oldest_queued_age_s or 0)
        for target, counts in (agents or {}).items():
            self.agents.labels(target).set(counts["alive"])
            busy = min(counts["busy"], counts["slots"])
            self.agent_slots.labels(target, "busy").set(busy)
            self.agent_slots.labels(target, "free").set(counts["slots"] - busy)


class QueueGaugeRefresher:
    """The queue gauges on the API's registry, refreshed from the database on scrape."""

    def __init__(
        self, *, reads: ReadStore, registry: CollectorRegistry, min_interval_s: float = 5.0,
        timeout_s: float = 2.0, jobs: JobStore | None = None, agent_alive_s: float = 60.0,
    ) -> None:
        self._reads = reads
        self._jobs = jobs
        self._agent_alive_s = agent_alive_s
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
                    agents = (await self._jobs.agent_counts(self._agent_alive_s)
                              if self._jobs is not None else None)
            except Exception:
                logger.warning("queue gauges not refreshed", exc_info=True)
                return
            self._refreshed_at = now
            self.gauges.set(rows, agents)
