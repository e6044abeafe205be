"""Fault: a slow database. Another session takes ACCESS EXCLUSIVE locks on the tables the
worker writes (event ids, metric chunks, offsets) and holds them for ~10 s while a
training job keeps logging at a high rate. The worker's batch transaction waits on the
lock; its bounded queue fills and it pauses its partitions, so it stops reading from
the broker (the bytes its broker connections receive, ``ss -ti``, stay flat while the
topic keeps growing) and its memory stays bounded (psutil RSS). After the release the backlog is
written and the ledger balances.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from pathlib import Path

import asyncpg
import psutil
import pytest

from ingest.bench.ledger import LedgerJob, RunPlan, Workload, check, job_env
from ingest.stack.kafka import topic_ends
from tests.conftest import DbFactory, StackInfo, TopicFactory, unique
from tests.integration.conftest import (
    WorkerFactory,
    fetch,
    new_db,
    stored_offsets_reach,
    wait_for,
)
from tests.reliability import Reliability, storage_backend

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

LOCK_S = 10.0
LOCKED_TABLES = ("runstream_data.event_ids", "runstream_data.metric_chunks",
                 "runstream_data.consumer_offsets")


def broker_bytes_received(pid: int, port: int) -> int:
    """Bytes the process's open TCP connections to the broker have received (``ss -ti``;
    ``/proc/<pid>/io`` does not count ``recv`` on sockets)."""
    out = subprocess.run(["ss", "-tinpH", "state", "established", f"( dport = :{port} )"],
                         capture_output=True, text=True, check=True, timeout=10).stdout
    total, mine = 0, False
    for line in out.splitlines():
        if not line.startswith((" ", "\t")):
            mine = f"pid={pid}," in line
        elif mine and (found := re.search(r"bytes_received:(\d+)", line)):
            total += int(found.group(1))
    return total


async def test_locked_tables_pause_the_worker_with_bounded_memory_and_lose_nothing(
    stack: StackInfo, topic_factory: TopicFactory, db_factory: DbFactory,
    worker_procs: WorkerFactory, tmp_path: Path, reliability: Reliability,
) -> None:
    started = time.monotonic()
    topic, dsn = await topic_factory(partitions=2), await new_db(db_factory)
    group = unique("faults-slowdb-")
    workload = Workload(ticks=160, points_per_tick=2000, pace_s=0.05,
                        runs=(RunPlan("parent"), RunPlan("child", parent="parent")))
    worker = worker_procs.start(bootstrap=stack.kafka_bootstrap, topic=topic, dsn=dsn,
                                group=group)
    proc = psutil.Process(worker.proc.pid)
    broker_port = int(stack.kafka_bootstrap.rsplit(":", 1)[1])
    job = LedgerJob(workload, out=tmp_path / "job.out",
                    env=job_env(kafka=stack.kafka_bootstrap, topic=topic, home=tmp_path / "sdk"))
    locker = await asyncpg.connect(dsn)
    try:
        async def writing() -> bool:
            (row,) = await fetch(dsn, "SELECT count(*) AS n FROM runstream_data.metric_chunks")
            return int(row["n"]) > 10

        await wait_for(writing, timeout_s=60, what="the worker to write under load")
        rss_before = proc.memory_info().rss
        ends_before = await topic_ends(stack.kafka_bootstrap, topic)
        async with locker.transaction():
            await locker.execute(f"LOCK TABLE {', '.join(LOCKED_TABLES)} IN ACCESS EXCLUSIVE MODE")
            locked_at = time.monotonic()
            rss_peak, samples = rss_before, []
            while (elapsed := time.monotonic() - locked_at) < LOCK_S:
                rss_peak = max(rss_peak, proc.memory_info().rss)
                samples.append((elapsed, await asyncio.to_thread(
                    broker_bytes_received, proc.pid, broker_port)))
                await asyncio.sleep(0.2)
            waiting = await locker.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'")
            ends_locked = await topic_ends(stack.kafka_bootstrap, topic)
            assert job.proc.poll() is None, "the job ended before the lock was released"
        report = await asyncio.to_thread(job.finish)
    finally:
        job.stop()
        await locker.close()
    await wait_for(stored_offsets_reach(dsn, topic, group,
                                        await topic_ends(stack.kafka_bootstrap, topic)),
                   timeout_s=90, what="the worker to write the backlog")
    result = await check(dsn, workload, job.run_ids())
    assert worker.stop() == 0, worker.output()

    assert waiting >= 1  # the worker's transaction really waited on the lock
    produced_while_locked = sum(ends_locked.values()) - sum(ends_before.values())
    # Paused: after the queue filled (give it 4 s), it read next to nothing from the
    # broker although the topic kept growing.
    late = [received for elapsed, received in samples if elapsed >= 4.0]
    read_late = late[-1] - late[0]
    read_early = late[0] - samples[0][1]
    reliability.record(
        guarantee="a slow database pauses consumption, memory stays bounded",
        faults=f"ACCESS EXCLUSIVE locks on the worker's tables for {LOCK_S:.0f} s",
        events=result.events, points=result.points_expected, lost=result.lost,
        doubled=result.doubled, storage=await storage_backend(dsn),
        notes=f"worker RSS {rss_before >> 20} -> peak {rss_peak >> 20} MiB; "
              f"{produced_while_locked} messages produced during the lock; the worker read "
              f"{read_late:,} bytes from the broker in its last {LOCK_S - 4:.0f} s",
        rss_before_bytes=rss_before, rss_peak_bytes=rss_peak, lock_waiters=waiting,
        produced_while_locked=produced_while_locked, read_early_bytes=read_early,
        read_late_bytes=read_late, ledger=result.as_dict(), job=report)
    assert produced_while_locked >= 40, (ends_before, ends_locked)
    assert read_late < 256 << 10, samples
    assert rss_peak - rss_before < 128 << 20, (rss_before, rss_peak)
    assert rss_peak < 300 << 20
    assert result.ok, result.as_dict()
    assert (result.lost, result.doubled, result.missing_events) == (0, 0, 0)
    assert result.points_stored == workload.points
    assert result.statuses == {"parent": "Completed", "child": "Completed"}
    print(f"slow database: locked {LOCK_S:.0f} s, {produced_while_locked} messages produced "
          f"meanwhile; the worker read {read_early} bytes in its first 4 s (filling its "
          f"queue), {read_late} in the last {LOCK_S - 4:.0f} s; RSS {rss_before >> 20} -> peak "
          f"{rss_peak >> 20} MiB; ledger {result.as_dict()}; slowest log call "
          f"{report['slowest_log_ms']:.2f} ms; {time.monotonic() - started:.1f} s")
