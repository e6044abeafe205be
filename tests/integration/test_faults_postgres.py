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

from ingest.bench.ledger import RunPlan, Workload
from ingest.db.migrate import available_migrations, migrate
from ingest.stack.postgres import LocalPostgres, find_bindir
from ingest.stack.procs import StackError
from tests.integration.faults import FaultRunFactory
from tests.integration.helpers import fetch, free_port, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@asynccontextmanager
async def private_postgres(home: Path, tries: int = 3) -> AsyncIterator[LocalPostgres]:
    """A PostgreSQL cluster of this test's own, deleted afterwards.

    Its port must be in its configuration before it starts, so it is probed; a start that
    found the port taken meanwhile (by another process) is retried on a fresh one.
    """
    for _ in range(tries):
        pg = LocalPostgres(home=home, port=free_port())
        try:
            await asyncio.to_thread(pg.start)
        except StackError as exc:
            log = pg.log_file.read_text(errors="replace") if pg.log_file.exists() else ""
            if "is taken" in str(exc) or "Address already in use" in log:
                continue
            raise
        break
    else:
        pytest.fail(f"no free port for a private PostgreSQL in {tries} tries")
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
    fault_run: FaultRunFactory, tmp_path: Path,
) -> None:
    started = time.monotonic()
    async with private_postgres(tmp_path / "pg") as pg:
        assert await migrate(pg.dsn) == [v for v, _, _ in available_migrations()]
        run = await fault_run(partitions=3, dsn=pg.dsn)
        crashed_all = run.gate("crashed")
        # At least 50 ticks, and on until the last crash is over: the database goes down
        # while the job logs, however fast or slow the machine.
        workload = Workload(ticks=50, points_per_tick=100, pace_s=0.1,
                            until_file=str(crashed_all), runs=(
            RunPlan("parent"), RunPlan("a", parent="parent", end="fail"),
            RunPlan("b", parent="parent", end="cancel")))
        worker = run.start_worker()
        job = run.start_job(workload)
        crashes = 0
        down_s: list[float] = []
        for _ in range(2):
            (before,) = await fetch(pg.dsn, "SELECT count(*) AS n FROM "
                                            "runstream_data.metric_chunks")

            async def progressed(before: int = before["n"]) -> bool:
                (now,) = await fetch(pg.dsn, "SELECT count(*) AS n FROM "
                                             "runstream_data.metric_chunks")
                return int(now["n"]) > before

            await wait_for(progressed, timeout_s=30, what="the worker to write")
            await asyncio.to_thread(crash, pg)  # mid-stream: likely inside a transaction
            crashes += 1
            crashed_at = time.monotonic()
            down_at = job.ticks_done()
            await asyncio.to_thread(job.wait_ticks, down_at + 20)  # 20 ticks without a database
            assert worker.proc.poll() is None, worker.output()
            await asyncio.to_thread(pg.start)
            await wait_for(lambda: reachable(pg.dsn), timeout_s=30, what="PostgreSQL back")
            down_s.append(time.monotonic() - crashed_at)
            assert job.proc.poll() is None, "the job ended before the last crash"
        crashed_all.touch()
        report = await run.finish()
        result = await run.check()
        retried = worker.output().count("batch write failed, retrying")
        await run.record(
            result,
            guarantee="a database crash rolls back the batch; the worker retries",
            faults=f"`pg_ctl stop -m immediate` x{crashes} mid-stream, restarted (down "
                   f"{', '.join(f'{s:.1f}' for s in down_s)} s)",
            notes=f"the worker retried {retried} batch writes and never exited; "
                  f"{result.missing_events} seq gaps",
            crashes=crashes, down_s=down_s, retried_writes=retried)
        assert worker.stop() == 0, worker.output()

    assert crashes == 2
    assert result.ok, result.as_dict()
    assert (result.lost, result.doubled, result.missing_events) == (0, 0, 0)
    assert result.points_stored == result.points_expected >= workload.points
    assert result.statuses == {"parent": "Completed", "a": "Failed", "b": "Canceled"}
    assert report["events_dropped"] == 0
    assert retried >= crashes  # the worker saw the database go away and retried, not exited
    print(f"postgres immediate shutdown x{crashes}: worker retried {retried} writes; ledger "
          f"{result.as_dict()}; job {report}; {time.monotonic() - started:.1f} s")
