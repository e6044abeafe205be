"""End to end through the real SDK while things fail: the ingest worker killed with
SIGKILL again and again, and a (private) broker killed and restarted mid-run. Nothing
may be lost or doubled, and logging never waits on either.

A logging script (a real process, like a training job) logs until the test tells it to
stop through a file, timing every ``log`` call; it prints what it logged as JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ingest.bench.ledger import LedgerResult, compare
from ingest.stack.kafka import KafkaNode, ensure_topics, kafka_version, pom_path, topic_ends
from tests.conftest import DbFactory, StackInfo, TopicFactory, unique
from tests.integration.conftest import (
    WorkerFactory,
    WorkerProcess,
    fetch,
    free_port,
    new_db,
    stored_offsets_reach,
    wait_for,
)
from tests.reliability import Reliability, storage_backend

pytestmark = pytest.mark.integration

LOGGING_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time
    from producer import Experiment, Workspace

    stop_file = sys.argv[1]
    ws = Workspace.from_env()
    exp = Experiment(ws, "faults")
    parent = exp.start_logging(display_name="parent", outputs_dir=None)
    runs = [parent, parent.child_run("child")]
    slowest_s = 0.0
    calls = 0
    i = 0
    clock = time.perf_counter
    while not os.path.exists(stop_file):
        for _ in range(50):
            for run in runs:
                t0 = clock()
                run.log("loss", i / 4)
                t1 = clock()
                run.log("acc", -i, step=2 * i)
                t2 = clock()
                slowest_s = max(slowest_s, t1 - t0, t2 - t1)
                calls += 2
            i += 1
        time.sleep(0.02)
    stopped_at = clock()
    for run in reversed(runs):
        run.complete()
    ws.flush(90.0)
    flush_s = clock() - stopped_at
    stats = ws.stats()
    print(json.dumps({"iterations": i, "log_calls": calls, "slowest_log_ms": slowest_s * 1e3,
                      "run_ids": [r.id for r in runs], "spooled": stats.events_spooled,
                      "replayed": stats.events_replayed, "dropped": stats.events_dropped,
                      "flush_s": round(flush_s, 2)}))
    ws.close(10.0)
    """
)


@dataclass
class LoggingJob:
    proc: subprocess.Popen[bytes]
    stop_file: Path
    out: Path

    def finish(self, timeout_s: float = 120.0) -> dict[str, Any]:
        """Tell the script to stop; its report once it has delivered everything and exited."""
        self.stop_file.touch()
        assert self.proc.wait(timeout=timeout_s) == 0, self.out.read_text()
        report: dict[str, Any] = json.loads(self.out.read_text().strip().splitlines()[-1])
        return report


@contextmanager
def logging_job(tmp_path: Path, *, bootstrap: str, topic: str,
                api_url: str) -> Iterator[LoggingJob]:
    env = {**os.environ, "RUNSTREAM_KAFKA": bootstrap, "RUNSTREAM_TOPIC": topic,
           "RUNSTREAM_API": api_url, "RUNSTREAM_HOME": str(tmp_path / "sdk")}
    out = tmp_path / "job.out"
    with out.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-c", LOGGING_SCRIPT, str(tmp_path / "stop")],
                                cwd=tmp_path, env=env, stdout=sink, stderr=subprocess.STDOUT)
    job = LoggingJob(proc, tmp_path / "stop", out)
    try:
        yield job
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def stored_events(dsn: str) -> Callable[[], Awaitable[int]]:
    async def count() -> int:
        (row,) = await fetch(dsn, "SELECT coalesce(sum(events), 0)::bigint AS n "
                                  "FROM runstream.producers")
        return int(row["n"])

    return count


async def ledger_counts(dsn: str, report: dict[str, Any]) -> LedgerResult:
    """The script's points counted the ledger's way (lost, doubled, unexpected, order), for
    RELIABILITY.md; ``assert_each_point_once`` is what checks them."""
    n = report["iterations"]
    expected: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for rid in report["run_ids"]:
        expected[(rid, "loss")] = [(i, i / 4) for i in range(n)]
        expected[(rid, "acc")] = [(2 * i, float(-i)) for i in range(n)]
    stored: dict[tuple[str, str], list[tuple[int, float, Any]]] = {}
    for row in await fetch(dsn, "SELECT run_id, name, step, value, time FROM "
                                "runstream.metric_points ORDER BY run_id, name, step, rank, time"):
        stored.setdefault((row["run_id"], row["name"]), []).append(
            (row["step"], row["value"], row["time"]))
    return compare(expected, stored, LedgerResult(events=await stored_events(dsn)()))


