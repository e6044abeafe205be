"""A compute target's queue state: the one definition, read from ``runstream.compute_targets``.

The API serves it (``GET /v1/compute``, the ``queue`` SSE event) and exports it as the
Prometheus gauges ``runstream_queue_runs`` and ``runstream_queue_oldest_age_seconds``;
ingest workers do not (N workers would report the same numbers N times).

``running`` includes not-responding runs (also counted alone in ``not_responding``).
Queue-wait percentiles are over runs that left the queue in the last 24 h (None: none
did); the ``*_1h`` counts are runs that ended in the last hour.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

__all__ = ["QueueState"]

@dataclass(frozen=True, slots=True)
class QueueState:
    compute_target: str
    queued: int
    preparing: int
    running: int
    not_responding: int
    oldest_queued_age_s: float | None
    queue_wait_p50_s: float | None
    queue_wait_p95_s: float | None
    completed_1h: int
    failed_1h: int
    canceled_1h: int

    @classmethod
    def from_row(cls, row: Mapping[str, Any] | asyncpg.Record) -> QueueState:
        def seconds(value: Any) -> float | None:
            return None if value is None else float(value)

        return cls(
            compute_target=str(row["compute_target"]),
            queued=int(row["queued"]),
            preparing=int(row["preparing"]),
            running=int(row["running"]),
            not_responding=int(row["not_responding"]),
            oldest_queued_age_s=seconds(row["oldest_queued_age_s"]),
            queue_wait_p50_s=seconds(row["queue_wait_p50_s"]),
            queue_wait_p95_s=seconds(row["queue_wait_p95_s"]),
            completed_1h=int(row["completed_1h"]),
            failed_1h=int(row["failed_1h"]),
            canceled_1h=int(row["canceled_1h"]),
        )
