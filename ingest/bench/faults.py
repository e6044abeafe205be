"""``runstream bench faults``: break the write path on purpose and count what was lost.

On the running local stack, in a database and topic of its own (dropped afterwards), a
ledger workload (``ingest.bench.ledger``: every point known in advance) is logged by a real
training process while its ingest worker is killed with SIGKILL ``worker_kills`` times
and a second worker joins and leaves the group ``rebalances`` times. The job logs at
least ``ticks`` ticks and goes on until the faults are over (``Workload.until_file``), so
every fault hits a worker with data flowing, whatever the machine's speed. Then the
ledger compares the database with what the job logged: events, points, faults injected,
lost, doubled, order violations, final statuses. ``ok`` is the verdict.

Faults that need root or private services (network cuts, PostgreSQL crashes, a full
spool disk) live in ``tests/integration/test_faults_*.py``; this bench is the part any
developer can run against their stack.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg

from ingest.bench.ledger import LedgerJob, RunPlan, Workload, check, job_env
from ingest.bench.scratch import scratch_database, scratch_topic
from ingest.settings import Settings
from ingest.stack.kafka import topic_ends

__all__ = ["run_fault_bench"]

Progress = Callable[[str], None]

SQL_CHUNKS = "SELECT count(*) FROM runstream_data.metric_chunks"
SQL_STORED = """
SELECT partition, next_offset FROM runstream_data.consumer_offsets
WHERE group_id = $1 AND topic = $2
"""


class _Worker:
    """One ``runstream ingest`` process, as an operator starts it."""

    def __init__(self, env: dict[str, str], group: str, log: Path) -> None:
        with log.open("ab") as out:
            self.proc = subprocess.Popen(  # noqa: S603 - our own CLI
                [sys.executable, "-m", "ingest.cli", "ingest", "--group", group,
                 "--metrics-port", "0"],
                env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


async def _until(check: Callable[[], Any], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(0.2)


async def _faults(settings: Settings, dsn: str, topic: str, home: Path, *, worker_kills: int,
                  rebalances: int, ticks: int, progress: Progress) -> dict[str, Any]:
    group = f"bench-faults-{uuid.uuid4().hex[:8]}"
    worker_env = {**os.environ, "RUNSTREAM_KAFKA": settings.kafka_bootstrap,
                  "RUNSTREAM_DB": dsn, "RUNSTREAM_TOPIC": topic,
                  "RUNSTREAM_HOME": str(home / "worker")}
    faults_over = home / "faults-over"
    workload = Workload(ticks=ticks, points_per_tick=100, pace_s=0.1,
                        until_file=str(faults_over), runs=(
        RunPlan("parent"), RunPlan("a", parent="parent", end="fail"),
        RunPlan("b", parent="parent", end="cancel"), RunPlan("c", parent="parent")))
    conn = await asyncpg.connect(dsn)
    workers = [_Worker(worker_env, group, home / "worker.log")]
    job = LedgerJob(workload, out=home / "job.out", env=job_env(
        kafka=settings.kafka_bootstrap, topic=topic, home=home / "sdk"))
    started = time.monotonic()
    injected = {"worker_kill9": 0, "worker_joins": 0, "worker_leaves": 0}
    try:
        for _ in range(worker_kills):
            seen = int(await conn.fetchval(SQL_CHUNKS))

            async def progressed(seen: int = seen) -> bool:
                return int(await conn.fetchval(SQL_CHUNKS)) > seen

            await _until(progressed, 60, "the worker to write")
            workers[0].kill9()
            injected["worker_kill9"] += 1
            progress(f"worker killed with SIGKILL ({injected['worker_kill9']}/{worker_kills})")
            workers[0] = _Worker(worker_env, group, home / "worker.log")
        for _ in range(rebalances):
            second = _Worker(worker_env, group, home / "worker.log")
            injected["worker_joins"] += 1
            await asyncio.to_thread(job.wait_ticks, job.ticks_done() + 30, 60.0)
            second.stop()
            injected["worker_leaves"] += 1
            progress(f"second worker joined and left ({injected['worker_joins']}/{rebalances})")
            await asyncio.to_thread(job.wait_ticks, job.ticks_done() + 10, 60.0)
        faults_while_logging = job.proc.poll() is None
        faults_over.touch()
        done = await asyncio.to_thread(job.finish, 300.0)
        ends = await topic_ends(settings.kafka_bootstrap, topic)

        async def caught_up() -> bool:
            stored = {r["partition"]: r["next_offset"]
                      for r in await conn.fetch(SQL_STORED, group, topic)}
            return all(stored.get(p, 0) >= end for p, end in ends.items())

        await _until(caught_up, 120, "the worker to store everything")
        result = await check(dsn, workload, job.run_ids(),
                             expected=workload.expected(ticks=int(done["ticks"])))
    finally:
        job.stop()
        for worker in workers:
            worker.stop()
        await conn.close()
    return {
        "events": result.events,
        "points": result.points_stored,
        "points_expected": result.points_expected,
        "faults_injected": sum(injected.values()),
        "faults": injected,
        "faults_while_logging": faults_while_logging,
        "lost": result.lost,
        "doubled": result.doubled,
        "unexpected": result.unexpected,
        "order_violations": result.order_violations,
        "missing_events": result.missing_events,
        "statuses": result.statuses,
        "status_mismatches": result.status_mismatches,
        "slowest_log_ms": round(float(done["slowest_log_ms"]), 3),
        "duration_s": round(time.monotonic() - started, 1),
        "ok": result.ok and faults_while_logging,
    }


async def run_fault_bench(settings: Settings, *, dsn: str, worker_kills: int = 3,
                          rebalances: int = 3, ticks: int = 300,
                          progress: Progress | None = None) -> dict[str, Any]:
    """Run the ledger workload (at least ``ticks`` x 100 points x 2 series x 4 runs, ~0.1 s
    per tick, and on until the faults are over) through ``worker_kills`` SIGKILLs of the
    ingest worker and ``rebalances`` joins and leaves of a second worker; the ledger's
    counts as a dict (``ok`` is the verdict).

    ``dsn`` names any database of the stack's server (used to create and drop its own).
    """
    say = progress or (lambda _message: None)
    async with (
        scratch_database(dsn, prefix="runstream_faults") as bench_dsn,
        scratch_topic(settings.kafka_bootstrap, partitions=4, prefix="runstream.faults") as topic,
    ):
        with tempfile.TemporaryDirectory(prefix="runstream-faults-") as tmp:
            say(f"ledger workload: {ticks} ticks; {worker_kills} kills, {rebalances} rebalances")
            return await _faults(settings, bench_dsn, topic, Path(tmp),
                                 worker_kills=worker_kills, rebalances=rebalances,
                                 ticks=ticks, progress=say)