async def assert_each_point_once(dsn: str, report: dict[str, Any]) -> None:
    """Every (run, name, rank, step) the script logged is stored once, with its value."""
    n = report["iterations"]
    assert report["log_calls"] == 4 * n
    rows = await fetch(dsn, "SELECT run_id, name, rank, count(*) AS points, "
                            "count(DISTINCT step) AS steps, min(step) AS first, "
                            "max(step) AS last, sum(value) AS total, "
                            "count(*) FILTER (WHERE value <> CASE name WHEN 'loss' THEN step / 4.0 "
                            "ELSE -step / 2 END) AS wrong "
                            "FROM runstream.metric_points GROUP BY 1, 2, 3 ORDER BY 1, 2")
    expected = []
    for rid in sorted(report["run_ids"]):
        expected += [
            {"run_id": rid, "name": "acc", "rank": 0, "points": n, "steps": n, "first": 0,
             "last": 2 * (n - 1), "total": -n * (n - 1) / 2, "wrong": 0},
            {"run_id": rid, "name": "loss", "rank": 0, "points": n, "steps": n, "first": 0,
             "last": n - 1, "total": n * (n - 1) / 8, "wrong": 0},
        ]
    assert rows == expected
    (dups,) = await fetch(dsn, "SELECT count(*) AS n FROM (SELECT 1 FROM runstream.metric_points "
                               "GROUP BY run_id, name, rank, step HAVING count(*) > 1) d")
    assert dups["n"] == 0
    producers = await fetch(dsn, "SELECT missing_events FROM runstream.producers")
    assert [p["missing_events"] for p in producers] == [0, 0]
    statuses = await fetch(dsn, "SELECT status FROM runstream.runs")
    assert [s["status"] for s in statuses] == ["Completed", "Completed"]


async def test_worker_killed_9_repeatedly_while_a_job_logs_loses_and_doubles_nothing(
    stack: StackInfo, topic_factory: TopicFactory, db_factory: DbFactory,
    worker_procs: WorkerFactory, tmp_path: Path, reliability: Reliability,
) -> None:
    topic, dsn = await topic_factory(partitions=4), await new_db(db_factory)
    group = unique("e2e-kill-")

    def start_worker() -> WorkerProcess:
        return worker_procs.start(bootstrap=stack.kafka_bootstrap, topic=topic, dsn=dsn,
                                  group=group)

    events = stored_events(dsn)
    worker = start_worker()
    kills = 0
    with logging_job(tmp_path, bootstrap=stack.kafka_bootstrap, topic=topic,
                     api_url=stack.settings.api_url) as job:
        for _ in range(3):
            seen = await events()

            async def progressed(seen: int = seen) -> bool:
                return await events() > seen

            await wait_for(progressed, timeout_s=30, what="the worker to store more events")
            worker.kill9()  # somewhere in its loop: fetching, writing or committing
            kills += 1
            assert job.proc.poll() is None, "the job stopped logging before the last kill"
            worker = start_worker()
        report = await asyncio.to_thread(job.finish)
    await wait_for(stored_offsets_reach(dsn, topic, group,
                                        await topic_ends(stack.kafka_bootstrap, topic)),
                   timeout_s=60, what="the last worker to catch up")
    counted = await ledger_counts(dsn, report)
    reliability.record(
        guarantee="a worker killed mid-transaction redoes its batch from the stored offsets",
        faults=f"`kill -9` of the worker x{kills} while an SDK job logs (parent + child run)",
        events=counted.events, points=counted.points_expected, lost=counted.lost,
        doubled=counted.doubled, storage=await storage_backend(dsn),
        notes=f"{counted.unexpected} unexpected, {counted.order_violations} out of order; "
              f"slowest log call {report['slowest_log_ms']:.1f} ms",
        kills=kills, ledger=counted.as_dict(), job=report)
    assert kills == 3
    assert report["dropped"] == 0
    assert report["iterations"] > 0
    await assert_each_point_once(dsn, report)
    assert worker.stop() == 0, worker.output()
    print(f"kill -9 x{kills}: {report}")


