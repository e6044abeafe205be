"""``RunDetails``' front end (producer/widgets/_widget.js + _widget.css) in the real headless
Chromium (issue 11).

A notebook loads the ES module and calls its ``render({model, el})`` with the widget's
model; here the page does the same with a small stand-in model (``get``/``set``/``on``/
``off``/``save_changes``, firing ``change:<name>`` on ``set`` as Backbone does). The page,
the module and the stylesheet are served by the test itself (``page.route`` on an address
of 127.0.0.1 that no server listens on), so nothing is fetched from anywhere; the
``studio_page`` fixture fails the test if the page tried.

Two states are drawn: a realistic one made here (the screenshot ``widget``, then the same
run after it completed, ``widget-completed``), and the traitlets of a real ``RunDetails``
that followed a real run through the pipeline (``widget-live-run``), which checks that what
the Python side sends is what the front end draws.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from playwright.async_api import Page, Route

from producer import Experiment, Run
from producer.widgets import RunDetails
from tests.browser.helpers import StudioPage, screenshot
from tests.integration.pipelines import ReadPipeline, call

WIDGET = Path(__file__).resolve().parents[2] / "producer" / "widgets"
#: Nothing listens there: every request to it is answered by the test's own route.
ORIGIN = "http://127.0.0.1:9"
#: The traitlets the front end reads (RunFeed.state).
TRAITS = ("run_id", "experiment", "display_name", "status", "error", "times", "metrics",
          "log_tail", "children", "children_total", "portal_url", "live", "notice")

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>RunDetails</title>
<link rel="stylesheet" href="/_widget.css">
<style>
  body { margin: 0; background: #fff; font-family: system-ui, sans-serif; }
  /* a notebook's output area */
  .cell { width: 960px; margin: 24px auto; padding-left: 72px; position: relative; }
  .cell::before { content: "[3]:"; position: absolute; left: 8px; top: 4px; color: #d84315;
                  font: 13px ui-monospace, monospace; }
</style></head>
<body><div class="cell"><div id="out"></div></div>
<script type="module">
  import widget from "/_widget.js";
  class FakeModel {
    constructor(state) { this.state = { ...state }; this.handlers = new Map(); this.saved = 0; }
    get(name) { return this.state[name]; }
    set(name, value) {
      this.state[name] = value;
      for (const handler of this.handlers.get(`change:${name}`) || []) handler();
    }
    on(event, handler) { this.handlers.set(event, [...(this.handlers.get(event) || []), handler]); }
    off(event, handler) {
      this.handlers.set(event, (this.handlers.get(event) || []).filter((h) => h !== handler));
    }
    save_changes() { this.saved += 1; }
    listeners() { return [...this.handlers.values()].reduce((n, list) => n + list.length, 0); }
  }
  window.renderWidget = (state) => {
    const model = new FakeModel(state);
    const el = document.getElementById("out");
    window.model = model;
    window.cleanup = widget.render({ model, el });
    return true;
  };
  window.widgetReady = true;
</script></body></html>
"""


async def serve_widget(page: Page) -> None:
    files = {
        "/widget.html": (PAGE, "text/html"),
        "/_widget.js": ((WIDGET / "_widget.js").read_text(), "text/javascript"),
        "/_widget.css": ((WIDGET / "_widget.css").read_text(), "text/css"),
    }

    async def fulfil(route: Route) -> None:
        path = "/" + route.request.url.removeprefix(ORIGIN).lstrip("/").split("?")[0]
        if path not in files:
            await route.fulfill(status=404, body="not here")
            return
        body, content_type = files[path]
        await route.fulfill(status=200, body=body, content_type=content_type)

    await page.route(f"{ORIGIN}/**", fulfil)


async def render(page: Page, state: dict[str, Any]) -> None:
    await serve_widget(page)
    await page.goto(f"{ORIGIN}/widget.html")
    await page.wait_for_function("window.widgetReady === true")
    await page.evaluate("(state) => window.renderWidget(state)", state)


