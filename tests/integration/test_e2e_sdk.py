"""End to end through the real SDK: ``producer`` → broker → ``runstream ingest`` processes
→ PostgreSQL, read back through the public ``runstream.*`` views (and artifact bytes
through the real API).

Each test has its own topic, database, consumer group and runs. "Everything arrived" is
established exactly: the worker's committed offsets (stored with the rows) cover every
message on the topic, and then rows are counted. Failure scenarios (kill -9 of the
worker, a broker stopped mid-run) are in ``test_e2e_faults.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from producer import Experiment, Run, RunEndedError
from tests.integration.helpers import run_id
from tests.integration.pipelines import Pipeline, workspace
from tests.reliability import Reliability, storage_backend

pytestmark = pytest.mark.integration


async def blob(api_url: str, digest: str) -> bytes:
    async with aiohttp.ClientSession() as http, http.get(f"{api_url}/v1/blobs/{digest}") as r:
        assert r.status == 200, f"blob {digest}: HTTP {r.status}"
        return await r.read()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def same(a: object, b: object) -> bool:
    """Equality where NaN equals NaN (values are compared exactly otherwise)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b and type(a) is type(b)


async def test_every_logging_call_lands_in_the_views_as_logged(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    ws = workspace(pipeline, tmp_path / "sdk")
    mixed: list[float | int | bool | str] = [1.5, 2, True, "warm start", math.nan, math.inf,
                                            -math.inf, False, -7, 2**70]

    def train() -> tuple[Run, Run]:
        exp = Experiment(ws, "diabetes")
        with exp.start_logging(display_name="ridge", compute_target="cpu-cluster",
                               properties={"alpha": "0.5"}, outputs_dir=None,
                               capture_output=True) as run:
            run.log("alpha", 0.5)
            for value in mixed:
                run.log("mixed", value)
            run.log("loss", 0.31, step=120)
            run.log("loss", 0.29, step=125)
            run.log("loss", 0.27)  # implicit: one past the previous step
            run.log("loss", 0.5, step=3)  # late, out of order
            for i in range(5000):
                run.log("curve", i / 3)
            run.log_list("accuracies", [0.6, 0.7, 0.87, 2, False, "n/a", math.nan, -math.inf])
            run.log_row("Y over X", x=1, y=0.4, note="first")
            run.log_row("Y over X", x=2, y=0.8, note="second")
            run.log_table("Sine", {"angle": [0.0, 0.5, 1.0], "sine": [0.0, 0.479, 0.841]})
            run.tag("selected", "yes")
            run.tag("baseline")
            print("epoch 1 done")
            print("epoch 2 done")
            print("warning: lr too high", file=sys.stderr)
            child = run.child_run("fold-1")
            child.log("mse", 3.1)
            assert child.parent is run
            child.parent.log("best", 3.1)
            child.complete()
        ws.flush(30.0)
        return run, child

    run, child = await asyncio.to_thread(train)
    stats = ws.stats()
    await asyncio.to_thread(ws.close, 10.0)
    assert (stats.events_spooled, stats.events_dropped) == (0, 0)
    await pipeline.drained()

    runs = {r["run_id"]: r for r in await pipeline.rows("SELECT * FROM runstream.runs")}
    assert set(runs) == {run.id, child.id}
    parent = runs[run.id]
    assert (parent["experiment"], parent["display_name"], parent["compute_target"],
            parent["status"], parent["parent_run_id"], parent["error"]) == (
        "diabetes", "ridge", "cpu-cluster", "Completed", None, None)
    assert json.loads(parent["properties"]) == {"alpha": "0.5"}
    assert json.loads(parent["tags"]) == {"selected": "yes", "baseline": None}
    assert parent["started_at"] <= parent["ended_at"]
    assert parent["dropped_events"] == 0
    kid = runs[child.id]
    assert (kid["parent_run_id"], kid["display_name"], kid["status"], kid["experiment"]) == (
        run.id, "fold-1", "Completed", "diabetes")

    points = await pipeline.rows(
        "SELECT run_id, name, step, value, value_text, kind, rank FROM runstream.metric_points "
        "ORDER BY run_id, name, step, rank, time")
    series: dict[tuple[str, str], list[tuple[int, Any, str]]] = {}
    for p in points:
        assert p["rank"] == 0
        value = p["value_text"] if p["kind"] == "str" else p["value"]
        if p["kind"] == "str":
            assert p["value"] is None
        else:
            assert p["value_text"] is None
        series.setdefault((p["run_id"], p["name"]), []).append((p["step"], value, p["kind"]))
    assert set(series) == {(run.id, n) for n in ("alpha", "mixed", "loss", "curve", "best")} | {
        (child.id, "mse")}
    assert series[run.id, "alpha"] == [(0, 0.5, "float")]
    assert series[run.id, "best"] == [(0, 3.1, "float")]
    assert series[child.id, "mse"] == [(0, 3.1, "float")]
    assert series[run.id, "loss"] == [(3, 0.5, "float"), (120, 0.31, "float"),
                                      (125, 0.29, "float"), (126, 0.27, "float")]
    assert series[run.id, "curve"] == [(i, i / 3, "float") for i in range(5000)]
    kinds = {bool: "bool", int: "int", float: "float", str: "str"}
    got_mixed = series[run.id, "mixed"]
    assert [(s, k) for s, _, k in got_mixed] == [
        (i, "float" if v == 2**70 else kinds[type(v)]) for i, v in enumerate(mixed)]
    # bool and int come back as numbers of their kind; a too-big int as the nearest float
    expected_values = [v if isinstance(v, str) else float(v) for v in mixed]
    assert all(same(got, want) for (_, got, _), want in zip(got_mixed, expected_values,
                                                            strict=True)), got_mixed

    lst = await pipeline.rows("SELECT name, idx, value, value_text, kind FROM runstream.lists "
                              "ORDER BY idx")
    assert [(r["name"], r["idx"], r["kind"]) for r in lst] == [
        ("accuracies", i, k) for i, k in enumerate(
            ["float", "float", "float", "int", "bool", "str", "float", "float"])]
    assert [r["value_text"] for r in lst] == [None] * 5 + ["n/a", None, None]
    assert all(same(r["value"], want) for r, want in zip(
        lst, [0.6, 0.7, 0.87, 2.0, 0.0, None, math.nan, -math.inf], strict=True)), lst

    cells = await pipeline.rows(
        "SELECT name, row_index, column_name, coalesce(value::text, value_text) AS v, kind, "
        "source FROM runstream.table_cells ORDER BY name, row_index, column_name")
    assert [tuple(c.values()) for c in cells] == [
        ("Sine", 0, "angle", "0", "float", "table"), ("Sine", 0, "sine", "0", "float", "table"),
        ("Sine", 1, "angle", "0.5", "float", "table"),
        ("Sine", 1, "sine", "0.479", "float", "table"),
        ("Sine", 2, "angle", "1", "float", "table"),
        ("Sine", 2, "sine", "0.841", "float", "table"),
        ("Y over X", 0, "note", "first", "str", "row"), ("Y over X", 0, "x", "1", "int", "row"),
        ("Y over X", 0, "y", "0.4", "float", "row"),
        ("Y over X", 1, "note", "second", "str", "row"), ("Y over X", 1, "x", "2", "int", "row"),
        ("Y over X", 1, "y", "0.8", "float", "row")]

    tags = await pipeline.rows("SELECT run_id, key, value FROM runstream.tags ORDER BY key")
    assert [tuple(t.values()) for t in tags] == [(run.id, "baseline", None),
                                                 (run.id, "selected", "yes")]

    lines = await pipeline.rows("SELECT stream, line FROM runstream.log_lines "
                                "WHERE run_id = $1 ORDER BY time, seq, line_no", run.id)
    by_stream: dict[str, list[str]] = {}
    for r in lines:
        by_stream.setdefault(r["stream"], []).append(r["line"])
    assert by_stream == {"stdout": ["epoch 1 done", "epoch 2 done"],
                         "stderr": ["warning: lr too high"]}

    producers = await pipeline.rows("SELECT run_id, rank, events, max_seq, missing_events "
                                    "FROM runstream.producers")
    assert sorted(p["run_id"] for p in producers) == sorted([run.id, child.id])
    assert all(p["missing_events"] == 0 and p["events"] == p["max_seq"] + 1
               for p in producers), producers


async def test_files_images_and_outputs_land_with_their_bytes_behind_the_api(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    ws = workspace(pipeline, tmp_path / "sdk")
    model = tmp_path / "model.pkl"
    model.write_bytes(os.urandom(300_000))
    roc = tmp_path / "roc.png"
    roc.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(1000))
    streamed = b"streamed " + os.urandom(64).hex().encode()
    outputs = tmp_path / "outputs"
    (outputs / "sub").mkdir(parents=True)
    (outputs / "metrics.json").write_bytes(b'{"mse": 3.1}')
    (outputs / "sub" / "notes.txt").write_bytes(b"kept at completion\n")
    figure = Figure()
    figure.add_subplot().plot([0, 1, 2], [2, 0, 1])

    def train() -> Run:
        with Experiment(ws, "blobs").start_logging(outputs_dir=outputs) as run:
            run.upload_file("model.pkl", model)
            run.upload_file("data/raw.bin", io.BytesIO(streamed))
            run.log_image("ROC", path=roc)
            run.log_image("curve", plot=figure)
            # written after start: captured at completion all the same
            (outputs / "late.txt").write_bytes(b"written late")
        ws.flush(30.0)
        return run

    run = await asyncio.to_thread(train)
    stats = ws.stats()
    await asyncio.to_thread(ws.close, 10.0)
    assert (stats.events_spooled, stats.events_dropped, stats.blobs_dropped) == (0, 0, 0)
    assert stats.blobs_uploaded == 7
    await pipeline.drained()

    arts = await pipeline.rows("SELECT run_id, name, kind, sha256, size_bytes, content_type "
                               "FROM runstream.artifacts ORDER BY name")
    assert {a["run_id"] for a in arts} == {run.id}
    files = {
        "model.pkl": model.read_bytes(),
        "data/raw.bin": streamed,
        "ROC/step_0.png": roc.read_bytes(),
        "outputs/metrics.json": b'{"mse": 3.1}',
        "outputs/sub/notes.txt": b"kept at completion\n",
        "outputs/late.txt": b"written late",
    }
    got = {a["name"]: a for a in arts}
    assert sorted(got) == sorted([*files, "curve/step_0.png"])
    for name, data in files.items():
        assert (got[name]["sha256"], got[name]["size_bytes"]) == (sha256(data), len(data)), name
    assert {n: (a["kind"], a["content_type"]) for n, a in got.items()} == {
        "model.pkl": ("FILE", "application/octet-stream"),
        "data/raw.bin": ("FILE", "application/octet-stream"),
        "ROC/step_0.png": ("IMAGE", "image/png"),
        "curve/step_0.png": ("IMAGE", "image/png"),
        "outputs/metrics.json": ("FILE", "application/json"),
        "outputs/sub/notes.txt": ("FILE", "text/plain"),
        "outputs/late.txt": ("FILE", "text/plain"),
    }
    for a in arts:
        data = await blob(pipeline.api_url, a["sha256"])
        assert (sha256(data), len(data)) == (a["sha256"], a["size_bytes"])
        if a["name"] in files:
            assert data == files[a["name"]]
    rendered = await blob(pipeline.api_url, got["curve/step_0.png"]["sha256"])
    assert rendered.startswith(b"\x89PNG\r\n\x1a\n")
    (status,) = await pipeline.rows("SELECT status FROM runstream.runs")
    assert status == {"status": "Completed"}


async def test_every_way_a_run_ends_gives_its_status(pipeline: Pipeline, tmp_path: Path) -> None:
    ws = workspace(pipeline, tmp_path / "sdk")

    def train() -> dict[str, Run]:
        exp = Experiment(ws, "endings")
        ended: dict[str, Run] = {}
        with exp.start_logging(display_name="block-ok", outputs_dir=None) as run:
            run.log("x", 1.0)
        ended["block-ok"] = run
        def block(name: str, error: BaseException) -> None:
            with exp.start_logging(display_name=name, outputs_dir=None) as run:
                ended[name] = run
                run.log("x", 1.0)
                raise error

        with pytest.raises(ValueError, match="diverged"):
            block("block-error", ValueError("loss diverged at step 7"))
        with pytest.raises(KeyboardInterrupt):
            block("block-interrupt", KeyboardInterrupt())
        for name, end in (("complete", Run.complete), ("cancel", Run.cancel)):
            run = exp.start_logging(display_name=name, outputs_dir=None)
            end(run)
            ended[name] = run
        run = exp.start_logging(display_name="fail", outputs_dir=None)
        run.fail("CUDA out of memory")
        with pytest.raises(RunEndedError, match=r"^complete\(\): run .* has ended \(Failed\)"):
            run.complete()  # too late: ended is ended
        ended["fail"] = run
        run = exp.start_logging(display_name="open", compute_target="gpu", outputs_dir=None)
        ended["open"] = run
        ws.flush(30.0)
        return ended

    ended = await asyncio.to_thread(train)
    await asyncio.to_thread(ws.close, 10.0)
    await pipeline.drained()

    rows = await pipeline.rows("SELECT run_id, display_name, status, error, compute_target, "
                               "started_at, finalizing_at, ended_at FROM runstream.runs")
    by_name = {r["display_name"]: r for r in rows}
    assert {n: r["run_id"] for n, r in by_name.items()} == {n: r.id for n, r in ended.items()}
    assert {n: r["status"] for n, r in by_name.items()} == {
        "block-ok": "Completed", "block-error": "Failed", "block-interrupt": "Canceled",
        "complete": "Completed", "cancel": "Canceled", "fail": "Failed", "open": "Running"}
    error = by_name["block-error"]["error"]
    assert error.startswith("Traceback (most recent call last):")
    assert error.rstrip().endswith("ValueError: loss diverged at step 7")
    assert by_name["fail"]["error"] == "CUDA out of memory"
    assert by_name["block-interrupt"]["error"] == "KeyboardInterrupt (Ctrl-C)"
    assert {n: r["error"] for n, r in by_name.items()
            if n not in ("block-error", "fail", "block-interrupt")} == {
        n: None for n in ("block-ok", "complete", "cancel", "open")}
    for name in ("block-ok", "complete"):
        r = by_name[name]
        assert r["started_at"] <= r["finalizing_at"] <= r["ended_at"], name
    assert by_name["open"]["ended_at"] is None
    assert by_name["open"]["compute_target"] == "gpu"
    (queue,) = await pipeline.rows("SELECT * FROM runstream.compute_targets "
                                   "WHERE compute_target = 'gpu'")
    assert (queue["running"], queue["queued"]) == (1, 0)


RANK_SCRIPT = textwrap.dedent(
    """
    import sys
    from producer import Run

    run = Run.get_context()  # RUNSTREAM_RUN_ID / RANK / WORLD_SIZE from the launcher
    rank = run.rank
    for i in range(20_000):
        run.log("loss", rank * 1_000_000 + i / 8)
    for i in range(5_000):
        run.log("lr", 1.0 / (i + 1 + rank), step=4 * i)
    if rank == 0:
        run.complete()
    # no flush or close: the atexit hook delivers, as in any launched script
    """
)


async def test_four_ranks_log_100k_points_into_one_run_each_exactly_once(
    pipeline: Pipeline, tmp_path: Path, reliability: Reliability
) -> None:
    rid = run_id("mnist")
    world = 4
    env = {**os.environ, "RUNSTREAM_KAFKA": pipeline.bootstrap, "RUNSTREAM_TOPIC": pipeline.topic,
           "RUNSTREAM_API": pipeline.api_url, "RUNSTREAM_RUN_ID": rid,
           "RUNSTREAM_WORLD_SIZE": str(world)}

    def launch() -> list[int]:
        procs = [subprocess.Popen([sys.executable, "-c", RANK_SCRIPT], cwd=tmp_path,
                                  env={**env, "RUNSTREAM_RANK": str(rank),
                                       "RUNSTREAM_HOME": str(tmp_path / f"rank{rank}")})
                 for rank in range(world)]
        return [p.wait(timeout=120) for p in procs]

    assert await asyncio.to_thread(launch) == [0] * world
    for rank in range(world):  # nothing left behind for `runstream sync`
        assert list((tmp_path / f"rank{rank}" / "spool" / "events").glob("*")) == []
    await pipeline.drained()

    (counts,) = await pipeline.rows(
        "SELECT count(*) AS n, count(DISTINCT (rank, name, step)) AS d FROM "
        "runstream.metric_points WHERE run_id = $1", rid)
    assert counts == {"n": 100_000, "d": 100_000}
    loss = await pipeline.rows("SELECT step, rank, value, time FROM runstream.metric_points "
                               "WHERE run_id = $1 AND name = 'loss' ORDER BY step, rank, time",
                               rid)
    assert [(p["step"], p["rank"], p["value"]) for p in loss] == [
        (i, r, r * 1_000_000 + i / 8) for i in range(20_000) for r in range(world)]
    lr = await pipeline.rows("SELECT step, rank, value FROM runstream.metric_points "
                             "WHERE run_id = $1 AND name = 'lr' ORDER BY step, rank, time", rid)
    assert [tuple(p.values()) for p in lr] == [
        (4 * i, r, 1.0 / (i + 1 + r)) for i in range(5_000) for r in range(world)]
    # each rank's points carry the times it logged them at, in logging order
    for r in range(world):
        times = [p["time"] for p in loss if p["rank"] == r]
        assert times == sorted(times)

    producers = await pipeline.rows("SELECT rank, events, max_seq, missing_events "
                                    "FROM runstream.producers WHERE run_id = $1 ORDER BY rank",
                                    rid)
    reliability.record(
        guarantee="ranks of one distributed run each land exactly once, in (step, rank, time) "
                  "order",
        faults=f"{world} processes x 25,000 points into one run, concurrently",
        events=sum(p["events"] for p in producers), points=100_000,
        lost=100_000 - counts["d"], doubled=counts["n"] - counts["d"],
        storage=await storage_backend(pipeline.dsn),
        notes=f"{len(producers)} producers, {sum(p['missing_events'] for p in producers)} "
              f"seq gaps", ranks=world)
    assert [p["rank"] for p in producers] == list(range(world))
    assert all(p["missing_events"] == 0 and p["events"] == p["max_seq"] + 1
               for p in producers), producers
    (run,) = await pipeline.rows("SELECT status, parent_run_id, properties FROM runstream.runs")
    assert run["status"] == "Completed"
    assert json.loads(run["properties"]) == {"world_size": "4"}
