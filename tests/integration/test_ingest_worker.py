"""The ingest worker against the real broker and database: every payload kind lands in
the views as sent, exactly once, through duplicates, replays, poison messages, lifecycle
events out of order, several workers and kill -9."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client import CollectorRegistry

from ingest.bench.events import EventFactory, packed_series
from ingest.settings import Secret
from ingest.worker.service import run_worker
from schemas.codec import Codec
from tests.helpers import StackInfo, TopicFactory, unique
from tests.integration.helpers import (
    NewDb,
    WorkerFactory,
    WorkerProcess,
    fetch,
    logged_url,
    run_id,
    stored_offsets_reach,
    wait_for,
)
from tests.reliability import BAD_INPUT, Reliability, storage_backend

CODEC = Codec()


async def produce(bootstrap: str, topic: str,
                  messages: Sequence[tuple[bytes | None, bytes]]) -> dict[int, int]:
    """Send and wait; returns, per partition written, the next offset after these messages."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                enable_idempotence=True, compression_type="lz4")
    await producer.start()
    try:
        futures = [await producer.send(topic, key=key, value=value) for key, value in messages]
        ends: dict[int, int] = {}
        for meta in await asyncio.gather(*futures):
            ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)
        return ends
    finally:
        await producer.stop()


def encoded(*events: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    return [(e["run_id"].encode(), CODEC.encode(e)) for e in events]


@asynccontextmanager
async def worker(stack: StackInfo, topic: str, dsn: str, *, group: str | None = None,
                 registry: CollectorRegistry | None = None) -> AsyncIterator[str]:
    settings = replace(stack.settings, topic=topic, kafka_bootstrap=stack.kafka_bootstrap,
                       db_dsn=Secret(dsn))
    group = group or unique("ingest-")
    stop = asyncio.Event()
    task = asyncio.create_task(run_worker(settings, dsn=dsn, group_id=group, stop=stop,
                                          registry=registry or CollectorRegistry(),
                                          metrics_port=None, handle_signals=False))
    try:
        yield group
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 60) == 0


BACKENDS = pytest.mark.parametrize("backend", ["partitioned", "timescaledb"])


async def snapshot(dsn: str) -> dict[str, list[str]]:
    """Every public view's rows, as sorted text, for before/after comparisons."""
    out = {}
    for view in ("runs", "metric_points", "lists", "table_cells", "artifacts", "tags",
                 "log_lines", "producers", "dead_letters"):
        rows = await fetch(dsn, f"SELECT t::text AS r FROM runstream.{view} t")  # noqa: S608
        out[view] = sorted(r["r"] for r in rows)
    return out


