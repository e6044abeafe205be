"""The studio in a real headless Chromium against the real pipeline (issue 11): runs logged
through the SDK → Kafka → worker → PostgreSQL → API, whose process serves the studio.

Every page here may reach 127.0.0.1 only (``studio_page`` aborts and records anything
else; a test fails if anything was). Screenshots go to ``tests/browser/screenshots/``.

The browser's auth (``ingest/api/auth.py``, ``routes/studio.py``): the token lives in the
HttpOnly, SameSite=Strict cookie set by ``POST /studio/login``; a workspace token's cookie
reads nothing of another workspace, its streams included; a cookie-authenticated cancel
must come from the studio's own origin. Those are checked from pages of the API's origin
with the browser's own ``fetch``/``EventSource`` and from a page of another origin, and
again through the app's pages (``built_studio``: they need the Vite build).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import Page, expect
from prometheus_client import CollectorRegistry

from ingest.api.app import create_app
from ingest.api.auth import TOKEN_COOKIE
from ingest.api.blobstore import BlobStore
from ingest.server import HttpServer
from ingest.settings import Secret
from producer import Experiment, Run, ScriptRunConfig, Workspace
from tests.browser.helpers import StudioPage, log_in, screenshot
from tests.integration.helpers import wait_for
from tests.integration.pipelines import READ_TOKEN, ReadPipeline, call

VISION_TOKEN = "browser-vision-token"  # noqa: S105 - test credentials
NLP_TOKEN = "browser-nlp-token"  # noqa: S105
#: How long a live change may take to show (the issue: ≤ 1 s after it commits; the
#: pipeline's own latency and a loaded CI machine get the rest).
LIVE_TIMEOUT_MS = 10_000

#: (status, body) of a ``fetch`` made by the page itself (its origin, its cookie).
FETCH_JS = """async ([method, path]) => {
  const r = await fetch(path, {method, credentials: "same-origin",
                               headers: {"Content-Type": "application/json"}, body:
                               method === "GET" ? undefined : "{}"});
  return [r.status, await r.text()];
}"""
#: "open" when the browser's EventSource connects; "closed" when the server refused it
#: (a non-200 answer ends an EventSource for good).
EVENTSOURCE_JS = """(path) => new Promise((resolve) => {
  const source = new EventSource(path);
  const timer = setTimeout(() => { source.close(); resolve("timeout"); }, 10000);
  source.onopen = () => { clearTimeout(timer); source.close(); resolve("open"); };
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) {
      clearTimeout(timer); resolve("closed");
    }
  };
})"""


def sdk(p: ReadPipeline, workspace: str = "default") -> Workspace:
    return Workspace(name=workspace, kafka_bootstrap=p.bootstrap, api_url=p.api_url,
                     home=p.home / f"sdk-{workspace}", topic=p.topic, token=READ_TOKEN)


async def logged_run(ws: Workspace, experiment: str, *, steps: int = 20,
                     complete: bool = True, **start: Any) -> Run:
    """A run logged through the real SDK, stored (its metrics read back) when returned."""

    def log() -> Run:
        run = Experiment(ws, experiment).start_logging(**start)
        run.log("alpha", 0.5)
        for step in range(steps):
            run.log("loss", 1.0 / (step + 1), step=step)
        run.tag("selected", "yes")
        if complete:
            run.complete()
        run.get_metrics()  # waits until the API has stored what this process sent
        return run

    return await call(log)


async def page_fetch(page: Page, method: str, path: str) -> tuple[int, str]:
    status, body = await page.evaluate(FETCH_JS, [method, path])
    return int(status), str(body)


async def api_status(http: aiohttp.ClientSession, url: str, run_id: str) -> str | None:
    """The run's status as the API reads it; None while it is not stored yet."""
    async with http.get(f"{url}/v1/runs/{run_id}",
                        headers={"Authorization": f"Bearer {READ_TOKEN}"}) as r:
        if r.status == 404:
            return None
        assert r.status == 200, await r.text()
        return str((await r.json())["status"])