def iso(t: datetime) -> str:
    return t.isoformat()


def realistic_state() -> dict[str, Any]:
    """A run 12 minutes into training: what RunFeed.state() gives for such a run."""
    now = datetime.now(UTC)
    created = now - timedelta(minutes=12, seconds=31)
    queued, started = created + timedelta(seconds=0.2), created + timedelta(seconds=3.4)
    steps = list(range(0, 200, 2))
    loss = [round(2.3 * math.exp(-s / 45) + 0.08 + 0.05 * math.sin(s / 3), 4) for s in steps]
    buckets = list(range(0, 30_000, 100))
    acc = [round(0.95 - 0.6 * math.exp(-b / 6000), 4) for b in buckets]
    acc_lo = [round(a - 0.03 - 0.02 * math.exp(-b / 9000), 4) for a, b in zip(acc, buckets,
                                                                              strict=True)]
    acc_hi = [round(min(a + 0.02, 1.0), 4) for a in acc]
    lr = [0.001 * min(1.0, (s + 1) / 40) for s in steps]
    grad = [round(1 + 0.3 * math.sin(s / 5), 3) if s % 37 else "NaN" for s in steps]
    return {
        "run_id": "cifar10_1796231887_2784a134",
        "experiment": "cifar10",
        "display_name": "resnet-18 · lr 1e-3",
        "status": "Running",
        "error": "",
        "times": {
            "created_at": iso(created), "queued_at": iso(queued), "started_at": iso(started),
            "ended_at": None,
            "status_times": {"NotStarted": iso(created), "Queued": iso(queued),
                             "Preparing": iso(created + timedelta(seconds=0.4)),
                             "Running": iso(started), "Finalizing": None,
                             "CancelRequested": None, "Completed": None, "Failed": None,
                             "Canceled": None},
            "duration_s": None, "queued_s": 3.2,
        },
        "metrics": {
            "accuracy": {"kind": "series", "count": 30_000, "last": acc[-1], "min": 0.331,
                         "max": 0.951, "steps": [b + 99 for b in buckets], "values": acc,
                         "lo": acc_lo, "hi": acc_hi, "downsampled": True},
            "alpha": {"kind": "value", "count": 1, "last": 0.5, "min": 0.5, "max": 0.5},
            "class accuracies": {"kind": "list", "count": 10},
            "confusion": {"kind": "typed", "schema_type": "confusion_matrix", "count": 1},
            "grad norm": {"kind": "series", "count": len(steps), "last": grad[-1], "min": 0.7,
                          "max": 1.3, "steps": steps, "values": grad, "downsampled": False},
            "learning rate": {"kind": "series", "count": len(steps), "last": lr[-1],
                              "min": lr[0], "max": lr[-1], "steps": steps, "values": lr,
                              "downsampled": False},
            "loss": {"kind": "series", "count": len(steps), "last": loss[-1], "min": min(loss),
                     "max": max(loss), "steps": steps, "values": loss, "downsampled": False},
            "mse vs alpha": {"kind": "table", "count": 4, "columns": ["alpha", "mse"]},
            "optimizer": {"kind": "value", "count": 1, "last": "adamw", "min": None,
                          "max": None},
        },
        "log_tail": [
            *(f"epoch {e:>2} | step {e * 20:>4} | loss {loss[e * 10]:.4f} | lr {lr[e * 10]:.2e}"
              for e in range(10)),
            "[stderr] UserWarning: DataLoader worker 3 is slow (2.1 s per batch)",
            "[rank 1] epoch  9 | step  180 | loss 0.1672",
            "saving checkpoint outputs/ckpt-0009.pt (44.7 MB)",
        ],
        "children": [
            {"run_id": "cifar10_1796231890_0a1b2c3d", "display_name": "fold-1",
             "status": "Completed", "created_at": iso(started), "started_at": iso(started),
             "ended_at": iso(started + timedelta(seconds=184)), "duration_s": 184.2,
             "portal_url": "http://127.0.0.1:8470/runs/cifar10_1796231890_0a1b2c3d"},
            {"run_id": "cifar10_1796231891_4e5f6a7b", "display_name": "fold-2",
             "status": "Failed", "created_at": iso(started), "started_at": iso(started),
             "ended_at": iso(started + timedelta(seconds=61)), "duration_s": 61.0,
             "portal_url": "http://127.0.0.1:8470/runs/cifar10_1796231891_4e5f6a7b"},
            {"run_id": "cifar10_1796231892_8c9d0e1f", "display_name": "fold-3",
             "status": "Running", "created_at": iso(started), "started_at": iso(started),
             "ended_at": None, "duration_s": None,
             "portal_url": "http://127.0.0.1:8470/runs/cifar10_1796231892_8c9d0e1f"},
        ],
        "children_total": 3,
        "portal_url": "http://127.0.0.1:8470/runs/cifar10_1796231887_2784a134",
        "live": True,
        "notice": "",
    }