@contextmanager
def no_resource_warnings() -> Iterator[None]:
    # KafkaNode starts the broker detached (like `runstream up`) and lets go of its Popen.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        yield


@asynccontextmanager
async def private_broker(home: Path, *, jars_from: Path) -> AsyncIterator[KafkaNode]:
    """A broker of this test's own (the session's broker is shared with other tests).

    It reuses the jar cache under ``jars_from`` (the session stack's home) when there is
    one, read-only; otherwise its first start fetches the jars with Maven.
    """
    node = KafkaNode(home=home, bootstrap=f"127.0.0.1:{free_port(span=2)}")
    libs = f"libs-{kafka_version(pom_path())}"
    cached = jars_from / "stack" / "kafka" / libs
    if cached.is_dir():
        node.dir.mkdir(parents=True, exist_ok=True)
        (node.dir / libs).symlink_to(cached, target_is_directory=True)
    with no_resource_warnings():
        await asyncio.to_thread(node.start)
    try:
        yield node
    finally:
        with no_resource_warnings():
            await asyncio.to_thread(node.stop)


def sigkill(node: KafkaNode) -> None:
    pid = node.process.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while node.process.running():
        assert time.monotonic() < deadline, "the broker survived SIGKILL"
        time.sleep(0.05)


async def test_broker_killed_and_restarted_mid_run_delivers_everything_once_without_stalling(
    db_factory: DbFactory, worker_procs: WorkerFactory, stack: StackInfo, tmp_path: Path,
    reliability: Reliability,
) -> None:
    dsn = await new_db(db_factory)
    group = unique("e2e-outage-")
    topic = unique("outage.")
    async with private_broker(tmp_path / "k", jars_from=stack.settings.home) as broker:
        await ensure_topics(broker.bootstrap, [topic, f"{topic}.dlq"], partitions=2)
        worker = worker_procs.start(bootstrap=broker.bootstrap, topic=topic, dsn=dsn,
                                    group=group)
        events = stored_events(dsn)
        with logging_job(tmp_path, bootstrap=broker.bootstrap, topic=topic,
                         api_url=stack.settings.api_url) as job:

            async def flowing() -> bool:
                return await events() > 2

            await wait_for(flowing, timeout_s=30, what="events to flow before the outage")
            await asyncio.to_thread(sigkill, broker)
            down_at = datetime.now(UTC)
            await asyncio.sleep(3)  # the outage: the job keeps logging meanwhile
            assert job.proc.poll() is None
            with no_resource_warnings():
                await asyncio.to_thread(broker.start)
            up_at = datetime.now(UTC)
            seen = await events()

            async def flowing_again() -> bool:
                return await events() > seen

            await wait_for(flowing_again, timeout_s=45, what="events to flow after the restart")
            report = await asyncio.to_thread(job.finish)
        await wait_for(stored_offsets_reach(dsn, topic, group,
                                            await topic_ends(broker.bootstrap, topic)),
                       timeout_s=60, what="the worker to store everything")
        assert worker.stop() == 0, worker.output()

    (during,) = await fetch(dsn, "SELECT count(*) AS n FROM runstream.metric_points "
                                 "WHERE time > $1 AND time < $2", down_at, up_at)
    counted = await ledger_counts(dsn, report)
    outage_s = (up_at - down_at).total_seconds()
    reliability.record(
        guarantee="a broker crash is ridden out by the SDK's spool and replay; no log call "
                  "waits on it",
        faults=f"broker SIGKILL, {outage_s:.0f} s down, restarted",
        events=counted.events, points=counted.points_expected, lost=counted.lost,
        doubled=counted.doubled, storage=await storage_backend(dsn),
        notes=f"{during['n']:,} points logged during the outage; {report['spooled']:,} events "
              f"spooled, {report['replayed']:,} replayed; slowest log call "
              f"{report['slowest_log_ms']:.1f} ms (limit 50)",
        outage_s=outage_s, points_during_outage=during["n"], ledger=counted.as_dict(),
        job=report)
    assert report["slowest_log_ms"] < 50, report
    assert report["dropped"] == 0
    assert report["spooled"] > 0  # the outage was real for the SDK, too
    await assert_each_point_once(dsn, report)
    assert during["n"] > 1000  # logged while the broker was down, delivered after
    print(f"outage: {report}, points logged during it: {during['n']}")
