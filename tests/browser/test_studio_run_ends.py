"""The run page says how a run ended (issue 15 items 1 and 2), in headless Chromium: why a
Canceled run was canceled (Ctrl-C in its ``with`` block), and how much another rank logged
into a run after it ended — stored and shown, counted as "Logged after end"."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from producer import Experiment, Run, Workspace
from tests.browser.helpers import StudioPage, log_in, screenshot
from tests.integration.pipelines import READ_TOKEN, ReadPipeline, call

pytestmark = pytest.mark.usefixtures("built_studio")


async def test_the_run_page_shows_a_cancel_reason_and_what_was_logged_after_the_end(
        studio_page: StudioPage, read_pipeline: ReadPipeline) -> None:
    ws = Workspace(kafka_bootstrap=read_pipeline.bootstrap, api_url=read_pipeline.api_url,
                   home=read_pipeline.home / "sdk", topic=read_pipeline.topic, token=READ_TOKEN)

    def runs() -> tuple[str, str]:
        exp = Experiment(ws, "browser-ends")
        started: list[Run] = []

        def interrupted() -> None:
            with exp.start_logging(display_name="interrupted", outputs_dir=None) as run:
                started.append(run)
                run.log("loss", 1.0)
                raise KeyboardInterrupt  # Ctrl-C in the block

        with pytest.raises(KeyboardInterrupt):
            interrupted()
        (stopped,) = started
        with exp.start_logging(display_name="finished", outputs_dir=None) as done:
            done.log("loss", 0.5)
        late = Run.open(exp, done.id, rank=1, world_size=2)  # another rank, late
        for step in range(3):
            late.log("late", float(step), step=step)
        late.close(30.0)
        assert Run(exp, done.id).get_details()["logged_after_end"] == 3  # waits until stored
        assert stopped.get_status() == "Canceled"
        ws.close(30.0)
        return stopped.id, done.id

    stopped_id, done_id = await call(runs)
    page, url = studio_page.page, read_pipeline.api_url
    await log_in(page, url, READ_TOKEN)

    await page.goto(f"{url}/runs/{stopped_id}")
    banner = page.locator(".run-error")
    await expect(banner).to_contain_text("Canceled")
    await expect(banner).to_contain_text("KeyboardInterrupt (Ctrl-C)")
    await screenshot(page, "run-canceled-by-ctrl-c")

    await page.goto(f"{url}/runs/{done_id}")
    await expect(page.get_by_role("heading", name="finished")).to_contain_text("Completed")
    await expect(page.locator("dt:text-is('Logged after end') + dd")).to_have_text("3")
    await expect(page.locator('[data-chart="late"]')).to_contain_text("3 pts")
    await screenshot(page, "run-logged-after-end")
