"""Studio figures (issue 11): how fast the studio's charts draw, in a real headless Chromium.

The data is stored through the real write path (``store_events``) into a scratch database,
served by an API process of its own (``api_process``, which also serves the studio), and
the pages are opened by Debian's ``chromium`` driven by Playwright for Python (both from
``deploy/prereqs.sh`` and ``pip install 'runstream[dev]'``).

Two measurements, each repeated ``repeats`` times in a fresh browser context (no cache):

1. ``series``: a run page whose metric ``loss`` has ``points`` points (10,000,000; two
   spikes of ±1e6 among them). ``first_request_to_drawn_ms`` counts from the moment the
   page asks for the series (``/metrics/loss?max_points=…``) to the chart's first draw with
   data (the studio's ``performance.mark("runstream:chart:loss")``);
   ``navigation_to_drawn_ms`` from the navigation itself (page, scripts, the run, its
   metric index). The series is stored as the worker stores it, tiles included (the
   worker's ``SeriesTiler`` summarises a series as its points arrive; ``load_s`` counts
   both). The first repetition is reported apart as ``cold`` (nothing cached anywhere).
2. ``overlay``: the ``Child runs`` tab of a run with ``runs`` children (100), each with a
   ``loss`` series of ``run_points`` points, whose chart overlays that metric of every
   child: from navigation, and from the first series request, to the chart drawn with all
   ``runs`` lines (the studio asks for all of them in one ``/v1/series`` request: first 150
   buckets per run, answered from tiles, then a finer read redrawn when it arrives —
   ``first_request_to_refined_ms``).

3. ``dashboard``: an experiment of ``dashboard_runs`` runs (10,000) logging between them
   ``dashboard_names`` metric names (1,000): from navigation to the first 100 rows, the
   metric-names request, a search in the column chooser, "Load 100 more", and a shared
   link with three metric columns (to the first value shown), also sorted by a metric.

Targets (issue 11): series ≤ 1,000 ms from the first request, overlay ≤ 2,000 ms; each
result carries ``target_ms`` and ``vs_target`` (measured / target: below 1 is within).
The dashboard has no figure in the issue ("fluid"): its times are reported as measured.
"""

from __future__ import annotations

import math
import random
import shutil
import statistics
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from ingest.bench.events import EventFactory, packed_series
from ingest.bench.read import CHUNK_POINTS, api_process, store_events

__all__ = ["OVERLAY_TARGET_MS", "SERIES_TARGET_MS", "run_studio_bench"]

SERIES_TARGET_MS: Final = 1000.0
OVERLAY_TARGET_MS: Final = 2000.0
SPIKE: Final = 1e6
CHROMIUM_CANDIDATES: Final = ("chromium", "/usr/bin/chromium", "chromium-browser")
VIEWPORT: Final = {"width": 1440, "height": 900}
#: How long one page may take before the bench gives up on it.
PAGE_TIMEOUT_MS: Final = 120_000

Progress = Callable[[str], None]

#: Timings of the chart titled ``title`` (the studio marks its first draw with data).
_TIMINGS_JS: Final = """([title, pathPart]) => {
  const mark = performance.getEntriesByName(`runstream:chart:${title}`)[0];
  const asks = performance.getEntriesByType("resource")
      .filter((e) => e.name.includes(pathPart)).map((e) => e.startTime);
  const box = document.querySelector(`[data-chart="${CSS.escape(title)}"]`);
  const fine = performance.getEntriesByName(`runstream:overlay-refined:${title}`)[0];
  return {drawn: mark ? mark.startTime : null, refined: fine ? fine.startTime : null,
          first_request: asks.length ? Math.min(...asks) : null,
          requests: asks.length,
          legend: box ? box.querySelectorAll(".u-legend .u-series").length : 0};
}"""


def _chromium() -> str:
    for candidate in CHROMIUM_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    raise RuntimeError("the studio bench needs Debian's chromium: run deploy/prereqs.sh as "
                       "root (apt-get install -y chromium)")


