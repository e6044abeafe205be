"""Metrics through the real server: the SDK-shaped dict and downsampled series, checked
against the points as logged, on both storage backends (plain partitioned PostgreSQL and
TimescaleDB)."""

from __future__ import annotations

import json
import math
import random
from bisect import bisect_left, bisect_right
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.bench.events import EventFactory, packed_series
from ingest.bench.read import store_events
from ingest.db.reads import NO_CHUNKS, ReadStore, SeriesStats
from ingest.db.series import plan_buckets
from tests.integration.api_reads import (
    ReadApi,
    World,
    build_world,
    error_message,
    get_json,
    read_api,
)
from tests.integration.helpers import NewDb, fetch, run_id

NAN, INF = float("nan"), float("inf")
NON_FINITE = {"NaN": NAN, "Infinity": INF, "-Infinity": -INF}


@pytest.fixture(params=["partitioned", "timescaledb"])
async def dsn(request: pytest.FixtureRequest, new_db: NewDb) -> str:
    return await new_db(request.param)


@pytest.fixture
async def api(dsn: str, tmp_path: Path) -> AsyncIterator[ReadApi]:
    async with read_api(dsn, tmp_path / "blobs") as a:
        yield a


def decoded(value: Any) -> Any:
    """What the SDK makes of a value: the non-finite strings back to floats."""
    if isinstance(value, str):
        return NON_FINITE.get(value, value)
    if isinstance(value, list):
        return [decoded(v) for v in value]
    if isinstance(value, dict):
        return {k: decoded(v) for k, v in value.items()}
    return value


