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
"""

from __future__ import annotations

import asyncio
import contextlib
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

from ingest.bench.events import EventFactory, packed_series
from ingest.worker.decode import DeadLetter, decode_event
from ingest.worker.store import Batch, Store
from schemas.codec import Codec

__all__ = [
    "api_process",
    "bench_downsample",
    "bench_metrics",
    "bench_run_details",
    "run_read_bench",
    "store_events",
]

CHUNK_POINTS: Final = 10_000
_CODEC: Final = Codec(max_message_bytes=1 << 22)


async def _no_dead_letters(dead: Sequence[DeadLetter]) -> None:
    raise RuntimeError(f"bench events were dead-lettered: {dead[:1]}")


async def store_events(dsn: str, events: Sequence[dict[str, Any]], *, batch: int = 50,
                       tile: bool = False) -> None:
    """Commit ``events`` (``EventFactory`` dicts) through the real write path: encoded and
    decoded by the codec, ``batch`` per ``Store.write_batch`` transaction. ``tile``: keep
    the series' tiles current after each commit, as the worker does (``SeriesTiler``)."""
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
    """All three, against ``api_url`` or an ``api_process`` of our own on ``dsn``."""
    async with contextlib.AsyncExitStack() as stack:
        url = api_url if api_url else await stack.enter_async_context(api_process(dsn, home=home))
        scale = 10 if quick else 1
        return {
            "downsample": await bench_downsample(dsn=dsn, api_url=url,
                                                 points=1_000_000 // scale),
            "metrics": await bench_metrics(dsn=dsn, api_url=url,
                                           points_per_metric=10_000 // scale),
            "run_details": await bench_run_details(dsn=dsn, api_url=url,
                                                   duration_s=10.0 / scale),
        }


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