async def chart_paths(page: Page) -> dict[str, dict[str, float]]:
    """Each chart's line: the length of its path data and its drawn size."""
    found: dict[str, dict[str, float]] = await page.evaluate("""() => {
      const out = {};
      for (const fig of document.querySelectorAll("figure.rs-chart")) {
        const path = fig.querySelector("path.rs-line");
        const box = path ? path.getBoundingClientRect() : {width: 0, height: 0};
        out[fig.dataset.metric] = {d: path ? path.getAttribute("d").length : 0,
                                   width: box.width, height: box.height};
      }
      return out;
    }""")
    return found


async def test_the_widget_draws_a_run_and_redraws_on_change(studio_page: StudioPage) -> None:
    page = studio_page.page
    state = realistic_state()
    await render(page, state)

    pill = page.locator(".rs-head .rs-pill")
    assert (await pill.inner_text()).strip() == "Running"
    assert "rs-s-running" in (await pill.get_attribute("class") or "")
    assert await page.locator(".rs-head .rs-dot").count() == 1  # live
    assert await page.locator(".rs-name").inner_text() == state["display_name"]
    link = page.locator("a.rs-studio")
    assert await link.get_attribute("href") == state["portal_url"]
    assert await link.get_attribute("target") == "_blank"
    facts = await page.locator(".rs-facts").inner_text()
    for fact in ("Created", "Queued", "Running for"):
        assert fact in facts
    assert [" ".join(text.split()) for text in await page.locator(".rs-steps li")
            .all_inner_texts()] == ["Queued +0.2 s", "Preparing +0.4 s", "Running +3.4 s"]

    # Series as charts (a downsampled one with its min/max band), the rest as a table.
    charts = await chart_paths(page)
    assert sorted(charts) == ["accuracy", "grad norm", "learning rate", "loss"]
    for name, drawn in charts.items():
        assert drawn["d"] > 100, name
        assert drawn["width"] > 150, (name, drawn)
        assert drawn["height"] > 10, (name, drawn)
    assert await page.locator("figure[data-metric=accuracy] polygon.rs-band").count() == 1
    assert await page.locator("figure[data-metric=loss] .rs-last").inner_text() == str(
        state["metrics"]["loss"]["last"])
    rows = page.locator("table.rs-values tr")
    assert await rows.count() == 5
    assert await page.locator("tr[data-metric=alpha] .rs-v").inner_text() == "0.5"
    assert await page.locator("tr[data-metric=optimizer] .rs-v").inner_text() == "adamw"
    assert "table · 4 rows \u00d7 2 columns" in await page.locator(
        "tr[data-metric='mse vs alpha']").inner_text()

    lines = page.locator(".rs-log > div")
    assert await lines.count() == len(state["log_tail"])
    assert await lines.last.inner_text() == state["log_tail"][-1]
    assert await page.locator(".rs-log .rs-stderr").count() == 1
    log_box = await page.evaluate("""() => { const p = document.querySelector(".rs-log");
      return [p.scrollTop, p.scrollHeight, p.clientHeight]; }""")
    assert log_box[0] + log_box[2] >= log_box[1] - 1  # scrolled to its last line

    kids = page.locator("table.rs-children tr")
    assert await kids.count() == 3
    assert [s.strip() for s in await page.locator("table.rs-children .rs-pill")
            .all_inner_texts()] == ["Completed", "Failed", "Running"]
    assert await page.locator("tr[data-run=cifar10_1796231890_0a1b2c3d] a").get_attribute(
        "href") == state["children"][0]["portal_url"]
    await screenshot(page, "widget")

    # A status change redraws the head (and a new log line the log), as the model changes.
    ended = datetime.now(UTC)
    times = {**state["times"], "ended_at": iso(ended), "duration_s": 751.3,
             "status_times": {**state["times"]["status_times"],
                              "Finalizing": iso(ended), "Completed": iso(ended)}}
    await page.evaluate("""([times, lines]) => {
      model.set("times", times);
      model.set("log_tail", lines);
      model.set("live", false);
      model.set("status", "Completed");
    }""", [times, [*state["log_tail"], "done: test accuracy 0.951"]])
    assert (await pill.inner_text()).strip() == "Completed"
    assert "rs-s-completed" in (await pill.get_attribute("class") or "")
    assert await page.locator(".rs-head .rs-dot").count() == 0
    facts = await page.locator(".rs-facts").inner_text()
    for fact in ("Duration", "0:12:31", "Ended"):
        assert fact in facts
    assert await lines.last.inner_text() == "done: test accuracy 0.951"
    await screenshot(page, "widget-completed")

    # An error and a notice show; the cleanup render() returned lets go of the model.
    await page.evaluate("""() => { model.set("error", "Traceback (most recent call last):\\n"
      + "ValueError: boom"); model.set("status", "Failed"); }""")
    assert "ValueError: boom" in await page.locator(".rs-error").inner_text()
    assert await page.evaluate("() => model.listeners()") > 0
    await page.evaluate("() => window.cleanup()")
    assert await page.evaluate("() => model.listeners()") == 0
    assert all(url.startswith(ORIGIN) for url in studio_page.guard.requested), (
        studio_page.guard.requested)


