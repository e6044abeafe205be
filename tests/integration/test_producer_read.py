"""The SDK's read side through the real API server, a real ``runstream ingest`` worker
process, the broker and PostgreSQL: what a script logs, it reads back exactly.

Each test has its own topic, database, consumer group and API server (in-process on an
ephemeral port, over the test's database and blob directory). "Everything arrived" is
established exactly — the worker's stored offsets cover every message on the topic —
before results are compared; the read-your-own-writes test instead measures how soon a
read sees a fresh write. The SDK's calls block (urllib, flush), so they run in worker
threads while the server runs on the test's event loop.
"""

from __future__ import annotations

import asyncio
import io
import math
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from producer import (
    ApiError,
    Experiment,
    NotFoundError,
    ProducerTimeoutError,
    ReadOnlyRunError,
    Run,
    UnknownExperimentWarning,
    Workspace,
)
from tests.helpers import unique
from tests.integration.helpers import NewDb, run_id
from tests.integration.pipelines import READ_TOKEN, ReadPipeline, call, mismatch, start_api

pytestmark = pytest.mark.integration

def requests_to(registry: CollectorRegistry, route: str) -> float:
    """Requests the API has answered on ``route`` (a route template)."""
    return sum(
        sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name == "runstream_http_requests_total" and sample.labels["route"] == route
    )


# ---- metrics --------------------------------------------------------------------------


async def test_get_metrics_gives_back_exactly_what_was_logged(read_pipeline: ReadPipeline) -> None:
    ws = read_pipeline.workspace()
    mixed: list[Any] = [1.5, 2, True, "warm start", math.nan, math.inf, -math.inf, False, -7]
    expected: dict[str, Any] = {
        "alpha": 0.5,
        "note": "warm start",
        "flag": False,
        "steps": 7,
        "mixed": [*mixed, float(2**70)],  # beyond int64: stored as a float
        "loss": [0.1, 0.4, 0.2, 0.3],  # by step (0, 1, 10, 20), not by call
        "curve": [i / 3 for i in range(3000)],
        "accuracies": [0.6, 0.7, 0.87, 2, False, "n/a", math.nan, -math.inf],
        "Y over X": {"x": [1, 2, 3], "y": [0.4, 0.8, math.nan], "note": ["a", "b", "c"]},
        "Sine": {"angle": [0.0, 0.5, 1.0], "sine": [0.0, 0.479, math.inf]},
    }

    def train() -> Run:
        with Experiment(ws, "metrics").start_logging(outputs_dir=None) as run:
            run.log("alpha", 0.5)
            run.log("note", "warm start")
            run.log("flag", False)
            run.log("steps", 7)
            for value in [*mixed, 2**70]:
                run.log("mixed", value)
            run.log("loss", 0.3, step=20)
            run.log("loss", 0.1, step=0)
            run.log("loss", 0.4)  # implicit step: one past the previous call's (0)
            run.log("loss", 0.2, step=10)
            for i in range(3000):
                run.log("curve", i / 3)
            run.log_list("accuracies", expected["accuracies"])
            run.log_row("Y over X", x=1, y=0.4, note="a")
            run.log_row("Y over X", x=2, y=0.8, note="b")
            run.log_row("Y over X", x=3, y=math.nan, note="c")
            run.log_table("Sine", expected["Sine"])
        ws.close(30.0)
        return run

    run = await call(train)
    await read_pipeline.drained()

    got = await call(run.get_metrics)
    assert mismatch(got, expected) is None
    assert mismatch(await call(run.get_metrics, "loss"), {"loss": expected["loss"]}) is None
    both = await call(run.get_metrics, ["Sine", "alpha", "no such metric"])
    assert mismatch(both, {"Sine": expected["Sine"], "alpha": 0.5}) is None
    attached = await call(read_pipeline.workspace("reader").get_run, run.id)
    assert mismatch(await call(attached.get_metrics), expected) is None


async def test_distributed_ranks_read_back_in_step_rank_time_order(
    read_pipeline: ReadPipeline,
) -> None:
    rid = run_id("dist")
    world = 3
    workspaces = [read_pipeline.workspace(f"rank{rank}") for rank in range(world)]
    start = threading.Barrier(world)

    def rank_main(rank: int) -> None:
        env = {
            "RUNSTREAM_RUN_ID": rid,
            "RUNSTREAM_RANK": str(rank),
            "RUNSTREAM_WORLD_SIZE": str(world),
        }
        run = Run.get_context(workspace=workspaces[rank], env=env)
        start.wait()
        for step in range(200):
            run.log("loss", step * 10.0 + rank, step=step)
            if step % 50 == 0:
                run.log("loss", -1.0 - rank, step=step)  # same (step, rank): by time
            run.log("tokens", rank, step=step)
        if rank == 0:
            run.flush(30.0)
            run.complete()
        workspaces[rank].close(30.0)

    await asyncio.gather(*(call(rank_main, rank) for rank in range(world)))
    await read_pipeline.drained()

    reader = read_pipeline.workspace("reader")
    got = await call(lambda: reader.get_run(rid).get_metrics())
    expected_loss = []
    for step in range(200):
        for rank in range(world):
            expected_loss.append(step * 10.0 + rank)
            if step % 50 == 0:
                expected_loss.append(-1.0 - rank)
    assert mismatch(got["loss"], expected_loss) is None
    assert mismatch(got["tokens"], [rank for _ in range(200) for rank in range(world)]) is None


