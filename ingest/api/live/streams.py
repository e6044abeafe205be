"""What one live stream sends in a round: a run's new points, log lines and status
(``RunStream``), or a compute target's queue state (``QueueStream``). The protocol is
described in ``ingest/api/routes/events.py``; positions in ``cursors.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import timedelta
from typing import Any, Final

import asyncpg

from ingest.api.live.cursors import StreamPosition
from ingest.api.live.sse import SseWriter
from ingest.api.shapes import queue_state
from ingest.db import queries as q
from ingest.db.reads import ReadStore
from ingest.db.runstatus import STATUS_COLUMNS
from ingest.db.values import KIND_FLOAT, iso, micros_to_iso, typed_value

__all__ = [
    "QueueStream", "RunStream", "log_events", "point_events", "queue_of", "run_status",
    "stream_heads",
]

#: Rows per read: point chunks (each up to one event's points) or log-line events.
PAGE_ROWS: Final = 32
#: Written to the socket once this much is pending (and at the end of every page).
FLUSH_BYTES: Final = 256 * 1024
LATE_POINTS_WINDOW: Final = timedelta(days=1)

Row = asyncpg.Record | Mapping[str, Any]


def point_events(row: Row, indexes: range) -> Iterator[dict[str, Any]]:
    """The points of one metric chunk row, at ``indexes``, as "point" event data."""
    steps, values, times = row["steps"], row["values"], row["times"]
    kinds: bytes | None = row["kinds"]
    texts: Sequence[str | None] | None = row["texts"]
    name, rank = row["name"], row["rank"]
    for i in indexes:
        kind = KIND_FLOAT if kinds is None else kinds[i]
        text = None if texts is None else texts[i]
        yield {"name": name, "step": steps[i], "value": typed_value(values[i], kind, text),
               "rank": rank, "time": micros_to_iso(times[i])}


def log_events(row: Row, indexes: range) -> Iterator[dict[str, Any]]:
    stream, rank, time = row["stream"], row["rank"], iso(row["logged_at"])
    lines = row["lines"]
    for i in indexes:
        yield {"stream": stream, "line": lines[i], "rank": rank, "time": time}


class RunStream:
    """One run's cursors and what one round sends."""

    def __init__(self, reads: ReadStore, run_id: str, status: dict[str, Any], *,
                 types: frozenset[str], points: StreamPosition, logs: StreamPosition) -> None:
        self._reads = reads
        self._run_id = run_id
        self._status = status
        self._types = types
        self._points = points
        self._logs = logs

    def _event_id(self) -> str:
        return f"{self._points.token()}_{self._logs.token()}"

    def start(self, writer: SseWriter) -> None:
        if "status" in self._types:
            writer.event("status", self._status)

    async def round(self, writer: SseWriter, *, full: bool) -> None:
        """Send what is new: the status (only it when not ``full``: the periodic check
        for NotResponding), else first the points and lines committed so far."""
        status = None
        if "status" in self._types:
            status = await run_status(self._reads, self._run_id)
        if full and "point" in self._types:
            await self._drain(writer, self._points, q.SQL_POINTS_PAGE, "point", point_events)
        if full and "log" in self._types:
            await self._drain(writer, self._logs, q.SQL_LOGS_PAGE, "log", log_events)
        if status is not None and status != self._status:
            self._status = status
            writer.event("status", status)

    async def _drain(self, writer: SseWriter, position: StreamPosition, sql: str, kind: str,
                     explode: Callable[[Row, range], Iterator[dict[str, Any]]],
                     ) -> None:
        while True:
            t, producer, seq, idx, same_t = position.params()
            if kind == "point":
                rows = await self._reads.fetch(sql, self._run_id, t, producer, seq, idx,
                                              PAGE_ROWS, LATE_POINTS_WINDOW, same_t)
            else:
                rows = await self._reads.fetch(sql, self._run_id, t, producer, seq, same_t,
                                              PAGE_ROWS)
            for row in rows:
                key = (row["producer_id"], row["seq"], row["series_idx"])
                n_items = len(row["steps"] if kind == "point" else row["lines"])
                for data in explode(row, position.take(row["ingested_at"], key, n_items)):
                    position.delivered()
                    writer.event(kind, data, self._event_id())
                    if writer.pending_bytes >= FLUSH_BYTES:
                        await writer.flush()
                        await asyncio.sleep(0)  # a busy run must not starve other streams
            await writer.flush()
            if len(rows) < PAGE_ROWS:
                return


class QueueStream:
    """One compute target's last sent queue state."""

    def __init__(self, reads: ReadStore, target: str, first: dict[str, Any]) -> None:
        self._reads = reads
        self._target = target
        self._last = first

    def start(self, writer: SseWriter) -> None:
        writer.event("queue", self._last)

    async def round(self, writer: SseWriter, *, full: bool) -> None:
        state = await queue_of(self._reads, self._target)
        if state is not None and _queue_key(state) != _queue_key(self._last):
            self._last = state
            writer.event("queue", state)


def _queue_key(state: Mapping[str, Any]) -> tuple[Any, ...]:
    # The age of the oldest queued run grows every second; a change of *which* run is the
    # oldest shows in the counts or percentiles, so the age alone is not a change.
    return tuple(v for k, v in state.items() if k != "oldest_queued_age_s")


async def queue_of(reads: ReadStore, target: str) -> dict[str, Any] | None:
    """QueueState of a compute target (as GET /v1/compute/{target}); None if unknown."""
    row = await reads.queue(target)
    return None if row is None else queue_state(row)


async def run_status(reads: ReadStore, run_id: str) -> dict[str, Any] | None:
    row = await reads.fetchrow(q.SQL_RUN_STATUS, run_id)
    if row is None:
        return None
    return {
        "run_id": run_id,
        "status": row["status"],
        "error": row["error"],
        "status_times": {s: iso(row[c]) for s, c in STATUS_COLUMNS.items()},
    }


async def stream_heads(reads: ReadStore, run_id: str) -> tuple[StreamPosition, StreamPosition]:
    points = await reads.fetchval(q.SQL_POINTS_HEAD, run_id, LATE_POINTS_WINDOW)
    logs = await reads.fetchval(q.SQL_LOGS_HEAD, run_id)
    return StreamPosition.after(points), StreamPosition.after(logs)
