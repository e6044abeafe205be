"""Dedup keys with a horizon (migration 0011) on real PostgreSQL and Kafka: replays inside
the window are dropped exactly, whatever day an event carries; maintenance drops whole
partitions past the horizon and creates days ahead, from any number of workers at once;
keys stored before the migration still count."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from ingest.bench.events import EventFactory, packed_series
from ingest.db.migrate import MIGRATION_LOCK_ID, available_migrations, migrate
from ingest.worker.decode import Event
from ingest.worker.store import Batch, Store
from tests.helpers import DbFactory, StackInfo, TopicFactory
from tests.integration.helpers import (
    NewDb,
    decoded,
    enable_timescaledb,
    fetch,
    no_dlq,
    run_id,
    stored_offsets_reach,
    wait_for,
)
from tests.integration.test_ingest_worker import encoded, produce, worker
from tests.reliability import Reliability, storage_backend

pytestmark = pytest.mark.integration

DAY_US = 86_400_000_000
#: Days from today of the events' own times: older than the 14-day horizon (kept as late
#: events), inside it, today, ahead inside the 7 created days, and beyond them.
DAY_OFFSETS = (-400, -20, -13, -3, -1, 0, 3, 30)
SQL_PARTITIONS = """
SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'runstream_data.dedup_keys'::regclass ORDER BY 1
"""


@pytest.fixture(params=["partitioned", "timescaledb"])
async def new_dsn(request: pytest.FixtureRequest, db_factory: DbFactory) -> str:
    """A fresh, migrated database on each storage backend (TimescaleDB skipped where
    unavailable)."""
    dsn = await db_factory()
    if request.param == "timescaledb" and not await enable_timescaledb(dsn):
        pytest.skip("TimescaleDB is not available on this PostgreSQL")
    await migrate(dsn)
    return dsn


def events_on_days(run: str, offsets: tuple[int, ...] = DAY_OFFSETS,
                   per_day: int = 3) -> list[Event]:
    """``per_day`` metric events (10 points each, distinct steps) per day offset."""
    f = EventFactory(run)
    now = time.time_ns() // 1000
    out = []
    for k, offset in enumerate(offsets):
        for j in range(per_day):
            step0 = (k * per_day + j) * 10
            out.append(f.metrics(packed_series("loss", [float(step0)] * 10,
                                               steps=range(step0, step0 + 10)),
                                 ts_us=now + offset * DAY_US))
    return decoded(*out)


async def write(store: Store, events: list[Event]) -> int:
    result = await store.write_batch(Batch("t", "g", events=list(events)),
                                     send_dead_letters=no_dlq)
    return result.new_events


async def maintain(dsn: str, at: datetime | None = None) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow("SELECT * FROM runstream_data.maintain_dedup_keys($1)",
                                  at or datetime.now(UTC))
    finally:
        await conn.close()
    assert row is not None
    return dict(row)


async def partitions(dsn: str) -> list[str]:
    return [r["relname"] for r in await fetch(dsn, SQL_PARTITIONS)]


async def window(dsn: str) -> tuple[date, date]:
    (row,) = await fetch(dsn, "SELECT oldest, newest FROM runstream_data.dedup_window")
    return row["oldest"], row["newest"]


def day_names(oldest: date, newest: date) -> list[str]:
    return [f"dedup_keys_{oldest + timedelta(days=i):%Y%m%d}"
            for i in range((newest - oldest).days + 1)]


async def points(dsn: str) -> tuple[int, int]:
    (row,) = await fetch(dsn, "SELECT count(*) AS n, count(DISTINCT step) AS d "
                              "FROM runstream.metric_points")
    return row["n"], row["d"]


async def test_replays_of_events_of_any_day_are_stored_once(new_dsn: str) -> None:
    dsn = new_dsn
    events = events_on_days(run_id())
    async with Store(dsn=dsn) as a, Store(dsn=dsn) as b:
        assert await write(a, events) == len(events)
        # The same events again: alone, shuffled, split, and by two workers racing.
        assert await write(a, events) == 0
        shuffled = random.sample(events, len(events))
        results = await asyncio.gather(write(a, shuffled[:7]), write(b, shuffled[5:]),
                                       write(b, shuffled), write(a, events[::-1]))
        assert list(results) == [0, 0, 0, 0]
    assert await points(dsn) == (len(events) * 10, len(events) * 10)
    keys = await fetch(dsn, "SELECT day, count(*) AS n FROM runstream_data.dedup_keys "
                            "GROUP BY day ORDER BY day")
    oldest, newest = await window(dsn)
    today = datetime.now(UTC).date()
    assert all(oldest <= k["day"] <= newest for k in keys)
    # in-window events under their own day; the too-old and too-far-ahead under today
    by_day = {k["day"]: k["n"] for k in keys}
    assert by_day[today] == 4 * 3  # -400, -20, 0 and +30 days
    assert by_day[today - timedelta(days=13)] == 3


async def test_racing_first_writes_of_out_of_window_events_store_them_once(
    new_dsn: str,
) -> None:
    dsn = new_dsn
    events = events_on_days(run_id(), offsets=(-400, -30, 60), per_day=20)
    async with Store(dsn=dsn) as a, Store(dsn=dsn) as b:
        results = await asyncio.gather(*(write(store, random.sample(events, len(events)))
                                         for store in (a, b, a, b)))
    assert sorted(results) == [0, 0, 0, len(events)]
    assert await points(dsn) == (len(events) * 10, len(events) * 10)


async def test_maintenance_drops_whole_partitions_past_the_horizon_and_creates_ahead(
    new_dsn: str,
) -> None:
    dsn = new_dsn
    today = datetime.now(UTC).date()
    oldest, newest = await window(dsn)
    # defaults: Kafka retention 7 days + spool hold 7 days behind, 7 days ahead
    assert (oldest, newest) == (today - timedelta(days=14), today + timedelta(days=7))
    assert await partitions(dsn) == day_names(oldest, newest)
    run = run_id()
    events = events_on_days(run, offsets=(-13, -12, -1, 0, 3, -400), per_day=2)
    async with Store(dsn=dsn) as store:
        assert await write(store, events) == len(events)
        assert await maintain(dsn) == {"created": 0, "dropped": 0, "legacy_truncated": False}
        doomed = f"runstream_data.dedup_keys_{today - timedelta(days=13):%Y%m%d}"
        count = f"SELECT count(*) AS n FROM {doomed}"  # noqa: S608 - our own table name
        assert (await fetch(dsn, count))[0]["n"] == 2
        # Ten days later: the days older than 14 days before then go, 10 more come ahead.
        later = datetime.now(UTC) + timedelta(days=10)
        assert await maintain(dsn, later) == {
            "created": 10, "dropped": 10, "legacy_truncated": False}
        assert await maintain(dsn, later) == {
            "created": 0, "dropped": 0, "legacy_truncated": False}
        oldest, newest = await window(dsn)
        assert (oldest, newest) == (today - timedelta(days=4), today + timedelta(days=17))
        assert await partitions(dsn) == day_names(oldest, newest)
        (gone,) = await fetch(dsn, f"SELECT to_regclass('{doomed}') AS r")
        assert gone["r"] is None  # the relation itself is gone, not emptied
        # The keys of the kept days are all still there.
        kept = await fetch(dsn, "SELECT day FROM runstream_data.dedup_keys ORDER BY day")
        assert [k["day"] for k in kept] == sorted(
            [today - timedelta(days=1)] * 2 + [today] * 4 + [today + timedelta(days=3)] * 2)
        # Inside the window a replay is still exact (today's -400-day events too) ...
        inside = [e for e in events
                  if not _us(today - timedelta(days=300)) < e.ts_us < _us(today - timedelta(2))]
        assert len(inside) == 8
        assert await write(store, inside) == 0
        # ... and past the horizon, events whose keys were dropped are stored again.
        assert await write(store, events) == 4
    assert (await points(dsn))[0] == (len(events) + 4) * 10


def _us(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1_000_000)


async def test_several_workers_maintaining_at_once_while_writing_is_safe(new_dsn: str) -> None:
    dsn = new_dsn
    run = run_id()
    # days that stay inside the window as it moves 8 days on (and two outside it)
    events = events_on_days(run, offsets=(-400, -3, -1, 0, 3, 30), per_day=5)
    start = datetime.now(UTC)
    busy = 0
    async with Store(dsn=dsn) as store:
        async def maintainer(k: int) -> None:
            nonlocal busy
            for day in range(0, 9, 2):
                try:
                    await maintain(dsn, start + timedelta(days=day, hours=k))
                except asyncpg.exceptions.LockNotAvailableError:
                    busy += 1  # rolled back whole; the next call does it
                await store.maintain_dedup_keys()

        async def writer() -> list[int]:
            return [await write(store, random.sample(events, len(events))) for _ in range(8)]

        results = await asyncio.gather(*(maintainer(k) for k in range(6)), writer(), writer())
    written = [n for r in results if r for n in r]
    assert sum(written) == len(events)  # each event stored by exactly one write
    oldest, newest = await window(dsn)
    assert await partitions(dsn) == day_names(oldest, newest)
    assert newest >= (start + timedelta(days=8 + 7)).date() or busy
    assert (await points(dsn))[0] == len(events) * 10


async def test_keys_stored_before_the_migration_still_count_until_they_age_out(
    db_factory: DbFactory,
) -> None:
    dsn = await db_factory()
    old, new = [m for m in available_migrations() if m[0] < 11], [
        m for m in available_migrations() if m[0] >= 11]
    conn = await asyncpg.connect(dsn)
    try:
        # The database as 0010 left it, with keys the old batch write stored.
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
        await conn.execute("CREATE SCHEMA runstream_data; CREATE TABLE "
                           "runstream_data.schema_migrations (version integer PRIMARY KEY, "
                           "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
        for version, name, sql in old:
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO runstream_data.schema_migrations "
                                   "(version, name) VALUES ($1, $2)", version, name)
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
        events = events_on_days(run_id(), per_day=2)
        before = events[::2]
        await conn.execute(
            "INSERT INTO runstream_data.event_ids (event_id, run_id) "
            "SELECT * FROM unnest($1::uuid[], $2::text[]) ORDER BY 1 "
            "ON CONFLICT (event_id) DO NOTHING", [e.event_id for e in before],
            [e.run_id for e in before])
    finally:
        await conn.close()
    assert await migrate(dsn) == [v for v, _, _ in new]
    async with Store(dsn=dsn) as store:
        assert await write(store, events) == len(events) - len(before)
        assert await write(store, events) == 0
    # Once every old key is older than the window, the old table is emptied in one go.
    assert (await maintain(dsn))["legacy_truncated"] is False
    later = await maintain(dsn, datetime.now(UTC) + timedelta(days=16))
    assert later["legacy_truncated"] is True
    assert await fetch(dsn, "SELECT * FROM runstream_data.event_ids") == []


@pytest.mark.timeout(120)
async def test_the_worker_replays_events_of_every_day_once(
    stack: StackInfo, topic_factory: TopicFactory, new_db: NewDb, reliability: Reliability,
) -> None:
    topic, dsn = await topic_factory(partitions=3), await new_db()
    now = time.time_ns() // 1000
    messages = []
    for _ in range(3):
        f = EventFactory(run_id())
        messages += encoded(
            f.lifecycle("Running", compute_target="gpu"),
            *(f.metrics(packed_series("loss", [random.random()] * 50,
                                      steps=range(i * 50, i * 50 + 50)),
                        ts_us=now + offset * DAY_US)
              for i, offset in enumerate(DAY_OFFSETS)))
    duplicates = random.sample(messages, 10)
    expected = 3 * len(DAY_OFFSETS) * 50
    ends = await produce(stack.kafka_bootstrap, topic, messages + duplicates)
    async with worker(stack, topic, dsn) as group:
        await wait_for(stored_offsets_reach(dsn, topic, group, ends), what="first pass")
    first = await points(dsn)
    # A day later (the oldest day's keys dropped), a fresh group replays from offset 0.
    await maintain(dsn, datetime.now(UTC) + timedelta(days=1))
    async with worker(stack, topic, dsn) as group2:
        await wait_for(stored_offsets_reach(dsn, topic, group2, ends), what="replay")
    after = await points(dsn)
    (dups,) = await fetch(dsn, "SELECT count(*) AS n FROM (SELECT run_id, name, step FROM "
                               "runstream.metric_points GROUP BY 1, 2, 3 HAVING count(*) > 1) d")
    reliability.record(
        guarantee="inside the dedup horizon a replay is dropped exactly, whatever day the "
                  "event carries",
        faults=f"events stamped {', '.join(f'{d:+d}' for d in DAY_OFFSETS)} days from now, "
               f"{len(duplicates)} duplicate messages, maintenance a day later, then a fresh "
               f"consumer group from offset 0",
        events=len(messages), points=expected, lost=max(expected - after[0], 0),
        doubled=dups["n"] + max(after[0] - expected, 0), storage=await storage_backend(dsn),
        notes=f"{len(await partitions(dsn))} day partitions; "
              f"{first[0]:,} points after the first pass, {after[0]:,} after the replay")
    assert first == after == (expected, len(DAY_OFFSETS) * 50)
    assert dups["n"] == 0
