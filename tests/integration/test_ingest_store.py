"""The store on real PostgreSQL: migrations, races between workers, late data, merges."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import asyncpg
import pytest

from ingest.bench.events import EventFactory, packed_series
from ingest.db.migrate import available_migrations, migrate
from ingest.db.reads import ReadStore
from ingest.db.runstatus import STATUS_RANK, derive_status
from ingest.errors import StoreError
from ingest.worker.decode import DeadLetter, Event
from ingest.worker.store import Batch, Store
from tests.helpers import DbFactory
from tests.integration.helpers import decoded, enable_timescaledb, no_dlq

YEAR_US = 365 * 24 * 3600 * 1_000_000


@pytest.fixture(params=["partitioned", "timescaledb"])
async def new_dsn(request: pytest.FixtureRequest, db_factory: DbFactory) -> str:
    """A fresh database on each storage backend (TimescaleDB skipped where unavailable)."""
    dsn = await db_factory()
    if request.param == "timescaledb" and not await enable_timescaledb(dsn):
        pytest.skip("TimescaleDB is not available on this PostgreSQL")
    return dsn


async def rows(dsn: str, sql: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        return [dict(r) for r in await conn.fetch(sql)]
    finally:
        await conn.close()


async def test_migrate_is_idempotent_and_safe_to_run_concurrently(new_dsn: str) -> None:
    dsn = new_dsn
    results = await asyncio.gather(migrate(dsn), migrate(dsn), migrate(dsn))
    every = [version for version, _, _ in available_migrations()]
    assert every[:3] == [1, 2, 3]
    assert sorted(results) == [[], [], every]
    assert await migrate(dsn) == []
    (backend,) = await rows(dsn, "SELECT value FROM runstream_data.settings "
                                 "WHERE key = 'storage_backend'")
    ext = await rows(dsn, "SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")
    assert backend["value"] == ("timescaledb" if ext else "partitioned")


async def test_racing_workers_store_a_batch_once_and_offsets_only_move_forward(
    new_dsn: str,
) -> None:
    dsn = new_dsn
    await migrate(dsn)
    f = EventFactory("exp_1_race")
    events = decoded(*(f.metrics(packed_series("x", [float(i)] * 100,
                                               steps=range(i * 100, i * 100 + 100)))
                       for i in range(50)))
    async with Store(dsn=dsn) as a, Store(dsn=dsn) as b:
        results = await asyncio.gather(*(
            store.write_batch(Batch("t", "g", events=list(events), next_offsets={0: off}),
                              send_dead_letters=no_dlq)
            for store, off in ((a, 50), (b, 40), (a, 50), (b, 45))))
        assert sorted(r.new_events for r in results) == [0, 0, 0, 50]
        assert sum(r.points for r in results) == 5000
        assert await a.load_offsets("g", "t", [0, 1]) == {0: 50}
    (n,) = await rows(dsn, "SELECT count(*) AS n, count(DISTINCT step) AS d "
                           "FROM runstream.metric_points")
    assert n == {"n": 5000, "d": 5000}


async def test_late_and_far_future_points_are_placed_not_rejected(new_dsn: str) -> None:
    dsn = new_dsn
    await migrate(dsn)
    f = EventFactory("exp_1_late")
    now_us = 1_800_000_000_000_000
    times = [now_us - 40 * YEAR_US, now_us, now_us + 150 * YEAR_US]
    events = decoded(f.metrics(packed_series("t", [1.0, 2.0, 3.0], times_us=times)),
                     f.metrics(packed_series("t", [4.0], steps=[3], times_us=[times[0]])))
    async with Store(dsn=dsn) as store:
        await store.write_batch(Batch("t", "g", events=events), send_dead_letters=no_dlq)
        assert await store.ensure_partitions() >= 0  # upkeep still works with data in default
    got = await rows(dsn, "SELECT step, value, extract(epoch FROM time)::float8 AS t "
                          "FROM runstream.metric_points ORDER BY step")
    assert [(g["step"], g["value"]) for g in got] == [(0, 1.0), (1, 2.0), (2, 3.0), (3, 4.0)]
    assert [g["t"] for g in got[:3]] == [t / 1e6 for t in times]


PAYLOAD_STATS = """
WITH RECURSIVE under(oid) AS (
    SELECT 'runstream_data.metric_chunks'::regclass::oid
    UNION SELECT i.inhrelid FROM pg_inherits i JOIN under u ON i.inhparent = u.oid)
