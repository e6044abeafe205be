"""Prometheus metrics of an ingest worker, built from an injected ``CollectorRegistry``.

Labels stay low-cardinality: ``reason`` (a handful of DLQ reasons), ``partition`` (the
topic's partitions), ``compute_target`` and ``state``; never a run id.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from ingest.worker.status import QueueState

__all__ = ["IngestMetrics", "MetricsServer"]

_LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
QUEUE_STATES: Final = ("queued", "preparing", "running", "not_responding")


class QueueGauges:
    """Queue state per compute target, labelled by target (and state) only — never a run.

    The ingest worker and the API both export these from their own registries.
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

    def set(self, targets: Iterable[tuple[str, Mapping[str, float], float | None]]) -> None:
        """Replace every value: (compute target, count per QUEUE_STATES, oldest queued age)."""
        self.runs.clear()
        self.oldest_age_seconds.clear()
        for target, counts, oldest_age_s in targets:
            for state in QUEUE_STATES:
                self.runs.labels(target, state).set(counts[state])
            self.oldest_age_seconds.labels(target).set(oldest_age_s or 0)


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.events_consumed = Counter(
            "runstream_events_consumed_total",
            "Messages from the events topic whose handling was committed (stored, dropped as "
            "a duplicate or dead-lettered); re-reads after a rebalance or crash count again "
            "only if they are committed again.",
            registry=registry,
        )
        self.points_persisted = Counter(
            "runstream_points_persisted_total",
            "Metric points committed to the database (duplicates excluded).",
            registry=registry,
        )
        self.duplicates_dropped = Counter(
            "runstream_duplicates_dropped_total",
            "Events dropped because their event_id was already stored.",
            registry=registry,
        )
        self.dead_letters = Counter(
            "runstream_dead_letters_total",
            "Poison messages sent to the dead-letter topic, by reason.",
            ["reason"],
            registry=registry,
        )
        self.write_retries = Counter(
            "runstream_write_retries_total",
            "Batch writes retried after a transient database error.",
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "runstream_batch_seconds",
            "Time to commit one batch transaction (dedup, rows, offsets).",
            buckets=_LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "runstream_consumer_lag",
            "Messages in the partition not yet committed to the database by this worker.",
            ["partition"],
            registry=registry,
        )
        self.log_to_commit_seconds = Histogram(
            "runstream_log_to_commit_seconds",
            "From an event's creation (producer clock) to its database commit.",
            buckets=_LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.queue = QueueGauges(registry)

    def observe_log_to_commit(self, committed_at_s: float, event_ts_us: Iterable[int]) -> None:
        observe = self.log_to_commit_seconds.observe
        for ts_us in event_ts_us:
            observe(max(0.0, committed_at_s - ts_us / 1e6))

    def set_lag(self, partition: int, lag: int) -> None:
        self.consumer_lag.labels(partition=str(partition)).set(max(0, lag))

    def forget_partitions(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            with contextlib.suppress(KeyError):
                self.consumer_lag.remove(str(p))

    def set_queue_state(self, states: Sequence[QueueState]) -> None:
        self.queue.set(
            (
                s.compute_target,
                {state: getattr(s, state) for state in QUEUE_STATES},
                s.oldest_queued_age_s,
            )
            for s in states
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsServer:
    """``GET /metrics`` (and ``/healthz``) on ``host:port``; ``port=0`` picks a free one."""

    def __init__(self, metrics: IngestMetrics, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._metrics = metrics
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self.bound_port: int | None = None

    async def _serve_metrics(self, _request: web.Request) -> web.Response:
        return web.Response(
            body=self._metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def _serve_health(self, _request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def start(self) -> None:
        if self._runner is not None:
            return
        app = web.Application()
        app.router.add_get("/metrics", self._serve_metrics)
        app.router.add_get("/healthz", self._serve_health)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        await site.start()
        self._runner = runner
        server = site._server  # aiohttp exposes the bound socket only here
        sockets = getattr(server, "sockets", None) or []
        self.bound_port = sockets[0].getsockname()[1] if sockets else self._port

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> MetricsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
