"""Read-path figures (issue 4) on a given database and the API serving it.

Each function stores its own data through the real write path (``Store.write_batch`` of
decoded events, as a worker commits them) into the database at ``dsn``, then times HTTP
requests to ``api_url``, which must serve that database (``api_process`` starts one:
``runstream api`` as a separate process, so the load generator never shares a core's
time slices or the event loop with the server it measures). All return plain dicts.

1. ``bench_downsample``: one series of ``points`` points (one rank, the SDK's chunking:
   consecutive steps, 10,000 points per event) read as ``max_points`` buckets;
   ``first_ms`` is the first request, which also summarises the series into tiles
   (migration 0006), then p50/p99 over ``requests`` requests.
2. ``bench_metrics``: ``GET /v1/runs/{id}/metrics`` of a run with ``metrics`` series of
   ``points_per_metric`` points: p50/max of the HTTP call, and of the SDK's
   ``run.get_metrics()`` (which wraps it and decodes the JSON).
3. ``bench_run_details``: ``GET /v1/runs/{id}`` at ``rate`` requests/s for ``duration_s``
   from an open-loop generator (requests start on schedule whether or not earlier ones
   have finished; latency counts from the scheduled start, so a stalled server cannot
   hide its backlog), over 100 runs with tags and children: p50/p99/max, errors.

Studio scale (issue 12, item 6 and 3); the data is stored as the worker stores it, its
series' tiles kept by the worker's tiler (``store_events(..., tile=True)``). 4 and 5 store
in seconds what a deployment gathers over days, so before measuring they run the
``VACUUM ANALYZE`` that autovacuum would run soon after such a load (``settle``): they
measure the steady state, not a race with autovacuum over the rows just written.

4. ``bench_runs_list``: an experiment of ``runs`` runs (10,000), each logging ``metrics``
   series (20) of ``points`` points; ``GET /v1/runs?experiment=…&metric=…`` with all of
   them as columns, 100 runs a page (the studio's page), ``requests`` requests (≥ 100)
   cycling through newest first, sorted by a metric both ways and filtered by a metric's
   value, each walking its pages by cursor: p50/p99/max against the 100 ms target.
5. ``bench_many_series``: one ``GET /v1/series`` of ``runs`` runs (100) x ``points``
   points (100,000) → ``max_points`` (1,000) buckets each, ``format=columns`` as the
   studio asks: the first request, then p50/p99, against the 300 ms target.
6. ``bench_first_view``: series of 1,000,000 and 10,000,000 points, each stored and tiled
   as the worker does, then requested for the first time ever — by an API whose
   connections are warm, nothing of that series read before — at the studio's
   ``max_points`` (1,500), then p50/p99 of later requests; targets 50 ms and 100 ms for
   the first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Final

import aiohttp
import asyncpg

from ingest.bench.events import EventFactory, packed_series
from ingest.worker.decode import DeadLetter, decode_event
from ingest.worker.store import Batch, Store
from schemas.codec import Codec

__all__ = [
    "api_process",
    "bench_downsample",
    "bench_first_view",
    "bench_many_series",
    "bench_metrics",
    "bench_run_details",
    "bench_runs_list",
    "run_read_bench",
    "store_events",
]

CHUNK_POINTS: Final = 10_000
#: Targets of issue 12 (item 6: runs lists, many series; item 3: first views).
RUNS_LIST_TARGET_P99_MS: Final = 100.0
MANY_SERIES_TARGET_MS: Final = 300.0
FIRST_VIEW_TARGET_MS: Final = {1_000_000: 50.0, 10_000_000: 100.0}
#: What the studio's run page asks a series for (studio/src/chart/SeriesChart.tsx).
STUDIO_MAX_POINTS: Final = 1500
_CODEC: Final = Codec(max_message_bytes=1 << 22)


async def _no_dead_letters(dead: Sequence[DeadLetter]) -> None:
    raise RuntimeError(f"bench events were dead-lettered: {dead[:1]}")


async def store_events(dsn: str, events: Sequence[dict[str, Any]], *, batch: int = 50,
                       tile: bool = False) -> None:
    """Commit ``events`` (``EventFactory`` dicts) through the real write path: encoded and
    decoded by the codec, ``batch`` per ``Store.write_batch`` transaction. ``tile``: keep
    the series' tiles current after each commit, as the worker does (``SeriesTiler``),
    and store the runs' summaries at the end, as it does once they have gone quiet."""
    from ingest.worker.tiler import SeriesTiler

    decoded = [decode_event(_CODEC, _CODEC.encode(e)) for e in events]
    async with Store(dsn=dsn) as store:
        tiler = SeriesTiler(store)
        for i in range(0, len(decoded), batch):
            result = await store.write_batch(
                Batch("bench", "bench-read", events=decoded[i : i + batch]),
                send_dead_letters=_no_dead_letters)
            if tile:
                tiler.note(result)
                await tiler.tile_due()
        if tile:  # and once the runs have gone quiet, their summaries
            await tiler.settle()


