"""Fault: a training process dies (SIGKILL) while Kafka is unreachable, so all it has
made durable is its spool; then ``runstream sync`` (the CLI, same ``RUNSTREAM_HOME``)
delivers that spool.

What the ledger expects is exactly what was durable at the kill: the points in the spool
segments the dead process left (read and decoded before the sync). Points still in the
process's memory die with it, legitimately; the job checkpoints (``flush``, which
fsyncs the spool) every few ticks, so at least everything logged before its last
reported checkpoint must be in that durable set. After the sync the database must hold
the durable set exactly once, in order, with no sequence gap per producer.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from ingest.bench.ledger import RunPlan, Workload, job_env, series_points
from producer._spool import list_segments, parse
from schemas.codec import Codec
from tests.integration.faults import FaultRunFactory
from tests.integration.helpers import runstream

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

KILL_AFTER_TICKS = 45


def spooled_events(spool_dir: Path) -> tuple[list[dict[str, object]], int]:
    """Every whole event in the spool (decoded) and the torn bytes at segment ends."""
    codec = Codec()
    events, torn = [], 0
    for path in list_segments(spool_dir):
        records, tail = parse(path.read_bytes())
        torn += tail
        events += [codec.decode(value) for _, value in records]
    return events, torn


async def test_producer_killed_9_then_sync_delivers_exactly_what_it_had_spooled(
    fault_run: FaultRunFactory, closed_port: int, tmp_path: Path,
) -> None:
    started = time.monotonic()
    run = await fault_run(partitions=3)
    home = tmp_path / "sdk"
    # At least 45 ticks, then on until the kill (the gate never opens).
    workload = Workload(ticks=KILL_AFTER_TICKS, points_per_tick=100, pace_s=0.02,
                        checkpoint_every=10, until_file=str(run.gate("never")),
                        runs=(RunPlan("parent", end="none"),
                              RunPlan("child", parent="parent", end="none")))
    job = run.start_job(workload, kafka=f"127.0.0.1:{closed_port}", home=home)
    await asyncio.to_thread(job.wait_ticks, KILL_AFTER_TICKS)  # 4 checkpoints and a half
    job.kill9()
    assert job.proc.returncode == -signal.SIGKILL, "the job finished before it was killed"
    run_ids = job.run_ids()
    logged_ticks = job.ticks_done()
    last = [x for x in job.lines() if x.get("kind") == "tick" and x["checkpoint"]][-1]
    checkpointed_ticks = int(last["tick"]) + 1
    assert last["mode"] == "offline"

    events, torn = spooled_events(home / "spool" / "events")
    durable = series_points(events, {rid: key for key, rid in run_ids.items()})
    durable_points = sum(len(p) for p in durable.values())
    # The spool holds a prefix of each series: everything up to the last checkpoint at
    # least, nothing the job did not log.
    at_checkpoint = workload.expected(ticks=checkpointed_ticks)
    logged = workload.expected(ticks=logged_ticks + 1)  # the tick under way at the kill
    for key, points in durable.items():
        assert points == logged[key][: len(points)], key
        assert len(points) >= len(at_checkpoint[key]), key
    assert set(durable) == set(at_checkpoint)

    worker = run.start_worker()
    online = job_env(kafka=run.bootstrap, topic=run.topic, home=home)
    synced = await asyncio.to_thread(runstream, "sync", env=online)
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert list_segments(home / "spool" / "events") == []
    result = await run.check(expected=durable)
    await run.record(
        result,
        guarantee="a producer killed mid-run loses only what was still in its memory; "
                  "`runstream sync` sends what it spooled",
        faults="SIGKILL of the job while Kafka is unreachable, then `runstream sync`",
        notes=f"expected = the spool's content: {len(events):,} events, {durable_points:,} "
              f"durable points (torn bytes {torn}); killed after {logged_ticks} ticks, last "
              f"checkpoint at {checkpointed_ticks}",
        spooled_events=len(events), durable_points=durable_points, torn_bytes=torn,
        ticks_logged=logged_ticks, ticks_checkpointed=checkpointed_ticks)
    assert worker.stop() == 0, worker.output()

    assert result.ok, result.as_dict()
    assert (result.lost, result.doubled, result.missing_events) == (0, 0, 0)
    assert result.points_stored == durable_points > 0
    assert result.events == len(events)
    assert result.statuses == {"parent": "Running", "child": "Running"}
    reported = sum(len(v) for v in workload.expected(ticks=logged_ticks).values())
    print(f"producer kill -9 after {logged_ticks} ticks reported ({reported} points), "
          f"{durable_points} points durable in {len(events)} spooled events (torn bytes "
          f"{torn}), the rest was in memory; "
          f"sync: {synced.stderr.strip().splitlines()[-1:]}; ledger {result.as_dict()}; "
          f"{time.monotonic() - started:.1f} s")
