"""``runstream bench`` suite ``dedup``: ingest throughput with many dedup keys stored.

Issue 12, item 4: with 100 M dedup keys already stored, the batch write must keep at least
0.9x its throughput on an empty store. The real ``Store.write_batch`` commits fresh batches
of small metric events (``BATCH_EVENTS`` events of one series of ``POINTS_PER_EVENT``
points: the worst case for the dedup step, which costs per event, not per point) into
three scratch databases:

* ``empty``: no keys;
* ``loaded``: ``keys`` keys bulk-loaded into the day partitions inside the horizon (the
  oldest kept day to now, evenly; each partition filled and indexed on its own, then
  attached), the layout of migration 0011, with time-ordered ids as the SDK makes them
  (``schemas.event_ids``);
* ``old``: the same number of keys in ``event_ids``, one primary key over every key ever
  stored, as before 0011 — random ids, as the SDK made them then (its fresh events too).

Configurations measured: 0011 on ``empty`` and on ``loaded``; the batch write as it was
before 0011 (``Store.dedup_statement`` swapped) on ``empty`` and on ``old``; and 0011 on
``old`` — right after an upgrade, when every id is also looked up in the pre-0011 keys
until maintenance truncates them.

Each loaded database is vacuumed after its load, as a store that has been running would
be. The machine is shared, so the configurations compared take turns batch by batch: each
of ``rounds`` rounds writes ``batches`` batches into each (fresh ids every time), after
one warm-up round. ``empty`` vs ``loaded`` first; then the ``old`` database is loaded and
its three configurations measured (apart: its one big index would evict the loaded
store's pages from the shared buffers, which a deployment never has beside it). A
throughput is the median round's; a ratio (against the empty store with the same
statement) is the median of the rounds' ratios.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

import asyncpg

from ingest.bench.events import EventFactory, packed_series
from ingest.bench.scratch import scratch_database
from ingest.settings import Settings
from ingest.worker.decode import DeadLetter, Event, decode_event
from ingest.worker.store import Batch, Store
from schemas.codec import Codec

__all__ = ["run_dedup_bench"]

Progress = Callable[[str], None]
Loader = Callable[[asyncpg.Connection, int, Progress], Awaitable[dict[str, Any]]]

BATCH_EVENTS: Final = 1000
POINTS_PER_EVENT: Final = 20
RUNS: Final = 20
#: Keys per INSERT of the bulk load (progress and memory).
LOAD_STEP: Final = 5_000_000
#: The batch write of the layout before 0011 (its third parameter, the day, is unused).
SQL_DEDUP_EVENTS_OLD: Final = """
INSERT INTO runstream_data.event_ids (event_id, run_id)
SELECT u.event_id, 'bench_1795839693_928d6500'
FROM unnest($1::uuid[], $2::integer[]) AS u(event_id, days) ORDER BY 1
ON CONFLICT (event_id) DO NOTHING
RETURNING event_id::text
"""
SQL_WINDOW: Final = "SELECT oldest, newest FROM runstream_data.dedup_window"
#: ``n`` time-ordered keys (as the SDK's ``new_event_id`` makes them: version-7 UUIDs)
#: spread evenly over the milliseconds [$2, $3) of one day $1, keys $4 + 1 .. $4 + n of $5.
SQL_LOAD_DAY: Final = """
SELECT (lpad(to_hex($2::bigint + ((i - 1) * ($3::bigint - $2::bigint) / $5::bigint)), 12, '0')
        || '7' || substr(r, 14, 3) || '8' || substr(r, 18, 15))::uuid, $1::date
FROM (SELECT i, replace(gen_random_uuid()::text, '-', '') AS r
      FROM generate_series($4::bigint + 1, $4::bigint + $6::bigint) i) k
