"""fork()ed children log into their parent's run, exactly once (issue 12 item 1).

A training script opens a run, then hands work to a fork-based ``multiprocessing`` pool
(how data-loader workers are made) and to a bare ``os.fork()`` child; every one of them
logs. Each child logs through a producer of its own (the parent's unsent points are the
parent's), so every point reaches the run once, whatever was buffered at the fork.
Real broker, real worker, real PostgreSQL; the script is its own process, as a training
script is.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.integration.helpers import run_id
from tests.integration.pipelines import Pipeline
from tests.reliability import Reliability, storage_backend

pytestmark = pytest.mark.integration

TASKS = 6
POINTS_PER_TASK = 5_000
PARENT_POINTS = 20_000
FORK_POINTS = 3_000

SCRIPT = textwrap.dedent(f"""
    import multiprocessing as mp
    import os
    import sys

    from producer import Run

    run = Run.get_context()

    def task(i):
        for step in range({POINTS_PER_TASK}):
            run.log("loader", float(i * 1_000_000 + step), step=i * 1_000_000 + step)
        return os.getpid()

    # Points still buffered in the parent when it forks must not be sent by the children.
    for step in range({PARENT_POINTS} // 2):
        run.log("parent", float(step), step=step)
    with_pool = mp.get_context("fork").Pool(3)
    pids = with_pool.map(task, range({TASKS}))
    with_pool.close()
    with_pool.join()
    assert os.getpid() not in pids

    pid = os.fork()
    if pid == 0:
        for step in range({FORK_POINTS}):
            run.log("forked", float(step), step=step)
        sys.exit(0)  # a normal exit: atexit closes the child's sender
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0

    for step in range({PARENT_POINTS} // 2, {PARENT_POINTS}):
        run.log("parent", float(step), step=step)
    run.complete()
""")


async def test_forked_children_log_into_the_run_exactly_once(
    pipeline: Pipeline, tmp_path: Path, reliability: Reliability
) -> None:
    rid = run_id("forked")
    done = await pipeline.run_script(SCRIPT, run_id=rid, cwd=tmp_path, timeout_s=180)
    assert "Traceback" not in done.stderr, done.stderr
    assert list((tmp_path / "home" / "spool" / "events").glob("*")) == []
    await pipeline.drained()

    counts = {r["name"]: r for r in await pipeline.rows(
        "SELECT name, count(*) AS n, count(DISTINCT step) AS d, count(DISTINCT value) AS v "
        "FROM runstream.metric_points WHERE run_id = $1 GROUP BY name", rid)}
    expected = {"loader": TASKS * POINTS_PER_TASK, "parent": PARENT_POINTS,
                "forked": FORK_POINTS}
    assert {name: (c["n"], c["d"], c["v"]) for name, c in counts.items()} == {
        name: (n, n, n) for name, n in expected.items()}
    loader_steps = {r["step"] for r in await pipeline.rows(
        "SELECT step FROM runstream.metric_points WHERE run_id = $1 AND name = 'loader'", rid)}
    assert loader_steps == {i * 1_000_000 + s for i in range(TASKS)
                            for s in range(POINTS_PER_TASK)}

    producers = await pipeline.rows(
        "SELECT producer_id, events, missing_events FROM runstream.producers "
        "WHERE run_id = $1", rid)
    # the parent, each pool worker that ran a task (1..3) and the bare fork child
    assert 3 <= len(producers) <= 5
    assert all(p["missing_events"] == 0 for p in producers)
    (run,) = await pipeline.rows("SELECT status FROM runstream.runs WHERE run_id = $1", rid)
    assert run["status"] == "Completed"
    total = sum(expected.values())
    reliability.record(
        guarantee="fork()ed children (a fork-based multiprocessing pool, a bare os.fork()) "
                  "log into the parent's run exactly once",
        faults=f"{TASKS} pool tasks on 3 forked workers and one os.fork() child, forked while "
               "the parent had points buffered",
        events=sum(p["events"] for p in producers), points=total,
        lost=total - sum(c["d"] for c in counts.values()),
        doubled=sum(c["n"] - c["d"] for c in counts.values()),
        storage=await storage_backend(pipeline.dsn))