@BACKENDS
async def test_every_payload_kind_lands_in_the_views_as_sent(
    stack: StackInfo, topic_factory: TopicFactory, new_db: NewDb, backend: str
) -> None:
    topic, dsn = await topic_factory(partitions=3), await new_db(backend)
    rid = run_id("diabetes")
    f = EventFactory(rid, experiment="diabetes")
    t0 = 1_700_000_000_000_000
    events = [
        f.lifecycle("Running", display_name="ridge", compute_target="cpu-cluster",
                    properties={"alpha": "0.5"}, ts_us=t0),
        f.metrics(packed_series("loss", [0.5, math.nan, math.inf, -math.inf, 7, True, "warm"],
                                steps=[0, 1, 2, 3, 4, 5, 6],
                                times_us=[t0 + i for i in range(7)]), ts_us=t0 + 10),
        f.list_value("accuracies", [0.6, 0.7, 0.87, 2, False, "n/a"], ts_us=t0 + 20),
        f.row("Y over X", {"x": 1, "y": 0.4}, ts_us=t0 + 30),
        f.row("Y over X", {"x": 2, "y": 0.8}, ts_us=t0 + 40),
        f.table("Sine", {"angle": [0.0, 1.0], "sine": [0.0, 0.84]}, ts_us=t0 + 50),
        f.tag("selected", "yes", ts_us=t0 + 60),
        f.tag("baseline", ts_us=t0 + 70),
        f.artifact("outputs/model.pkl", "ab" * 32, 1234, ts_us=t0 + 80),
        f.artifact("ROC", "cd" * 32, 99, kind="IMAGE", content_type="image/png", ts_us=t0 + 90),
        f.log_lines("stdout", ["epoch 1", "epoch 2"], ts_us=t0 + 100),
        f.heartbeat(dropped_events=2, ts_us=t0 + 110),
        f.lifecycle("Completed", ts_us=t0 + 120),
    ]
    ends = await produce(stack.kafka_bootstrap, topic, encoded(*events))
    async with worker(stack, topic, dsn) as group:
        await wait_for(stored_offsets_reach(dsn, topic, group, ends),
                       what="the worker to store every message")

    (run,) = await fetch(dsn, "SELECT * FROM runstream.runs")
    assert run["run_id"] == rid
    assert run["experiment"] == "diabetes"
    assert run["display_name"] == "ridge"
    assert run["compute_target"] == "cpu-cluster"
    assert run["status"] == "Completed"
    assert run["parent_run_id"] is None
    assert run["started_at"].timestamp() == t0 / 1e6
    assert run["ended_at"].timestamp() == (t0 + 120) / 1e6
    assert run["dropped_events"] == 2
    assert run["tags"] == '{"baseline": null, "selected": "yes"}'
    points = await fetch(dsn, "SELECT step, value, value_text, kind, rank, time "
                              "FROM runstream.metric_points WHERE name = 'loss' ORDER BY step")
    values = [p["value"] for p in points]
    assert math.isnan(values[1])
    assert values[2] == math.inf
    assert values[3] == -math.inf
    assert [values[0], values[4], values[5], values[6]] == [0.5, 7.0, 1.0, None]
    assert [p["kind"] for p in points] == ["float"] * 4 + ["int", "bool", "str"]
    assert points[6]["value_text"] == "warm"
    assert [p["time"].timestamp() for p in points] == [(t0 + i) / 1e6 for i in range(7)]
    lst = await fetch(dsn, "SELECT value, value_text, kind FROM runstream.lists ORDER BY idx")
    assert [(r["value"], r["value_text"], r["kind"]) for r in lst] == [
        (0.6, None, "float"), (0.7, None, "float"), (0.87, None, "float"), (2.0, None, "int"),
        (0.0, None, "bool"), (None, "n/a", "str")]
    cells = await fetch(dsn, "SELECT name, row_index, column_name, value FROM "
                             "runstream.table_cells ORDER BY name, row_index, column_name")
    assert [(c["name"], c["row_index"], c["column_name"], c["value"]) for c in cells] == [
        ("Sine", 0, "angle", 0.0), ("Sine", 0, "sine", 0.0),
        ("Sine", 1, "angle", 1.0), ("Sine", 1, "sine", 0.84),
        ("Y over X", 0, "x", 1.0), ("Y over X", 0, "y", 0.4),
        ("Y over X", 1, "x", 2.0), ("Y over X", 1, "y", 0.8)]
    arts = await fetch(dsn, "SELECT name, kind, sha256, size_bytes, content_type "
                            "FROM runstream.artifacts ORDER BY name")
    assert [tuple(a.values()) for a in arts] == [
        ("ROC", "IMAGE", "cd" * 32, 99, "image/png"),
        ("outputs/model.pkl", "FILE", "ab" * 32, 1234, "application/octet-stream")]
    lines = await fetch(dsn, "SELECT stream, line FROM runstream.log_lines ORDER BY line_no")
    assert [(r["stream"], r["line"]) for r in lines] == [("stdout", "epoch 1"),
                                                         ("stdout", "epoch 2")]
    (prod,) = await fetch(dsn, "SELECT * FROM runstream.producers")
    assert prod["events"] == len(events)
    assert prod["missing_events"] == 0


