"""Ended is ended, and a script reads its own writes (issue 15 items 1 and 3).

- The handle that ended a run takes nothing more: logging, tagging, uploading, child runs
  and ``fail`` raise ``RunEndedError`` naming the run and its status; tags and properties
  of the ended run go through a handle fetched by id. Another process (rank 1) logging
  into the run after it ended is stored — never thrown away — and counted: the run's
  details say how much was logged after its end.
- Right after a ``with`` block, the status, details, tags and children read back are the
  ones just written (three runs in a row, as a hyper-parameter sweep does).

Real broker, worker, PostgreSQL and API (``read_pipeline``); rank 1 is its own process.
"""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from producer import Experiment, Run, RunClosedError, RunEndedError
from tests.integration.pipelines import ReadPipeline, call

pytestmark = pytest.mark.integration

LATE_RANK = textwrap.dedent("""
    from producer import Run

    run = Run.get_context()  # RUNSTREAM_RUN_ID: rank 1 of the run, which has ended
    for step in range(5):
        run.log("late", float(step), step=step)
    run.log_list("late list", [1, 2, 3])
    run.flush(30.0)
    print("logged", flush=True)
""")


async def test_an_ended_run_refuses_its_handle_and_counts_what_other_ranks_log_after(
    read_pipeline: ReadPipeline, tmp_path: Path,
) -> None:
    def first_process() -> tuple[str, dict[str, str]]:
        ws = read_pipeline.workspace("trainer")
        exp = Experiment(ws, "closed")
        with exp.start_logging(outputs_dir=None) as run:
            run.log("loss", 0.5)
            run.tag("stage", "train")
        refused = {}
        actions: dict[str, Callable[[], object]] = {
            "log": lambda: run.log("after", 1.0),
            "log_row": lambda: run.log_row("table", a=1),
            "tag": lambda: run.tag("after"),
            "add_properties": lambda: run.add_properties({"k": "v"}),
            "upload_file": lambda: run.upload_file("late.txt", io.BytesIO(b"late")),
            "child_run": lambda: run.child_run("late child"),
            "fail": lambda: run.fail("oops"),
        }
        for what, action in actions.items():
            with pytest.raises(RunEndedError) as raised:
                action()
            assert isinstance(raised.value, RunClosedError)
            assert (raised.value.run_id, raised.value.status) == (run.id, "Completed")
            refused[what] = str(raised.value)
        # After the fact, on purpose: through a handle fetched by id.
        fetched = Run(exp, run.id)
        fetched.tag("reviewed", "yes")
        fetched.add_properties({"score": "0.9"})
        tags = fetched.get_tags()
        assert tags == {"stage": "train", "reviewed": "yes"}, tags
        ws.close(30.0)
        return run.id, refused

    run_id, refused = await call(first_process)
    for what, message in refused.items():
        assert f"run {run_id!r} has ended (Completed)" in message, (what, message)
        assert f"Run(run.experiment, {run_id!r}).tag(...)" in message, (what, message)

    env = {**read_pipeline.env("rank1"), "RUNSTREAM_RUN_ID": run_id, "RUNSTREAM_RANK": "1",
           "RUNSTREAM_WORLD_SIZE": "2"}
    rank1 = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", LATE_RANK], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=120, check=False)
    assert (rank1.returncode, rank1.stdout) == (0, "logged\n"), rank1.stderr
    await read_pipeline.drained()

    def another_process() -> tuple[dict[str, object], dict[str, object]]:
        ws = read_pipeline.workspace("reader")
        fetched = Run(Experiment(ws, "closed"), run_id)
        return fetched.get_details(), fetched.get_metrics()

    details, metrics = await call(another_process)
    # Stored, never thrown away; counted as logged after the end; the run stays Completed
    # (rank 1 exiting does not end a run it did not start).
    assert details["status"] == "Completed"
    assert details["logged_after_end"] == 5 + 3
    assert metrics == {"loss": 0.5, "late": [0.0, 1.0, 2.0, 3.0, 4.0], "late list": [1, 2, 3]}
    assert details["tags"] == {"stage": "train", "reviewed": "yes"}
    properties = details["properties"]
    assert isinstance(properties, dict)
    assert properties["score"] == "0.9"


async def test_a_script_reads_its_own_status_details_tags_and_children_at_once(
    read_pipeline: ReadPipeline,
) -> None:
    def sweep() -> list[dict[str, Any]]:
        ws = read_pipeline.workspace("sweep")
        exp = Experiment(ws, "ryw")
        seen: list[dict[str, Any]] = []
        for lr in (0.1, 0.01, 0.001):
            with exp.start_logging(display_name=f"lr={lr}", outputs_dir=None) as run:
                run.log("lr", lr)
                run.tag("lr", str(lr))
                with run.child_run("fold-1") as child:
                    child.log("mse", lr * 10)
                late = run.child_run("fold-2")  # still running when read below
            seen.append({
                "status": run.get_status(),  # right after the block: no sleep, no retry
                "details": run.get_details(),
                "tags": run.get_tags(),
                "children": [c.id for c in run.get_children()],
                "completed children": [c.id for c in run.get_children(status="Completed")],
                "running children": [c.id for c in run.get_children(status="Running")],
                "ids": (run.id, child.id, late.id),
                "metrics": run.get_metrics(),
            })
            late.complete()
            seen[-1]["late status"] = late.get_status()
        ws.close(30.0)
        return seen

    for got in await call(sweep):
        run_id, child_id, late_id = got["ids"]
        details = got["details"]
        assert isinstance(details, dict)
        assert details["run_id"] == run_id
        assert got["status"] == details["status"] == "Completed", got
        assert got["tags"] == details["tags"] == {"lr": details["display_name"][3:]}, got
        assert details["children"] == [child_id, late_id]
        assert got["children"] == [child_id, late_id]
        assert got["completed children"] == [child_id]
        assert got["running children"] == [late_id]
        assert got["late status"] == "Completed"
        assert got["metrics"] == {"lr": float(details["display_name"][3:])}