async def wait_status(http: aiohttp.ClientSession, url: str, run_id: str, status: str) -> None:
    async def reached() -> bool:
        return await api_status(http, url, run_id) == status

    await wait_for(reached, timeout_s=60, what=f"run {run_id} to be {status}")


@pytest.fixture
async def scoped_url(read_pipeline: ReadPipeline, tmp_path: Path) -> AsyncIterator[str]:
    """A second API over the pipeline's database, as deployed with workspace tokens:
    ``VISION_TOKEN`` grants workspace ``vision``, ``NLP_TOKEN`` ``nlp``."""
    app = create_app(
        blob_store=BlobStore(root=tmp_path / "scoped-blobs"), registry=CollectorRegistry(),
        token=Secret(READ_TOKEN),
        workspace_tokens={"vision": (Secret(VISION_TOKEN),), "nlp": (Secret(NLP_TOKEN),)},
        db_dsn=Secret(read_pipeline.dsn),
    )
    async with HttpServer(app, host="127.0.0.1", port=0, access_log=False) as server:
        yield server.url


@pytest.fixture
async def other_origin() -> AsyncIterator[Callable[[str], str]]:
    """``other_origin(html)`` → the URL of a page serving ``html`` from another origin of
    the same host (another port of 127.0.0.1): the same *site* for SameSite cookies."""
    pages: dict[str, str] = {}

    async def serve(request: web.Request) -> web.Response:
        return web.Response(text=pages[request.match_info["name"]], content_type="text/html")

    app = web.Application()
    app.router.add_get("/{name}", serve)
    async with HttpServer(app, host="127.0.0.1", port=0, access_log=False) as server:

        def add(html: str) -> str:
            name = f"page{len(pages)}"
            pages[name] = html
            return f"{server.url}/{name}"

        yield add


# --- without the app's pages: the API's origin, the browser's fetch and EventSource -----


async def test_login_keeps_the_token_in_an_httponly_strict_cookie_the_browser_sends(
        studio_page: StudioPage, read_pipeline: ReadPipeline) -> None:
    page, url = studio_page.page, read_pipeline.api_url
    await page.goto(f"{url}/healthz")  # a page of the API's origin, no studio needed
    status, _ = await page_fetch(page, "GET", "/v1/experiments")
    assert status == 401
    await log_in(page, url, READ_TOKEN)
    cookies = {c["name"]: c for c in await studio_page.context.cookies(url)}
    assert cookies[TOKEN_COOKIE]["httpOnly"] is True
    assert cookies[TOKEN_COOKIE]["sameSite"] == "Strict"
    assert cookies[TOKEN_COOKIE]["path"] == "/"
    assert cookies[TOKEN_COOKIE]["secure"] is False  # http://127.0.0.1
    assert TOKEN_COOKIE not in await page.evaluate("document.cookie")  # scripts never see it
    status, body = await page_fetch(page, "GET", "/v1/experiments")
    assert status == 200, body
    response = await page.request.post(f"{url}/studio/logout", headers={"Origin": url})
    assert response.status == 204
    status, _ = await page_fetch(page, "GET", "/v1/experiments")
    assert status == 401


async def test_a_workspace_cookie_reads_and_streams_only_its_workspace(
        studio_page: StudioPage, read_pipeline: ReadPipeline, scoped_url: str) -> None:
    vision = await logged_run(sdk(read_pipeline, "vision"), "vision-exp", complete=False)
    nlp = await logged_run(sdk(read_pipeline, "nlp"), "nlp-exp", complete=False)
    page = studio_page.page
    await page.goto(f"{scoped_url}/healthz")
    await log_in(page, scoped_url, VISION_TOKEN)

    assert (await page_fetch(page, "GET", f"/v1/runs/{vision.id}"))[0] == 200
    status, body = await page_fetch(page, "GET", f"/v1/runs/{nlp.id}")
    assert status == 404, body  # the same answer as for a run that does not exist
    status, body = await page_fetch(page, "GET", "/v1/experiments")
    assert "vision-exp" in body
    assert "nlp-exp" not in body
    assert await page.evaluate(EVENTSOURCE_JS, f"/v1/runs/{vision.id}/events") == "open"
    assert await page.evaluate(EVENTSOURCE_JS, f"/v1/runs/{nlp.id}/events") == "closed"
    assert await page.evaluate(EVENTSOURCE_JS, f"/v1/runs/{nlp.id}/events?types=status,point") \
        == "closed"
    for run in (vision, nlp):
        await call(run.complete)