async def settle(dsn: str) -> None:
    """``VACUUM ANALYZE`` the database, as autovacuum does some time after a bulk load."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


def _run_id(experiment: str) -> str:
    return f"{experiment}_{int(time.time())}_{uuid.uuid4().hex[:8]}"


def _percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


async def _timed_get(http: aiohttp.ClientSession, url: str) -> tuple[float, int, int]:
    started = time.perf_counter()
    async with http.get(url) as response:
        body = await response.read()
        status = response.status
    return time.perf_counter() - started, status, len(body)


async def bench_downsample(
    *, dsn: str, api_url: str, points: int = 1_000_000, max_points: int = 1000,
    requests: int = 20, token: str = "",
) -> dict[str, Any]:
    """Downsampled series: ``points`` points → at most ``max_points`` buckets."""
    rid = _run_id("benchread")
    f = EventFactory(rid, experiment="benchread")
    start_us = time.time_ns() // 1000 - points
    rng = random.Random(1)  # noqa: S311 - benchmark data, not secrets
    events = [f.lifecycle("Running")]
    for first in range(0, points, CHUNK_POINTS):
        steps = range(first, min(points, first + CHUNK_POINTS))
        events.append(f.metrics(packed_series(
            "loss", [math.exp(-s / points) + rng.random() * 0.01 for s in steps],
            steps=steps, times_us=[start_us + s for s in steps])))
    load_started = time.perf_counter()
    await store_events(dsn, events, batch=10)
    load_s = time.perf_counter() - load_started
    url = f"{api_url}/v1/runs/{rid}/metrics/loss?max_points={max_points}"
    async with aiohttp.ClientSession(headers=_auth(token)) as http:
        first_s, status, _ = await _timed_get(http, url)
        _check(status, url)
        samples = []
        for _ in range(requests):
            elapsed, status, size = await _timed_get(http, url)
            _check(status, url)
            samples.append(elapsed)
        async with http.get(url) as response:
            buckets = len((await response.json())["buckets"])
    return {
        "points": points, "max_points": max_points, "buckets": buckets,
        "requests": requests, "load_s": round(load_s, 2), "first_ms": _ms(first_s),
        "p50_ms": _ms(_percentile(samples, 0.5)), "p99_ms": _ms(_percentile(samples, 0.99)),
        "response_bytes": size,
    }


async def bench_metrics(
    *, dsn: str, api_url: str, metrics: int = 100, points_per_metric: int = 10_000,
    requests: int = 5, token: str = "",
) -> dict[str, Any]:
    """The whole metrics dict of one run (``GET /v1/runs/{id}/metrics``)."""
    from producer import Workspace

    rid = _run_id("benchread")
    f = EventFactory(rid, experiment="benchread")
    rng = random.Random(2)  # noqa: S311 - benchmark data, not secrets
    per_event = max(1, CHUNK_POINTS * 10 // points_per_metric)
    names = [f"metric_{i:03d}" for i in range(metrics)]
    events = [f.lifecycle("Running")]
    for first in range(0, points_per_metric, 1000):
        steps = range(first, min(points_per_metric, first + 1000))
        events += [
            f.metrics(*(packed_series(name, [rng.random() for _ in steps], steps=steps)
                        for name in names[i : i + per_event]))
            for i in range(0, metrics, per_event)
        ]
    await store_events(dsn, events, batch=20)
    url = f"{api_url}/v1/runs/{rid}/metrics"
    async with aiohttp.ClientSession(headers=_auth(token)) as http:
        await _timed_get(http, url)  # warm: connections, plans
        http_samples = []
        for _ in range(requests):
            elapsed, status, size = await _timed_get(http, url)
            _check(status, url)
            http_samples.append(elapsed)
    with tempfile.TemporaryDirectory() as home:
        run = Workspace(api_url=api_url, home=home, token=token).get_run(rid)
        sdk_samples = []
        for _ in range(requests):
            started = time.perf_counter()
            got = await asyncio.to_thread(run.get_metrics)
            sdk_samples.append(time.perf_counter() - started)
        if len(got) != metrics or len(got[names[0]]) != points_per_metric:
            raise RuntimeError("get_metrics returned an incomplete answer")
    return {
        "metrics": metrics, "points_per_metric": points_per_metric, "requests": requests,
        "response_bytes": size,
        "http_p50_ms": _ms(_percentile(http_samples, 0.5)), "http_max_ms": _ms(max(http_samples)),
        "sdk_get_metrics_p50_ms": _ms(_percentile(sdk_samples, 0.5)),
        "sdk_get_metrics_max_ms": _ms(max(sdk_samples)),
    }


async def bench_run_details(
    *, dsn: str, api_url: str, rate: float = 200.0, duration_s: float = 10.0,
    runs: int = 100, token: str = "",
) -> dict[str, Any]:
    """``GET /v1/runs/{id}`` at ``rate`` requests/s, open loop."""
    ids = [_run_id("benchread") for _ in range(runs)]
    events: list[dict[str, Any]] = []
    for i, rid in enumerate(ids):
        f = EventFactory(rid, experiment="benchread")
        parent = ids[i - i % 10] if i % 10 else None
        events += [f.lifecycle("Queued", compute_target="bench", parent_run_id=parent,
                               display_name=f"run {i}", properties={"i": str(i)}),
                   f.lifecycle("Running"), f.tag("bench"), f.tag("i", str(i))]
    await store_events(dsn, events, batch=200)
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=200)
    async with aiohttp.ClientSession(connector=connector, headers=_auth(token)) as http:
        for rid in ids[:10]:  # warm up: connections, prepared statements
            await _timed_get(http, f"{api_url}/v1/runs/{rid}")

        async def one(url: str, scheduled: float) -> None:
            nonlocal errors
            try:
                async with http.get(url) as response:
                    await response.read()
                    ok = response.status == 200
            except (aiohttp.ClientError, OSError):
                ok = False
            if ok:
                latencies.append(time.perf_counter() - scheduled)
            else:
                errors += 1

        total = int(rate * duration_s)
        started = time.perf_counter()
        tasks = []
        for i in range(total):
            scheduled = started + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(f"{api_url}/v1/runs/{ids[i % runs]}",
                                                 scheduled)))
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - started
    return {
        "rate_per_s": rate, "duration_s": duration_s, "requests": total,
        "achieved_per_s": round(total / wall, 1), "errors": errors,
        "p50_ms": _ms(_percentile(latencies, 0.5)) if latencies else None,
        "p99_ms": _ms(_percentile(latencies, 0.99)) if latencies else None,
        "max_ms": _ms(max(latencies)) if latencies else None,
    }


def _summary_ms(samples: Sequence[float], target_ms: float, key: str) -> dict[str, Any]:
    """p50/p99/max of ``samples`` (seconds) and ``vs_target``: the ``key`` figure over the
    target (below 1 is within)."""
    figures = {"p50_ms": _ms(_percentile(samples, 0.5)),
               "p99_ms": _ms(_percentile(samples, 0.99)), "max_ms": _ms(max(samples))}
    return {**figures, "target_ms": target_ms,
            "vs_target": round(figures[key] / target_ms, 3)}


async def store_runs_list(dsn: str, *, runs: int = 10_000, metrics: int = 20,
                          points: int = 100) -> tuple[str, list[str]]:
    """An experiment of ``runs`` runs, each logging ``metrics`` series of ``points``
    points (one event per run); its name and the metric names."""
    experiment = f"benchlist-{uuid.uuid4().hex[:6]}"
    names = [f"m_{i:02d}" for i in range(metrics)]
    rng = random.Random(4)  # noqa: S311 - benchmark data, not secrets
    steps = range(points)
    events: list[dict[str, Any]] = []
    for i in range(runs):
        f = EventFactory(f"{experiment}_{i:05d}_{uuid.uuid4().hex[:8]}", experiment=experiment)
        scale = rng.uniform(0.5, 2.0)
        events += [
            f.lifecycle("Running", display_name=f"trial {i}"),
            f.metrics(*(packed_series(name, [scale * rng.random() / (s + 1) for s in steps],
                                      steps=steps) for name in names)),
            f.lifecycle("Completed"),
        ]
        if len(events) >= 1500:
            await store_events(dsn, events, batch=300, tile=True)
            events = []
    await store_events(dsn, events, batch=300, tile=True)
    return experiment, names


async def measure_runs_list(*, api_url: str, experiment: str, names: Sequence[str],
                            requests: int = 100, limit: int = 100,
                            token: str = "") -> dict[str, Any]:
    """``requests`` pages of the experiment's runs with ``names`` as metric columns,
    cycling through four listings, each walked by cursor (from its first page again
    when it ends)."""
    base = f"{api_url}/v1/runs"
    columns = [("metric", n) for n in names]
    first = names[0]
    listings: dict[str, list[tuple[str, str]]] = {
        "newest_first": [],
        "by_metric_desc": [("order_by", f"metric:{first}")],
        "by_metric_asc": [("order_by", f"metric:{first}"), ("order", "asc")],
        "metric_filter": [("metric_filter", f"{names[-1]}<0.005")],
    }
    cursors: dict[str, str | None] = dict.fromkeys(listings)
    samples: dict[str, list[float]] = {k: [] for k in listings}
    rows = 0
    async with aiohttp.ClientSession(headers=_auth(token)) as http:
        for i in range(requests + 1):
            kind = list(listings)[i % len(listings)]
            query = [("experiment", experiment), ("limit", str(limit)), *listings[kind],
                     *columns]
            if cursors[kind]:
                query.append(("cursor", str(cursors[kind])))
            started = time.perf_counter()
            async with http.get(base, params=query) as response:
                body = await response.read()
                status = response.status
            elapsed = time.perf_counter() - started
            _check(status, base)
            page = json.loads(body)
            for run in page["runs"]:
                if len(run.get("metrics", {})) != len(names):
                    raise RuntimeError(f"run {run['run_id']} came without its metric columns")
            cursors[kind] = page["next_cursor"]
            if i:  # the first request (connections, plans) is not counted
                samples[kind].append(elapsed)
                rows += len(page["runs"])
    every = [s for kind in samples.values() for s in kind]
    return {
        "requests": len(every), "runs_per_page": limit, "metric_columns": len(names),
        "rows_returned": rows,
        **_summary_ms(every, RUNS_LIST_TARGET_P99_MS, "p99_ms"),
        "by_listing_p50_ms": {k: _ms(_percentile(v, 0.5)) for k, v in samples.items() if v},
    }


async def bench_runs_list(*, dsn: str, api_url: str, runs: int = 10_000, metrics: int = 20,
                          points: int = 100, requests: int = 100,
                          token: str = "") -> dict[str, Any]:
    """Runs lists with ``metrics`` metric columns over ``runs`` runs (module doc, 4)."""
    started = time.perf_counter()
    experiment, names = await store_runs_list(dsn, runs=runs, metrics=metrics, points=points)
    load_s = time.perf_counter() - started
    await settle(dsn)
    measured = await measure_runs_list(api_url=api_url, experiment=experiment, names=names,
                                       requests=requests, token=token)
    return {"runs": runs, "metrics": metrics, "points_per_series": points,
            "load_s": round(load_s, 1), **measured}


def _loss_events(f: EventFactory, points: int, *, seed: int) -> list[dict[str, Any]]:
    """``loss`` of ``points`` points in the SDK's chunks (``CHUNK_POINTS`` an event)."""
    rng = random.Random(seed)  # noqa: S311 - benchmark data, not secrets
    start_us = time.time_ns() // 1000 - points
    return [
        f.metrics(packed_series(
            "loss", [math.exp(-3 * s / points) + rng.random() * 0.02 for s in steps],
            steps=steps, times_us=[start_us + s for s in steps]))
        for first in range(0, points, CHUNK_POINTS)
        for steps in [range(first, min(points, first + CHUNK_POINTS))]
    ]