@BACKENDS
async def test_duplicates_and_replay_from_offset_zero_change_nothing(
    stack: StackInfo, topic_factory: TopicFactory, new_db: NewDb, backend: str,
    reliability: Reliability,
) -> None:
    topic, dsn = await topic_factory(partitions=4), await new_db(backend)
    messages = []
    for r in range(6):
        f = EventFactory(run_id())
        messages += encoded(f.lifecycle("Running", compute_target="gpu"),
                            *(f.metrics(packed_series("loss", [random.random()] * 50,
                                                      steps=range(i * 50, i * 50 + 50)))
                              for i in range(5)),
                            f.tag("r", str(r)))
    # Producer retries and spool replays: the same bytes (same event_id) several times.
    duplicates = random.sample(messages, 15)
    ends = await produce(stack.kafka_bootstrap, topic, messages + duplicates + duplicates[:5])
    registry = CollectorRegistry()
    async with worker(stack, topic, dsn, registry=registry) as group:
        await wait_for(stored_offsets_reach(dsn, topic, group, ends),
                       what="first pass")
    assert registry.get_sample_value("runstream_duplicates_dropped_total") == 20
    assert registry.get_sample_value("runstream_points_persisted_total") == 6 * 5 * 50
    before = await snapshot(dsn)
    assert len(before["metric_points"]) == 6 * 5 * 50
    (dups,) = await fetch(dsn, "SELECT count(*) AS n FROM (SELECT run_id, name, step FROM "
                               "runstream.metric_points GROUP BY 1, 2, 3 HAVING count(*) > 1) d")
    assert dups["n"] == 0

    # A fresh consumer group reads the whole topic again from offset 0.
    async with worker(stack, topic, dsn) as group2:
        await wait_for(stored_offsets_reach(dsn, topic, group2, ends),
                       what="replay")
    after = await snapshot(dsn)
    reliability.record(
        guarantee="replaying the topic from offset 0 changes nothing; duplicate event ids "
                  "are dropped (inside the dedup horizon: 14 days of the events' own time)",
        faults=f"{len(duplicates) + 5} duplicate messages (same event ids), then a fresh "
               f"consumer group from offset 0",
        events=len(messages), points=6 * 5 * 50,
        lost=max(6 * 5 * 50 - len(before["metric_points"]), 0), doubled=dups["n"],
        storage=await storage_backend(dsn),
        notes=f"{registry.get_sample_value('runstream_duplicates_dropped_total') or 0:.0f} "
              f"duplicates dropped; every view "
              f"{'identical' if after == before else 'DIFFERENT'} after the replay",
        views_identical=after == before)
    assert after == before


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


