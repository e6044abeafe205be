"""``runstream bench maintenance``: ingest throughput while a compression pass runs (issue 13).

On a scratch TimescaleDB database (skipped, saying so, where the server has no
extension): ``old_points`` metric points are stored through the real batch write
(``Store.write_batch``) 8 to 29 days back, spread over chunks the compression policy
(``compress_after`` 7 days) will compress. Then the batch write stores fresh batches,
two kinds taking turns: *current* batches (current points only) and *late* batches
(current points, plus every ``late_every``-th event a late point into one of the old
chunks, as a spool replayed late would bring) — three times for the same number of
batches each:

* ``before``: no compression running;
* ``during``: while Runstream runs the compression policy as its workers do when the
  extension's scheduler cannot (``CALL run_job`` on a connection of its own, with the
  runner's ``lock_timeout``, ``ingest/db/maintenance.py``); the batches keep coming until
  the pass ends;
* ``after``: the chunks compressed, late points now going into compressed chunks.

Each phase reports points/s and the slowest batch commit, overall and per kind
(``current``, ``late``: points over the time their batches took to commit);
``during_vs_before`` is the ratio of throughputs, ``late`` the same figures for the
late batches alone (``during_vs_before`` and the slowest late batch during the pass).
``chunks_at_pass`` says what the pass found: chunks never compressed (their first
compression locks the chunk against inserts for its whole duration) or compressed and
partial (recompressed without blocking inserts). With ``compress_at_birth`` (the
default) the batch write compresses each chunk it creates (migration 0017); False
measures the behaviour before it. The machine's load average is taken before and after
(other work on the machine shares its cores). At the end every point is counted in
``runstream.metric_points`` (expected exactly: each event stored once, the late ones
included).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import asyncpg

from ingest.bench.events import EventFactory, packed_series
from ingest.bench.scratch import scratch_database, timescaledb_version
from ingest.db.maintenance import MAINTENANCE_LOCK_TIMEOUT
from ingest.settings import Settings
from ingest.worker.decode import DeadLetter, Event, decode_event
from ingest.worker.store import Batch, Store
from schemas.codec import Codec

__all__ = ["run_maintenance_bench"]

Progress = Callable[[str], None]

DAY_US: Final = 86_400_000_000
POINTS_PER_SERIES: Final = 5000
BATCH_EVENTS: Final = 20
RUNS: Final = 8

_CODEC = Codec()


async def _no_dead_letters(dead: Sequence[DeadLetter]) -> None:
    raise AssertionError(f"unexpected dead letters: {dead}")


def _decoded(events: Sequence[dict[str, Any]]) -> list[Event]:
    return [decode_event(_CODEC, _CODEC.encode(e)) for e in events]


class _Workload:
    """Metric events of ``RUNS`` runs: old ones to load, fresh batches, late points."""

    def __init__(self, late_every: int) -> None:
        self.runs = [EventFactory(f"benchmaint_{1_800_000_000 + i}_{i:08x}") for i in range(RUNS)]
        self.late_every = late_every
        self.step = 0
        self.points = 0

    def old(self, points: int, now_us: int) -> list[list[Event]]:
        """Batches of old events: 8 to 29 days back, spread evenly."""
        count = max(1, points // POINTS_PER_SERIES)
        events = []
        for i in range(count):
            at = now_us - (8 * DAY_US + (i * 21 * DAY_US) // count)
            events.append(self._event(i % RUNS, at))
        decoded = _decoded(events)
        return [decoded[i:i + 200] for i in range(0, len(decoded), 200)]

    def fresh(self, now_us: int, *, with_late: bool = True) -> list[Event]:
        """One batch: current points, and (``with_late``) a late point into an old chunk
        every ``late_every``-th event."""
        events = []
        for _ in range(BATCH_EVENTS):
            self.step += 1
            late = with_late and self.late_every and self.step % self.late_every == 0
            at = now_us - (8 * DAY_US + (self.step * 7919 % 21) * DAY_US) if late else now_us
            events.append(self._event(self.step % RUNS, at, n=1 if late else POINTS_PER_SERIES))
        return _decoded(events)

    def _event(self, run: int, at_us: int, *, n: int = POINTS_PER_SERIES) -> dict[str, Any]:
        first = self.points
        self.points += n
        return self.runs[run].metrics(packed_series(
            "loss", [float(v) for v in range(first, first + n)], steps=range(first, first + n),
            times_us=[at_us + k for k in range(n)]))


def _figures(batches: int, points: int, seconds: float, slowest: float) -> dict[str, Any]:
    return {"batches": batches, "points": points, "seconds": round(seconds, 2),
            "points_per_s": round(points / seconds) if seconds else 0,
            "slowest_batch_s": round(slowest, 3)}


async def _phase(store: Store, work: _Workload, *, batches: int,
                 until: asyncio.Task[Any] | None = None) -> dict[str, Any]:
    """Write ``batches`` batches, current and late ones taking turns (and, with ``until``,
    on until that task ends)."""
    kinds = ("current", "late") if work.late_every else ("current",)
    per_kind = {k: [0, 0, 0.0, 0.0] for k in kinds}  # batches, points, seconds, slowest
    written = 0
    started = time.perf_counter()
    while written < batches or (until is not None and not until.done()):
        kind = kinds[written % len(kinds)]
        batch = work.fresh(time.time_ns() // 1000, with_late=kind == "late")
        t0 = time.perf_counter()
        result = await store.write_batch(Batch("bench", "bench-maintenance", events=batch),
                                         send_dead_letters=_no_dead_letters)
        took = time.perf_counter() - t0
        k = per_kind[kind]
        k[0], k[1], k[2], k[3] = k[0] + 1, k[1] + result.points, k[2] + took, max(k[3], took)
        written += 1
    seconds = time.perf_counter() - started
    out = _figures(written, sum(int(k[1]) for k in per_kind.values()), seconds,
                   max(k[3] for k in per_kind.values()))
    for kind, (n, points, took, slowest) in per_kind.items():
        out[kind] = _figures(int(n), int(points), took, slowest)
    return out


async def _compress(dsn: str) -> dict[str, Any]:
    """The compression policy, run as Runstream's maintenance runner runs it."""
    conn = await asyncpg.connect(dsn)
    try:
        job = await conn.fetchval(
            "SELECT job_id FROM timescaledb_information.jobs "
            "WHERE proc_name = 'policy_compression'")
        await conn.execute(f"SET lock_timeout = '{MAINTENANCE_LOCK_TIMEOUT}'")
        t0 = time.perf_counter()
        await conn.execute(f"CALL run_job({int(job)})")
        return {"job_id": job, "seconds": round(time.perf_counter() - t0, 2)}
    finally:
        await conn.close()