async def store_many_series(dsn: str, *, runs: int = 100,
                            points: int = 100_000) -> list[str]:
    """``runs`` runs, each with a ``loss`` of ``points`` points; their ids."""
    experiment = f"benchseries-{uuid.uuid4().hex[:6]}"
    ids = []
    for i in range(runs):
        f = EventFactory(f"{experiment}_{i:03d}_{uuid.uuid4().hex[:8]}", experiment=experiment)
        ids.append(f.run_id)
        await store_events(dsn, [f.lifecycle("Running"), *_loss_events(f, points, seed=i),
                                 f.lifecycle("Completed")], batch=10, tile=True)
    return ids


async def measure_many_series(*, api_url: str, run_ids: Sequence[str],
                              max_points: int = 1000, requests: int = 20,
                              token: str = "") -> dict[str, Any]:
    """The first and later ``GET /v1/series`` of all ``run_ids`` (format=columns)."""
    url = f"{api_url}/v1/series"
    query = [("name", "loss"), ("max_points", str(max_points)), ("format", "columns"),
             *(("run_id", r) for r in run_ids)]
    samples = []
    async with aiohttp.ClientSession(headers=_auth(token)) as http:
        for _ in range(requests + 1):
            started = time.perf_counter()
            async with http.get(url, params=query) as response:
                body = await response.read()
                status = response.status
            samples.append(time.perf_counter() - started)
            _check(status, url)
    document = json.loads(body)
    buckets = [len(s["columns"]["count"]) for s in document["series"]]
    if len(buckets) != len(run_ids) or not all(0 < b <= max_points for b in buckets):
        raise RuntimeError(f"/v1/series answered {len(buckets)} series of {buckets[:3]}… buckets")
    return {"max_points": max_points, "buckets_per_run": max(buckets),
            "response_bytes": len(body), "first_ms": _ms(samples[0]),
            "first_vs_target": round(_ms(samples[0]) / MANY_SERIES_TARGET_MS, 3),
            "requests": requests,
            **_summary_ms(samples[1:], MANY_SERIES_TARGET_MS, "p50_ms")}