async def test_poison_messages_go_to_the_dlq_and_neighbours_stay_intact(
    stack: StackInfo, topic_factory: TopicFactory, new_db: NewDb,
    reliability: Reliability,
) -> None:
    topic, dsn = await topic_factory(partitions=1), await new_db()
    f = EventFactory(run_id())
    good = [f.metrics(packed_series("m", [float(i)], steps=[i])) for i in range(6)]
    bad_arrays = f.metrics(packed_series("m", [1.0, 2.0]))
    bad_arrays["payload"][1]["series"][0]["values"] = b"\x00" * 8  # 2 steps, 1 value
    empty_name = f.metrics(packed_series("", [1.0]))
    bad_uuid = f.metrics(packed_series("m", [1.0]))
    bad_uuid["event_id"] = "not-a-uuid"
    unknown_id = b"\x00\x00\x00\x00\x63" + CODEC.encode(good[0])[5:]
    key = f.run_id.encode()
    poison: list[tuple[bytes, str]] = [
        (os.urandom(64), "bad_magic"),
        (unknown_id, "unknown_schema_id"),
        (_truncated(CODEC.encode(good[0])), "bad_avro"),
        (CODEC.encode(bad_arrays), "invalid_value"),
        (CODEC.encode(empty_name), "invalid_value"),
        (CODEC.encode(bad_uuid), "invalid_value"),
    ]
    poison[0] = (b"\x01" + poison[0][0][1:], "bad_magic")
    messages: list[tuple[bytes | None, bytes]] = []
    for (g_key, g_val), (p_val, _) in zip(encoded(*good), poison, strict=True):
        messages += [(g_key, g_val), (key, p_val)]
    ends = await produce(stack.kafka_bootstrap, topic, messages)
    registry = CollectorRegistry()
    async with worker(stack, topic, dsn, registry=registry) as group:
        await wait_for(stored_offsets_reach(dsn, topic, group, ends),
                       what="poison to be handled")

    points = await fetch(dsn, "SELECT step, value FROM runstream.metric_points ORDER BY step")
    assert [(p["step"], p["value"]) for p in points] == [(i, float(i)) for i in range(6)]
    dead = await fetch(dsn, 'SELECT "offset", reason FROM runstream.dead_letters ORDER BY 1')
    stored = [(p["step"], p["value"]) for p in points]
    reasons = Counter(reason for _, reason in poison)
    reliability.record(
        guarantee="random bytes, unknown schema id, truncated Avro, invalid values go to the "
                  "dead-letter topic with `reason` and source topic/partition/offset; "
                  "neighbours intact",
        faults=f"{len(poison)} poison messages between {len(good)} good ones on one partition: "
               + ", ".join(f"{r} x{n}" if n > 1 else r for r, n in reasons.items()),
        events=len(messages), points=len(good),
        lost=len({(i, float(i)) for i in range(len(good))} - set(stored)),
        doubled=len(stored) - len(set(stored)), storage=await storage_backend(dsn),
        notes=f"{len(dead)} dead-lettered ({', '.join(sorted({d['reason'] for d in dead}))})",
        section=BAD_INPUT, dead_letters=len(dead))
    assert [(d["offset"], d["reason"]) for d in dead] == [
        (2 * i + 1, reason) for i, (_, reason) in enumerate(poison)]
    for reason in ("bad_magic", "unknown_schema_id", "bad_avro"):
        assert registry.get_sample_value("runstream_dead_letters_total", {"reason": reason}) == 1
    assert registry.get_sample_value("runstream_dead_letters_total",
                                     {"reason": "invalid_value"}) == 3

    consumer = AIOKafkaConsumer(f"{topic}.dlq", bootstrap_servers=stack.kafka_bootstrap,
                                auto_offset_reset="earliest", group_id=unique("dlq-"))
    await consumer.start()
    try:
        got: list[Any] = []
        while len(got) < len(poison):
            batch = await consumer.getmany(timeout_ms=2000)
            assert batch, "dead letters did not arrive"
            for msgs in batch.values():
                got += msgs
    finally:
        await consumer.stop()
    got.sort(key=lambda m: int(dict(m.headers)["source_offset"]))
    for msg, (value, reason), i in zip(got, poison, range(len(poison)), strict=True):
        headers = {k: v.decode() for k, v in msg.headers}
        assert headers["reason"] == reason
        assert headers["source_topic"] == topic
        assert headers["source_partition"] == "0"
        assert headers["source_offset"] == str(2 * i + 1)
        assert msg.value == value
        assert msg.key == key


