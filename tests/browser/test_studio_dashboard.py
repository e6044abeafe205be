"""The experiment dashboard and a run's child runs in headless Chromium, with data logged
through the real SDK → Kafka → worker → API (issue 11): metric columns chosen from the
experiment's names (one ``/v1/metric-names`` request) with each run's last value (from
the run list's ``?metric=`` summaries, not one request per run), runs selected and
overlaid (one ``/v1/series`` request for all of them), and a sweep's children: their
values as columns, their series overlaid and one value against another.
"""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from producer import Experiment, Run
from tests.browser.helpers import StudioPage, log_in, screenshot
from tests.integration.pipelines import READ_TOKEN, ReadPipeline, call

pytestmark = pytest.mark.usefixtures("built_studio")

TRIALS = 12


async def test_dashboard_columns_compare_and_a_sweeps_children(
        studio_page: StudioPage, read_pipeline: ReadPipeline) -> None:
    ws = read_pipeline.workspace()

    def log() -> tuple[list[Run], Run]:
        exp = Experiment(ws, "browser-dashboard")
        tops = []
        for i, name in enumerate(("lasso", "ridge", "elastic")):
            run = exp.start_logging(display_name=name)
            for step in range(40):
                run.log("loss", (i + 1) / (step + 1), step=step)
            run.log("acc", 0.8 + i / 100)
            run.complete()
            tops.append(run)
        sweep = exp.start_logging(display_name="sweep")
        for t in range(TRIALS):
            child = sweep.child_run(f"trial {t}")
            alpha = t / 10
            child.log("alpha", alpha)
            child.log("mse", (alpha - 0.6) ** 2 + 1)
            for step in range(30):
                child.log("val_loss", 1 / (step + 1 + t), step=step)
            child.complete()
        sweep.complete()
        sweep.get_metrics(recursive=True)  # stored
        for run in tops:
            run.get_metrics()
        return tops, sweep

    tops, sweep = await call(log)
    page, url, guard = studio_page.page, read_pipeline.api_url, studio_page.guard
    await log_in(page, url, READ_TOKEN)

    await page.goto(f"{url}/experiments/browser-dashboard")
    await expect(page.get_by_role("link", name="ridge").first).to_be_visible()
    await page.get_by_text("Metric columns").click()
    await page.locator(".chooser-menu label", has_text="loss").first.locator("input").check()
    # The column shows each run's last loss: 1/40, 2/40, 3/40.
    lasso_row = page.locator(f'tr[data-run-id="{tops[0].id}"]')
    await expect(lasso_row).to_contain_text("0.025")
    await expect(page.locator(f'tr[data-run-id="{tops[2].id}"]')).to_contain_text("0.075")
    await page.get_by_text("Metric columns").click()  # closes the chooser
    for run in tops[:2]:
        await page.locator(f'tr[data-run-id="{run.id}"] td.check input').check()
    compare = page.locator(".card.compare")
    chart = compare.locator('[data-chart="loss"]').first
    await expect(chart.locator("canvas").first).to_be_visible()
    await expect(chart.locator(".u-legend .u-series")).to_have_count(3)  # x + two runs
    await screenshot(page, "experiment-compare")
    asked = guard.requested
    assert sum("/v1/metric-names" in u for u in asked) >= 1
    assert not any("/metric-index" in u for u in asked), "one index request per run is gone"
    assert sum("/v1/series?" in u for u in asked) >= 1
    assert not any("/metrics/loss?" in u for u in asked), "one series request per run is gone"

    # Filtered by a metric's last value (lasso 0.025, ridge 0.05, elastic 0.075; the sweep
    # has no loss): a shareable URL.
    await page.get_by_label("Metric filter").fill("loss<0.06")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.locator("tbody tr[data-run-id]")).to_have_count(2)
    for run, shown in zip(tops, (1, 1, 0), strict=True):
        await expect(page.locator(f'tr[data-run-id="{run.id}"]')).to_have_count(shown)
    assert "where=loss%3C0.06" in page.url

    await page.goto(f"{url}/runs/{sweep.id}?tab=children")
    children = page.locator(".children")
    # the runs table's rows only (an overlay's legend is a table too, and may be drawn first)
    await expect(children.locator("tr[data-run-id]")).to_have_count(TRIALS)
    overlay = children.locator('[data-chart="val_loss"]').first
    await expect(overlay.locator("canvas").first).to_be_visible()
    await expect(overlay.locator(".u-legend .u-series")).to_have_count(TRIALS + 1)
    scatter = children.locator('[data-chart="mse vs alpha"]')
    await expect(scatter.locator("canvas").first).to_be_visible()
    await screenshot(page, "run-children")
    assert not any(u.endswith("/metrics") or "/metrics?" in u for u in guard.requested), (
        "the children tab reads summaries, not every child's whole metrics")