async def bench_many_series(*, dsn: str, api_url: str, runs: int = 100, points: int = 100_000,
                            max_points: int = 1000, requests: int = 20,
                            token: str = "") -> dict[str, Any]:
    """One metric of ``runs`` runs in one request (module doc, 5)."""
    started = time.perf_counter()
    ids = await store_many_series(dsn, runs=runs, points=points)
    load_s = time.perf_counter() - started
    await settle(dsn)
    measured = await measure_many_series(api_url=api_url, run_ids=ids, max_points=max_points,
                                         requests=requests, token=token)
    return {"runs": runs, "points_per_run": points, "load_s": round(load_s, 1), **measured}


async def store_first_view(dsn: str, points: int) -> str:
    """A run whose ``loss`` has ``points`` points, stored 500,000 points a transaction
    with the worker's tiler run after each commit."""
    f = EventFactory(_run_id("benchfirst"), experiment="benchfirst")
    await store_events(dsn, [f.lifecycle("Running")], batch=1)
    events = _loss_events(f, points, seed=7)
    for i in range(0, len(events), 50):
        await store_events(dsn, events[i : i + 50], batch=50, tile=True)
    await store_events(dsn, [f.lifecycle("Completed")], batch=1)
    return f.run_id


async def measure_first_view(*, api_url: str, run_id: str, max_points: int = STUDIO_MAX_POINTS,
                             requests: int = 20, target_ms: float | None = None,
                             token: str = "") -> dict[str, Any]:
    """The first request for the series (``api_url`` must not have read it before),
    then ``requests`` more."""
    url = f"{api_url}/v1/runs/{run_id}/metrics/loss?max_points={max_points}"  # as the studio
    samples = []
    async with aiohttp.ClientSession(headers=_auth(token)) as http:
        for _ in range(requests + 1):
            elapsed, status, size = await _timed_get(http, url)
            _check(status, url)
            samples.append(elapsed)
    result: dict[str, Any] = {"max_points": max_points, "response_bytes": size,
                              "first_ms": _ms(samples[0]), "requests": requests,
                              "p50_ms": _ms(_percentile(samples[1:], 0.5)),
                              "p99_ms": _ms(_percentile(samples[1:], 0.99))}
    if target_ms is not None:
        result |= {"target_ms": target_ms,
                   "first_vs_target": round(result["first_ms"] / target_ms, 3)}
    return result