async def test_a_cookie_cancel_from_elsewhere_is_refused_and_from_the_studio_works(
        studio_page: StudioPage, read_pipeline: ReadPipeline, tmp_path: Path,
        http: aiohttp.ClientSession, other_origin: Callable[[str], str]) -> None:
    url = read_pipeline.api_url
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "train.py").write_text("print('never runs: no agent serves it')\n")
    run = await call(Experiment(sdk(read_pipeline), "browser-cancel").submit,
                     ScriptRunConfig(str(tmp_path / "job"), script="train.py",
                                     compute_target="browser-queue"))
    await wait_status(http, url, run.id, "Queued")
    page = studio_page.page
    await page.goto(f"{url}/healthz")
    await log_in(page, url, READ_TOKEN)
    cancel = f"{url}/v1/runs/{run.id}/cancel"

    # The browser's cookie without an Origin (Playwright's request API sends none).
    response = await page.request.post(cancel)
    assert response.status == 403
    assert "cross-site request refused" in await response.text()

    # A page on another port of 127.0.0.1 — the same site, so SameSite=Strict still
    # sends the cookie — posts a form at the cancel route: refused by its Origin.
    attacker = other_origin(f"""<!doctype html><form method="post" action="{cancel}">
        <input name="x" value="y"></form><script>document.forms[0].submit()</script>""")
    async with page.expect_response(cancel) as answer:
        await page.goto(attacker)
    assert (await answer.value).status == 403
    await page.goto(f"{url}/healthz")
    assert await api_status(http, url, run.id) == "Queued"

    # The studio's own origin: the browser's fetch carries Origin and Sec-Fetch-Site.
    status, body = await page_fetch(page, "POST", f"/v1/runs/{run.id}/cancel")
    assert status == 200, body
    assert '"action":"canceled"' in body.replace(" ", "")
    await wait_status(http, url, run.id, "Canceled")


# --- the app's pages (the Vite build) ------------------------------------------------------


@pytest.mark.usefixtures("built_studio")
async def test_the_studio_loads_offline_and_lists_an_experiment_from_the_sdk(
        studio_page: StudioPage, read_pipeline: ReadPipeline) -> None:
    await logged_run(sdk(read_pipeline), "browser-sweep", display_name="ridge")
    page, url = studio_page.page, read_pipeline.api_url
    await log_in(page, url, READ_TOKEN)
    response = await page.goto(f"{url}/")
    assert response is not None
    assert response.status == 200
    await expect(page.get_by_role("link", name="browser-sweep")).to_be_visible()
    # Runs by status, each a link to the experiment filtered by it.
    completed = page.locator('.status-counts [data-status="Completed"]')
    await expect(completed).to_have_text("1 Completed")
    assert (await completed.get_attribute("href") or "").endswith("status=Completed")
    await page.wait_for_load_state("networkidle")
    assets = [u for u in studio_page.guard.requested if "/studio/assets/" in u]
    assert assets, "the app's scripts came from the API's /studio/assets/"
    assert studio_page.guard.blocked == []
    await screenshot(page, "experiments")


