"""Fault: a slow database. Another session takes ACCESS EXCLUSIVE locks on the tables the
worker writes (event ids, metric chunks, offsets) and holds them while a training job
logs at a high rate. The worker's batch transaction waits on the lock; its bounded queue
fills and it pauses its partitions, so it stops reading from the broker (the bytes its
broker connections receive, ``ss -ti``, stay flat while the topic keeps growing) and its
memory stays bounded (psutil RSS). After the release the backlog is written and the
ledger balances.

The lock overlaps the workload by construction, whatever the machine's speed: the job
waits at a hold until the tables are locked, logs enough to fill the worker's queue many
times over (more fetches than the queue has slots), waits at a second hold until the
worker has stopped reading, then logs the rest (the window in which the worker must read
next to nothing) and ends its runs; the lock is released only after that.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from collections.abc import Awaitable, Callable

import asyncpg
import psutil
import pytest

from ingest.bench.ledger import RunPlan, Workload
from ingest.stack.kafka import topic_ends
from tests.integration.faults import FaultRunFactory
from tests.integration.helpers import fetch, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

LOCKED_TABLES = ("runstream_data.event_ids", "runstream_data.metric_chunks",
                 "runstream_data.consumer_offsets")
#: The job holds before this tick until the tables are locked ...
LOCKED_AT = 10
#: ... and before this one until the worker has stopped reading: the 100 ticks between
#: (>= 200 messages of <= 256 KiB, fetched <= 1 MiB per partition at a time) are more
#: fetches than the worker's queue (4 batches) and its in-flight write take.
PAUSED_AT = 110
TICKS = 160
#: "Stopped reading": less than this received over the last second.
FLAT_BYTES = 4 << 10


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
    fault_run: FaultRunFactory,
) -> None:
    started = time.monotonic()
    run = await fault_run(partitions=2)
    locked, paused, released = run.gate("locked"), run.gate("paused"), run.gate("released")
    workload = Workload(ticks=TICKS, points_per_tick=2000, pace_s=0.05,
                        holds={LOCKED_AT: str(locked), PAUSED_AT: str(paused)},
                        end_hold_file=str(released),
                        runs=(RunPlan("parent"), RunPlan("child", parent="parent")))
    worker = run.start_worker()
    proc = psutil.Process(worker.proc.pid)
    broker_port = int(run.bootstrap.rsplit(":", 1)[1])
    job = run.start_job(workload)
    locker = await asyncpg.connect(run.dsn)
    try:
        await asyncio.to_thread(job.wait_held, LOCKED_AT)

        async def writing() -> bool:
            (row,) = await fetch(run.dsn, "SELECT count(*) AS n FROM runstream_data.metric_chunks")
            return int(row["n"]) > 10

        await wait_for(writing, timeout_s=60, what="the worker to write under load")
        rss_before = proc.memory_info().rss
        ends_before = await topic_ends(run.bootstrap, run.topic)
        async with locker.transaction():
            await locker.execute(f"LOCK TABLE {', '.join(LOCKED_TABLES)} IN ACCESS EXCLUSIVE MODE")
            locked_at = time.monotonic()
            rss_peak = rss_before
            samples: list[tuple[float, int]] = []  # (seconds into the lock, bytes received)

            async def sample() -> None:
                nonlocal rss_peak
                rss_peak = max(rss_peak, proc.memory_info().rss)
                samples.append((time.monotonic() - locked_at, await asyncio.to_thread(
                    broker_bytes_received, proc.pid, broker_port)))

            async def sampling_until(done: Callable[[], Awaitable[bool]], *, what: str) -> None:
                async def check() -> bool:
                    await sample()
                    return await done()

                await wait_for(check, timeout_s=90, what=what)

            locked.touch()  # the job logs on: every tick from here goes to a locked database

            async def stopped_reading() -> bool:
                now = samples[-1][0]
                second_ago = [b for t, b in samples if t <= now - 1.0]
                return (job.reached_hold(PAUSED_AT) and bool(second_ago)
                        and samples[-1][1] - second_ago[-1] < FLAT_BYTES)

            await sampling_until(stopped_reading, what="the worker to stop reading")
            late_from = len(samples) - 1
            ends_paused = await topic_ends(run.bootstrap, run.topic)
            paused.touch()  # the rest of the job: the worker must read next to nothing of it

            async def job_ended() -> bool:
                return await asyncio.to_thread(job.ended)

            await sampling_until(job_ended, what="the job to log everything and end its runs")
            waiting = await locker.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'")
            ends_locked = await topic_ends(run.bootstrap, run.topic)
            assert job.proc.poll() is None, "the job ended before the lock was released"
        released.touch()
        report = await run.finish()
    finally:
        await locker.close()
    result = await run.check(timeout_s=90)

    assert waiting >= 1  # the worker's transaction really waited on the lock
    produced_while_locked = sum(ends_locked.values()) - sum(ends_before.values())
    produced_late = sum(ends_locked.values()) - sum(ends_paused.values())
    read_early = samples[late_from][1] - samples[0][1]
    read_late = samples[-1][1] - samples[late_from][1]
    await run.record(
        result,
        guarantee="a slow database pauses consumption, memory stays bounded",
        faults=f"ACCESS EXCLUSIVE locks on the worker's tables for "
               f"{samples[-1][0]:.0f} s, while the job logged {TICKS - LOCKED_AT} ticks",
        notes=f"worker RSS {rss_before >> 20} -> peak {rss_peak >> 20} MiB; "
              f"{produced_while_locked} messages produced during the lock; the worker read "
              f"{read_late:,} bytes from the broker while the last {produced_late} were "
              f"produced (its queue full)",
        rss_before_bytes=rss_before, rss_peak_bytes=rss_peak, lock_waiters=waiting,
        produced_while_locked=produced_while_locked, read_early_bytes=read_early,
        read_late_bytes=read_late)
    assert worker.stop() == 0, worker.output()

    assert produced_while_locked >= 40, (ends_before, ends_locked)
    assert produced_late >= 40, (ends_paused, ends_locked)  # the topic kept growing ...
    assert read_late < 256 << 10, samples  # ... and the paused worker did not read it
    assert rss_peak - rss_before < 128 << 20, (rss_before, rss_peak)
    assert rss_peak < 300 << 20
    assert result.ok, result.as_dict()
    assert (result.lost, result.doubled, result.missing_events) == (0, 0, 0)
    assert result.points_stored == workload.points
    assert result.statuses == {"parent": "Completed", "child": "Completed"}
    print(f"slow database: locked {samples[-1][0]:.1f} s, {produced_while_locked} messages "
          f"produced meanwhile; the worker read {read_early} bytes filling its queue, then "
          f"{read_late} while {produced_late} more were produced; RSS {rss_before >> 20} -> "
          f"peak {rss_peak >> 20} MiB; ledger {result.as_dict()}; slowest log call "
          f"{report['slowest_log_ms']:.2f} ms; {time.monotonic() - started:.1f} s")