async def bench_first_view(*, dsn: str, home: Path, sizes: Sequence[int] = (1_000_000,
                                                                       10_000_000),
                           max_points: int = STUDIO_MAX_POINTS, requests: int = 20,
                           ) -> dict[str, Any]:
    """Each size stored as the worker stores it, then read by an API process started after
    the stores, its connections opened and used on another run's series first (so the
    first request's time is the series', not a new connection's): module doc, 6."""
    stored = []
    for points in sizes:
        started = time.perf_counter()
        stored.append((points, await store_first_view(dsn, points),
                       round(time.perf_counter() - started, 1)))
    warm = await store_first_view(dsn, 2 * CHUNK_POINTS)
    out: dict[str, Any] = {}
    async with api_process(dsn, home=home) as url, aiohttp.ClientSession() as http:
        warm_url = f"{url}/v1/runs/{warm}/metrics/loss?max_points={max_points}"
        for _ in range(3):  # every pooled connection opened and used
            await asyncio.gather(*(_timed_get(http, warm_url) for _ in range(8)))
        for points, rid, load_s in stored:
            out[f"{points}_points"] = {
                "points": points, "load_s": load_s,
                **await measure_first_view(api_url=url, run_id=rid, max_points=max_points,
                                           requests=requests,
                                           target_ms=FIRST_VIEW_TARGET_MS.get(points))}
    return out