"""
#: Configurations whose fresh events carry random ids, as the SDK made them before it
#: made time-ordered ones (the layout before 0011 is measured as it was).
RANDOM_ID_CONFIGS: Final = frozenset({"old_empty", "old_loaded"})
_CODEC: Final = Codec(max_message_bytes=1 << 22)


async def _no_dead_letters(dead: Sequence[DeadLetter]) -> None:
    raise RuntimeError(f"bench events were dead-lettered: {dead[:1]}")


def _events(count: int, *, random_ids: bool = False) -> list[Event]:
    """``count`` fresh metric events of ``RUNS`` runs, stamped now; their ids time-ordered
    as the SDK makes them, or random (version 4) as it made them before."""
    factories = [EventFactory(f"benchdedup_{int(time.time())}_{uuid.uuid4().hex[:8]}")
                 for _ in range(RUNS)]
    out = []
    for i in range(count):
        step = (i // RUNS) * POINTS_PER_EVENT
        values = [float(j) for j in range(POINTS_PER_EVENT)]
        raw = factories[i % RUNS].metrics(
            packed_series("loss", values, steps=range(step, step + POINTS_PER_EVENT)),
            event_id=str(uuid.uuid4()) if random_ids else None)
        out.append(decode_event(_CODEC, _CODEC.encode(raw)))
    return out


class _StoreBefore0011(Store):
    """The batch write as it was before migration 0011 (dedup in ``event_ids``)."""

    dedup_statement = SQL_DEDUP_EVENTS_OLD


async def _write_round(stores: dict[str, Store], batches: int) -> dict[str, float]:
    """Events committed per second into each store: ``batches`` batches of fresh events
    each, the stores taking turns batch by batch (the machine's other load then weighs on
    all of them alike)."""
    events = {name: _events(batches * BATCH_EVENTS, random_ids=name in RANDOM_ID_CONFIGS)
              for name in stores}
    elapsed = dict.fromkeys(stores, 0.0)
    for i in range(0, batches * BATCH_EVENTS, BATCH_EVENTS):
        for name, store in stores.items():
            batch = Batch("bench", "bench-dedup", events=events[name][i:i + BATCH_EVENTS])
            started = time.perf_counter()
            result = await store.write_batch(batch, send_dead_letters=_no_dead_letters)
            elapsed[name] += time.perf_counter() - started
            if result.new_events != len(batch.events):
                raise RuntimeError("fresh events taken for duplicates")
    return {name: batches * BATCH_EVENTS / elapsed[name] for name in stores}


def _figure(rates: list[float]) -> dict[str, Any]:
    median = statistics.median(rates)
    return {"events_per_s": round(median), "points_per_s": round(median * POINTS_PER_EVENT),
            "rounds_events_per_s": [round(r) for r in rates]}


async def _load_day_partitions(conn: asyncpg.Connection, keys: int,
                               progress: Progress) -> dict[str, Any]:
    """``keys`` keys over the kept days up to now, time-ordered as the SDK makes them,
    each day's partition filled and indexed on its own, then attached (no index
    maintenance row by row)."""
    row = await conn.fetchrow(SQL_WINDOW)
    if row is None:
        raise RuntimeError("no dedup window: is migration 0011 applied?")
    oldest: date = row["oldest"]
    today = min(datetime.now(UTC).date(), row["newest"])
    days = [oldest + timedelta(days=i) for i in range((today - oldest).days + 1)]
    started = time.perf_counter()
    for k, day in enumerate(days):
        n = keys // len(days) + (1 if k < keys % len(days) else 0)
        name = f"runstream_data.dedup_keys_{day:%Y%m%d}"
        await conn.execute(f"ALTER TABLE runstream_data.dedup_keys DETACH PARTITION {name}")
        await conn.execute(f"DROP TABLE {name}")
        await conn.execute(f"CREATE TABLE {name} (LIKE runstream_data.dedup_keys)")
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        end = min(start + timedelta(days=1), datetime.now(UTC))  # today: until now
        start_ms, end_ms = (int(t.timestamp() * 1000) for t in (start, end))
        for done in range(0, n, LOAD_STEP):
            await conn.execute(f"INSERT INTO {name} (event_id, day) {SQL_LOAD_DAY}",
                               day, start_ms, end_ms, done, n, min(LOAD_STEP, n - done))
        await conn.execute(f"ALTER TABLE {name} ADD PRIMARY KEY (event_id, day)")
        await conn.execute(f"ALTER TABLE runstream_data.dedup_keys ATTACH PARTITION {name} "
                           f"FOR VALUES FROM ('{day.isoformat()}') "
                           f"TO ('{(day + timedelta(days=1)).isoformat()}')")
        progress(f"dedup: {day} holds {n:,} keys ({k + 1}/{len(days)} days, "
                 f"{time.perf_counter() - started:.0f} s)")
    await conn.execute("ANALYZE runstream_data.dedup_keys")
    return {"days": len(days), "keys_per_day": keys // len(days),
            "load_s": round(time.perf_counter() - started, 1)}


async def _load_old_table(conn: asyncpg.Connection, keys: int,
                          progress: Progress) -> dict[str, Any]:
    """``keys`` random keys in ``event_ids`` as the layout before 0011 kept them (the SDK
    then made random ids)."""
    started = time.perf_counter()
    await conn.execute("ALTER TABLE runstream_data.event_ids DROP CONSTRAINT event_ids_pkey")
    await conn.execute("DROP INDEX runstream_data.event_ids_ingested_at_brin")
    for done in range(0, keys, LOAD_STEP):
        await conn.execute(
            "INSERT INTO runstream_data.event_ids (event_id, run_id, ingested_at) "
            "SELECT gen_random_uuid(), 'bench_1795839693_928d6500', "
            "now() - interval '14 days' * (1 - i::float8 / $1::float8) "
            "FROM generate_series($2::bigint, $3::bigint) i",
            keys, done + 1, min(done + LOAD_STEP, keys))
        progress(f"dedup: event_ids holds {min(done + LOAD_STEP, keys):,} of {keys:,} keys "
                 f"({time.perf_counter() - started:.0f} s)")
    await conn.execute("ALTER TABLE runstream_data.event_ids ADD PRIMARY KEY (event_id)")
    await conn.execute("CREATE INDEX event_ids_ingested_at_brin "
                       "ON runstream_data.event_ids USING brin (ingested_at)")
    await conn.execute("ANALYZE runstream_data.event_ids")
    return {"load_s": round(time.perf_counter() - started, 1)}


async def run_dedup_bench(settings: Settings, dsn: str, progress: Progress,
                          keys: int = 100_000_000, quick: bool = False,
                          old_layout: bool = True) -> dict[str, Any]:
    """The ``dedup`` suite (module docstring). ``quick``: at most 1 M keys and a few small
    rounds (a smoke test, not figures); ``old_layout=False`` skips the ``old`` database."""
    del settings  # the suite needs only the database server
    if quick:
        keys = min(keys, 1_000_000)
    batches, rounds = (3, 3) if quick else (10, 7)
    result: dict[str, Any] = {
        "keys": keys, "batch_events": BATCH_EVENTS, "points_per_event": POINTS_PER_EVENT,
        "events_per_round": batches * BATCH_EVENTS, "rounds": rounds, "target_ratio": 0.9,
    }
    rates: dict[str, list[float]] = {}

    async def load(db: str, loader: Loader, what: str) -> dict[str, Any]:
        progress(f"dedup: storing {keys:,} keys {what}…")
        conn = await asyncpg.connect(db)
        try:
            await conn.execute("SET maintenance_work_mem = '1GB'")
            out = await loader(conn, keys, progress)
            # as a store that has been running would be: vacuumed, hint bits set (and no
            # autovacuum of the fresh rows during the measurement)
            started = time.perf_counter()
            await conn.execute("VACUUM (ANALYZE) runstream_data.dedup_keys, "
                               "runstream_data.event_ids")
            out["vacuum_s"] = round(time.perf_counter() - started, 1)
            return out
        finally:
            await conn.close()

    async def measure(stores: dict[str, Store]) -> None:
        """Take turns batch by batch; a first round of ``batches`` warms up."""
        rates.update({name: [] for name in stores})
        for n in range(rounds + 1):
            measured = await _write_round(stores, batches)
            if n:
                for name, rate in measured.items():
                    rates[name].append(rate)
                progress("dedup: round {}/{}: {} events/s".format(n, rounds, ", ".join(
                    f"{name} {rate:,.0f}" for name, rate in measured.items())))

    async with AsyncExitStack() as stack:
        empty = await stack.enter_async_context(
            scratch_database(dsn, prefix="runstream_bench_dedup_empty"))
        async with scratch_database(dsn, prefix="runstream_bench_dedup_loaded") as loaded:
            result["load"] = await load(loaded, _load_day_partitions,
                                        "over the days inside the horizon")
            async with Store(dsn=empty) as a, Store(dsn=loaded) as b:
                await measure({"empty": a, "loaded": b})
        if old_layout:  # apart: its big index would evict the loaded store's pages
            async with scratch_database(dsn, prefix="runstream_bench_dedup_old") as old:
                result["load_old"] = await load(old, _load_old_table, "as before 0011")
                async with (_StoreBefore0011(dsn=empty) as a, _StoreBefore0011(dsn=old) as b,
                            Store(dsn=empty) as c, Store(dsn=old) as d):
                    await measure({"old_empty": a, "old_loaded": b, "empty_again": c,
                                   "after_upgrade": d})
    figures = {name: _figure(r) for name, r in rates.items()}

    def ratio(a: str, b: str) -> float:
        """The median of the rounds' ratios (each round's two figures were measured
        batch by batch side by side)."""
        return round(statistics.median(x / y for x, y in zip(rates[a], rates[b],
                                                                 strict=True)), 3)

    result.update(empty=figures["empty"], loaded=figures["loaded"],
                  ratio=ratio("loaded", "empty"))
    result["meets_target"] = result["ratio"] >= 0.9
    if old_layout:
        result["old_layout"] = {"empty": figures["old_empty"], "loaded": figures["old_loaded"],
                                "ratio": ratio("old_loaded", "old_empty")}
        result["after_upgrade"] = {
            "loaded": figures["after_upgrade"], "ratio": ratio("after_upgrade", "empty_again"),
            "note": "0011 with the pre-0011 keys still in event_ids (until they age out)"}
    progress(f"dedup: {figures['empty']['events_per_s']:,} events/s empty, "
             f"{figures['loaded']['events_per_s']:,} with {keys:,} keys: {result['ratio']}x"
             + (f"; before 0011 {result['old_layout']['ratio']}x, right after the upgrade "
                f"{result['after_upgrade']['ratio']}x" if old_layout else ""))
    return result
