"""Fault: PostgreSQL crashes (``pg_ctl stop -m immediate``: no checkpoint, every backend
killed, crash recovery on the next start) while a worker ingests a training job, then
comes back. The cluster is this test's own (``LocalPostgres`` on its own home and port),
never the shared one. The worker must ride it out (retrying, not exiting), and the
ledger must balance: a batch whose transaction died with the server is rolled back and
written again from the stored offsets, exactly once.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest

from ingest.bench.ledger import LedgerJob, RunPlan, Workload, check, job_env
from ingest.db.migrate import available_migrations, migrate
from ingest.stack.kafka import topic_ends
from ingest.stack.postgres import LocalPostgres, find_bindir
from tests.conftest import StackInfo, TopicFactory, unique
from tests.integration.conftest import (
    WorkerFactory,
    fetch,
    free_port,
    stored_offsets_reach,
    wait_for,
)
from tests.reliability import Reliability, storage_backend

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@asynccontextmanager
async def private_postgres(home: Path) -> AsyncIterator[LocalPostgres]:
    """A PostgreSQL cluster of this test's own, deleted afterwards."""
    pg = LocalPostgres(home=home, port=free_port())
    await asyncio.to_thread(pg.start)
    try:
        yield pg
    finally:
        await asyncio.to_thread(pg.stop)
        shutil.rmtree(pg.dir, ignore_errors=True)


def crash(pg: LocalPostgres) -> None:
    """``pg_ctl stop -m immediate`` as the cluster's owner."""
    bindir = find_bindir()
    assert bindir is not None
    argv = [str(bindir / "pg_ctl"), "stop", "-D", str(pg.data), "-m", "immediate", "-w"]
    if pg.as_root:
        argv = ["runuser", "-u", "postgres", "--", *argv]
    subprocess.run(argv, check=True, capture_output=True, timeout=60)
    assert not pg.running()


async def reachable(dsn: str) -> bool:
    try:
        conn = await asyncpg.connect(dsn, timeout=2)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await conn.close()
    return True


async def test_postgres_immediate_shutdown_and_restart_during_ingest_loses_nothing(
    stack: StackInfo, topic_factory: TopicFactory, worker_procs: WorkerFactory, tmp_path: Path,
    reliability: Reliability,
) -> None:
    started = time.monotonic()
    topic = await topic_factory(partitions=3)
    group = unique("faults-pg-")
    workload = Workload(ticks=250, points_per_tick=100, pace_s=0.1, runs=(
        RunPlan("parent"), RunPlan("a", parent="parent", end="fail"),
        RunPlan("b", parent="parent", end="cancel")))
    async with private_postgres(tmp_path / "pg") as pg:
        dsn = pg.dsn
        assert await migrate(dsn) == [v for v, _, _ in available_migrations()]
        worker = worker_procs.start(bootstrap=stack.kafka_bootstrap, topic=topic, dsn=dsn,
                                    group=group)
        job = LedgerJob(workload, out=tmp_path / "job.out", env=job_env(
            kafka=stack.kafka_bootstrap, topic=topic, home=tmp_path / "sdk"))
        crashes = 0
        down_s: list[float] = []
        try:
            for _ in range(2):
                (before,) = await fetch(dsn, "SELECT count(*) AS n FROM "
                                             "runstream_data.metric_chunks")

                async def progressed(before: int = before["n"]) -> bool:
                    (now,) = await fetch(dsn, "SELECT count(*) AS n FROM "
                                              "runstream_data.metric_chunks")
                    return int(now["n"]) > before

                await wait_for(progressed, timeout_s=30, what="the worker to write")
                await asyncio.to_thread(crash, pg)  # mid-stream: likely inside a transaction
                crashes += 1
                crashed_at = time.monotonic()
                down_at = job.ticks_done()
                await asyncio.to_thread(job.wait_ticks, down_at + 20)  # 2+ s without a database
                assert worker.proc.poll() is None, worker.output()
                await asyncio.to_thread(pg.start)
                await wait_for(lambda: reachable(dsn), timeout_s=30, what="PostgreSQL back")
                down_s.append(time.monotonic() - crashed_at)
                assert job.proc.poll() is None, "the job ended before the last crash"
            report = await asyncio.to_thread(job.finish)
        finally:
            job.stop()
        await wait_for(stored_offsets_reach(dsn, topic, group,
                                            await topic_ends(stack.kafka_bootstrap, topic)),
                       timeout_s=60, what="the worker to store everything after the restarts")
        result = await check(dsn, workload, job.run_ids())
        retried = worker.output().count("batch write failed, retrying")
        reliability.record(
            guarantee="a database crash rolls back the batch; the worker retries",
            faults=f"`pg_ctl stop -m immediate` x{crashes} mid-stream, restarted (down "
                   f"{', '.join(f'{s:.1f}' for s in down_s)} s)",
            events=result.events, points=result.points_expected, lost=result.lost,
            doubled=result.doubled, storage=await storage_backend(dsn),
            notes=f"the worker retried {retried} batch writes and never exited; "
                  f"{result.missing_events} seq gaps",
            crashes=crashes, down_s=down_s, retried_writes=retried, ledger=result.as_dict(),
            job=report)
        assert worker.stop() == 0, worker.output()

    assert crashes == 2
    assert result.ok, result.as_dict()
    assert (result.lost, result.doubled, result.missing_events) == (0, 0, 0)
    assert result.points_stored == workload.points
    assert result.statuses == {"parent": "Completed", "a": "Failed", "b": "Canceled"}
    assert report["events_dropped"] == 0
    assert retried >= crashes  # the worker saw the database go away and retried, not exited
    print(f"postgres immediate shutdown x{crashes}: worker retried {retried} writes; ledger "
          f"{result.as_dict()}; job {report}; {time.monotonic() - started:.1f} s")