async def test_a_script_reads_its_own_writes_within_a_second_or_so(
    read_pipeline: ReadPipeline,
) -> None:
    ws = read_pipeline.workspace()

    def script() -> tuple[str, float, dict[str, Any]]:
        run = Experiment(ws, "own").start_logging(outputs_dir=None)
        status = run.get_status()  # waits for the run to appear, never NotFoundError
        run.log("loss", 0.25)
        logged = time.monotonic()
        while (metrics := run.get_metrics()) != {"loss": 0.25}:
            if time.monotonic() - logged > 10:
                break
            time.sleep(0.05)
        seen_s = time.monotonic() - logged
        run.complete()
        ws.close(30.0)
        return status, seen_s, metrics

    status, seen_s, metrics = await call(script)
    assert status == "Running"
    assert metrics == {"loss": 0.25}
    assert seen_s < 5.0, f"a fresh write took {seen_s:.1f} s to read back"


# ---- files ----------------------------------------------------------------------------


async def test_files_round_trip_through_download_file(
    read_pipeline: ReadPipeline, tmp_path: Path
) -> None:
    ws = read_pipeline.workspace()
    model = os.urandom(700_000)
    png = b"\x89PNG\r\n\x1a\n" + os.urandom(2000)
    outputs = tmp_path / "outputs"
    (outputs / "sub").mkdir(parents=True)
    (outputs / "sub" / "metrics.json").write_bytes(b'{"mse": 3.1}')
    (tmp_path / "roc.png").write_bytes(png)
    expected = {
        "outputs/model v2.pkl": model,
        "raw#1.bin": b"streamed",
        "ROC/step_0.png": png,
        "outputs/sub/metrics.json": b'{"mse": 3.1}',
    }

    def train() -> Run:
        with Experiment(ws, "files").start_logging(outputs_dir=outputs) as run:
            run.upload_file("outputs/model v2.pkl", io.BytesIO(model))
            run.upload_file("raw#1.bin", io.BytesIO(b"streamed"))
            run.log_image("ROC", path=tmp_path / "roc.png")
        ws.close(30.0)
        return run

    run = await call(train)
    await read_pipeline.drained()

    assert sorted(await call(run.get_file_names)) == sorted(expected)
    downloads = tmp_path / "downloads"
    for name, data in expected.items():
        written = await call(run.download_file, name, downloads / name)
        assert written.read_bytes() == data, name
    into_dir = await call(run.download_file, "outputs/model v2.pkl", downloads)
    assert into_dir == downloads / "model v2.pkl"
    assert into_dir.read_bytes() == model
    with pytest.raises(NotFoundError):
        await call(run.download_file, "outputs/missing.bin", downloads / "missing.bin")
    assert not (downloads / "missing.bin").exists()


# ---- status and details -------------------------------------------------------------------


async def test_status_details_and_portal_url(read_pipeline: ReadPipeline) -> None:
    ws = read_pipeline.workspace()

    def train() -> tuple[Run, Run, Run]:
        exp = Experiment(ws, "details")
        with exp.start_logging(
            display_name="ridge",
            compute_target="cpu-cluster",
            properties={"alpha": "0.5"},
            outputs_dir=None,
        ) as run:
            run.tag("selected", "yes")
            run.tag("baseline")
            child = run.child_run("fold-1")
            child.complete()
        failed = exp.start_logging(outputs_dir=None)
        try:
            raise ValueError("boom")
        except ValueError as exc:
            failed.fail(exc)
        ws.close(30.0)
        return run, child, failed

    run, child, failed = await call(train)
    await read_pipeline.drained()

    details = await call(run.get_details)
    assert details["run_id"] == run.id
    assert details["status"] == "Completed"
    assert (details["display_name"], details["compute_target"]) == ("ridge", "cpu-cluster")
    assert details["tags"] == {"selected": "yes", "baseline": None}
    assert details["properties"] == {"alpha": "0.5"}
    assert details["children"] == [child.id]
    assert details["parent_run_id"] is None
    assert details["error"] is None
    times = details["status_times"]
    assert times["Running"] is not None
    assert times["Completed"] is not None
    assert times["Failed"] is None
    assert details["portal_url"] == f"{read_pipeline.api_url}/runs/{run.id}"
    assert await call(run.get_portal_url) == details["portal_url"]
    assert await call(run.get_status) == "Completed"

    assert (await call(child.get_details))["parent_run_id"] == run.id
    assert await call(failed.get_status) == "Failed"
    assert "ValueError: boom" in (await call(failed.get_details))["error"]