@pytest.mark.usefixtures("built_studio")
async def test_the_studio_asks_for_a_token_and_keeps_it(
        studio_page: StudioPage, read_pipeline: ReadPipeline) -> None:
    await logged_run(sdk(read_pipeline), "browser-login")
    page, url = studio_page.page, read_pipeline.api_url
    await page.goto(f"{url}/experiments/browser-login")
    token = page.get_by_label("Token")
    await expect(token).to_be_visible()
    await screenshot(page, "login")
    await token.fill("not-the-token")
    await token.press("Enter")
    await expect(page.get_by_text("not accepted")).to_be_visible()
    assert not await studio_page.context.cookies(url)
    await page.get_by_label("Token").fill(READ_TOKEN)
    await page.get_by_label("Token").press("Enter")
    await page.wait_for_url(f"{url}/experiments/browser-login")
    await expect(page.get_by_label("Token")).to_have_count(0)
    cookies = await studio_page.context.cookies(url)
    assert [c["name"] for c in cookies] == [TOKEN_COOKIE]


@pytest.mark.usefixtures("built_studio")
async def test_a_run_page_shows_its_status_and_chart_and_follows_the_run_live(
        studio_page: StudioPage, read_pipeline: ReadPipeline) -> None:
    run = await logged_run(sdk(read_pipeline), "browser-live", complete=False,
                           display_name="live ridge")
    page, url = studio_page.page, read_pipeline.api_url
    await log_in(page, url, READ_TOKEN)
    await page.goto(f"{url}/runs/{run.id}")
    header = page.get_by_role("heading", name="live ridge")
    await expect(header).to_contain_text("Running")
    chart = page.locator('[data-chart="loss"]')
    await expect(chart.locator("canvas").first).to_be_visible()
    await expect(chart).to_contain_text("20 pts")
    await screenshot(page, "run-running")

    await page.evaluate("window.__notReloaded = true")

    def log_more() -> None:
        for step in range(20, 25):
            run.log("loss", 0.01, step=step)
        run.flush()

    await call(log_more)
    await expect(chart).to_contain_text("25 pts", timeout=LIVE_TIMEOUT_MS)
    await call(run.complete)
    await expect(header).to_contain_text("Completed", timeout=LIVE_TIMEOUT_MS)
    # The per-state times follow too: the end time shows (a <time> in the facts' list).
    await expect(page.locator("dt:text-is('Ended') + dd time")).to_be_visible(
        timeout=LIVE_TIMEOUT_MS)
    await expect(page.locator("dt:text-is('Duration') + dd")).not_to_contain_text("running")
    assert await page.evaluate("window.__notReloaded") is True  # no reload happened
    await screenshot(page, "run-completed")


@pytest.mark.usefixtures("built_studio")
async def test_a_workspace_token_does_not_see_another_workspaces_run_page(
        studio_page: StudioPage, read_pipeline: ReadPipeline, scoped_url: str) -> None:
    vision = await logged_run(sdk(read_pipeline, "vision"), "vision-pages")
    nlp = await logged_run(sdk(read_pipeline, "nlp"), "nlp-pages")
    page = studio_page.page
    await log_in(page, scoped_url, VISION_TOKEN)
    await page.goto(f"{scoped_url}/")
    await expect(page.get_by_role("link", name="vision-pages")).to_be_visible()
    await expect(page.get_by_role("link", name="nlp-pages")).to_have_count(0)
    await page.goto(f"{scoped_url}/runs/{nlp.id}")
    await expect(page.get_by_text("No such run")).to_be_visible()
    await screenshot(page, "run-of-another-workspace")
    await page.goto(f"{scoped_url}/runs/{vision.id}")
    await expect(page.get_by_text("No such run")).to_have_count(0)
    await expect(page.get_by_text(vision.id).first).to_be_visible()