def same(a: Any, b: Any) -> bool:
    """Equal with types (1 is not 1.0 nor True) and NaN equal to NaN."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


async def metrics(http: aiohttp.ClientSession, api: ReadApi, rid: str,
                  names: list[str] | None = None) -> dict[str, Any]:
    query = "" if names is None else "?" + urlencode([("name", n) for n in names])
    body = await get_json(http, f"{api.url}/v1/runs/{rid}/metrics{query}")
    assert set(body) == {"metrics"}
    out: dict[str, Any] = decoded(body["metrics"])
    return out


async def series(http: aiohttp.ClientSession, api: ReadApi, rid: str, name: str,
                 **params: int | str) -> dict[str, Any]:
    query = urlencode(params)
    body: dict[str, Any] = await get_json(
        http, f"{api.url}/v1/runs/{rid}/metrics/{quote(name, safe='')}?{query}")
    return body


# -- the metrics dict ----------------------------------------------------------------------------


async def test_metrics_in_the_sdk_shape(
    http: aiohttp.ClientSession, api: ReadApi, dsn: str
) -> None:
    world: World = await build_world(dsn, api.blobs)
    got = await metrics(http, api, world.finished)
    assert same(got, {
        "alpha": 0.5,
        "loss": [0.9, 0.5, 0.25, 0.125],
        "accuracies": [0.6, 0.7, 0.87],
        "Y over X": {"x": [1, 2], "y": [0.4, 0.8]},
        "Sine": {"angle": [0.0, 1.5], "sine": [0.0, 0.997]},
    })
    assert same(await metrics(http, api, world.finished, ["loss", "Sine", "nope"]),
                {"loss": [0.9, 0.5, 0.25, 0.125],
                 "Sine": {"angle": [0.0, 1.5], "sine": [0.0, 0.997]}})
    assert await metrics(http, api, world.queued) == {}
    assert "no run" in await error_message(http, f"{api.url}/v1/runs/nope/metrics", 404)


async def test_values_keep_their_types_and_non_finite_floats(
    http: aiohttp.ClientSession, api: ReadApi, dsn: str
) -> None:
    rid = run_id()
    f = EventFactory(rid)
    floats = [1.0, -0.0, 3.0, NAN, INF, -INF, 1e300, 5e-324, 123456789.0, 0.1]
    mixed: list[Any] = [1, True, "warm start", 2.5, NAN, 2**62, False, ""]
    await store_events(dsn, [
        f.metrics(packed_series("floats", floats), packed_series("mixed", mixed),
                  packed_series("one int", [7]), packed_series("one text", ["hi"]),
                  packed_series("one nan", [NAN])),
        f.list_value("list", [1, 2.0, "three", None is None, INF]),
        f.table("table", {"a": [1, 2], "b": ["x", NAN]}),
    ])
    async with http.get(f"{api.url}/v1/runs/{rid}/metrics") as r:
        raw = await r.text()
    assert "NaN" in raw
    json.loads(raw, parse_constant=lambda c: pytest.fail(f"bare {c} in the JSON"))
    got = decoded(json.loads(raw)["metrics"])
    assert same(got["floats"], floats)
    assert same(got["mixed"], mixed)
    assert same(got["one int"], 7)
    assert same(got["one text"], "hi")
    assert same(got["one nan"], NAN)
    assert same(got["list"], [1, 2.0, "three", True, INF])
    assert same(got["table"], {"a": [1, 2], "b": ["x", NAN]})


async def test_series_order_is_step_rank_time_across_ranks_and_late_steps(
    http: aiohttp.ClientSession, api: ReadApi, dsn: str
) -> None:
    rid = run_id()
    ranks = [EventFactory(rid, rank=r) for r in range(3)]
    events = []
    for r, f in enumerate(ranks):
        # each rank logs steps 0..49 in two events; rank 2 logs its first half last
        first = f.metrics(packed_series("loss", [r * 1000 + s for s in range(25)],
                                        steps=range(25)))
        second = f.metrics(packed_series("loss", [r * 1000 + s for s in range(25, 50)],
                                         steps=range(25, 50)))
        events += [second, first] if r == 2 else [first, second]
    g = EventFactory(rid)
    # explicit steps logged out of order within one event
    events.append(g.metrics(packed_series("shuffled", [3.0, 1.0, 2.0], steps=[30, 10, 20])))
    # gaps (every 100 steps), two events
    events += [g.metrics(packed_series("gapped", [1.5, 2.5], steps=[0, 100])),
               g.metrics(packed_series("gapped", [3.5], steps=[200]))]
    await store_events(dsn, events)
    got = await metrics(http, api, rid)
    assert got["loss"] == [r * 1000 + s for s in range(50) for r in range(3)]
    assert got["shuffled"] == [1.0, 2.0, 3.0]
    assert got["gapped"] == [1.5, 2.5, 3.5]


async def test_many_series(http: aiohttp.ClientSession, api: ReadApi, dsn: str) -> None:
    rid = run_id()
    f = EventFactory(rid)
    expected = {f"m{i:02d}": [random.random() for _ in range(300)] for i in range(40)}
    await store_events(dsn, [
        f.metrics(*(packed_series(name, values[k:k + 100], steps=range(k, k + 100))
                    for name, values in expected.items()))
        for k in (0, 100, 200)
    ])
    assert await metrics(http, api, rid) == expected


# -- one series ----------------------------------------------------------------------------------


def check_buckets(answer: dict[str, Any], points: list[tuple[int, int, int, Any]],
                  max_points: int) -> None:
    """Each bucket against the logged (step, rank, time_us, value) points in its step range."""
    buckets = answer["buckets"]
    assert answer["downsampled"] is True
    assert "points" not in answer
    assert 1 <= len(buckets) <= max_points
    assert answer["total_points"] == sum(b["count"] for b in buckets) == len(points)
    ordered = sorted(points, key=lambda p: p[0])
    steps = [p[0] for p in ordered]
    previous = None
    for b in buckets:
        assert b["step_min"] <= b["step_max"]
        if previous is not None:
            assert previous < b["step_min"]
        previous = b["step_max"]
        inside = ordered[bisect_left(steps, b["step_min"]):bisect_right(steps, b["step_max"])]
        assert len(inside) == b["count"]
        finite = [float(v) for *_, v in inside
                  if not isinstance(v, str) and math.isfinite(v)]
        assert same(decoded(b["min"]), min(finite) if finite else None)
        assert same(decoded(b["max"]), max(finite) if finite else None)
        last = max(inside, key=lambda p: (p[0], p[2], p[1]))
        assert same(decoded(b["last"]), last[3])
        assert b["first_time"] <= b["last_time"]


async def test_small_series_are_exact_points(
    http: aiohttp.ClientSession, api: ReadApi, dsn: str
) -> None:
    rid = run_id()
    f0, f1 = EventFactory(rid, rank=0), EventFactory(rid, rank=1)
    await store_events(dsn, [
        f0.metrics(packed_series("x", [1.0, NAN, "text", 4], steps=[0, 1, 2, 3])),
        f1.metrics(packed_series("x", [10.0, INF], steps=[0, 1])),
    ])
    answer = await series(http, api, rid, "x")
    assert answer["downsampled"] is False
    assert "buckets" not in answer
    assert answer["total_points"] == 6
    assert [(p["step"], p["rank"]) for p in answer["points"]] == [
        (0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (3, 0)]
    assert same([decoded(p["value"]) for p in answer["points"]],
                [1.0, 10.0, NAN, INF, "text", 4])
    assert answer["points"][0]["time"].endswith("+00:00")
    assert (await series(http, api, rid, "x", max_points=6))["downsampled"] is False
    only_rank1 = await series(http, api, rid, "x", rank=1)
    assert [p["value"] for p in only_rank1["points"]] == [10.0, "Infinity"]
    window = await series(http, api, rid, "x", step_min=1, step_max=2)
    assert [p["step"] for p in window["points"]] == [1, 1, 2]


async def test_downsampled_buckets_keep_spikes_and_last_values(
    http: aiohttp.ClientSession, api: ReadApi, dsn: str
) -> None:
    rid = run_id()
    f = EventFactory(rid)
    points: list[tuple[int, int, int, Any]] = []
    events = []
    for start in range(0, 5000, 500):
        values: list[Any] = [math.sin(s / 100) for s in range(start, start + 500)]
        if start == 2500:
            values[123] = 1e9  # a spike
            values[7] = NAN
            values[8] = -INF
        times = [1_700_000_000_000_000 + s for s in range(start, start + 500)]
        events.append(f.metrics(packed_series("wave", values, steps=range(start, start + 500),
                                              times_us=times)))
        points += [(s, 0, t, v) for s, t, v in zip(range(start, start + 500), times, values,
                                                    strict=True)]
    await store_events(dsn, events)
    for max_points in (1, 7, 100, 999):
        answer = await series(http, api, rid, "wave", max_points=max_points)
        check_buckets(answer, points, max_points)
        assert max(b["max"] for b in answer["buckets"]) == 1e9
    window = await series(http, api, rid, "wave", max_points=10, step_min=2600, step_max=3999)
    check_buckets(window, [p for p in points if 2600 <= p[0] <= 3999], 10)
    assert (await series(http, api, rid, "wave", max_points=5000))["downsampled"] is False


async def test_the_metric_index_summarises_without_the_points(
    http: aiohttp.ClientSession, api: ReadApi, dsn: str
) -> None:
    """``/metric-index``: each name's kind and count, a series' last/min/max — from its
    points when small, from its tiles when large (the same figures) — a table's columns."""
    world: World = await build_world(dsn, api.blobs)
    index = await get_json(http, f"{api.url}/v1/runs/{world.finished}/metric-index")
    assert index == {"metrics": [
        {"name": "Sine", "kind": "table", "count": 2, "columns": ["angle", "sine"]},
        {"name": "Y over X", "kind": "table", "count": 2, "columns": ["x", "y"]},
        {"name": "accuracies", "kind": "list", "count": 3},
        {"name": "alpha", "kind": "value", "count": 1, "last": 0.5, "min": 0.5, "max": 0.5},
        {"name": "loss", "kind": "series", "count": 4, "last": 0.125, "min": 0.125,
         "max": 0.9},
    ]}
    rid = run_id()
    f = EventFactory(rid)
    values: list[Any] = [math.sin(s / 100) for s in range(5000)]
    values[1234], values[4321], values[7] = 1e6, -1e6, NAN
    await store_events(dsn, [
        f.metrics(packed_series("wave", values[i:i + 500], steps=range(i, i + 500)))
        for i in range(0, 5000, 500)])
    (wave,) = (await get_json(http, f"{api.url}/v1/runs/{rid}/metric-index"))["metrics"]
    assert wave == {"name": "wave", "kind": "series", "count": 5000,
                    "last": values[-1], "min": -1e6, "max": 1e6}
    assert "no run" in await error_message(http, f"{api.url}/v1/runs/nope/metric-index", 404)


