"""The studio shows typed tags and properties (issue 15, item 4) readably: a number or a
boolean as written (0.0003 unrounded, false as "false", not an empty box), marked as such,
and text as text — in a real headless Chromium against the real pipeline."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from producer import Experiment, Run
from tests.browser.helpers import StudioPage, log_in, screenshot
from tests.integration.pipelines import READ_TOKEN, ReadPipeline, call

pytestmark = pytest.mark.usefixtures("built_studio")


async def test_a_run_page_shows_typed_tags_and_properties(
        studio_page: StudioPage, read_pipeline: ReadPipeline) -> None:
    ws = read_pipeline.workspace("browser-hyper")

    def log() -> Run:
        run = Experiment(ws, "browser-hyper").start_logging(
            display_name="sweep-7", outputs_dir=None,
            properties={"lr": 0.0003, "epochs": 10, "amp": False, "optimizer": "adamw"})
        run.tag("batch", 64)
        run.tag("frozen", False)
        run.tag("note", "10")
        run.log_metrics({"loss": 0.5, "acc": 0.75}, step=0)
        run.complete()
        run.get_details()  # waits until the API has stored what this process sent
        return run

    run = await call(log)
    page, url = studio_page.page, read_pipeline.api_url
    await log_in(page, url, READ_TOKEN)
    await page.goto(f"{url}/runs/{run.id}")
    await expect(page.get_by_role("heading", name="sweep-7")).to_contain_text("Completed")

    tags = page.locator(".facts-tags .tag")
    await expect(tags.filter(has_text="batch").locator(".tag-value.typed.number")).to_have_text(
        "64")
    await expect(tags.filter(has_text="frozen").locator(".tag-value.typed.boolean")).to_have_text(
        "false")
    # Text that looks like a number stays text (not marked).
    note = tags.filter(has_text="note").locator(".tag-value")
    await expect(note).to_have_text("10")
    await expect(note).not_to_have_class("tag-value typed number")

    await page.get_by_text("Properties (4)").click()
    props = page.locator("details.props")
    await expect(props.locator(".typed.number", has_text="0.0003")).to_be_visible()
    await expect(props.locator(".typed.number", has_text="10")).to_be_visible()
    await expect(props.locator(".typed.boolean", has_text="false")).to_be_visible()
    await expect(props.get_by_text("adamw")).to_be_visible()
    await screenshot(page, "run-hyperparams")

    # The experiment's runs table shows the typed tags too.
    await page.goto(f"{url}/experiments/browser-hyper")
    await expect(page.locator(".tags-cell .tag-value.typed.boolean").first).to_have_text("false")
