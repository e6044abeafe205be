"""``producer.widgets.RunDetails`` against the real pipeline (issue 11): the SDK logs through
Kafka, the test's own worker stores into its own database, and the widget reads the test's
own API server and follows the run's event stream, exactly as in a notebook.

The widget's state is its traitlets, read here as a notebook's front end would receive
them. Every wait is bounded polling for an outcome (``until``), never a figure of speed.
After a run ends (or ``close()``), the test checks that the widget left nothing behind:
no thread named ``runstream-widget…`` and no event stream open on the API
(``runstream_sse_streams{kind="run"}``). The API runs on the test's event loop, so every
blocking call (the widget's constructor and ``close``, the SDK's flushes) runs in a
worker thread (``call``).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from ingest.api.app import create_app
from ingest.api.blobstore import BlobStore
from ingest.server import HttpServer
from ingest.settings import Secret
from producer import Experiment, Run, ScriptRunConfig, Workspace
from producer.widgets import RunDetails
from tests.integration.pipelines import READ_TOKEN, Pipeline, ReadPipeline, call

pytestmark = pytest.mark.integration

#: Only a hang reaches it.
BOUND_S = 60.0
WIDGET_THREADS = "runstream-widget"


def widget_threads(run_id: str | None = None) -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(WIDGET_THREADS)
            and (run_id is None or t.name.endswith(f":{run_id}"))]


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return sum(
        s.value
        for metric in registry.collect()
        for s in metric.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def open_run_streams(p: ReadPipeline) -> float:
    return sample(p.api_registry, "runstream_sse_streams", kind="run")


def requests_to(p: ReadPipeline, route: str) -> float:
    return sample(p.api_registry, "runstream_http_requests_total", route=route)


async def until(check: Callable[[], bool], what: str, timeout_s: float = BOUND_S) -> None:
    """Poll ``check`` (every 50 ms, the test's event loop serving the API meanwhile)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        if loop.time() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)


async def left_nothing_behind(p: ReadPipeline, widget: RunDetails) -> None:
    await until(lambda: not widget_threads(widget.run_id), "the widget's threads to end")
    await until(lambda: open_run_streams(p) == 0, "the API to see the stream closed")


@pytest.fixture
async def ws(read_pipeline: ReadPipeline) -> AsyncIterator[Workspace]:
    workspace = read_pipeline.workspace()
    yield workspace
    await call(workspace.close, 10.0)


def series(widget: RunDetails, name: str) -> list[Any]:
    values: list[Any] = widget.metrics.get(name, {}).get("values") or []
    return values


def child_status(widget: RunDetails, name: str) -> str | None:
    return next((c["status"] for c in widget.children if c["display_name"] == name), None)


# ---- a run logged from this process -------------------------------------------------------


async def test_the_widget_follows_a_live_run_until_it_completes(
    read_pipeline: ReadPipeline, ws: Workspace,
) -> None:
    run = await call(Experiment(ws, "widget").start_logging, display_name="live widget")
    run.log("alpha", 0.5)
    run.log("loss", 1.0, step=0)
    run.log_output("stdout", ["before the widget"])

    widget = await call(RunDetails, run)
    try:
        # The first read: what was logged before, the studio link, and following.
        assert widget.status == "Running"
        assert widget.live is True
        assert widget.run_id == run.id
        assert widget.display_name == "live widget"
        assert widget.portal_url == await call(run.get_portal_url)
        assert widget.metrics["alpha"]["kind"] == "value"
        assert widget.metrics["alpha"]["last"] == 0.5
        assert widget.log_tail == ["before the widget"]
        assert widget.times["started_at"]
        assert widget.times["status_times"]["Running"]
        assert widget.times["duration_s"] is None  # still running
        assert sorted(widget_threads(run.id)) == [f"{WIDGET_THREADS}-stream:{run.id}",
                                                  f"{WIDGET_THREADS}:{run.id}"]
        await until(lambda: open_run_streams(read_pipeline) == 1, "the widget's stream")

        # Logged after the widget was made: pushed to it.
        run.log("loss", 0.5, step=1)
        run.log_output("stdout", ["after the widget", "and one more"])
        await until(lambda: series(widget, "loss") == [1.0, 0.5], "the new loss point")
        assert widget.metrics["loss"]["kind"] == "series"
        assert widget.metrics["loss"]["steps"] == [0, 1]
        await until(lambda: widget.log_tail[-1:] == ["and one more"], "the new log lines")
        # Each line once: the seam between the first read and the stream shows none twice.
        assert widget.log_tail == ["before the widget", "after the widget", "and one more"]

        # A child run, listed with its status; its end shows too.
        child = run.child_run("fold-1")
        child.log("mse", 3.1)
        await until(lambda: child_status(widget, "fold-1") == "Running", "the child run")
        assert widget.children_total == 1
        listed = widget.children[0]
        assert listed["run_id"] == child.id
        assert listed["portal_url"].endswith(f"/runs/{child.id}")
        await call(child.complete)
        await until(lambda: child_status(widget, "fold-1") == "Completed", "the child's end")

        # A table (no event on the run's stream: the periodic re-read finds it).
        run.log_row("mse vs alpha", alpha=0.5, mse=3.1)
        await until(lambda: widget.metrics.get("mse vs alpha", {}).get("kind") == "table",
                    "the table metric")
        assert widget.metrics["mse vs alpha"]["columns"] == ["alpha", "mse"]
        assert widget.live is True
        assert widget.status == "Running"

        await call(run.complete)
        await until(lambda: widget.status == "Completed" and not widget.live,
                    "the widget to show Completed and stop")
        assert widget.times["ended_at"]
        assert widget.times["status_times"]["Completed"]
        assert isinstance(widget.times["duration_s"], float)
        assert widget.times["duration_s"] >= 0
        assert widget.notice == ""
        await left_nothing_behind(read_pipeline, widget)
        assert widget.log_tail == ["before the widget", "after the widget", "and one more"]
        assert series(widget, "loss") == [1.0, 0.5]
    finally:
        await call(widget.close)


async def test_lines_logged_while_the_widget_starts_show_once_each_in_order(
    read_pipeline: ReadPipeline, ws: Workspace,
) -> None:
    """A writer logs numbered lines (and points) before, during and after the widget's
    first read and the opening of its stream: the tail holds exactly the last lines, in
    order, none twice and none missing (the seam), and the series every point."""
    run = await call(Experiment(ws, "widget").start_logging)
    total, started = 400, threading.Event()

    def write() -> None:
        for i in range(total):
            run.log_output("stdout", [f"line {i}"])
            run.log("progress", i, step=i)
            if i == 100:
                started.set()
            time.sleep(0.004)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        await call(started.wait, BOUND_S)
        widget = await call(RunDetails, run)
    finally:
        await call(writer.join)
    try:
        await until(lambda: widget.log_tail[-1:] == [f"line {total - 1}"], "the last line")
        await call(run.complete)
        await until(lambda: not widget.live, "the widget to stop")
        assert widget.log_tail == [f"line {i}" for i in range(total - 200, total)]
        assert widget.metrics["progress"]["count"] == total
        assert widget.metrics["progress"]["last"] == total - 1
        await left_nothing_behind(read_pipeline, widget)
    finally:
        await call(widget.close)


async def test_a_run_that_has_ended_is_read_once_and_nothing_starts(
    read_pipeline: ReadPipeline, ws: Workspace,
) -> None:
    def logged() -> Run:
        with Experiment(ws, "widget").start_logging(display_name="done") as run:
            for step in range(50):
                run.log("loss", 1.0 / (step + 1), step=step)
            run.log_output("stdout", [f"line {i}" for i in range(250)])
            child = run.child_run("child")
            child.fail("it broke")
        return run

    run = await call(logged)
    streams_asked = requests_to(read_pipeline, "/v1/runs/{run_id}/events")
    widget = await call(RunDetails, run)
    with widget:
        assert widget.status == "Completed"
        assert widget.live is False
        assert widget_threads(run.id) == []
        assert requests_to(read_pipeline, "/v1/runs/{run_id}/events") == streams_asked
        assert open_run_streams(read_pipeline) == 0
        assert len(widget.log_tail) == 200  # the last lines of the log
        assert widget.log_tail[0] == "line 50"
        assert widget.log_tail[-1] == "line 249"
        assert widget.metrics["loss"]["count"] == 50
        assert len(series(widget, "loss")) == 50
        assert [(c["display_name"], c["status"]) for c in widget.children] == [
            ("child", "Failed")]
        # As a cell's value: anywidget's view of the model; show() displays it (returning
        # None, as azureml's does: its annotation says so).
        bundle = widget._repr_mimebundle_()
        assert bundle is not None
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        view = data["application/vnd.jupyter.widget-view+json"]
        assert view["model_id"] == widget.model_id
        widget.show()
    assert widget_threads() == []


async def test_close_stops_following_a_run_that_goes_on(
    read_pipeline: ReadPipeline, ws: Workspace,
) -> None:
    run = await call(Experiment(ws, "widget").start_logging)
    widget = await call(RunDetails, run)
    assert widget.live is True
    await until(lambda: open_run_streams(read_pipeline) == 1, "the widget's stream")
    await call(widget.close)
    assert widget.live is False
    assert widget_threads(run.id) == []  # close() waited for them
    await until(lambda: open_run_streams(read_pipeline) == 0, "the API to see it closed")
    assert await call(run.get_status) == "Running"  # only the widget stopped
    await call(run.complete)


async def test_a_run_that_fails_shows_its_error_and_the_widget_stops(
    read_pipeline: ReadPipeline, ws: Workspace,
) -> None:
    run = await call(Experiment(ws, "widget").start_logging)
    widget = await call(RunDetails, run)
    try:
        assert widget.live is True
        await call(run.fail, "ValueError: the data ran out")
        await until(lambda: widget.status == "Failed" and not widget.live, "Failed")
        assert "the data ran out" in widget.error
        assert widget.times["status_times"]["Failed"]
        await left_nothing_behind(read_pipeline, widget)
    finally:
        await call(widget.close)


async def test_the_widget_resumes_after_the_api_restarts(
    pipeline: Pipeline, tmp_path: Path,
) -> None:
    """The API goes away while the widget follows a run, and comes back on the same
    address: the widget says it is reconnecting, resumes its stream by event id, and
    shows what was logged meanwhile, each line once."""
    registries: list[CollectorRegistry] = []

    def app() -> web.Application:
        registries.append(CollectorRegistry())
        return create_app(blob_store=BlobStore(root=tmp_path / "blobs"),
                          registry=registries[-1], token=Secret(READ_TOKEN),
                          db_dsn=Secret(pipeline.dsn))

    first = HttpServer(app(), host="127.0.0.1", port=0)
    await first.__aenter__()
    port, running = first.port, first
    try:
        ws = Workspace(kafka_bootstrap=pipeline.bootstrap, api_url=first.url,
                       home=tmp_path / "sdk", topic=pipeline.topic, token=READ_TOKEN)
        run = await call(Experiment(ws, "widget").start_logging)
        run.log_output("stdout", ["before"])
        widget = await call(RunDetails, run)
        try:
            run.log_output("stdout", ["streamed"])
            await until(lambda: widget.log_tail == ["before", "streamed"], "the streamed line")
            await first.__aexit__(None, None, None)  # the API goes away
            await until(lambda: widget.notice.startswith("reconnecting"), "the notice")
            assert widget.live is True
            run.log_output("stdout", ["while the API was away"])
            run.log("loss", 0.5, step=0)
            running = HttpServer(app(), host="127.0.0.1", port=port)
            await running.__aenter__()
            await until(lambda: widget.log_tail[-1:] == ["while the API was away"],
                        "the line logged while the API was away")
            await until(lambda: widget.metrics.get("loss", {}).get("last") == 0.5, "the point")
            assert widget.log_tail == ["before", "streamed", "while the API was away"]
            assert widget.notice == ""
            await call(run.complete)
            await until(lambda: not widget.live, "the widget to stop")
            assert widget.status == "Completed"
            await until(lambda: not widget_threads(run.id), "the widget's threads to end")
            await until(lambda: sample(registries[-1], "runstream_sse_streams", kind="run")
                        == 0, "the API to see the stream closed")
        finally:
            await call(widget.close)
            await call(ws.close, 10.0)
    finally:
        await running.__aexit__(None, None, None)


# ---- a submitted run ---------------------------------------------------------------------


SCRIPT = """\
import pathlib, sys, time
from producer import Run
run = Run.get_context()
print("script started", flush=True)
run.log("acc", 0.5, step=0)
gate, deadline = pathlib.Path(sys.argv[1]), time.time() + 120
while not gate.exists() and time.time() < deadline:
    time.sleep(0.02)
for step in (1, 2, 3):
    run.log("acc", 0.5 + step / 10, step=step)
print("script done", flush=True)
"""


class Agent:
    """``runstream agent --target TARGET`` against the test's pipeline."""

    def __init__(self, p: ReadPipeline, target: str, logs: Path) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        self.log_path = logs / f"agent-{target}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ingest.cli", "agent", "--target", target, "--slots", "1"],
            env={**p.env(f"agent-{target}"), "PYTHONUNBUFFERED": "1"},
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def stop(self) -> int:
        """SIGTERM (drain), then SIGKILL if it does not end."""
        try:
            self.proc.terminate()
            try:
                return self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait(10)
        finally:
            self._log.close()


