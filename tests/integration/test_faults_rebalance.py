"""Fault: consumer-group rebalances under load. One ingest worker runs throughout while a
second joins and leaves the group again and again during a training job; every join and
every leave moves partitions between them mid-stream. The ledger must balance: nothing
lost or doubled, each series in order, every run ended as planned.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from ingest.bench.ledger import RunPlan, Workload
from tests.integration.faults import FaultRunFactory
from tests.integration.helpers import WorkerProcess, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

CYCLES = 4


def assignments(worker: WorkerProcess) -> int:
    return sum(" assigned [" in line for line in worker.output().splitlines())


async def test_second_worker_joining_and_leaving_under_load_loses_and_doubles_nothing(
    fault_run: FaultRunFactory,
) -> None:
    started = time.monotonic()
    run = await fault_run(partitions=6)
    rebalanced_all = run.gate("rebalanced")
    # At least 50 ticks, and on until the last rebalance is over: every join and leave
    # happens while the job logs, however fast or slow the machine.
    workload = Workload(ticks=50, points_per_tick=100, pace_s=0.1,
                        until_file=str(rebalanced_all), runs=(
        RunPlan("parent"), RunPlan("a", parent="parent", end="fail"),
        RunPlan("b", parent="parent", end="cancel"), RunPlan("c", parent="parent")))
    first = run.start_worker()
    job = run.start_job(workload)
    await asyncio.to_thread(job.wait_ticks, 5)
    for cycle in range(CYCLES):
        second = run.start_worker()

        async def joined(second: WorkerProcess = second) -> bool:
            return assignments(second) >= 1

        await wait_for(joined, timeout_s=30, what=f"the second worker to join ({cycle})")
        ticks = job.ticks_done()
        await asyncio.to_thread(job.wait_ticks, ticks + 10)  # both consume meanwhile
        before = assignments(first)
        assert second.stop() == 0, second.output()  # leaves the group: another rebalance

        async def took_back(before: int = before) -> bool:
            return assignments(first) > before

        # Its leave is a rebalance of its own, not merged with the next join.
        await wait_for(took_back, timeout_s=30, what="the first worker to take all back")
        assert job.proc.poll() is None, "the job ended before the last rebalance"
    rebalanced_all.touch()
    report = await run.finish()
    result = await run.check()
    rebalanced = assignments(first)
    await run.record(
        result,
        guarantee="rebalances never double a batch",
        faults=f"a second worker joins and leaves the group x{CYCLES} (the first one "
               f"reassigned {rebalanced}x)",
        notes=f"{len(workload.runs)} runs, final statuses "
              f"{result.status_mismatches or 'as planned'}; {result.missing_events} seq gaps; "
              f"slowest log call {report['slowest_log_ms']:.1f} ms",
        cycles=CYCLES, first_worker_assignments=rebalanced)
    assert first.stop() == 0, first.output()

    assert result.ok, result.as_dict()
    assert (result.lost, result.doubled, result.missing_events) == (0, 0, 0)
    assert result.points_stored == result.points_expected >= workload.points
    assert result.statuses == {"parent": "Completed", "a": "Failed", "b": "Canceled",
                               "c": "Completed"}
    assert report["events_dropped"] == 0
    # The first worker was assigned partitions at start and again after every join and
    # every leave of the second one (eager rebalancing revokes and reassigns everything).
    assert rebalanced >= 1 + 2 * CYCLES, first.output()
    print(f"rebalances: {CYCLES} joins + {CYCLES} leaves, first worker assigned "
          f"{rebalanced}x; ledger {result.as_dict()}; job {report}; "
          f"{time.monotonic() - started:.1f} s")