@pytest.fixture
async def api_url(new_db: NewDb, tmp_path: Path) -> AsyncIterator[str]:
    """An API over an empty migrated database, without a worker."""
    dsn = await new_db()
    async with AsyncExitStack() as exits:
        yield await start_api(
            exits,
            dsn=dsn,
            blob_root=tmp_path / "server-blobs",
            token=READ_TOKEN,
            registry=CollectorRegistry(),
        )


async def test_unknown_runs_and_targets_and_bad_tokens(api_url: str, tmp_path: Path) -> None:
    def ws(token: str = READ_TOKEN) -> Workspace:
        return Workspace(api_url=api_url, home=tmp_path / "sdk", token=token)

    with pytest.raises(NotFoundError) as missing:
        await call(ws().get_run, run_id("nobody"))
    assert missing.value.status == 404
    assert "nobody" in missing.value.message
    with pytest.raises(NotFoundError):
        await call(ws().compute_target, "nowhere")
    assert await call(ws().compute_targets) == []

    def no_runs() -> list[Run]:
        with pytest.warns(UnknownExperimentWarning, match="no run of experiment 'empty'"):
            return list(Experiment(ws(), "empty").get_runs())

    assert await call(no_runs) == []
    with pytest.raises(ApiError) as forbidden:
        await call(ws(token="wrong").compute_targets)  # noqa: S106
    assert forbidden.value.status == 403
    with pytest.raises(ApiError) as unauthorized:
        await call(ws(token="").compute_targets)
    assert unauthorized.value.status == 401


# ---- waiting for another process ------------------------------------------------------------

JOB = textwrap.dedent(
    """
    import sys, time
    from producer import Experiment, Workspace

    ws = Workspace.from_env()
    run = Experiment(ws, "job").start_logging(
        display_name="job", capture_output=True, outputs_dir=None)
    with open(sys.argv[1], "w") as f:
        f.write(run.id)
    time.sleep(float(sys.argv[2]))  # the reader attaches and starts waiting meanwhile
    for i in range(5):
        print(f"epoch {i} loss {1 / (i + 1):.3f}", flush=True)
        time.sleep(0.2)
    print("oops", file=sys.stderr, flush=True)
    run.complete()
    ws.close(30)
    """
)