async def test_the_widget_follows_a_submitted_run(
    read_pipeline: ReadPipeline, ws: Workspace, tmp_path: Path,
) -> None:
    agent = Agent(read_pipeline, "widget", tmp_path / "agents")
    try:
        folder = tmp_path / "scripts"
        folder.mkdir()
        (folder / "train.py").write_text(SCRIPT)
        gate = tmp_path / "gate"
        config = ScriptRunConfig(str(folder), script="train.py", arguments=[str(gate)],
                                 compute_target="widget")
        run = await call(Experiment(ws, "widget-submit").submit, config)
        widget = await call(RunDetails, run)
        try:
            await until(lambda: widget.status == "Running"
                        and "script started" in widget.log_tail, "the script's first line")
            await until(lambda: series(widget, "acc") == [0.5]
                        or widget.metrics.get("acc", {}).get("last") == 0.5,
                        "the script's first metric")
            assert widget.live is True
            assert widget.times["status_times"]["Queued"]  # it went through the queue
            gate.touch()  # only now may the script end
            await until(lambda: widget.status == "Completed" and not widget.live,
                        "the submitted run to complete")
            assert series(widget, "acc") == [0.5, 0.6, 0.7, 0.8]
            assert "script done" in widget.log_tail
            assert widget.log_tail.count("script started") == 1
            assert widget.times["queued_s"] is not None
            await left_nothing_behind(read_pipeline, widget)
        finally:
            await call(widget.close)
    finally:
        code = await call(agent.stop)
    assert code == 0, agent.log_path.read_text(errors="replace")


# ---- the package ----------------------------------------------------------------------------


def test_import_producer_does_not_import_anywidget() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import sys, producer; print('anywidget' in sys.modules)"],
        capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_without_anywidget_the_import_error_says_what_to_install() -> None:
    done = subprocess.run(
        [sys.executable, "-c",
         "import sys; sys.modules['anywidget'] = None\n"
         "try:\n    import producer.widgets\n"
         "except ImportError as exc:\n    print(exc)"],
        capture_output=True, text=True, check=True)
    assert "pip install 'runstream[notebook]'" in done.stdout
