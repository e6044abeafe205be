"""``chunk_tiles``: a chunk's level-6 tiles against a plain reference, for chunks of every
shape (which ones get tiles at all, and exactly what they hold)."""

from __future__ import annotations

import itertools
import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.bench.events import packed_series
from ingest.worker.chunk_tiles import LEVEL, MIN_POINTS, MIN_POINTS_PER_TILE, chunk_tiles
from ingest.worker.decode import Series


def series(steps: list[int], values: list[Any], times: list[int]) -> Series:
    packed = packed_series("m", values, steps=steps, times_us=times)
    texts = [None if isinstance(v, bool) or not isinstance(v, str) else v for v in values]
    return Series(
        name="m", n=len(steps), steps=packed["steps"], values=packed["values"],
        times=packed["times"], kinds=packed["kinds"],
        texts=tuple(texts) if packed["kinds"] and b"s" in packed["kinds"] else None,
        step_min=min(steps), step_max=max(steps), time_min_us=min(times),
        time_max_us=max(times))


def reference(steps: list[int], nums: list[float], times: list[int], kinds: bytes | None,
              texts: tuple[str | None, ...] | None) -> list[tuple[Any, ...]]:
    """Tiles point by point, as the SQL of migration 0006 builds them."""
    by_tile: dict[int, list[int]] = {}
    for i, s in enumerate(steps):
        by_tile.setdefault(s >> LEVEL, []).append(i)
    out = []
    for tile in sorted(by_tile):
        idx = by_tile[tile]
        finite = [nums[i] for i in idx if math.isfinite(nums[i])]
        last = max(idx, key=lambda i: (steps[i], times[i]))
        out.append((tile, len(idx), min(finite) if finite else "none",
                    max(finite) if finite else "none", min(steps[i] for i in idx),
                    max(steps[i] for i in idx), min(times[i] for i in idx),
                    max(times[i] for i in idx), times[last], _same(nums[last]),
                    ord("f") if kinds is None else kinds[last],
                    None if texts is None else texts[last]))
    return out


def _same(v: float) -> Any:
    return "nan" if math.isnan(v) else v


def flatten(s: Series) -> list[tuple[Any, ...]] | None:
    t = chunk_tiles(s)
    if t is None:
        return None
    return [
        (t.tiles[k], t.ns[k], "none" if math.isnan(t.vmins[k]) else t.vmins[k],
         "none" if math.isnan(t.vmaxs[k]) else t.vmaxs[k], t.smins[k], t.smaxs[k],
         t.tmins[k], t.tmaxs[k], t.last_ts[k], _same(t.last_vs[k]), t.last_ks[k],
         None if t.last_xs is None else t.last_xs[k])
        for k in range(len(t.tiles))
    ]


def numbers(s: Series) -> list[float]:
    from array import array
    a = array("d")
    a.frombytes(s.values)
    return a.tolist()


values_strategy = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-10**6, 10**6),
    st.booleans(),
    st.text(max_size=5),
)


@settings(max_examples=300, deadline=None)
@given(
    start=st.integers(-10_000, 10_000),
    pool=st.sampled_from([(1,), (1, 2), (4,), (1,) * 40 + (0,), (1,) * 200 + (70,), (9,)]),
    length=st.integers(1, 700),
    values=st.data(),
    shuffled_times=st.booleans(),
)
def test_tiles_match_the_point_by_point_reference(start: int, pool: tuple[int, ...],
                                                  length: int, values: Any,
                                                  shuffled_times: bool) -> None:
    gaps = values.draw(st.lists(st.sampled_from(pool), min_size=length - 1,
                                max_size=length - 1))
    steps = [start]
    for g in gaps:
        steps.append(steps[-1] + g)
    n = len(steps)
    vals = values.draw(st.lists(values_strategy, min_size=n, max_size=n))
    times = [1_700_000_000_000_000 + i * 7 for i in range(n)]
    if shuffled_times:
        times = times[::-1]
    s = series(steps, vals, times)
    got = flatten(s)
    strictly = all(a < b for a, b in itertools.pairwise(steps))
    spanned = (steps[-1] >> LEVEL) - (steps[0] >> LEVEL) + 1
    exact = strictly and n >= MIN_POINTS and spanned * MIN_POINTS_PER_TILE <= n
    assert (got is not None) == exact
    if got is not None:
        assert got == reference(steps, numbers(s), times, s.kinds, s.texts)


def test_a_dense_float_chunk_gets_tiles() -> None:
    steps = list(range(100, 1100))
    s = series(steps, [float(i) for i in steps], [10 * i for i in steps])
    t = chunk_tiles(s)
    assert t is not None
    assert t.tiles.tolist() == list(range(100 >> 6, (1099 >> 6) + 1))
    assert sum(t.ns) == 1000
    assert t.ns[0] == 128 - 100
    assert t.last_xs is None
    assert t.last_ks == b"f" * len(t.tiles)


def test_chunks_tiled_in_sql_instead() -> None:
    small = list(range(MIN_POINTS - 1))
    assert chunk_tiles(series(small, [1.0] * len(small), small)) is None
    sparse = list(range(0, 64 * 200, 64))  # a tile per point
    assert chunk_tiles(series(sparse, [1.0] * 200, sparse)) is None
    repeated = sorted(list(range(100)) * 2)
    assert chunk_tiles(series(repeated, [1.0] * 200, list(range(200)))) is None
    swapped = list(range(200))
    swapped[10], swapped[11] = swapped[11], swapped[10]
    assert chunk_tiles(series(swapped, [1.0] * 200, list(range(200)))) is None
