"""``Run.resume`` with real processes, the real broker, worker, PostgreSQL and API (issue 15,
item 8).

Process A starts a run, logs steps 0..9 and leaves it active: ``run.close()`` hands the
run on (a closed run is not ended at exit, ``_exit.py``) and A exits 0. Process B resumes
it — a producer of its own — logs ten more points without ``step=``, which go on at 10,
reads them back with A's, and completes the run. Every point is stored exactly once
(each producer's events gap-free), the steps continue, the run ends Completed, and
resuming it again says it has ended. A run resumed by a process that then exits without
``complete()`` ends Failed, as one it started would.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from producer import Experiment, NotFoundError, Run, RunEndedError
from producer._exit import EXITED
from tests.integration.pipelines import ReadPipeline, call

pytestmark = pytest.mark.integration

STARTS_AND_LEAVES = textwrap.dedent("""
    import json
    from producer import Experiment, Workspace

    run = Experiment(Workspace.from_env(), "resume").start_logging(outputs_dir=None)
    for step in range(10):
        run.log("loss", float(step))
    run.tag("phase", "one")
    run.close()  # left active for another process: not ended at exit
    print(json.dumps({"run_id": run.id, "producer_id": run.producer_id}), flush=True)
""")

RESUMES = textwrap.dedent("""
    import json, sys
    from producer import Run, Workspace

    run = Run.resume(Workspace.from_env(), sys.argv[1])
    for i in range(10):
        run.log("loss", float(10 + i))  # no step=: after the last stored one
    run.log("acc", 0.5)  # a series first logged now: from 0
    history = run.get_metric_history("loss")  # A's points and its own, at once
    status = run.get_status()
    if sys.argv[2] == "complete":
        run.complete()
    print(json.dumps({"producer_id": run.producer_id, "steps": history.step,
                      "status": status}), flush=True)
""")


async def process(read_pipeline: ReadPipeline, tmp_path: Path, name: str, script: str,
                  *args: str) -> dict[str, Any]:
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", script, *args], cwd=tmp_path,
        env=read_pipeline.env(name), capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


async def test_a_run_left_active_by_one_process_is_resumed_and_completed_by_another(
    read_pipeline: ReadPipeline, tmp_path: Path,
) -> None:
    a = await process(read_pipeline, tmp_path, "a", STARTS_AND_LEAVES)
    run_id = a["run_id"]
    await read_pipeline.drained()  # A's points are stored before B resumes

    def status_now() -> str:
        return Run(Experiment(read_pipeline.workspace("reader"), "resume"), run_id).get_status()

    assert await call(status_now) == "Running"  # A exited; the run is still active

    b = await process(read_pipeline, tmp_path, "b", RESUMES, run_id, "complete")
    assert b["steps"] == list(range(20))
    assert b["status"] == "Running"
    assert b["producer_id"] != a["producer_id"]
    await read_pipeline.drained()

    def read_back() -> dict[str, Any]:
        ws = read_pipeline.workspace("reader")
        run = Run(Experiment(ws, "resume"), run_id)
        seen: dict[str, Any] = {
            "details": run.get_details(), "loss": run.get_metric_history("loss"),
            "acc": run.get_metric_history("acc"), "metrics": run.get_metrics(), "refused": []}
        for where in (ws, Experiment(ws, "resume")):
            with pytest.raises(RunEndedError) as raised:
                Run.resume(where, run_id)
            seen["refused"].append((str(raised.value), raised.value.status))
        with pytest.raises(NotFoundError, match="no run 'resume_1_0a1b2c3d' to resume"):
            Run.resume(ws, "resume_1_0a1b2c3d")
        ws.close(30.0)
        return seen

    seen = await call(read_back)
    details, loss = seen["details"], seen["loss"]
    assert details["status"] == "Completed"
    assert details["tags"] == {"phase": "one"}
    assert details["logged_after_end"] == 0
    # Every point once, the steps going on from A's to B's.
    assert loss.step == list(range(20))
    assert loss.value == [float(v) for v in range(20)]
    assert loss.total_points == 20
    assert seen["acc"].step == [0]
    assert seen["metrics"]["loss"] == [float(v) for v in range(20)]
    for message, status in seen["refused"]:
        assert status == "Completed"
        assert message.startswith(f"Run.resume(): run {run_id!r} has ended (Completed) and "
                                  "cannot be resumed")
    # Two producers, A's and B's, each stored gap-free: exactly once, in order.
    producers = await read_pipeline.rows(
        "SELECT producer_id, events, max_seq FROM runstream_data.producers WHERE run_id = $1",
        run_id)
    by_id = {r["producer_id"]: r for r in producers}
    assert set(by_id) == {a["producer_id"], b["producer_id"]}
    for row in producers:
        assert row["events"] == row["max_seq"] + 1, row


async def test_a_resumed_run_ends_failed_when_its_process_exits_without_completing(
    read_pipeline: ReadPipeline, tmp_path: Path,
) -> None:
    a = await process(read_pipeline, tmp_path, "a", STARTS_AND_LEAVES)
    await read_pipeline.drained()
    b = await process(read_pipeline, tmp_path, "b", RESUMES, a["run_id"], "exit")
    assert b["steps"] == list(range(20))
    await read_pipeline.drained()

    def details() -> dict[str, Any]:
        ws = read_pipeline.workspace("reader")
        got = Run(Experiment(ws, "resume"), a["run_id"]).get_details()
        ws.close(30.0)
        return got

    got = await call(details)
    assert got["status"] == "Failed"
    assert got["error"] == EXITED
