"""The worker's fine tiles (migration 0015, ``ingest/worker/chunk_tiles.py``) give exactly
the tiles that summarising the points in SQL gives.

The same events are written twice through the real write path (``Store.write_batch``),
under two run ids; before each tiling round the second run's fine tiles are deleted, so
``tile_metric_series`` summarises its points. Series of every shape — dense, negative
steps, NaN and infinities, ints, bools and strings, steps every 4, sparse and repeated
steps, a series that thins out (its finest level is dropped), two ranks and a second
producer of rank 0 — tiled in rounds between the writes and once more at the end: the two
runs' tiles are identical, column by column.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from ingest.bench.events import EventFactory, packed_series
from ingest.bench.read import store_events
from tests.integration.helpers import NewDb, run_id

pytestmark = pytest.mark.integration

T0_US = 1_780_000_000_000_000


def shapes() -> dict[str, tuple[list[int], list[Any]]]:
    """name → (steps, values)."""
    nan, inf = math.nan, math.inf
    dense = list(range(3000))
    specials: list[Any] = [float(s % 97) for s in range(2000)]
    for s in range(128, 192):
        specials[s] = nan  # a whole tile without a finite value
    for s in (5, 300, 301, 1999):
        specials[s] = inf
    specials[700] = -inf
    specials[1000] = nan  # and the last point of its chunk below
    mixed: list[Any] = [s if s % 3 == 0 else (s % 2 == 0 if s % 3 == 1 else f"v{s}")
                        for s in range(1500)]
    thinning = list(range(640)) + [640 + 20 * i for i in range(3000)]
    return {
        "dense": (dense, [1.0 / (s + 1) for s in dense]),
        "negative": (list(range(-700, 700)), [float(s) for s in range(-700, 700)]),
        "specials": (list(range(2000)), specials),
        "mixed": (list(range(1500)), mixed),
        "every4": (list(range(0, 8000, 4)), [float(s % 13) for s in range(2000)]),
        "sparse": (list(range(0, 2_000_000, 1000)), [float(s) for s in range(2000)]),
        "repeated": ([s // 2 for s in range(2000)], [float(s) for s in range(2000)]),
        "thinning": (thinning, [float(s % 7) for s in range(len(thinning))]),
    }


#: Points per event, cycled: chunks big and small, starting anywhere in a tile.
CHUNK_SIZES = (300, 64, 1000, 37, 129, 700, 63, 500)


def chunks(n: int) -> Iterator[tuple[int, int]]:
    a, i = 0, 0
    while a < n:
        b = min(n, a + CHUNK_SIZES[i % len(CHUNK_SIZES)])
        yield a, b
        a, i = b, i + 1


def events_of(rid: str) -> list[dict[str, Any]]:
    """A run's events: ranks 0 and 1 and a second producer of rank 0 (a resumed process,
    logging the same steps later), their chunks interleaved; times not always rising."""
    producers = [EventFactory(rid, experiment="tiles", producer_id=f"{rid}-p{i}", rank=rank)
                 for i, rank in enumerate((0, 1, 0))]
    out = [producers[0].lifecycle("Running", ts_us=T0_US)]
    for p_index, producer in enumerate(producers):
        for name, (steps, values) in shapes().items():
            if p_index == 2 and name not in ("dense", "mixed", "thinning"):
                continue
            for a, b in chunks(len(steps)):
                times = [T0_US + 1000 * p_index + s for s in range(a, b)]
                if name == "specials" and a <= 1000 < b:
                    times[1000 - a], times[b - a - 1] = times[b - a - 1], times[1000 - a]
                out.append(producer.metrics(
                    packed_series(name, values[a:b], steps=steps[a:b], times_us=times),
                    ts_us=times[0]))
    return out


TILES_SQL = """
SELECT name, level, rank, tile, n, vmin, vmax, smin, smax, tmin, tmax, last_t, last_v,
       last_k, last_x