@pytest.mark.usefixtures("built_studio")
async def test_cancel_from_the_run_page(
        studio_page: StudioPage, read_pipeline: ReadPipeline, tmp_path: Path,
        http: aiohttp.ClientSession) -> None:
    url = read_pipeline.api_url
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "train.py").write_text("print('never runs: no agent serves it')\n")
    run = await call(Experiment(sdk(read_pipeline), "browser-cancel-ui").submit,
                     ScriptRunConfig(str(tmp_path / "job"), script="train.py",
                                     compute_target="browser-queue"))
    await wait_status(http, url, run.id, "Queued")
    page = studio_page.page
    await log_in(page, url, READ_TOKEN)
    await page.goto(f"{url}/runs/{run.id}")
    await expect(page.get_by_text("Queued").first).to_be_visible()
    await screenshot(page, "run-queued")
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.get_by_role("button", name="Cancel run").click()
    await expect(page.get_by_text("Canceled").first).to_be_visible(timeout=LIVE_TIMEOUT_MS)
    await wait_status(http, url, run.id, "Canceled")
    await screenshot(page, "run-canceled")



@pytest.mark.usefixtures("built_studio")
async def test_every_page_shows_what_the_sdk_logged(
        studio_page: StudioPage, read_pipeline: ReadPipeline, tmp_path: Path,
        http: aiohttp.ClientSession) -> None:
    """The experiment's dashboard, a run's outputs, the compute targets, a target's queue,
    the models and a model: each with what the SDK logged, submitted or registered."""
    ws, url = sdk(read_pipeline), read_pipeline.api_url
    (tmp_path / "model.txt").write_text("weights\n")

    def log() -> tuple[Run, Run]:
        exp = Experiment(ws, "browser-pages")
        first = exp.start_logging(display_name="ridge-a", compute_target="cpu-pool")
        for step in range(10):
            first.log("mse", 3000.0 - step, step=step)
        first.log_row("mse vs alpha", alpha=0.5, mse=3100.2)
        first.upload_file("outputs/model.txt", str(tmp_path / "model.txt"))
        child = first.child_run("fold-1")
        child.log("mse", 3.1)
        child.complete()
        first.complete()
        second = exp.start_logging(display_name="ridge-b", compute_target="cpu-pool")
        second.log("mse", 2990.0)
        second.complete()
        first.get_metrics(recursive=True)
        second.get_metrics()
        first.register_model("browser-ridge", "outputs/model.txt")
        return first, second

    first, _second = await call(log)
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "train.py").write_text("print('never runs: no agent serves it')\n")
    queued = await call(Experiment(ws, "browser-pages").submit,
                        ScriptRunConfig(str(tmp_path / "job"), script="train.py",
                                        compute_target="browser-queue"))
    await wait_status(http, url, queued.id, "Queued")
    page = studio_page.page
    await log_in(page, url, READ_TOKEN)

    await page.goto(f"{url}/experiments/browser-pages")
    for name in ("ridge-a", "ridge-b"):
        await expect(page.get_by_role("link", name=name).first).to_be_visible()
    await screenshot(page, "experiment")

    await page.goto(f"{url}/runs/{first.id}?tab=outputs")
    await expect(page.get_by_text("outputs/model.txt").first).to_be_visible()
    await screenshot(page, "run-outputs")

    await page.goto(f"{url}/compute")
    await expect(page.get_by_role("link", name="browser-queue").first).to_be_visible()
    await screenshot(page, "compute")

    await page.goto(f"{url}/compute/browser-queue")
    # A queued run is listed once: in the queue, not among the active runs too.
    await expect(page.locator(f'[data-run-id="{queued.id}"]')).to_have_count(1)
    queue = page.locator(".card", has=page.get_by_role("heading", name="Queue"))
    await expect(queue.locator(f'[data-run-id="{queued.id}"]')).to_be_visible()
    await screenshot(page, "compute-target")

    await page.goto(f"{url}/models")
    await expect(page.get_by_role("link", name="browser-ridge").first).to_be_visible()
    await screenshot(page, "models")

    await page.goto(f"{url}/models/browser-ridge")
    await expect(page.get_by_role("heading", name="browser-ridge")).to_be_visible()
    await expect(page.get_by_text("Version 1").first).to_be_visible()
    await screenshot(page, "model")
    await call(queued.cancel)