@contextlib.asynccontextmanager
async def api_process(dsn: str, *, home: Path, port: int | None = None,
                      timeout_s: float = 30.0) -> AsyncIterator[str]:
    """``runstream api`` on ``dsn`` as a child process; yields its URL, stops it after."""
    port = port or _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "RUNSTREAM_DB": dsn, "RUNSTREAM_API": url, "RUNSTREAM_HOME": str(home)}
    env.pop("RUNSTREAM_TOKEN", None)
    with (home / "bench-api.log").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ingest.cli", "api", env=env,
            stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT)
        try:
            await _wait_ready(f"{url}/readyz", proc, timeout_s)
            yield url
        finally:
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 15)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()


async def run_read_bench(*, dsn: str, home: Path, api_url: str | None = None,
                         quick: bool = False) -> dict[str, Any]:
    """All six, against ``api_url`` or an ``api_process`` of our own on ``dsn`` (the first
    views against API processes of their own). ``quick``: a tenth of the sizes (the runs
    list and the many series a hundredth of the points; 100 k and 1 M-point first views),
    for smoke runs, not figures."""
    async with contextlib.AsyncExitStack() as stack:
        url = api_url if api_url else await stack.enter_async_context(api_process(dsn, home=home))
        scale = 10 if quick else 1
        result = {
            "downsample": await bench_downsample(dsn=dsn, api_url=url,
                                                 points=1_000_000 // scale),
            "metrics": await bench_metrics(dsn=dsn, api_url=url,
                                           points_per_metric=10_000 // scale),
            "run_details": await bench_run_details(dsn=dsn, api_url=url,
                                                   duration_s=10.0 / scale),
            "runs_list": await bench_runs_list(dsn=dsn, api_url=url, runs=10_000 // scale,
                                               requests=100 // scale if quick else 100),
            "many_series": await bench_many_series(dsn=dsn, api_url=url, runs=100 // scale,
                                                   points=100_000 // scale,
                                                   requests=20 // scale),
        }
    result["first_view"] = await bench_first_view(
        dsn=dsn, home=home, sizes=(100_000, 1_000_000) if quick else (1_000_000, 10_000_000),
        requests=20 // scale)
    return result


async def _wait_ready(url: str, proc: asyncio.subprocess.Process, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise RuntimeError(f"runstream api exited with {proc.returncode}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(url) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"runstream api not ready after {timeout_s:.0f} s")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _check(status: int, url: str) -> None:
    if status != 200:
        raise RuntimeError(f"GET {url} answered {status}")