async def test_wait_for_completion_streams_another_process_until_it_completes(
    read_pipeline: ReadPipeline, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    id_file = tmp_path / "run_id"

    def launch() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-c", JOB, str(id_file), "4"],
            env=read_pipeline.env("job"),
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    proc = await call(launch)
    try:
        run = await call(attach_when_visible, read_pipeline.workspace("reader"), id_file)
        assert proc.poll() is None, "the job ended before the wait began"
        capsys.readouterr()

        details = await call(run.wait_for_completion, show_output=True, timeout_s=120)

        assert details["status"] == "Completed"
        assert await call(proc.wait, 60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = capsys.readouterr().out
    epochs = [f"epoch {i} loss {1 / (i + 1):.3f}" for i in range(5)]
    positions = [out.index(line) for line in epochs]
    assert positions == sorted(positions)
    assert all(out.count(line) == 1 for line in epochs)
    assert out.index(f"RunId: {run.id}") < out.index("Status: Running") < positions[0]
    assert positions[-1] < out.index("[stderr] oops") < out.index("Status: Completed")
    assert "Execution Summary" in out
    # the lines came from the event stream: the paged log was never read
    assert requests_to(read_pipeline.api_registry, "/v1/runs/{run_id}/logs") == 0
    assert requests_to(read_pipeline.api_registry, "/v1/runs/{run_id}") > 0


def attach_when_visible(ws: Workspace, id_file: Path, timeout_s: float = 60.0) -> Run:
    """The job's run, once the job has written its id and the worker committed its start."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if id_file.exists() and id_file.stat().st_size > 0:
            try:
                return ws.get_run(id_file.read_text())
            except NotFoundError:
                pass
        time.sleep(0.1)
    raise AssertionError(f"the job's run did not appear within {timeout_s:g} s")


async def test_wait_for_completion_times_out_on_a_run_that_goes_on(
    read_pipeline: ReadPipeline,
) -> None:
    ws = read_pipeline.workspace()
    run = await call(Experiment(ws, "long").start_logging, outputs_dir=None)
    try:
        started = time.monotonic()
        with pytest.raises(ProducerTimeoutError, match="still Running"):
            await call(run.wait_for_completion, show_output=False, timeout_s=2.0)
        assert time.monotonic() - started < 10.0
    finally:
        await call(run.complete)
        await call(ws.close, 30.0)
    details = await call(run.wait_for_completion, show_output=False, timeout_s=60)
    assert details["status"] == "Completed"


# ---- listing runs ---------------------------------------------------------------------------


async def test_get_runs_filters_and_orders(read_pipeline: ReadPipeline) -> None:
    ws = read_pipeline.workspace()
    name = unique("runs-")

    def make_runs() -> dict[str, str]:
        exp = Experiment(ws, name)
        ids: dict[str, str] = {}
        plan: list[tuple[str, dict[str, str | None], list[float] | None, bool]] = [
            ("a", {"selected": "yes"}, [3.0, 2.0], True),
            ("b", {"selected": "no"}, [1.0, 5.0], True),
            ("c", {"baseline": None}, [0.5], False),
            ("d", {"selected": "yes"}, None, True),
        ]
        for key, tags, losses, ok in plan:
            run = exp.start_logging(display_name=key, outputs_dir=None)
            for tag, value in tags.items():
                run.tag(tag, value)
            for loss in losses or ():
                run.log("loss", loss)
            if ok:
                run.complete()
            else:
                run.fail("diverged")
            ids[key] = run.id
            time.sleep(0.05)  # distinct creation times
        ws.close(30.0)
        return ids

    ids = await call(make_runs)
    await read_pipeline.drained()
    exp = Experiment(read_pipeline.workspace("reader"), name)

    async def listed(**filters: Any) -> list[str]:
        runs = await call(lambda: list(exp.get_runs(**filters)))
        by_id = {v: k for k, v in ids.items()}
        assert all(isinstance(r, Run) and r.closed for r in runs)
        return [by_id[r.id] for r in runs]

    assert await listed() == ["d", "c", "b", "a"]  # newest first
    assert await listed(order_by="created_at", order="asc") == ["a", "b", "c", "d"]
    assert await listed(page_size=1) == ["d", "c", "b", "a"]
    assert await listed(limit=2) == ["d", "c"]
    assert await listed(status="Failed") == ["c"]
    assert await listed(status=["Completed", "Failed"]) == ["d", "c", "b", "a"]
    assert await listed(status="Running") == []
    assert await listed(tags={"selected": "yes"}) == ["d", "a"]
    assert await listed(tags="selected") == ["d", "b", "a"]
    assert await listed(tags=["baseline"]) == ["c"]
    assert await listed(tags={"selected": "yes"}, status="Completed") == ["d", "a"]
    assert await listed(order_by="metric:loss", order="asc") == ["c", "a", "b", "d"]
    assert await listed(order_by="metric:loss", order="desc") == ["b", "a", "c", "d"]

    oldest_first = await call(lambda: list(exp.get_runs(order="asc")))
    assert [await call(lambda r=r: r.number) for r in oldest_first] == [1, 2, 3, 4]
    (first,) = await call(lambda: list(exp.get_runs(limit=1, order_by="metric:loss")))
    assert first.display_name == "b"
    assert await call(first.get_metrics) == {"loss": [1.0, 5.0]}
    with pytest.raises(ReadOnlyRunError):
        first.log("loss", 1.0)
    with pytest.raises(ApiError) as bad:
        await call(lambda: list(exp.get_runs(status="Sleeping")))
    assert bad.value.status == 400
    assert "status" in bad.value.message


# ---- compute targets -----------------------------------------------------------------------


async def test_compute_targets_show_queue_state_and_active_runs(
    read_pipeline: ReadPipeline,
) -> None:
    ws = read_pipeline.workspace()
    target = unique("gpu-")

    def start() -> tuple[Run, Run]:
        exp = Experiment(ws, "queue")
        done = exp.start_logging(compute_target=target, outputs_dir=None)
        done.complete()
        active = exp.start_logging(compute_target=target, outputs_dir=None)
        ws.flush(30.0)
        return done, active

    _, active = await call(start)
    await read_pipeline.drained()

    targets = {t["compute_target"]: t for t in await call(ws.compute_targets)}
    state = targets[target]
    assert (state["queued"], state["preparing"], state["running"]) == (0, 0, 1)
    assert (state["completed_1h"], state["failed_1h"], state["canceled_1h"]) == (1, 0, 0)
    one = await call(ws.compute_target, target)
    assert [r["run_id"] for r in one["active_runs"]] == [active.id]
    assert one["running"] == 1

    await call(active.complete)
    await call(ws.close, 30.0)
    await read_pipeline.drained()
    one = await call(ws.compute_target, target)
    assert one["active_runs"] == []
    assert (one["running"], one["completed_1h"]) == (0, 2)
    with pytest.raises(NotFoundError):
        await call(ws.compute_target, unique("nowhere-"))