async def test_the_widget_draws_the_state_of_a_real_run(
    studio_page: StudioPage, read_pipeline: ReadPipeline,
) -> None:
    """The traitlets of a RunDetails that followed a real run, drawn by the front end."""
    ws = read_pipeline.workspace()

    def logged() -> Run:
        with Experiment(ws, "widget-browser").start_logging(display_name="ridge sweep") as run:
            run.log("alpha", 0.25)
            for step in range(60):
                run.log("mse", 3000 + 400 * math.exp(-step / 12), step=step)
            run.log_output("stdout", [f"alpha 0.25, step {i}" for i in range(5)])
            child = run.child_run("fold-1")
            child.log("mse", 3100.0)
            child.complete()
        return run

    try:
        run = await call(logged)
        widget = await call(RunDetails, run)
    finally:
        await call(ws.close, 10.0)
    with widget:
        state = {name: getattr(widget, name) for name in TRAITS}
    json.dumps(state, allow_nan=False)  # what a kernel can send as JSON
    page = studio_page.page
    await render(page, state)
    assert (await page.locator(".rs-head .rs-pill").inner_text()).strip() == "Completed"
    charts = await chart_paths(page)
    assert list(charts) == ["mse"]
    assert charts["mse"]["d"] > 100
    assert await page.locator("tr[data-metric=alpha] .rs-v").inner_text() == "0.25"
    assert await page.locator(".rs-log > div").all_inner_texts() == [
        f"alpha 0.25, step {i}" for i in range(5)]
    assert await page.locator("table.rs-children .rs-pill").inner_text() == "Completed"
    assert await page.locator("a.rs-studio").get_attribute("href") == state["portal_url"]
    await screenshot(page, "widget-live-run")
