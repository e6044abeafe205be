"""The run page's typed metrics in a real headless Chromium (issue 14): a confusion matrix,
an accuracy table, residuals and predictions logged through the SDK (SDK → Kafka → worker
→ PostgreSQL → API, whose process serves the studio), drawn as Azure ML studio draws them
— a heatmap with class labels and counts (and a normalised view), ROC and precision-recall
curves per class with micro and macro averages, a histogram, predicted against true.

Fixtures: tests/browser/conftest.py (``studio_page``, ``read_pipeline``, ``built_studio``).
The documents are azureml-core 1.60.0's docstring examples (tests/unit/test_typed_metrics.py),
with named classes for the confusion matrix.
"""

from __future__ import annotations

import csv
import io
import math
import re
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Locator, Page, expect

from producer import Experiment, Run
from tests.browser.helpers import StudioPage, log_in, screenshot
from tests.integration.pipelines import READ_TOKEN, ReadPipeline, call

pytestmark = pytest.mark.usefixtures("built_studio")

LABELS = ["cat", "dog", "bird"]
MATRIX = [[38, 9, 12], [12, 34, 4], [1, 7, 78]]
ACCURACY: dict[str, Any] = {
    "class_labels": ["0", "1", "2"],
    "probability_thresholds": [0.0, 0.25, 0.5, 0.75, 1.0],
    "percentile_thresholds": [0.0, 0.01, 0.24, 0.98, 1.0],
    "probability_tables": [
        [[82, 118, 0, 0], [75, 31, 87, 7], [66, 9, 109, 16], [46, 2, 116, 36], [0, 0, 118, 82]],
        [[60, 140, 0, 0], [56, 20, 120, 4], [47, 4, 136, 13], [28, 0, 140, 32], [0, 0, 140, 60]],
        [[58, 142, 0, 0], [53, 29, 113, 5], [40, 10, 132, 18], [24, 1, 141, 34], [0, 0, 142, 58]],
    ],
    "percentile_tables": [
        [[82, 118, 0, 0], [82, 67, 51, 0], [75, 26, 92, 7], [48, 3, 115, 34], [3, 0, 118, 79]],
        [[60, 140, 0, 0], [60, 89, 51, 0], [60, 41, 99, 0], [46, 5, 135, 14], [3, 0, 140, 57]],
        [[58, 142, 0, 0], [56, 93, 49, 2], [54, 47, 95, 4], [41, 10, 132, 17], [3, 0, 142, 55]],
    ],
}
RESIDUALS: dict[str, list[float]] = {"bin_edges": [-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0],
             "bin_counts": [4, 21, 80, 77, 18, 3]}
PREDICTIONS: dict[str, list[float]] = {"bin_edges": [0.0, 10.0, 20.0, 30.0, 40.0, 50.0],
               "bin_averages": [6.1, 14.8, 24.0, 36.2, 0.0],
               "bin_errors": [1.2, 2.0, 2.4, 3.1, 0.0],
               "bin_counts": [12, 30, 41, 17, 0]}


def roc_auc(table: list[list[int]]) -> float:
    """One class's area under its ROC curve, as the studio draws it: (FPR, TPR) per
    threshold plus the (0,0) and (1,1) ends, joined by straight lines."""
    points = {(fp / (fp + tn), tp / (tp + fn)) for tp, fp, tn, fn in table} | {(0.0, 0.0),
                                                                               (1.0, 1.0)}
    ordered = sorted(points)
    return sum((x1 - x0) * (y0 + y1) / 2 for (x0, y0), (x1, y1) in pairwise(ordered))


async def logged_typed_run(p: ReadPipeline) -> Run:
    def log() -> Run:
        run = Experiment(p.workspace(), "browser-typed").start_logging(
            display_name="classifier + regressor")
        for step in range(12):
            run.log("loss", 1.0 / (step + 1), step=step)
        run.log_confusion_matrix("confusion", {"data": {"class_labels": LABELS,
                                                        "matrix": MATRIX}})
        run.log_accuracy_table("accuracy", {"schema_type": "accuracy_table",
                                            "schema_version": "1.0.1", "data": ACCURACY})
        run.log_residuals("residuals", {"data": RESIDUALS})
        run.log_predictions("predictions", {"data": PREDICTIONS})
        # Strings spelled like non-finite floats, next to the floats themselves.
        run.log("note", "NaN")
        run.log("ratio", math.nan)
        run.complete()
        run.get_metrics()  # waits until the API has stored what this process sent
        return run

    return await call(log)


async def reveal(chart: Locator) -> None:
    """Scroll a typed chart's card to the middle of the window (charts render once near
    it) and wait until it has drawn; its card is replaced once the JSON is read."""
    await expect(chart).to_have_count(1)
    await chart.evaluate("el => el.scrollIntoView({block: 'center'})")
    await expect(chart.locator("svg.typed-svg").first).to_be_visible()
    await chart.evaluate("el => el.scrollIntoView({block: 'center'})")


async def downloaded(page: Page, button: Locator, tmp_path: Path, name: str) -> bytes:
    async with page.expect_download() as info:
        await button.click()
    path = tmp_path / name
    await (await info.value).save_as(path)
    return path.read_bytes()


