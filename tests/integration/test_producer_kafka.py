"""The SDK against the real broker: what it logs is what a standard consumer reads.

Each test logs through ``producer`` into its own topic, consumes that topic from the
start with aiokafka and decodes every message with ``schemas.codec.Codec``.
"""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import textwrap
import time
from array import array
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from producer import Experiment, ProducerOptions, Run, Workspace, sync
from producer._spool import list_segments, parse
from schemas.codec import Codec
from tests.helpers import StackInfo, TopicFactory, run_points

pytestmark = pytest.mark.integration

CODEC = Codec()
NO_API = "http://127.0.0.1:9"


async def consume(bootstrap: str, topic: str, expected: int, timeout_s: float = 60.0) -> list[Any]:
    """Every message of ``topic`` from offset 0: at least ``expected``, then until idle."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    messages: list[Any] = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(messages) < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                messages.extend(records)
        # Anything beyond the expected count (e.g. a duplicate) shows up before the topic idles.
        while batches := await consumer.getmany(timeout_ms=1000):
            for records in batches.values():
                messages.extend(records)
    finally:
        await consumer.stop()
    return messages


def payloads(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e["payload"][1] for e in events if e["payload"][0] == kind]


@pytest.mark.parametrize("compression", ["lz4", "zstd"])
async def test_every_call_arrives_exactly_as_logged(
    stack: StackInfo, topic_factory: TopicFactory, tmp_path: Path, compression: str
) -> None:
    topic = await topic_factory(partitions=6)
    ws = Workspace(
        kafka_bootstrap=stack.kafka_bootstrap,
        topic=topic,
        home=tmp_path,
        api_url=NO_API,
        options=ProducerOptions(compression=compression),
    )
    n = 30_000

    def train() -> tuple[Run, Run]:
        with Experiment(ws, "diabetes").start_logging(display_name="ridge") as run:
            for i in range(n):
                run.log("loss", 1.0 / (i + 1))
            run.log("alpha", 0.5)
            run.log("loss_at", 0.31, step=120)
            for value in (math.nan, math.inf, -math.inf, 7, True, "warm start"):
                run.log("odd", value)
            run.log_list("accuracies", [0.6, 0.7, 0.87])
            run.log_row("Y over X", x=1, y=0.4)
            run.log_table("Sine", {"angle": [0.0, 0.5], "sine": [0.0, 0.479]})
            run.tag("selected", "yes")
            run.tag("baseline")
            child = run.child_run("fold-1")
            child.log("mse", 3.1)
            child.parent.log("best", 3.1)  # type: ignore[union-attr]
            child.complete()
        run.flush(30.0)
        return run, child

    run, child = await asyncio.to_thread(train)
    stats = ws.stats()
    await asyncio.to_thread(ws.close, 10.0)
    assert stats.events_spooled == stats.events_dropped == 0

    messages = await consume(stack.kafka_bootstrap, topic, stats.events_sent)
    events = [CODEC.decode(m.value) for m in messages]
    assert len(events) == stats.events_sent
    assert len({e["event_id"] for e in events}) == len(events)

    # Keyed by run id: one run, one partition; one producer's events in seq order.
    for m, e in zip(messages, events, strict=True):
        assert m.key == e["run_id"].encode()
    assert len({m.partition for m in messages if m.key == run.id.encode()}) == 1
    by_producer: dict[str, list[int]] = defaultdict(list)
    for e in events:
        by_producer[e["producer_id"]].append(e["seq"])
    assert set(by_producer) == {run.producer_id, child.producer_id}
    assert all(seqs == list(range(len(seqs))) for seqs in by_producer.values())

    points = run_points(events, run.id)
    assert points["loss"] == [(i, 1.0 / (i + 1)) for i in range(n)]
    assert points["alpha"] == [(0, 0.5)]
    assert points["loss_at"] == [(120, 0.31)]
    odd = [v for _, v in points["odd"]]
    assert math.isnan(odd[0])
    assert odd[1:] == [math.inf, -math.inf, 7, True, "warm start"]
    assert [type(v) for v in odd[3:]] == [int, bool, str]
    assert points["best"] == [(0, 3.1)]
    assert run_points(events, child.id) == {"mse": [(0, 3.1)]}

    mine = [e for e in events if e["run_id"] == run.id]
    assert payloads(mine, "ListValue") == [{"name": "accuracies", "values": [0.6, 0.7, 0.87]}]
    assert payloads(mine, "Row") == [
        {"name": "Y over X", "cells": [{"column": "x", "value": 1}, {"column": "y", "value": 0.4}]}
    ]
    assert payloads(mine, "Table")[0]["columns"][1] == {"name": "sine", "values": [0.0, 0.479]}
    assert payloads(mine, "Tag") == [
        {"key": "selected", "value": "yes", "target": "tag", "value_type": "str"},
        {"key": "baseline", "value": None, "target": "tag", "value_type": "str"},
    ]
    statuses = [p["status"] for p in payloads(mine, "Lifecycle")]
    assert statuses == ["NotStarted", "Running", "Finalizing", "Completed"]
    assert payloads(mine, "Lifecycle")[0]["display_name"] == "ridge"
    child_first = payloads([e for e in events if e["run_id"] == child.id], "Lifecycle")[0]
    assert (child_first["parent_run_id"], child_first["display_name"]) == (run.id, "fold-1")


async def test_unreachable_broker_spools_fast_then_sync_delivers_original_events(
    stack: StackInfo, topic_factory: TopicFactory, tmp_path: Path, closed_port: int
) -> None:
    topic = await topic_factory(partitions=3)
    offline = Workspace(
        kafka_bootstrap=f"127.0.0.1:{closed_port}", topic=topic, home=tmp_path, api_url=NO_API
    )
    n = 50_000

    def train_offline() -> tuple[Run, list[int]]:
        latencies = []
        with Experiment(offline, "offline").start_logging() as run:
            for i in range(n):
                started = time.perf_counter_ns()
                run.log("loss", float(i))
                latencies.append(time.perf_counter_ns() - started)
            run.tag("offline", "yes")
        offline.close(10.0)
        return run, sorted(latencies)

    run, latencies = await asyncio.to_thread(train_offline)
    assert latencies[-1] < 50_000_000  # no call over 50 ms with the broker unreachable
    assert latencies[len(latencies) // 2] < 50_000  # and the typical call stays in µs
    stats = offline.stats()
    assert stats.events_sent == 0
    assert stats.events_dropped == 0
    spooled = [
        CODEC.decode(value)
        for path in list_segments(offline.spool_dir)
        for _, value in parse(path.read_bytes())[0]
    ]
    assert len(spooled) == stats.events_spooled > 0

    online = Workspace(
        kafka_bootstrap=stack.kafka_bootstrap, topic=topic, home=tmp_path, api_url=NO_API
    )
    result = await asyncio.to_thread(sync, online)
    assert result.complete
    assert result.events_sent == len(spooled)
    assert list_segments(online.spool_dir) == []

    events = [
        CODEC.decode(m.value) for m in await consume(stack.kafka_bootstrap, topic, len(spooled))
    ]
    assert [(e["event_id"], e["seq"]) for e in events] == [
        (e["event_id"], e["seq"]) for e in spooled
    ]
    assert run_points(events, run.id)["loss"] == [(i, float(i)) for i in range(n)]
    assert [p["status"] for p in payloads(events, "Lifecycle")][-1] == "Completed"


RANK_SCRIPT = textwrap.dedent(
    """
    from producer import Run
    run = Run.get_context()
    for i in range(5000):
        run.log("loss", i / 10)
    run.log_row("rank", value=run.rank)
    # No flush or close: the atexit hook delivers within its timeout.
    """
)


async def test_ranks_of_a_launched_job_log_into_one_run(
    stack: StackInfo, topic_factory: TopicFactory, tmp_path: Path
) -> None:
    topic = await topic_factory(partitions=6)
    run_id = "mnist_1700000000_0a1b2c3d"
    env = {
        **os.environ,
        "RUNSTREAM_KAFKA": stack.kafka_bootstrap,
        "RUNSTREAM_TOPIC": topic,
        "RUNSTREAM_HOME": str(tmp_path),
        "RUNSTREAM_API": NO_API,
        "RUNSTREAM_RUN_ID": run_id,
        "RUNSTREAM_WORLD_SIZE": "2",
    }

    def launch() -> None:
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", RANK_SCRIPT], env={**env, "RUNSTREAM_RANK": str(rank)}
            )
            for rank in range(2)
        ]
        assert [p.wait(timeout=120) for p in procs] == [0, 0]

    await asyncio.to_thread(launch)
    # Both processes have exited: all they logged is on the topic (Running, batches, Row).
    messages = await consume(stack.kafka_bootstrap, topic, expected=6, timeout_s=30.0)
    events = [CODEC.decode(m.value) for m in messages]

    assert {e["run_id"] for e in events} == {run_id}
    producers = {e["producer_id"]: e["rank"] for e in events}
    assert sorted(producers.values()) == [0, 1]
    for producer_id in producers:
        seqs = [e["seq"] for e in events if e["producer_id"] == producer_id]
        assert seqs == list(range(len(seqs)))
    per_rank: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for e in events:
        if e["payload"][0] == "MetricBatch":
            for s in e["payload"][1]["series"]:
                per_rank[e["rank"]] += list(
                    zip(array("q", s["steps"]), array("d", s["values"]), strict=True)
                )
    expected = [(i, i / 10) for i in range(5000)]
    assert per_rank == {0: expected, 1: expected}
    rows = sorted(p["cells"][0]["value"] for p in payloads(events, "Row"))
    assert rows == [0, 1]
    assert list_segments(tmp_path / "spool" / "events") == []
