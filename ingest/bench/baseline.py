"""The COPY baseline for ``runstream bench``: the simplest fast way to store points.

One asyncpg ``copy_records_to_table`` of the same points the end-to-end run stored, one
row per point, into an ordinary (WAL-logged) table with no index. Records are
built before the clock starts, in slices so memory stays bounded, and only the COPY calls
are timed, plus the commit; the slices go through one connection and one transaction, so
this is one COPY stream in all but name. Runstream's end-to-end figure is reported as a
ratio against it.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

__all__ = ["CopyBaseline", "copy_baseline"]

SLICE_POINTS = 250_000

SQL_CREATE = """
CREATE TABLE {table} (
    run_id text NOT NULL,
    name   text NOT NULL,
    step   bigint NOT NULL,
    value  double precision,
    rank   integer NOT NULL,
    time   timestamptz NOT NULL
)
"""
SQL_DROP = "DROP TABLE IF EXISTS {table}"
COLUMNS = ("run_id", "name", "step", "value", "rank", "time")


@dataclass(frozen=True)
class CopyBaseline:
    points: int
    seconds: float

    @property
    def points_per_s(self) -> float:
        return self.points / self.seconds if self.seconds > 0 else math.inf


def _slice(start: int, count: int, *, series: int, t0: datetime) -> list[tuple[object, ...]]:
    tick = timedelta(microseconds=1)
    names = [f"metric_{i}" for i in range(series)]
    return [
        ("bench_run", names[i % series], i // series, i * 0.001, 0, t0 + i * tick)
        for i in range(start, start + count)
    ]


async def copy_baseline(dsn: str, *, points: int, series: int = 10) -> CopyBaseline:
    """Time COPYing ``points`` rows (one per point) into a fresh unindexed table."""
    table = f"bench_copy_{uuid.uuid4().hex[:10]}"
    t0 = datetime.now(UTC)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(SQL_CREATE.format(table=table))
        elapsed = 0.0
        done = 0
        transaction = conn.transaction()
        await transaction.start()
        while done < points:
            count = min(SLICE_POINTS, points - done)
            records = _slice(done, count, series=series, t0=t0)
            started = time.perf_counter()
            await conn.copy_records_to_table(table, records=records, columns=COLUMNS)
            elapsed += time.perf_counter() - started
            done += count
        started = time.perf_counter()
        await transaction.commit()
        elapsed += time.perf_counter() - started
        return CopyBaseline(points=points, seconds=elapsed)
    finally:
        try:
            await conn.execute(SQL_DROP.format(table=table))
        finally:
            await conn.close()