async def _chunks(dsn: str) -> dict[str, int]:
    """Metric chunks: all, compressed (wholly or partly), never compressed, and partial
    (compressed, with rows taken since)."""
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) AS chunks, count(*) FILTER (WHERE c.status & 1 = 1) AS compressed,"
            " count(*) FILTER (WHERE c.status & 1 = 0) AS uncompressed,"
            " count(*) FILTER (WHERE c.status & 9 = 9) AS partial "
            "FROM _timescaledb_catalog.chunk c "
            "JOIN _timescaledb_catalog.hypertable h ON h.id = c.hypertable_id "
            "WHERE h.schema_name = 'runstream_data' AND h.table_name = 'metric_chunks' "
            "AND NOT c.dropped")
        if row is None:  # an aggregate always answers one row
            raise RuntimeError("no answer from the TimescaleDB catalog")
        return {k: int(row[k]) for k in ("chunks", "compressed", "uncompressed", "partial")}
    finally:
        await conn.close()


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _ratio(a: dict[str, Any], b: dict[str, Any]) -> float | None:
    return round(a["points_per_s"] / b["points_per_s"], 3) if b["points_per_s"] else None


async def run_maintenance_bench(settings: Settings, dsn: str, progress: Progress, *,
                                old_points: int = 50_000_000, batches: int = 100,
                                late_every: int = 10,
                                compress_at_birth: bool = True) -> dict[str, Any]:
    """The suite (see the module docstring); a JSON-able dict."""
    version = await timescaledb_version(dsn)
    if not version:
        progress("maintenance: skipped, the stack's database has no TimescaleDB")
        return {"skipped": "TimescaleDB is not available on this PostgreSQL"}
    work = _Workload(late_every)
    load_before = _load()
    async with scratch_database(dsn, prefix="runstream_bench_maint") as db:
        async with Store(dsn=db) as store:
            if not compress_at_birth:
                store.new_chunks_statement = "SELECT 0"
            progress(f"maintenance: loading {old_points:,} points 8-29 days old…")
            t0 = time.perf_counter()
            for batch in work.old(old_points, time.time_ns() // 1000):
                await store.write_batch(Batch("bench", "bench-maintenance-load", events=batch),
                                        send_dead_letters=_no_dead_letters)
            load_s = time.perf_counter() - t0
            loaded = await _chunks(db)
            progress("maintenance: ingest before, during and after a compression pass…")
            before = await _phase(store, work, batches=batches)
            at_pass = await _chunks(db)
            compress = asyncio.create_task(_compress(db))
            during = await _phase(store, work, batches=batches, until=compress)
            try:
                compression = await compress
            except asyncpg.PostgresError as exc:
                compression = {"error": f"{exc.sqlstate} {exc}"}
            load_during = _load()
            compressed = await _chunks(db)
            after = await _phase(store, work, batches=batches)
        conn = await asyncpg.connect(db)
        try:
            stored = int(await conn.fetchval("SELECT count(*) FROM runstream.metric_points"))
        finally:
            await conn.close()
    return {
        "storage": f"timescaledb {version}",
        "old_points": old_points, "load_seconds": round(load_s, 1),
        "chunks": compressed["chunks"], "chunks_old": loaded["chunks"],
        "chunks_compressed": compressed["compressed"],
        "chunks_at_pass": {k: at_pass[k] for k in ("uncompressed", "partial")},
        "chunks_after_pass": {k: compressed[k] for k in ("uncompressed", "partial")},
        "compress_at_birth": compress_at_birth,
        "compression": compression,
        "batch_events": BATCH_EVENTS, "late_every": late_every,
        "before": before, "during": during, "after": after,
        "during_vs_before": _ratio(during, before),
        "late": None if not late_every else {
            "before_slowest_batch_s": before["late"]["slowest_batch_s"],
            "during_slowest_batch_s": during["late"]["slowest_batch_s"],
            "during_vs_before": _ratio(during["late"], before["late"]),
        },
        "load_average": {"start": load_before, "end_of_pass": load_during},
        "points_expected": work.points, "points_stored": stored,
    }