SELECT u.oid::regclass::text AS tbl, a.attname AS col, a.attstattarget AS target
FROM under u JOIN pg_attribute a ON a.attrelid = u.oid
WHERE a.attname IN ('steps', 'values', 'times', 'kinds', 'texts', 'run_id', 'name')
"""


async def test_payload_arrays_get_no_planner_statistics_on_any_partition_or_chunk(
    new_dsn: str,
) -> None:
    """Migration 0018: ANALYZE sorted every element of 30,000 sampled chunks' arrays
    (~35 s of CPU for a month's partition); the payload columns get no statistics on
    every partition or chunk, those made later too, while run_id and name keep theirs."""
    dsn = new_dsn
    await migrate(dsn)
    f = EventFactory("exp_1_stats")
    now_us = int(time.time() * 1e6)
    events = decoded(*(f.metrics(packed_series(f"m{i}", [float(j) for j in range(500)],
                                               times_us=[now_us + j for j in range(500)]))
                       for i in range(20)))
    conn = await asyncpg.connect(dsn)
    try:
        # A partition made later (plain PostgreSQL), or a chunk the batch makes
        # (TimescaleDB), starts with the default target: -1.
        await conn.fetchval("SELECT runstream_data.ensure_metric_partitions("
                            "now() + interval '5 months', now() + interval '7 months')")
        async with Store(dsn=dsn) as store:
            await store.write_batch(Batch("t", "g", events=events), send_dead_letters=no_dlq)
            before = await rows(dsn, PAYLOAD_STATS)
            assert {r["target"] for r in before if r["col"] == "steps"} >= {-1}
            await store.ensure_partitions()  # the workers' periodic upkeep
        after = await rows(dsn, PAYLOAD_STATS)
        tables = {r["tbl"] for r in after}
        assert len(tables) >= 3  # metric_chunks, its default and month partitions or chunks
        for r in after:
            assert r["target"] == (-1 if r["col"] in ("run_id", "name") else 0), r
        await conn.execute("ANALYZE runstream_data.metric_chunks")
        stats = {r["attname"] for r in await conn.fetch(
            "SELECT DISTINCT attname FROM pg_stats WHERE schemaname = 'runstream_data' "
            "AND tablename LIKE 'metric_chunks%'")}
        assert "name" in stats
        assert not stats & {"steps", "values", "times", "kinds", "texts"}, stats
        assert await conn.fetchval("SELECT runstream_data.quiet_metric_chunk_stats()") == 0
    finally:
        await conn.close()


async def test_tags_and_artifacts_keep_the_newest_write_across_batches(new_dsn: str) -> None:
    dsn = new_dsn
    await migrate(dsn)
    p, q = EventFactory("exp_1_tags"), EventFactory("exp_1_tags")
    first = p.tag("k", "one", seq=1, ts_us=500)
    second = p.tag("k", "two", seq=2, ts_us=100)  # clock went back; seq still orders
    other = q.tag("o", "late", ts_us=900)
    older_other = p.tag("o", "early", seq=3, ts_us=800)
    art_new = p.artifact("model.pkl", "b" * 64, 2, seq=5, ts_us=10)
    art_old = p.artifact("model.pkl", "a" * 64, 1, seq=4, ts_us=20)
    async with Store(dsn=dsn) as store:
        for batch in ([second, other, art_new], [first, older_other, art_old]):
            await store.write_batch(Batch("t", "g", events=decoded(*batch)),
                                    send_dead_letters=no_dlq)
    tags = await rows(dsn, "SELECT key, value FROM runstream.tags ORDER BY key")
    assert [(t["key"], t["value"]) for t in tags] == [("k", "two"), ("o", "late")]
    (art,) = await rows(dsn, "SELECT sha256 FROM runstream.artifacts")
    assert art["sha256"] == "b" * 64


async def test_metadata_edits_end_the_same_for_every_split_order_and_replay(
    new_dsn: str,
) -> None:
    """Tags with removals, properties (first write wins, the start's win over all),
    display name and description (newest wins) from three producers — one of them editing
    after the run ended — give one state however the events are split into batches,
    ordered, or delivered twice."""
    dsn = new_dsn
    await migrate(dsn)
    rng = random.Random(14)
    states = set()
    for attempt in range(6):
        run_id = f"exp_1_{attempt:08x}"
        a, b, c = (EventFactory(run_id) for _ in range(3))
        events = [
            a.lifecycle("Running", display_name="start", properties={"fixed": "s"}, ts_us=10),
            a.tag("k", "1", seq=1, ts_us=20),
            a.tag("k", None, target="untag", seq=2, ts_us=30),
            b.tag("k", "2", ts_us=25),              # older than a's removal: stays removed
            b.tag("gone", None, ts_us=26),
            c.tag("gone", None, target="untag", ts_us=27),
            b.tag("back", "x", ts_us=28),
            c.tag("back", None, target="untag", ts_us=29),
            a.tag("back", "y", seq=3, ts_us=31),    # tagged again after removal: back
            b.tag("p", "first", target="property", ts_us=40),
            c.tag("p", "second", target="property", ts_us=41),
            c.tag("fixed", "edited", target="property", ts_us=42),
            a.tag("display_name", "old", target="display_name", seq=4, ts_us=50),
            a.tag("display_name", "new", target="display_name", seq=5, ts_us=49),  # seq wins
            b.tag("description", "d1", target="description", ts_us=60),
            a.lifecycle("Completed", seq=6, ts_us=70),
            c.tag("description", "after the end", target="description", ts_us=80),
        ]
        for batch_id in range(len(events)):  # some delivered twice
            if rng.random() < 0.3:
                events.append(dict(events[batch_id]))
        rng.shuffle(events)
        cut = sorted(rng.sample(range(1, len(events)), 3))
        async with Store(dsn=dsn) as store:
            for lo, hi in zip([0, *cut], [*cut, len(events)], strict=True):
                await store.write_batch(Batch("t", "g", events=decoded(*events[lo:hi])),
                                        send_dead_letters=no_dlq)
        runs = await rows(dsn, "SELECT run_id, display_name, tags::text, properties::text, "
                               "description, status FROM runstream.runs")
        (run,) = [r for r in runs if r["run_id"] == run_id]
        tags = [t for t in await rows(dsn, "SELECT run_id, key, value FROM runstream.tags")
                if t["run_id"] == run_id]
        states.add((run["display_name"], run["tags"], run["properties"], run["description"],
                    run["status"], tuple(sorted((t["key"], t["value"]) for t in tags))))
    assert states == {("new", '{"back": "y"}', '{"p": "first", "fixed": "s"}', "after the end",
                       "Completed", (("back", "y"),))}


async def test_sql_status_rule_matches_python_for_every_split_and_order(new_dsn: str) -> None:
    dsn = new_dsn
    await migrate(dsn)
    statuses = list(STATUS_RANK)
    expected: dict[str, str] = {}
    batches: list[list[Event]] = [[], [], []]
    rng = random.Random(7)
    for i in range(60):
        f = EventFactory(f"exp_1_{i:08x}")
        picked = rng.sample(statuses, rng.randint(1, 4))
        seen = {s: rng.randint(1, 5) * 1_000_000 for s in picked}
        expected[f.run_id] = derive_status(seen)
        for ev in decoded(*(f.lifecycle(s, ts_us=t) for s, t in seen.items())):
            rng.choice(batches).append(ev)
    async with Store(dsn=dsn) as store:
        for batch in batches:
            rng.shuffle(batch)
            await store.write_batch(Batch("t", "g", events=batch), send_dead_letters=no_dlq)
    got = await rows(dsn, "SELECT run_id, status FROM runstream_data.runs")
    assert {g["run_id"]: g["status"] for g in got} == expected


async def test_a_higher_attempt_restarts_the_status_in_every_split_and_order(
    new_dsn: str,
) -> None:
    """Retries of a submitted run (Lifecycle.attempt): the status is that of the highest
    attempt's events alone, whatever the batching and order."""
    dsn = new_dsn
    await migrate(dsn)
    statuses = list(STATUS_RANK)
    expected: dict[str, tuple[str, int]] = {}
    batches: list[list[Event]] = [[], [], []]
    rng = random.Random(10)
    for i in range(60):
        f = EventFactory(f"exp_1_{i:08x}")
        events = [(attempt, status, rng.randint(1, 5) * 1_000_000)
                  for attempt in range(rng.randint(1, 3))
                  for status in rng.sample(statuses, rng.randint(1, 3))]
        top = max(a for a, _, _ in events)
        seen: dict[str, int] = {}
        for attempt, status, ts in events:
            if attempt == top:
                seen[status] = min(seen.get(status, ts), ts)
        expected[f.run_id] = (derive_status(seen), top)
        for ev in decoded(*(f.event("Lifecycle", {
                "status": s, "parent_run_id": None, "display_name": None,
                "compute_target": None, "error": "boom" if s == "Failed" else None,
                "properties": {}, "attempt": a}, ts_us=t) for a, s, t in events)):
            rng.choice(batches).append(ev)
    async with Store(dsn=dsn) as store:
        for batch in batches:
            rng.shuffle(batch)
            await store.write_batch(Batch("t", "g", events=batch), send_dead_letters=no_dlq)
    got = await rows(dsn, "SELECT run_id, status, attempt FROM runstream_data.runs")
    assert {g["run_id"]: (g["status"], g["attempt"]) for g in got} == expected


async def test_dead_letters_are_sent_once_even_when_replayed(new_dsn: str) -> None:
    dsn = new_dsn
    await migrate(dsn)
    sent: list[DeadLetter] = []

    async def dlq(dead: Sequence[DeadLetter]) -> None:
        sent.extend(dead)

    dead = [DeadLetter("t", 0, i, b"k", b"junk", "bad_magic", "x") for i in range(3)]
    async with Store(dsn=dsn) as store:
        for _ in range(2):
            await store.write_batch(Batch("t", "g", dead_letters=dead, next_offsets={0: 3}),
                                    send_dead_letters=dlq)
    assert [d.offset for d in sent] == [0, 1, 2]


async def test_failed_dlq_produce_rolls_the_whole_batch_back(new_dsn: str) -> None:
    dsn = new_dsn
    await migrate(dsn)

    async def broken(_: Sequence[DeadLetter]) -> None:
        raise ConnectionError("broker down")

    f = EventFactory("exp_1_dlqfail")
    batch = Batch("t", "g", events=decoded(f.heartbeat()),
                  dead_letters=[DeadLetter("t", 0, 1, None, b"x", "bad_magic", "x")],
                  next_offsets={0: 2})
    async with Store(dsn=dsn) as store:
        with pytest.raises(StoreError, match="broker down") as info:
            await store.write_batch(batch, send_dead_letters=broken)
        assert info.value.retriable
        assert await store.load_offsets("g", "t", [0]) == {}
    assert await rows(dsn, "SELECT * FROM runstream_data.dedup_keys") == []


async def test_retention_drops_only_old_metric_data(new_dsn: str) -> None:
    dsn = new_dsn
    await migrate(dsn)
    now_us = int(time.time() * 1e6)
    f = EventFactory("exp_1_retention")
    events = decoded(
        f.metrics(packed_series("old", [1.0, 2.0], times_us=[now_us - 3 * YEAR_US] * 2)),
        f.metrics(packed_series("new", [3.0], times_us=[now_us])))
    async with Store(dsn=dsn) as store:
        await store.write_batch(Batch("t", "g", events=events), send_dead_letters=no_dlq)
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT runstream_data.drop_metrics_older_than('1 year')") >= 1
    finally:
        await conn.close()
    left = await rows(dsn, "SELECT name, value FROM runstream.metric_points")
    assert left == [{"name": "new", "value": 3.0}]


async def test_queue_state_counts_and_wait_percentiles(new_dsn: str) -> None:
    dsn = new_dsn
    await migrate(dsn)
    now_us = int(time.time() * 1e6)
    s = 1_000_000
    events: list[Event] = []
    for i, wait_s in enumerate((2, 4, 6, 8)):  # left the queue: waits of 2..8 s
        f = EventFactory(f"exp_1_w{i}")
        events += decoded(f.lifecycle("Queued", compute_target="c", ts_us=now_us - 60 * s),
                          f.lifecycle("Running", ts_us=now_us - (60 - wait_s) * s),
                          f.heartbeat(ts_us=now_us))
    waiting = EventFactory("exp_1_waiting")
    events += decoded(waiting.lifecycle("Queued", compute_target="c", ts_us=now_us - 30 * s))
    done = EventFactory("exp_1_done")
    events += decoded(done.lifecycle("Running", compute_target="c", ts_us=now_us - 9 * s),
                      done.lifecycle("Completed", ts_us=now_us - 5 * s))
    async with Store(dsn=dsn) as store:
        await store.write_batch(Batch("t", "g", events=events), send_dead_letters=no_dlq)
    async with ReadStore(dsn=dsn) as reads:
        (q,) = await reads.queues()
        one = await reads.queue("c")
        assert one is not None
        assert replace(one, oldest_queued_age_s=None) == replace(q, oldest_queued_age_s=None)
        assert await reads.queue("nowhere") is None
    assert (q.compute_target, q.queued, q.preparing, q.running, q.not_responding) == (
        "c", 1, 0, 4, 0)
    assert q.oldest_queued_age_s is not None
    assert 29 < q.oldest_queued_age_s < 60
    assert q.queue_wait_p50_s == pytest.approx(5.0)
    assert q.queue_wait_p95_s == pytest.approx(7.7)
    assert (q.completed_1h, q.failed_1h, q.canceled_1h) == (1, 0, 0)