async def test_lifecycle_out_of_order_gives_final_status_and_queue_counts(
    stack: StackInfo, topic_factory: TopicFactory, new_db: NewDb,
    reliability: Reliability,
) -> None:
    topic, dsn = await topic_factory(partitions=3), await new_db()
    t0 = 1_700_000_000_000_000
    s = 1_000_000
    plans = {  # final status → the lifecycle it went through (seconds after t0)
        "Completed": [("NotStarted", 0), ("Queued", 1), ("Preparing", 5), ("Running", 7),
                      ("Finalizing", 20), ("Completed", 21)],
        "Failed": [("Queued", 1), ("Running", 3), ("Failed", 9)],
        "Canceled": [("Queued", 1), ("CancelRequested", 2), ("Canceled", 4)],
        "Queued": [("NotStarted", 0), ("Queued", 2)],
        "Preparing": [("Queued", 1), ("Preparing", 4)],
    }
    messages = []
    runs: dict[str, str] = {}
    for final, steps in plans.items():
        f = EventFactory(run_id())
        runs[f.run_id] = final
        evs = [f.lifecycle(st, compute_target="cluster-a" if i == 0 else None,
                           error="boom" if st == "Failed" else None, ts_us=t0 + at * s)
               for i, (st, at) in enumerate(steps)]
        if final == "Completed":
            evs.append(f.lifecycle("Failed", error="late", ts_us=t0 + 30 * s))  # after terminal
        random.shuffle(evs)
        messages += encoded(*evs)
    now_run = EventFactory(run_id())
    runs[now_run.run_id] = "Running"
    messages += encoded(now_run.heartbeat(), now_run.lifecycle("Running",
                                                               compute_target="cluster-a"))
    stale = EventFactory(run_id())
    runs[stale.run_id] = "NotResponding"
    messages += encoded(stale.lifecycle("Running", compute_target="cluster-a", ts_us=t0))
    random.shuffle(messages)
    ends = await produce(stack.kafka_bootstrap, topic, messages)
    async with worker(stack, topic, dsn) as group:
        await wait_for(stored_offsets_reach(dsn, topic, group, ends),
                       what="lifecycle events")

    rows = await fetch(dsn, "SELECT run_id, status, error, queued_at FROM runstream.runs")
    (q,) = await fetch(dsn, "SELECT * FROM runstream.compute_targets")
    statuses = {r["run_id"]: r["status"] for r in rows}
    reliability.record(
        guarantee="lifecycle events in any order give the same final status and queue counts",
        faults=f"the lifecycle events of {len(runs)} runs shuffled, a Failed after Completed, "
               f"a Running run without heartbeats",
        events=len(messages), storage=await storage_backend(dsn),
        notes=f"{sum(statuses.get(r) != st for r, st in runs.items())} of {len(runs)} final "
              f"statuses wrong; queue (queued, preparing, running, not responding) = "
              f"{(q['queued'], q['preparing'], q['running'], q['not_responding'])}",
        section=BAD_INPUT)
    assert {r["run_id"]: r["status"] for r in rows} == runs
    errors = {r["status"]: r["error"] for r in rows}
    assert errors["Failed"] == "boom"
    assert errors["Completed"] is None
    assert q["compute_target"] == "cluster-a"
    assert (q["queued"], q["preparing"], q["running"], q["not_responding"]) == (1, 1, 2, 1)
    assert q["oldest_queued_at"].timestamp() == (t0 + 2 * s) / 1e6
    # queue waits (queued → preparing/running): 4 s, 2 s, 3 s (Canceled never left)
    assert q["queue_wait_p50_s"] is None  # all of them left the queue long ago (t0 is 2023)


async def test_workers_sharing_a_group_store_everything_once(
    stack: StackInfo, topic_factory: TopicFactory, new_db: NewDb,
    reliability: Reliability,
) -> None:
    topic, dsn = await topic_factory(partitions=6), await new_db()
    group = unique("shared-")
    factories = [EventFactory(run_id(), rank=r % 2) for r in range(12)]

    def chunk(i: int) -> list[tuple[bytes, bytes]]:
        return encoded(*(f.metrics(packed_series("x", [1.0] * 100, steps=range(i * 100,
                                                                                i * 100 + 100)))
                         for f in factories))

    async with worker(stack, topic, dsn, group=group):
        await produce(stack.kafka_bootstrap, topic, [m for i in range(5) for m in chunk(i)])
        async with worker(stack, topic, dsn, group=group):  # joins: a rebalance mid-stream
            await produce(stack.kafka_bootstrap, topic,
                          [m for i in range(5, 10) for m in chunk(i)])
            await asyncio.sleep(2)
        # one key per run: the last produce reaches every partition the others did
        ends = await produce(stack.kafka_bootstrap, topic,
                             [m for i in range(10, 15) for m in chunk(i)])
        await wait_for(stored_offsets_reach(dsn, topic, group, ends),
                       what="both workers")
    (row,) = await fetch(dsn, "SELECT count(*) AS n, count(DISTINCT (run_id, step)) AS d "
                              "FROM runstream.metric_points")
    reliability.record(
        guarantee="two workers in one group store everything once",
        faults="a second worker joins the group mid-stream and leaves (two rebalances)",
        events=12 * 15, points=12 * 15 * 100, lost=12 * 15 * 100 - row["d"],
        doubled=row["n"] - row["d"], storage=await storage_backend(dsn))
    assert row["n"] == row["d"] == 12 * 15 * 100