def _run_id(experiment: str) -> str:
    return f"{experiment}_{int(time.time())}_{uuid.uuid4().hex[:8]}"


def _series_events(f: EventFactory, points: int, *, seed: int,
                   spikes: tuple[int, ...] = ()) -> list[dict[str, Any]]:
    rng = random.Random(seed)  # noqa: S311 - benchmark data, not secrets
    start_us = time.time_ns() // 1000 - points
    events = []
    for first in range(0, points, CHUNK_POINTS):
        steps = range(first, min(points, first + CHUNK_POINTS))
        values = [math.exp(-3 * s / points) + rng.random() * 0.02 for s in steps]
        for at in spikes:
            if first <= at < first + len(values):
                values[at - first] = SPIKE if spikes.index(at) % 2 == 0 else -SPIKE
        events.append(f.metrics(packed_series("loss", values, steps=steps,
                                              times_us=[start_us + s for s in steps])))
    return events


async def _store_series_run(dsn: str, points: int) -> tuple[str, tuple[int, ...]]:
    rid = _run_id("benchstudio")
    f = EventFactory(rid, experiment="benchstudio")
    spikes = (points // 3 + 17, 2 * points // 3 + 5)
    await store_events(dsn, [f.lifecycle("Running")], batch=1)
    batch: list[dict[str, Any]] = []
    for event in _series_events(f, points, seed=1, spikes=spikes):
        batch.append(event)
        if len(batch) == 50:  # 500,000 points at a time: bounded memory
            await store_events(dsn, batch, batch=10, tile=True)
            batch = []
    await store_events(dsn, [*batch, f.lifecycle("Completed")], batch=10, tile=True)
    return rid, spikes


async def _store_overlay_runs(dsn: str, runs: int, run_points: int) -> str:
    parent = _run_id("benchstudio")
    pf = EventFactory(parent, experiment="benchstudio")
    events = [pf.lifecycle("Running", display_name="sweep")]
    for i in range(runs):
        child = f"{parent}_{i:03d}"
        cf = EventFactory(child, experiment="benchstudio")
        events.append(cf.lifecycle("Running", parent_run_id=parent, display_name=f"trial {i}"))
        events += _series_events(cf, run_points, seed=100 + i)
        events.append(cf.lifecycle("Completed"))
    events.append(pf.lifecycle("Completed"))
    await store_events(dsn, events, batch=50, tile=True)
    return parent


def _metric_name(i: int) -> str:
    return f"m_{i:04d}"


async def _store_dashboard(dsn: str, runs: int, names: int,
                           progress: Progress) -> str:
    """An experiment of ``runs`` runs: each logs a 100-point ``loss`` series and 10 values
    from a pool of ``names`` metric names (the newest runs between them log every name),
    stored as the worker stores them (its tiler's run summaries included)."""
    experiment = f"benchdash-{uuid.uuid4().hex[:6]}"
    rng = random.Random(3)  # noqa: S311 - benchmark data, not secrets
    events: list[dict[str, Any]] = []
    for i in range(runs):
        f = EventFactory(f"{experiment}_{i:05d}_{uuid.uuid4().hex[:8]}", experiment=experiment)
        scale = rng.uniform(0.5, 2.0)
        events += [
            f.lifecycle("Running", display_name=f"trial {i}", compute_target="cpu"),
            f.metrics(packed_series("loss", [scale / (s + 1) for s in range(100)],
                                    steps=range(100)),
                      *(packed_series(_metric_name((i * 10 + k) % names), [rng.random()],
                                      steps=[0]) for k in range(10))),
            f.lifecycle("Completed"),
        ]
        if len(events) >= 3000:
            await store_events(dsn, events, batch=300, tile=True)
            events = []
            progress(f"studio: stored {i + 1:,} of {runs:,} dashboard runs…")
    await store_events(dsn, events, batch=300, tile=True)
    return experiment


#: Times (performance.now()) when the runs table first had N rows, and when the first row
#: of the table showed a number in its last column.
_ROWS_WATCH_JS: Final = """() => {
  window.__rowsAt = {};
  const watch = () => {
    const n = document.querySelectorAll("tr[data-run-id]").length;
    for (const k of [1, 100, 200])
      if (n >= k && !window.__rowsAt[k]) window.__rowsAt[k] = performance.now();
    const cell = document.querySelector("tr[data-run-id] td:last-child");
    if (cell && /[0-9]/.test(cell.textContent || "") && !window.__rowsAt.value)
      window.__rowsAt.value = performance.now();
  };
  new MutationObserver(watch).observe(document, {subtree: true, childList: true,
                                                  characterData: true});
}"""


async def _dashboard_timings(browser: Any, url: str, experiment: str,
                             columns: list[str]) -> dict[str, Any]:
    context = await browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
    try:
        await context.add_init_script(f"({_ROWS_WATCH_JS})()")
        page = await context.new_page()
        await page.goto(f"{url}/experiments/{experiment}")
        await page.wait_for_function("() => window.__rowsAt && window.__rowsAt[100]",
                                     timeout=PAGE_TIMEOUT_MS)
        table_ms = await page.evaluate("() => window.__rowsAt[100]")
        names_ms = await page.evaluate("""() => {
          const e = performance.getEntriesByType("resource")
              .find((r) => r.name.includes("/v1/metric-names"));
          return e ? e.responseEnd - e.startTime : null; }""")
        chooser = page.get_by_text("Metric columns")
        await chooser.click()
        started = await page.evaluate("() => performance.now()")
        box = page.get_by_role("searchbox", name="Search metrics")
        await box.fill(columns[0])
        await page.wait_for_function(
            "n => [...document.querySelectorAll('.chooser-menu label')].some("
            "l => l.textContent.trim() === n)", arg=columns[0], timeout=PAGE_TIMEOUT_MS)
        search_ms = await page.evaluate("() => performance.now()") - started
        listed = await page.evaluate(
            "() => (document.querySelector('.chooser-menu input[type=search]') || {})"
            ".placeholder || ''")
        more = page.get_by_role("button", name="Load 100 more")
        started = await page.evaluate("() => performance.now()")
        await more.click()
        await page.wait_for_function("() => window.__rowsAt[200]", timeout=PAGE_TIMEOUT_MS)
        more_ms = await page.evaluate("() => window.__rowsAt[200]") - started
        # The same table with metric columns from the URL (a shared link).
        query = ",".join(columns)
        await page.goto(f"{url}/experiments/{experiment}?metrics={query}")
        await page.wait_for_function("() => window.__rowsAt && window.__rowsAt.value",
                                     timeout=PAGE_TIMEOUT_MS)
        values_ms = await page.evaluate("() => window.__rowsAt.value")
        await page.goto(f"{url}/experiments/{experiment}?metrics={query}&sort=metric:loss")
        await page.wait_for_function("() => window.__rowsAt && window.__rowsAt.value",
                                     timeout=PAGE_TIMEOUT_MS)
        sorted_ms = await page.evaluate("() => window.__rowsAt.value")
        return {"navigation_to_100_rows_ms": round(table_ms, 1),
                "metric_names_request_ms": round(names_ms, 1) if names_ms else None,
                "chooser_search_ms": round(search_ms, 1), "chooser_placeholder": listed,
                "load_100_more_ms": round(more_ms, 1),
                "navigation_to_values_ms": {"columns": len(columns), "ms": round(values_ms, 1)},
                "navigation_to_sorted_by_metric_ms": round(sorted_ms, 1)}
    finally:
        await context.close()


async def _page_timings(browser: Any, url: str, title: str, path_part: str, *,
                        refined: bool = False) -> dict[str, Any]:
    context = await browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
    try:
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(url)
        await page.wait_for_function(
            "t => performance.getEntriesByName(`runstream:chart:${t}`).length > 0",
            arg=title, timeout=PAGE_TIMEOUT_MS)
        if refined:
            await page.wait_for_function(
                "t => performance.getEntriesByName(`runstream:overlay-refined:${t}`).length",
                arg=title, timeout=PAGE_TIMEOUT_MS)
        timings: dict[str, Any] = await page.evaluate(_TIMINGS_JS, [title, path_part])
        if errors:
            raise RuntimeError(f"the studio page {url} threw: {errors[0]}")
        return timings
    finally:
        await context.close()


def _summary(samples: list[dict[str, Any]], target_ms: float) -> dict[str, Any]:
    cold, warm = samples[0], samples[1:] or samples
    from_request = [s["drawn"] - s["first_request"] for s in warm]
    from_navigation = [s["drawn"] for s in warm]
    p50 = statistics.median(from_request)
    return {
        "repeats": len(warm),
        "first_request_to_drawn_ms": {"p50": round(p50, 1), "max": round(max(from_request), 1)},
        "navigation_to_drawn_ms": {"p50": round(statistics.median(from_navigation), 1),
                                   "max": round(max(from_navigation), 1)},
        "cold": {"first_request_to_drawn_ms": round(cold["drawn"] - cold["first_request"], 1),
                 "navigation_to_drawn_ms": round(cold["drawn"], 1)},
        "target_ms": target_ms,
        "vs_target": round(p50 / target_ms, 3),
    }


async def run_studio_bench(*, dsn: str, home: Path, points: int = 10_000_000, runs: int = 100,
                           run_points: int = 10_000, repeats: int = 5,
                           dashboard_runs: int = 10_000, dashboard_names: int = 1000,
                           progress: Progress = lambda _: None) -> dict[str, Any]:
    """Both measurements on a scratch database ``dsn``; see the module doc."""
    from playwright.async_api import async_playwright  # a dev/bench dependency only

    chromium = _chromium()
    progress(f"studio: storing a {points:,}-point series…")
    started = time.perf_counter()
    series_run, spikes = await _store_series_run(dsn, points)
    series_load_s = time.perf_counter() - started
    progress(f"studio: storing {runs} runs of {run_points:,} points…")
    parent = await _store_overlay_runs(dsn, runs, run_points)
    progress(f"studio: storing {dashboard_runs:,} runs with {dashboard_names:,} metric names…")
    experiment = await _store_dashboard(dsn, dashboard_runs, dashboard_names, progress)
    async with api_process(dsn, home=home) as url, async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium, headless=True,
            args=["--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"])
        try:
            progress(f"studio: drawing the series {repeats + 1} times in Chromium…")
            series = [await _page_timings(browser, f"{url}/runs/{series_run}?tab=metrics",
                                          "loss", "/metrics/loss?")
                      for _ in range(repeats + 1)]
            progress(f"studio: overlaying {runs} runs {repeats + 1} times in Chromium…")
            overlay = [await _page_timings(browser, f"{url}/runs/{parent}?tab=children",
                                           "loss", "/v1/series?", refined=True)
                       for _ in range(repeats + 1)]
            progress(f"studio: the dashboard of {dashboard_runs:,} runs in Chromium…")
            dashboard = await _dashboard_timings(
                browser, url, experiment,
                # loss last: every run has it, so the first row's last cell shows a number.
                [_metric_name(dashboard_names // 2), _metric_name(dashboard_names - 1), "loss"])
        finally:
            await browser.close()
    series_result = {"points": points, "load_s": round(series_load_s, 1),
                     **_summary(series, SERIES_TARGET_MS),
                     "series_requests": series[-1]["requests"],
                     "spikes_at_steps": list(spikes)}
    overlay_result = {"runs": runs, "points_per_run": run_points,
                      **_summary(overlay, OVERLAY_TARGET_MS),
                      "first_request_to_refined_ms": {
                          "p50": round(statistics.median(
                              s["refined"] - s["first_request"] for s in overlay[1:]), 1)},
                      "legend_entries": overlay[-1]["legend"],
                      "series_requests": overlay[-1]["requests"]}
    dashboard_result = {"runs": dashboard_runs, "metric_names": dashboard_names, **dashboard}
    return {"chromium": chromium, "series": series_result, "overlay": overlay_result,
            "dashboard": dashboard_result}
