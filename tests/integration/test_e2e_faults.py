"""End to end through the real SDK while things fail: the ingest worker killed with
SIGKILL again and again, and a (private) broker killed and restarted mid-run. Nothing
may be lost or doubled, and logging never waits on either.

The training job is the ledger's (``ingest.bench.ledger``: a parent and a child run, every
point known in advance, every ``log`` call timed). It logs until the test says the faults
are over (``Workload.until_file``), so every fault happens while it logs, however fast or
slow the machine.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ingest.bench.ledger import LedgerResult, RunPlan, Workload
from ingest.stack.kafka import KafkaNode
from tests.helpers import StackInfo
from tests.integration.faults import BLOCKED_LOG_CALL_MS, FaultRun, FaultRunFactory
from tests.integration.helpers import fetch, no_resource_warnings, private_broker, wait_for

pytestmark = pytest.mark.integration


def workload(*, until: str) -> Workload:
    """A parent and a child run, both completed, logging "loss" (the SDK's step counter)
    and "acc" (explicit steps) in ticks of 50 steps, until ``until`` exists."""
    return Workload(ticks=5, points_per_tick=50, pace_s=0.02, until_file=until,
                    runs=(RunPlan("parent"), RunPlan("child", parent="parent")))


async def stored_events(run: FaultRun) -> int:
    (row,) = await fetch(run.dsn, "SELECT coalesce(sum(events), 0)::bigint AS n "
                                  "FROM runstream.producers")
    return int(row["n"])


def assert_each_point_once(result: LedgerResult, report: dict[str, object]) -> None:
    """Every point the job logged stored once, in order, and both runs completed."""
    assert result.ok, result.as_dict()
    assert (result.lost, result.doubled, result.unexpected, result.missing_events) == (
        0, 0, 0, 0)
    assert result.points_stored == result.points_expected > 0
    assert result.statuses == {"parent": "Completed", "child": "Completed"}
    assert report["events_dropped"] == 0, report


async def test_worker_killed_9_repeatedly_while_a_job_logs_loses_and_doubles_nothing(
    fault_run: FaultRunFactory,
) -> None:
    run = await fault_run(partitions=4)
    stop = run.gate("stop")
    worker = run.start_worker()
    job = run.start_job(workload(until=str(stop)))
    kills = 0
    for _ in range(3):
        seen = await stored_events(run)

        async def progressed(seen: int = seen) -> bool:
            return await stored_events(run) > seen

        await wait_for(progressed, timeout_s=30, what="the worker to store more events")
        worker.kill9()  # somewhere in its loop: fetching, writing or committing
        kills += 1
        assert job.proc.poll() is None, "the job stopped logging before the last kill"
        worker = run.start_worker()
    stop.touch()
    report = await run.finish()
    result = await run.check()
    await run.record(
        result,
        guarantee="a worker killed mid-transaction redoes its batch from the stored offsets",
        faults=f"`kill -9` of the worker x{kills} while an SDK job logs (parent + child run)",
        notes=f"{result.unexpected} unexpected, {result.order_violations} out of order; "
              f"slowest log call {report['slowest_log_ms']:.1f} ms",
        kills=kills)
    assert kills == 3
    assert report["ticks"] > 0
    assert_each_point_once(result, report)
    assert worker.stop() == 0, worker.output()
    print(f"kill -9 x{kills}: {report}")


def sigkill(node: KafkaNode) -> None:
    pid = node.process.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while node.process.running():
        assert time.monotonic() < deadline, "the broker survived SIGKILL"
        time.sleep(0.05)


async def test_broker_killed_and_restarted_mid_run_delivers_everything_once_without_stalling(
    fault_run: FaultRunFactory, stack: StackInfo, tmp_path: Path,
) -> None:
    async with private_broker(tmp_path / "k", jars_from=stack.settings.home) as broker:
        run = await fault_run(bootstrap=broker.bootstrap, partitions=2)
        stop = run.gate("stop")
        worker = run.start_worker()
        job = run.start_job(workload(until=str(stop)))

        async def flowing() -> bool:
            return await stored_events(run) > 2

        await wait_for(flowing, timeout_s=30, what="events to flow before the outage")
        await asyncio.to_thread(sigkill, broker)
        down_at = datetime.now(UTC)
        ticks_at_kill = job.ticks_done()
        # The outage lasts until the job has logged 10 more ticks (2,000 points) and at
        # least 3 s: it keeps logging meanwhile, without waiting on the broker.
        await asyncio.gather(asyncio.sleep(3),
                             asyncio.to_thread(job.wait_ticks, ticks_at_kill + 10))
        assert job.proc.poll() is None
        with no_resource_warnings():
            await asyncio.to_thread(broker.start)
        up_at = datetime.now(UTC)
        seen = await stored_events(run)

        async def flowing_again() -> bool:
            return await stored_events(run) > seen

        await wait_for(flowing_again, timeout_s=45, what="events to flow after the restart")
        stop.touch()
        report = await run.finish()
        result = await run.check()
        assert worker.stop() == 0, worker.output()

    (during,) = await fetch(run.dsn, "SELECT count(*) AS n FROM runstream.metric_points "
                                     "WHERE time > $1 AND time < $2", down_at, up_at)
    outage_s = (up_at - down_at).total_seconds()
    await run.record(
        result,
        guarantee="a broker crash is ridden out by the SDK's spool and replay; no log call "
                  "waits on it",
        faults=f"broker SIGKILL, {outage_s:.0f} s down, restarted",
        notes=f"{during['n']:,} points logged during the outage; {report['spooled']:,} events "
              f"spooled, {report['replayed']:,} replayed; slowest log call "
              f"{report['slowest_log_ms']:.1f} ms (blocked: over {BLOCKED_LOG_CALL_MS:.0f})",
        outage_s=outage_s, points_during_outage=during["n"])
    assert report["slowest_log_ms"] < BLOCKED_LOG_CALL_MS, report
    assert report["spooled"] > 0  # the outage was real for the SDK, too
    assert_each_point_once(result, report)
    assert during["n"] > 1000  # logged while the broker was down, delivered after
    print(f"outage: {report}, points logged during it: {during['n']}")
