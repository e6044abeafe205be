"""Prometheus metrics of an ingest worker, built from an injected ``CollectorRegistry``.

Labels stay low-cardinality: ``reason`` (a handful of DLQ reasons) and ``partition`` (the
topic's partitions); never a run id. Queue gauges per compute target are the API's, not
the workers' (``ingest/db/queues.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

__all__ = ["IngestMetrics", "metrics_app"]

_LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


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

    def render(self) -> bytes:
        return generate_latest(self.registry)


def metrics_app(metrics: IngestMetrics) -> web.Application:
    """``GET /metrics`` and ``GET /healthz`` of a worker (served by ``HttpServer``)."""

    async def serve_metrics(_request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def serve_health(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/metrics", serve_metrics)
    app.router.add_get("/healthz", serve_health)
    return app