async def test_the_run_page_charts_the_four_typed_metrics(
        studio_page: StudioPage, read_pipeline: ReadPipeline, tmp_path: Path) -> None:
    run = await logged_typed_run(read_pipeline)
    page, url = studio_page.page, read_pipeline.api_url
    await log_in(page, url, READ_TOKEN)
    await page.goto(f"{url}/runs/{run.id}")
    await expect(page.get_by_role("heading", name="classifier + regressor")).to_be_visible()

    # Confusion matrix: a heatmap with the class labels on both axes and the counts.
    cm = page.locator('[data-typed="confusion_matrix"]')
    await reveal(cm)
    heatmap = cm.locator("svg.typed-svg")
    await expect(heatmap).to_be_visible()
    await expect(heatmap.locator("g.cm-cell")).to_have_count(9)
    labels = await heatmap.locator("text.cm-label").all_text_contents()
    assert sorted(labels) == sorted(LABELS * 2)  # rows (true) and columns (predicted)
    for r, row in enumerate(MATRIX):
        for c, count in enumerate(row):
            cell = heatmap.locator(f'g.cm-cell[data-row="{r}"][data-col="{c}"]')
            await expect(cell).to_have_text(str(count))
    await expect(heatmap).to_contain_text("Predicted label")
    await expect(heatmap).to_contain_text("True label")
    scores = cm.locator("table")
    await expect(scores.locator("tr", has_text="cat")).to_contain_text("0.745")  # 38 / 51
    await expect(scores).to_contain_text(f"{(38 + 34 + 78) / 195:.3f}")  # accuracy
    await cm.get_by_role("button", name="Normalized").click()
    await expect(heatmap.locator('g.cm-cell[data-row="0"][data-col="0"]')).to_have_text("64.4%")
    await expect(heatmap.locator('g.cm-cell[data-row="2"][data-col="2"]')).to_have_text("90.7%")
    table = await downloaded(page, cm.get_by_role("button", name="CSV"), tmp_path, "cm.csv")
    rows = list(csv.reader(io.StringIO(table.decode())))
    assert rows[0] == ["true \\ predicted", *LABELS]
    assert rows[1][0] == "cat"
    assert float(rows[1][1]) == pytest.approx(38 / 59)
    await cm.get_by_role("button", name="Counts").click()
    await expect(heatmap.locator('g.cm-cell[data-row="0"][data-col="0"]')).to_have_text("38")

    # Accuracy table: ROC and precision-recall, a curve per class plus two averages.
    acc = page.locator('[data-typed="accuracy_table"]')
    await reveal(acc)
    plots = acc.locator("svg.typed-svg")
    await expect(plots).to_have_count(2)
    await expect(plots.nth(0)).to_contain_text("ROC curve")
    await expect(plots.nth(0)).to_contain_text("False positive rate")
    await expect(plots.nth(1)).to_contain_text("Precision\u2013recall curve")
    for plot in (plots.nth(0), plots.nth(1)):
        await expect(plot.locator("path.curve")).to_have_count(5)
    await expect(plots.nth(0).locator("line.chance")).to_have_count(1)
    legend = acc.locator(".typed-legend")
    for c, label in enumerate(ACCURACY["class_labels"]):
        auc = roc_auc(ACCURACY["probability_tables"][c])
        entry = legend.locator("button.legend-item").filter(
            has=page.locator(".legend-label", has_text=re.compile(f"^{label}$")))
        await expect(entry).to_contain_text(f"AUC {auc:.3f}")
    await expect(legend).to_contain_text("micro average")
    await expect(legend).to_contain_text("macro average")
    await legend.get_by_role("button").filter(has_text="micro average").click()
    for plot in (plots.nth(0), plots.nth(1)):
        await expect(plot.locator("path.curve")).to_have_count(4)  # hidden
    await legend.get_by_role("button").filter(has_text="micro average").click()
    png = await downloaded(page, acc.get_by_role("button", name="PNG"), tmp_path, "acc.png")
    assert png.startswith(b"\x89PNG\r\n\x1a\n")

    # Residuals: a bar per bin; predictions: a point per bin that holds samples.
    res = page.locator('[data-typed="residuals"]')
    await reveal(res)
    await expect(res.locator("svg rect.bar")).to_have_count(len(RESIDUALS["bin_counts"]))
    await expect(res.locator("svg line.zero")).to_have_count(1)
    await expect(res.locator("svg")).to_contain_text("Residual")
    pred = page.locator('[data-typed="predictions"]')
    await reveal(pred)
    await expect(pred.locator("svg g.prediction")).to_have_count(4)  # the empty bin has none
    await expect(pred.locator("svg rect.bar")).to_have_count(5)
    await expect(pred.locator("svg line.ideal")).to_have_count(1)
    await expect(pred.locator("svg")).to_contain_text("True value")
    await pred.locator("svg").hover(position={"x": 160, "y": 120})
    await expect(pred.locator(".typed-readout")).to_contain_text("average prediction")

    # A string logged as "NaN" shows as that string; the float NaN as a number.
    values = page.locator(".card", has=page.get_by_role("heading", name="Values"))
    await expect(values.locator("tr", has_text="note")).to_contain_text("string")
    await expect(values.locator("tr", has_text="ratio")).to_contain_text("number")
    await expect(values.locator("tr", has_text="note")).to_contain_text("NaN")

    await page.mouse.move(0, 0)
    await page.evaluate("window.scrollTo(0, 0)")
    await screenshot(page, "run-typed-metrics")
