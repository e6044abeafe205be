"""Store write throughput against the one-row-per-point COPY baseline (for ``runstream bench``).

Both sides get the same points: ``series`` series of ``points_per_series`` float points,
already decoded (the wire's packed arrays). The baseline is one asyncpg
``copy_records_to_table`` of one row per point (run_id, name, step, value, time) into an
unindexed, unlogged-free (ordinary) table; the store side is ``Store.write_batch``: the
full exactly-once transaction (dedup insert, chunk COPY, run/producer merges, offsets).
Records for the baseline are built before its timer starts; events for the store are
decoded before its timer starts, so each side is timed on its database work alone.
"""

from __future__ import annotations

import array
import math
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from ingest.decode import Event, MetricBatch, decode_event
from ingest.store import Batch, Store
from ingest.testing import EventFactory, packed_series
from schemas.codec import Codec

__all__ = ["StoreBenchResult", "measure_store_write"]

SQL_BASELINE_TABLE = """
CREATE TABLE {table} (run_id text, name text, step bigint, value float8, time timestamptz)
"""


@dataclass(frozen=True)
class StoreBenchResult:
    points: int
    baseline_points_per_s: float
    store_points_per_s: float

    @property
    def ratio(self) -> float:
        return self.store_points_per_s / self.baseline_points_per_s


def _events(points: int, points_per_series: int, series_per_event: int) -> list[Event]:
    codec = Codec(max_message_bytes=1 << 30)
    f = EventFactory(f"bench_{int(time.time())}_{uuid.uuid4().hex[:8]}")
    t0 = time.time_ns() // 1000
    out = []
    n_series = max(1, points // points_per_series)
    for first in range(0, n_series, series_per_event):
        series = [
            packed_series(f"m{s % 16}", [math.sin(s + i) for i in range(points_per_series)],
                          steps=range(s * points_per_series, (s + 1) * points_per_series),
                          times_us=range(t0 + s * points_per_series,
                                         t0 + (s + 1) * points_per_series))
            for s in range(first, min(first + series_per_event, n_series))
        ]
        out.append(decode_event(codec, codec.encode(f.metrics(*series))))
    return out


async def measure_store_write(dsn: str, *, points: int = 1_000_000,
                              points_per_series: int = 1000,
                              series_per_event: int = 10,
                              events_per_batch: int = 50) -> StoreBenchResult:
    """Time both writes on ``dsn`` (a migrated database; the baseline table is dropped)."""
    events = _events(points, points_per_series, series_per_event)
    total = sum(e.points for e in events)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    records = []
    for e in events:
        series_list = e.payload.series if isinstance(e.payload, MetricBatch) else ()
        for s in series_list:
            steps, values, times = array.array("q"), array.array("d"), array.array("q")
            steps.frombytes(s.steps)
            values.frombytes(s.values)
            times.frombytes(s.times)
            records += [(e.run_id, s.name, st, v, epoch + timedelta(microseconds=t))
                        for st, v, t in zip(steps, values, times, strict=True)]
    table = f"bench_baseline_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(SQL_BASELINE_TABLE.format(table=table))
        started = time.perf_counter()
        await conn.copy_records_to_table(table, records=records)
        baseline_s = time.perf_counter() - started
        await conn.execute(f"DROP TABLE {table}")
    finally:
        await conn.close()
    del records

    async def no_dead_letters(_: object) -> None:
        raise AssertionError("no dead letters expected")

    async with Store(dsn=dsn) as store:
        started = time.perf_counter()
        for i in range(0, len(events), events_per_batch):
            batch = Batch(topic="bench", group_id="bench", events=events[i:i + events_per_batch],
                          next_offsets={0: i + events_per_batch})
            await store.write_batch(batch, send_dead_letters=no_dead_letters)
        store_s = time.perf_counter() - started
    return StoreBenchResult(total, total / baseline_s, total / store_s)