def micros(iso: str) -> int:
    at = datetime.fromisoformat(iso)
    return (at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def as_columns(doc: dict[str, Any]) -> dict[str, Any]:
    """A series answer of format=objects as format=columns would give it."""
    if "missing" in doc:
        return doc
    head = {k: v for k, v in doc.items() if k not in ("points", "buckets")}
    if "points" in doc:
        p = doc["points"]
        return {**head, "columns": {"step": [x["step"] for x in p],
                                    "value": [x["value"] for x in p],
                                    "rank": [x["rank"] for x in p],
                                    "time_us": [micros(x["time"]) for x in p]}}
    b = doc["buckets"]
    return {**head, "columns": {
        **{k: [x[k] for x in b] for k in ("step_min", "step_max", "count", "min", "max", "last")},
        "first_time_us": [micros(x["first_time"]) for x in b],
        "last_time_us": [micros(x["last_time"]) for x in b]}}


async def test_one_series_of_many_runs_in_one_request(
    http: aiohttp.ClientSession, api: ReadApi, dsn: str
) -> None:
    """``GET /v1/series``: each run's series exactly as its own route answers it (points
    or buckets, step range), in the order asked; a missing run or series says which."""
    ids = [run_id() for _ in range(3)]
    sizes = [10, 5000, 0]
    events = []
    for rid, size in zip(ids, sizes, strict=True):
        f = EventFactory(rid)
        events.append(f.lifecycle("Running"))
        events += [f.metrics(packed_series("loss", [i / (s + 1) for i in range(s, s + 500)],
                                           steps=range(s, s + 500)))
                   for s in range(0, size, 500)] if size > 10 else (
            [f.metrics(packed_series("loss", [0.5] * size, steps=range(size)))] if size else
            [f.metrics(packed_series("other", [1.0], steps=[0]))])
    await store_events(dsn, events)
    asked = [ids[1], ids[0], ids[2], "exp_1_nope", ids[0]]
    for params in ({"max_points": 100}, {"max_points": 100, "step_min": 1000, "step_max": 1999},
                   {}):
        query = urlencode([("name", "loss"), *(("run_id", r) for r in asked),
                           *params.items()])
        many = await get_json(http, f"{api.url}/v1/series?{query}")
        assert many["name"] == "loss"
        assert [s["run_id"] for s in many["series"]] == asked
        for rid, got in zip(asked, many["series"], strict=True):
            if rid in ids[:2]:
                assert got == await series(http, api, rid, "loss", **params)
        assert many["series"][2] == {"run_id": ids[2], "name": "loss",
                                     "missing": f"run {ids[2]!r} has no metric series 'loss'"}
        assert many["series"][3]["missing"] == "no run 'exp_1_nope'"
        columns = await get_json(http, f"{api.url}/v1/series?{query}&format=columns")
        for objects, cols in zip(many["series"], columns["series"], strict=True):
            assert as_columns(objects) == cols
    assert many["series"][0]["downsampled"] is True  # 5000 points, max_points 1000
    assert many["series"][1]["points"] == many["series"][4]["points"]  # asked twice
    for bad, why in (("?run_id=x", "'name'"), ("?name=loss", "'run_id'"),
                     ("?name=loss&" + "&".join(["run_id=x"] * 201), "1 to 200"),
                     ("?name=loss&run_id=x&step_min=5&step_max=1", "step_min"),
                     ("?name=loss&run_id=x&format=csv", "'format'")):
        assert why in await error_message(http, f"{api.url}/v1/series{bad}", 400)


async def test_series_stats_of_many_runs_at_once_count_what_each_run_stored(dsn: str) -> None:
    """The stats ``/v1/series`` reads for every run in one statement (and the single-series
    route for one run, or one rank): chunks, points and step range in the range asked,
    untiled points and ranks — for runs untiled, tiled, tiled and then grown, of two
    ranks, and without the series, over whole and partial step ranges — are what was
    stored, counted here from the chunks the test wrote."""
    ids = [run_id() for _ in range(5)]
    chunks: dict[str, list[tuple[int, range, bool]]] = {r: [] for r in ids}  # rank, steps, tiled
    events = []
    for i, rid in enumerate(ids):
        f, rank1 = EventFactory(rid), EventFactory(rid, rank=1)
        events.append(f.lifecycle("Running"))
        if i == 4:
            events.append(f.metrics(packed_series("other", [1.0], steps=[0])))
            continue
        for s0 in range(0, 3000 + 1000 * i, 1000):
            events.append(f.metrics(packed_series("loss", [s / 7 for s in range(s0, s0 + 1000)],
                                                  steps=range(s0, s0 + 1000))))
            chunks[rid].append((0, range(s0, s0 + 1000), i > 0))
        if i == 3:
            events.append(rank1.metrics(packed_series("loss", [0.5] * 300, steps=range(300))))
            chunks[rid].append((1, range(300), True))
    await store_events(dsn, events)
    for rid in ids[1:4]:
        await fetch(dsn, "SELECT runstream_data.tile_metric_series($1, 'loss')", rid)
    grown = EventFactory(ids[2])
    await store_events(dsn, [grown.metrics(packed_series("loss", [2.0] * 500,
                                                         steps=range(4000, 4500)))])
    chunks[ids[2]].append((0, range(4000, 4500), False))

    def expected(rid: str, lo: int, hi: int, rank: int | None = None) -> SeriesStats | None:
        inside = [(r, steps, tiled) for r, steps, tiled in chunks[rid]
                  if steps[0] <= hi and steps[-1] >= lo and rank in (None, r)]
        if not inside:
            return None
        return SeriesStats(
            chunks=len(inside), points=sum(lo <= s <= hi for _, st, _ in inside for s in st),
            step_min=min(st[0] for _, st, _ in inside),
            step_max=max(st[-1] for _, st, _ in inside),
            untiled_points=sum(len(st) for _, st, tiled in inside if not tiled),
            min_level=6 if any(tiled for _, _, tiled in chunks[rid]) else None,
            ranks=len({r for r, _, _ in inside}), stale_tiles=False)

    async with ReadStore(dsn=dsn) as reads:
        for lo, hi in ((-(2**63), 2**63 - 1), (500, 2499), (4100, 10**6), (10**6, 2 * 10**6)):
            many = await reads.many_series_stats([*ids, "exp_1_nope"], "loss", lo, hi)
            assert many == {r: e for r in ids if (e := expected(r, lo, hi)) is not None}
            for rid in ids:
                for rank in (None, 0, 1):
                    own = await reads.series_stats(rid, "loss", rank, lo, hi)
                    assert own == (expected(rid, lo, hi, rank) or NO_CHUNKS), (rid, lo, hi)


async def test_bucket_columns_written_by_postgresql_read_as_the_objects(
    http: aiohttp.ClientSession, api: ReadApi, dsn: str
) -> None:
    """Downsampled float series in format=columns come as JSON arrays PostgreSQL writes:
    the same values as the objects (integral floats stay floats, NaN and infinities the
    strings), whole series (end tiles read whole) and step ranges, tiled or not."""
    rid = run_id()
    f = EventFactory(rid)
    values: list[Any] = [float(s % 7) for s in range(6000)]
    values[10:16] = [NAN, INF, -INF, 1e20, 1e-7, -0.0]
    values[-1] = NAN  # the last bucket's last value
    events = [f.metrics(packed_series("x", values[i:i + 1000], steps=range(i, i + 1000)))
              for i in range(0, 6000, 1000)]
    await store_events(dsn, events)
    for tile in (False, True):
        if tile:  # as the worker's tiler does for bigger series
            await fetch(dsn, "SELECT runstream_data.tile_metric_series($1, 'x')", rid)
        for params in ({"max_points": 100}, {"max_points": 1000},
                       {"max_points": 50, "step_min": 100, "step_max": 4321}):
            objects = await series(http, api, rid, "x", **params)
            assert objects["downsampled"] is True
            columns = await series(http, api, rid, "x", **params, format="columns")
            assert as_columns(objects) == columns, params
            assert columns["columns"]["last"][-1] == ("NaN" if "step_max" not in params
                                                      else float(4321 % 7))
            assert all(isinstance(v, float) for v in columns["columns"]["min"])
    whole = await series(http, api, rid, "x", max_points=100)
    assert sum(b["count"] for b in whole["buckets"]) == 6000
    assert (whole["buckets"][0]["step_min"], whole["buckets"][-1]["step_max"]) == (0, 5999)


async def test_tiles_give_the_same_buckets_as_the_points(
    http: aiohttp.ClientSession, api: ReadApi, dsn: str
) -> None:
    """Enough points for the tile path (summaries filled on first use), several ranks,
    typed values, late and out-of-order data, then more chunks after the first read."""
    rid = run_id()
    rng = random.Random(7)
    points: list[tuple[int, int, int, Any]] = []
    events = []
    producers = [EventFactory(rid, rank=r) for r in range(2)]

    def add(f: EventFactory, steps: list[int], values: list[Any]) -> None:
        times = [1_700_000_000_000_000 + 10 * s + f.rank for s in steps]
        events.append(f.metrics(packed_series("loss", values, steps=steps, times_us=times)))
        points.extend((s, f.rank, t, v) for s, t, v in zip(steps, times, values, strict=True))

    for start in range(0, 30_000, 1000):
        for f in producers:
            steps = list(range(start, start + 1000))
            values: list[Any] = [rng.gauss(0, 1) for _ in steps]
            if start == 12_000 and f.rank == 1:
                values[500] = 50.0
                values[501] = "checkpoint"
                values[502] = 3
            if start == 20_000 and f.rank == 0:
                rng.shuffle(steps)
            add(f, steps, values)
    await store_events(dsn, events)
    for max_points in (1000, 37):
        check_buckets(await series(http, api, rid, "loss", max_points=max_points), points,
                      max_points)
        # format=columns: typed last values, shaped from the rows, not PostgreSQL's arrays
        assert as_columns(await series(http, api, rid, "loss", max_points=max_points)) == (
            await series(http, api, rid, "loss", max_points=max_points, format="columns"))
    tiled = await fetch(dsn, "SELECT count(*) AS n FROM runstream_data.metric_tiled_chunks")
    assert tiled[0]["n"] == 60
    rank1 = [p for p in points if p[1] == 1]
    check_buckets(await series(http, api, rid, "loss", max_points=200, rank=1), rank1, 200)
    inner = [p for p in points if 1234 <= p[0] <= 25_678]
    check_buckets(await series(http, api, rid, "loss", max_points=100, step_min=1234,
                               step_max=25_678), inner, 100)

    # New chunks, one late (steps inside the tiled range) and one beyond it: read raw
    # until summarised, then from the tiles; the answer is the same either way.
    events.clear()
    add(producers[0], [15_000, 15_001], [-99.0, 99.0])
    add(producers[1], list(range(30_000, 32_000)), [0.5] * 2000)
    await store_events(dsn, events)
    check_buckets(await series(http, api, rid, "loss", max_points=1000), points, 1000)
    events.clear()
    add(producers[1], list(range(32_000, 45_000)), [0.25] * 13_000)
    await store_events(dsn, events, batch=1)
    check_buckets(await series(http, api, rid, "loss", max_points=500), points, 500)
    tiled = await fetch(dsn, "SELECT count(*) AS n FROM runstream_data.metric_tiled_chunks")
    assert tiled[0]["n"] == 63


async def test_series_404_and_400(http: aiohttp.ClientSession, api: ReadApi, dsn: str) -> None:
    rid = run_id()
    await store_events(dsn, [EventFactory(rid).metrics(packed_series("x", [1.0]))])
    base = f"{api.url}/v1/runs/{rid}/metrics"
    assert "no run" in await error_message(http, f"{api.url}/v1/runs/nope/metrics/x", 404)
    assert "no metric series 'y'" in await error_message(http, f"{base}/y", 404)
    empty = await get_json(http, f"{base}/x?step_min=5")
    assert (empty["total_points"], empty["points"]) == (0, [])
    for query, named in (("max_points=0", "max_points"), ("max_points=100001", "max_points"),
                         ("max_points=x", "max_points"), ("rank=-1", "rank"),
                         ("step_min=2&step_max=1", "step_min"), ("step_max=1e3", "step_max"),
                         ("step_min=99999999999999999999", "step_min")):
        assert repr(named) in await error_message(http, f"{base}/x?{query}", 400), query


async def test_metric_names_with_slashes_and_spaces(
    http: aiohttp.ClientSession, api: ReadApi, dsn: str
) -> None:
    rid = run_id()
    await store_events(dsn, [EventFactory(rid).metrics(
        packed_series("train/loss", [1.0, 2.0]), packed_series("Y over X ü", [3.0]))])
    assert (await series(http, api, rid, "train/loss"))["total_points"] == 2
    async with http.get(f"{api.url}/v1/runs/{rid}/metrics/train/loss") as r:
        assert (await r.json())["name"] == "train/loss"
    assert (await series(http, api, rid, "Y over X ü"))["points"][0]["value"] == 3.0


async def test_tiles_are_rebuilt_when_old_chunks_are_dropped(
    http: aiohttp.ClientSession, api: ReadApi, dsn: str
) -> None:
    rid = run_id()
    points: list[tuple[int, int, int, Any]] = []
    events = []
    day_us = 86_400 * 1_000_000
    old, new = 1_700_000_000_000_000, 1_700_000_000_000_000 + 30 * day_us
    for rank, start in ((0, old), (1, new)):  # both ranks log steps 0..29,999
        f = EventFactory(rid, rank=rank)
        for k in range(30):
            steps = list(range(k * 1000, k * 1000 + 1000))
            times = [start + s for s in steps]
            values = [float(rank * 100 + k)] * 1000
            events.append(f.metrics(packed_series("loss", values, steps=steps, times_us=times)))
            points += [(s, rank, t, v) for s, t, v in zip(steps, times, values, strict=True)]
    await store_events(dsn, events)
    check_buckets(await series(http, api, rid, "loss", max_points=100), points, 100)
    # What retention does: the oldest chunks go (rank 0's, on the same steps as rank 1's).
    await fetch(dsn, "DELETE FROM runstream_data.metric_chunks WHERE time_min < "
                     "runstream_data.micros_to_timestamptz($1)", new)
    kept = [p for p in points if p[1] == 1]
    check_buckets(await series(http, api, rid, "loss", max_points=100), kept, 100)


@settings(max_examples=300, deadline=None)
@given(lo=st.integers(-(2**40), 2**40), span=st.integers(1, 2**30),
       max_points=st.integers(1, 5000), pad_lo=st.integers(0, 2**12),
       pad_hi=st.integers(0, 2**12))
def test_end_tiles_are_read_whole_only_when_nothing_else_can_be_in_them(
    lo: int, span: int, max_points: int, pad_lo: int, pad_hi: int
) -> None:
    """plan_buckets with outer bounds (no point in [outer_lo, lo) nor (hi, outer_hi]): the
    same buckets; the end tiles are taken whole only if they stay within the outer bounds,
    and still fall in the first and last bucket."""
    hi = lo + span - 1
    outer_lo, outer_hi = lo - pad_lo, hi + pad_hi
    inner = plan_buckets(lo, hi, max_points, points=span)
    plan = plan_buckets(lo, hi, max_points, points=span, outer_lo=outer_lo, outer_hi=outer_hi)
    if inner.level is None or plan.level is None:
        return
    assert (plan.base, plan.width, plan.level, plan.buckets) == (
        inner.base, inner.width, inner.level, inner.buckets)
    assert outer_lo <= plan.full_lo <= inner.full_lo
    assert inner.full_hi <= plan.full_hi <= outer_hi
    assert plan.full_lo == plan.tile_first << plan.level
    assert plan.full_hi == ((plan.tile_last + 1) << plan.level) - 1
    if plan.full_lo < lo:  # taken whole: the tile of lo, in the first bucket
        assert plan.tile_first == lo >> plan.level
        assert ((plan.tile_first << plan.level) - plan.base) // plan.width == 0
    if plan.full_hi > hi:  # the tile of hi, in the last bucket
        assert plan.tile_last == hi >> plan.level
        assert ((plan.tile_last << plan.level) - plan.base) // plan.width == plan.buckets - 1