async def test_kill_9_mid_stream_loses_and_doubles_nothing(
    stack: StackInfo, topic_factory: TopicFactory, new_db: NewDb,
    worker_procs: WorkerFactory, reliability: Reliability,
) -> None:
    topic, dsn = await topic_factory(partitions=4), await new_db()
    group = unique("crash-")

    def start_worker() -> WorkerProcess:
        return worker_procs.start(bootstrap=stack.kafka_bootstrap, topic=topic, dsn=dsn,
                                  group=group)

    factories = [EventFactory(run_id()) for _ in range(8)]
    per_event = 250
    sent_points = 0
    ends: dict[int, int] = {}
    feeding = asyncio.Event()
    feeding.set()

    async def producing() -> None:
        nonlocal sent_points
        for i in range(3000):  # bounded; stopped much earlier
            if not feeding.is_set():
                return
            batch = encoded(*(f.metrics(packed_series(
                "loss", [random.random() for _ in range(per_event)],
                steps=range(i * per_event, (i + 1) * per_event))) for f in factories))
            ends.update(await produce(stack.kafka_bootstrap, topic, batch))
            sent_points += len(factories) * per_event
            await asyncio.sleep(0.05)

    async def stored_points() -> int:
        (row,) = await fetch(dsn, "SELECT coalesce(sum(n), 0) AS n "
                                  "FROM runstream_data.metric_chunks")
        return int(row["n"])

    feeder = asyncio.create_task(producing())
    proc = start_worker()
    kills = 0
    try:
        seen = 0

        async def progressed() -> bool:
            return await stored_points() > seen

        for _ in range(4):
            seen = await stored_points()
            await wait_for(progressed, timeout_s=90, what="the worker to make progress")
            await asyncio.sleep(random.uniform(0.0, 0.3))  # somewhere inside a batch
            proc.kill9()
            kills += 1
            proc = start_worker()
        seen = await stored_points()
        await wait_for(progressed, timeout_s=90, what="the last worker to make progress")
        feeding.clear()
        await feeder
        await wait_for(stored_offsets_reach(dsn, topic, group, ends), timeout_s=120,
                       what="the restarted worker to catch up")
    finally:
        feeding.clear()
    assert kills == 4
    assert proc.stop() == 0, proc.output()
    (row,) = await fetch(dsn, "SELECT count(*) AS n, count(DISTINCT (run_id, step)) AS d "
                              "FROM runstream.metric_points")
    reliability.record(
        guarantee="a worker killed with raw events in flight redoes its batch from the "
                  "stored offsets",
        faults=f"`kill -9` of the worker x{kills} (each right after it stored more), then "
               f"SIGTERM",
        events=sum(ends.values()), points=sent_points, lost=sent_points - row["d"],
        doubled=row["n"] - row["d"], storage=await storage_backend(dsn), kills=kills)
    assert sent_points > 0
    assert row["n"] == row["d"] == sent_points


