"""The studio's charts and compute pages against the real pipeline, in headless Chromium
(issue 11): a 1M-point series with two ±1e6 spikes shows both (judged from the drawn
pixels, not from the data the page fetched), and a compute target's page follows a
submitted run from queued to running to gone without a reload.

Fixtures: tests/browser/conftest.py (``studio_page``, ``read_pipeline``, ``built_studio``).
"""

from __future__ import annotations

import io
import math
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp import web
from PIL import Image
from playwright.async_api import expect
from prometheus_client import CollectorRegistry

from ingest.api.app import create_app
from ingest.api.blobstore import BlobStore
from ingest.server import HttpServer
from ingest.settings import Secret
from producer import Experiment, Run, ScriptRunConfig, Workspace
from tests.browser.helpers import StudioPage, log_in, screenshot
from tests.integration.agents import AgentProcess
from tests.integration.pipelines import READ_TOKEN, Pipeline, ReadPipeline, call

pytestmark = pytest.mark.usefixtures("built_studio")

POINTS = 1_000_000
SPIKES = {POINTS // 3 + 17: 1e6, 2 * POINTS // 3 + 5: -1e6}
#: An agent's work (start, lease, snapshot, environment) on a loaded CI machine.
AGENT_TIMEOUT_MS = 90_000
LIVE_TIMEOUT_MS = 15_000


def coloured_columns(png: bytes, top: bool, band: float = 0.3) -> list[float]:
    """Where (0..1 of the width) the top or bottom 30% of the plot area holds coloured
    pixels — the series' line or min-max band, not grey grid lines. The series lies
    within ±1 of 0, in the middle of a ±1e6 scale: only a spike reaches either band."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    width, height = image.size
    rows = max(2, int(height * band))
    ys = range(2, rows) if top else range(height - rows, height - 2)
    found: set[int] = set()
    for y in ys:
        for x in range(width):
            r, g, b = image.getpixel((x, y))  # type: ignore[misc]
            if max(r, g, b) - min(r, g, b) > 30:
                found.add(x)
    return sorted(x / width for x in found)


async def test_both_spikes_of_a_million_points_are_drawn(
        studio_page: StudioPage, read_pipeline: ReadPipeline) -> None:
    ws = read_pipeline.workspace()

    def log() -> Run:
        run = Experiment(ws, "browser-spikes").start_logging(display_name="spiky")
        for step in range(POINTS):
            run.log("spiky", SPIKES.get(step, math.sin(step / 5000) * 0.5), step=step)
        run.complete()
        run.get_metrics("spiky")  # read back: stored
        return run

    run = await call(log)
    page, url = studio_page.page, read_pipeline.api_url
    await log_in(page, url, READ_TOKEN)
    await page.goto(f"{url}/runs/{run.id}?tab=metrics")
    chart = page.locator('[data-chart="spiky"]')
    await expect(chart.locator("canvas").first).to_be_visible(timeout=LIVE_TIMEOUT_MS)
    await page.wait_for_function(
        "() => performance.getEntriesByName('runstream:chart:spiky').length > 0",
        timeout=LIVE_TIMEOUT_MS)
    await page.wait_for_timeout(300)  # let the canvas settle after the first draw
    plot = chart.locator(".u-over").first
    png = await plot.screenshot()
    up, down = coloured_columns(png, top=True), coloured_columns(png, top=False)
    await screenshot(page, "run-spikes")
    # The +1e6 spike reaches the top a third of the way along, the -1e6 one the bottom
    # two thirds along; nothing else comes near either edge.
    assert up, "nothing drawn near the top of the plot: the +1e6 spike is missing"
    assert down, "nothing drawn near the bottom of the plot: the -1e6 spike is missing"
    assert all(abs(x - 1 / 3) < 0.03 for x in up), up
    assert all(abs(x - 2 / 3) < 0.03 for x in down), down


SCRIPT = """import pathlib, sys, time
flag = pathlib.Path(sys.argv[1])
print("waiting for", flag, flush=True)
while not flag.exists():
    time.sleep(0.1)
print("done", flush=True)
"""


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Callable[[ReadPipeline, str], AgentProcess]]:
    made: list[AgentProcess] = []

    def start(pipeline: ReadPipeline, target: str) -> AgentProcess:
        made.append(AgentProcess(pipeline, target, 1, tmp_path / "agents", target))
        return made[-1]

    yield start
    for each in made:
        await call(each.stop)


async def test_a_compute_page_shows_a_run_queued_then_running_then_gone(
        studio_page: StudioPage, read_pipeline: ReadPipeline, tmp_path: Path,
        agent: Callable[[ReadPipeline, str], AgentProcess]) -> None:
    target = f"gpu-{uuid.uuid4().hex[:6]}"  # a target of the test's own
    ws = read_pipeline.workspace()
    folder = tmp_path / "job"
    folder.mkdir()
    (folder / "wait.py").write_text(SCRIPT)
    flag = tmp_path / "finish"
    run = await call(lambda: Experiment(ws, "browser-compute").submit(ScriptRunConfig(
        str(folder), script="wait.py", arguments=[str(flag)], compute_target=target)))
    page, url = studio_page.page, read_pipeline.api_url
    await log_in(page, url, READ_TOKEN)
    await page.goto(f"{url}/compute/{target}")
    queue = page.locator(".card", has=page.get_by_role("heading", name="Queue"))
    active = page.locator(".card", has=page.get_by_role("heading", name="Active runs"))
    row = f'[data-run-id="{run.id}"]'
    await expect(queue.locator(row)).to_be_visible(timeout=LIVE_TIMEOUT_MS)
    await expect(active.locator(row)).to_have_count(0)
    await screenshot(page, "compute-target-queued")
    await page.evaluate("window.__notReloaded = true")

    agent(read_pipeline, target)  # an agent for the target: the run is leased and runs
    await expect(active.locator(row)).to_be_visible(timeout=AGENT_TIMEOUT_MS)
    await expect(active.locator(row)).to_contain_text("Running", timeout=AGENT_TIMEOUT_MS)
    await expect(queue.locator(row)).to_have_count(0)
    await screenshot(page, "compute-target-running")

    flag.write_text("go")
    await expect(active.locator(row)).to_have_count(0, timeout=AGENT_TIMEOUT_MS)
    await expect(queue.locator(row)).to_have_count(0)
    assert await page.evaluate("window.__notReloaded") is True
    assert await call(run.get_status) == "Completed"
    await screenshot(page, "compute-target-done")


async def test_a_dropped_stream_reconnects_and_misses_no_point(
        studio_page: StudioPage, pipeline: Pipeline, tmp_path: Path) -> None:
    """The API (which serves the page and its event stream) goes away while a run page
    follows a run, points are logged meanwhile, and it comes back on the same address:
    the page says it is reconnecting, its stream resumes by itself (the browser's
    Last-Event-ID) and the chart has every point, without a reload."""

    def app() -> web.Application:
        return create_app(blob_store=BlobStore(root=tmp_path / "blobs"),
                          registry=CollectorRegistry(), token=Secret(READ_TOKEN),
                          db_dsn=Secret(pipeline.dsn))

    first = HttpServer(app(), host="127.0.0.1", port=0)
    await first.__aenter__()
    port, running = first.port, first
    try:
        url = first.url
        ws = Workspace(kafka_bootstrap=pipeline.bootstrap, api_url=url, home=tmp_path / "sdk",
                       topic=pipeline.topic, token=READ_TOKEN)

        def start() -> Run:
            run = Experiment(ws, "browser-reconnect").start_logging(display_name="flaky api")
            for step in range(10):
                run.log("loss", 1 / (step + 1), step=step)
            run.get_metrics("loss")  # stored
            return run

        run = await call(start)
        page = studio_page.page
        await log_in(page, url, READ_TOKEN)
        await page.goto(f"{url}/runs/{run.id}")
        chart = page.locator('[data-chart="loss"]')
        await expect(chart).to_contain_text("10 pts", timeout=LIVE_TIMEOUT_MS)
        await expect(page.locator(".live.live-open")).to_be_visible(timeout=LIVE_TIMEOUT_MS)
        await page.evaluate("window.__notReloaded = true")

        await first.__aexit__(None, None, None)  # the API goes away, and the stream with it
        await expect(page.locator(".live.live-open")).to_have_count(0, timeout=LIVE_TIMEOUT_MS)

        def log_more() -> None:
            for step in range(10, 40):
                run.log("loss", 0.01, step=step)
            run.flush()

        await call(log_more)
        await pipeline.drained()  # stored while the API is away
        running = HttpServer(app(), host="127.0.0.1", port=port)
        await running.__aenter__()
        await expect(chart).to_contain_text("40 pts", timeout=30_000)
        await expect(page.locator(".live.live-open")).to_be_visible(timeout=LIVE_TIMEOUT_MS)
        assert await page.evaluate("window.__notReloaded") is True
        opened = [u for u in studio_page.guard.requested if f"/v1/runs/{run.id}/events" in u]
        assert len(opened) >= 2, f"the stream was never reopened: {opened}"
        await screenshot(page, "run-reconnected")
        await call(run.complete)
        await call(ws.close, 10.0)
    finally:
        await running.__aexit__(None, None, None)