FROM runstream_data.metric_tiles WHERE run_id = $1 ORDER BY name, level, rank, tile
"""


COUNTS_SQL = """
SELECT s.run_id, s.name, (s.tiled_points, s.min_level_tiles) AS kept,
       ((SELECT sum(m.n) FROM runstream_data.metric_tiled_chunks m
         WHERE m.run_id = s.run_id AND m.name = s.name),
        (SELECT count(*) FROM runstream_data.metric_tiles t
         WHERE t.run_id = s.run_id AND t.name = s.name AND t.level = s.min_level)) AS counted
FROM runstream_data.metric_tile_series s WHERE s.run_id = ANY($1::text[])
"""


def comparable(rows: list[asyncpg.Record]) -> list[tuple[Any, ...]]:
    """Rows as tuples, NaN made comparable (NaN != NaN in Python)."""
    return [tuple("NaN" if isinstance(v, float) and math.isnan(v) else v for v in r)
            for r in rows]


@pytest.fixture(params=["partitioned", "timescaledb"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_fine_tiles_give_the_tiles_the_points_give(new_db: NewDb, backend: str) -> None:
    dsn = await new_db(backend)
    fine, raw = run_id("tiles"), run_id("tiles")
    fine_events, raw_events = events_of(fine), events_of(raw)
    names = list(shapes())
    conn = await asyncpg.connect(dsn)
    try:
        half = len(fine_events) // 2
        for part in (slice(0, half), slice(half, None)):
            await store_events(dsn, fine_events[part] + raw_events[part], batch=9)
            await conn.execute(
                "DELETE FROM runstream_data.metric_chunk_tiles WHERE run_id = $1", raw)
            for rid in (fine, raw):
                for name in names:
                    await conn.fetchval("SELECT runstream_data.tile_metric_series($1, $2)",
                                        rid, name)
        made = {r["name"] for r in await conn.fetch(
            "SELECT DISTINCT name FROM runstream_data.metric_tiled_chunks m WHERE run_id = $1",
            fine)}
        assert made == set(names)
        # Fine tiles are used once: none is left for a claimed chunk.
        assert await conn.fetchval(
            "SELECT count(*) FROM runstream_data.metric_chunk_tiles WHERE run_id = $1",
            fine) == 0

        got, want = comparable(await conn.fetch(TILES_SQL, fine)), comparable(
            await conn.fetch(TILES_SQL, raw))
        assert len(got) > 1000
        assert got == want
        levels = {r["name"]: r["min_level"] for r in await conn.fetch(
            "SELECT name, min_level FROM runstream_data.metric_tile_series WHERE run_id = $1",
            fine)}
        assert levels["thinning"] > 6
        # The counts the level check keeps are the counts.
        kept = await conn.fetch(COUNTS_SQL, [fine, raw])
        assert len(kept) == 2 * len(names)
        assert [tuple(r) for r in kept if r["kept"] != r["counted"]] == []
        assert levels["dense"] == 6
    finally:
        await conn.close()


async def test_the_worker_makes_fine_tiles_only_where_they_are_exact(new_db: NewDb) -> None:
    """Which chunks get fine tiles: strictly increasing steps, dense enough, big enough."""
    dsn = await new_db()
    rid = run_id("tiles")
    await store_events(dsn, events_of(rid), batch=50)
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT name, count(*) AS chunks, sum(cardinality(tiles)) AS tiles "
            "FROM runstream_data.metric_chunk_tiles WHERE run_id = $1 GROUP BY name", rid)
    finally:
        await conn.close()
    by_name = {r["name"]: r for r in rows}
    assert set(by_name) == {"dense", "negative", "specials", "mixed", "every4", "thinning"}
    # Every dense chunk of 64 points or more; "thinning" only its dense start.
    big = sum(1 for a, b in chunks(3000) if b - a >= 64)
    assert by_name["dense"]["chunks"] == 3 * big  # three producers log it
    assert by_name["thinning"]["chunks"] < by_name["dense"]["chunks"]