async def test_an_event_the_database_rejects_is_dead_lettered_not_stalling(
    stack: StackInfo, topic_factory: TopicFactory, new_db: NewDb,
    reliability: Reliability,
) -> None:
    topic, dsn = await topic_factory(partitions=1), await new_db()
    conn = await asyncpg.connect(dsn)
    try:  # a rule the decoder does not know about, enforced by the database itself
        await conn.execute("ALTER TABLE runstream_data.tags "
                           "ADD CONSTRAINT no_forbidden CHECK (key <> 'forbidden')")
    finally:
        await conn.close()
    f = EventFactory(run_id())
    ends = await produce(stack.kafka_bootstrap, topic, encoded(
        f.tag("fine", "1"), f.tag("forbidden", "x"), f.metrics(packed_series("m", [1.0, 2.0]))))
    registry = CollectorRegistry()
    async with worker(stack, topic, dsn, registry=registry) as group:
        await wait_for(stored_offsets_reach(dsn, topic, group, ends), what="the split batch")
    tags = await fetch(dsn, "SELECT key FROM runstream.tags")
    points = await fetch(dsn, "SELECT * FROM runstream.metric_points")
    dead = await fetch(dsn, 'SELECT "offset", reason FROM runstream.dead_letters')
    reliability.record(
        guarantee="an event the database rejects is dead-lettered, the partition keeps flowing",
        faults="a CHECK constraint the decoder does not know rejects the middle of 3 events",
        events=3, points=2, lost=max(2 - len(points), 0), doubled=max(len(points) - 2, 0),
        storage=await storage_backend(dsn),
        notes=f"{len(dead)} dead-lettered ({', '.join(d['reason'] for d in dead)}); tags "
              f"stored: {', '.join(t['key'] for t in tags)}",
        section=BAD_INPUT, dead_letters=len(dead))
    assert [t["key"] for t in tags] == ["fine"]
    assert len(points) == 2
    assert [(d["offset"], d["reason"]) for d in dead] == [(1, "store_rejected")]
    assert registry.get_sample_value("runstream_dead_letters_total",
                                     {"reason": "store_rejected"}) == 1


async def test_worker_serves_prometheus_metrics(
    stack: StackInfo, topic_factory: TopicFactory, new_db: NewDb,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ingest.server")
    topic, dsn = await topic_factory(partitions=2), await new_db()
    f = EventFactory(run_id())
    good = encoded(f.lifecycle("Queued", compute_target="tpu-pod"),
                   f.metrics(packed_series("m", [1.0] * 10)))
    ends = await produce(stack.kafka_bootstrap, topic, [*good, (b"k", b"garbage")])
    settings = replace(stack.settings, topic=topic, db_dsn=Secret(dsn))
    stop = asyncio.Event()
    group = unique("metrics-")
    # Port 0: the worker binds a free port itself and logs which one it got.
    task = asyncio.create_task(run_worker(settings, dsn=dsn, group_id=group, stop=stop,
                                          registry=CollectorRegistry(), metrics_port=0,
                                          handle_signals=False))
    try:
        metrics = f"{await logged_url(caplog, 'metrics', task)}/metrics"
        await wait_for(stored_offsets_reach(dsn, topic, group, ends), what="the events")
        async with aiohttp.ClientSession() as http:
            async def scraped() -> bool:
                async with http.get(metrics) as resp:
                    assert resp.status == 200
                    text = await resp.text()
                return "runstream_log_to_commit_seconds_count 2.0" in text

            await wait_for(scraped, timeout_s=30, what="the worker's metrics")
            async with http.get(metrics) as resp:
                text = await resp.text()
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 60) == 0
    assert "runstream_events_consumed_total 3.0" in text
    assert "runstream_points_persisted_total 10.0" in text
    assert 'runstream_dead_letters_total{reason="bad_magic"} 1.0' in text
    assert "runstream_consumer_lag{partition=" in text
    assert "runstream_log_to_commit_seconds_count 2.0" in text
    assert "run_id" not in text
    # Queue gauges are the API's alone (one process), never a worker's.
    assert "runstream_queue_runs" not in text
