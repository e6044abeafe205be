"""Metric series for the read API: bucket plans for downsampling, and whole series in order.

Downsampling (``GET /v1/runs/{id}/metrics/{name}?max_points=N``). Buckets are step ranges
``[base + k*W, base + (k+1)*W)``; ``plan_buckets`` picks ``W`` so that at most N buckets
cover the series' steps. When a tile level of migration 0006 fits (``2^level <= W``),
``W`` and ``base`` are multiples of ``2^level``, so each bucket is a union of whole tiles
and only the points of partial tiles at the two ends are read raw. Without a fitting
level (a dense series asked for nearly as many buckets as it has steps) every point is
read raw; that costs about 0.3 us a point in PostgreSQL.

Whole series (``GET /v1/runs/{id}/metrics``) are ordered by (step, rank, time).
``merge_float_chunks`` serves the common case without touching single points in
Python: float-only chunks, each strictly increasing in step (PostgreSQL checks), not
overlapping one another, whose values PostgreSQL has already written as JSON. Anything
else (typed values, several ranks on the same steps, steps logged out of order) is
merged point by point (``merge_points``).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from ingest.db.values import JsonValue, float_array_json, typed_value

__all__ = [
    "LEVELS",
    "MAX_STEP",
    "MIN_STEP",
    "BucketPlan",
    "ChunkHead",
    "StepRangeTooWideError",
    "merge_float_chunks",
    "merge_points",
    "plan_buckets",
]

MIN_STEP: Final = -(2**63)
MAX_STEP: Final = 2**63 - 1
#: Tile levels kept by migration 0006 (tile = step >> level).
LEVELS: Final = tuple(range(6, 61, 3))
#: Cost of reading one point raw relative to reading one tile (measured: ~0.3 us vs ~1 us).
RAW_POINT_COST: Final = 0.3


class StepRangeTooWideError(ValueError):
    """The step range spans more than a bigint can subtract (over 2^63 steps)."""


@dataclass(frozen=True, slots=True)
class BucketPlan:
    """Bucket k holds the steps [base + k*width, base + (k+1)*width) within [lo, hi]."""

    lo: int
    hi: int
    base: int
    width: int
    #: Tile level read whole (None: every point raw).
    level: int | None
    #: Whole tiles used: tile numbers first..last, covering steps full_lo..full_hi.
    tile_first: int
    tile_last: int
    full_lo: int
    full_hi: int

    @property
    def buckets(self) -> int:
        return (self.hi - self.base) // self.width + 1


def plan_buckets(
    lo: int, hi: int, max_points: int, *, points: int, ranks: int = 1,
    min_level: int = LEVELS[0], outer_lo: int | None = None, outer_hi: int | None = None,
) -> BucketPlan:
    """At most ``max_points`` buckets over the steps [lo, hi] holding ``points`` points
    of ``ranks`` ranks, tile-aligned when a tile level fits.

    Among the levels that fit (``2^level`` at most the bucket width), the one with the
    least estimated work: tiles read (one per rank per ``2^level`` steps) plus the raw
    points of the two partial tiles at the ends, weighted by ``RAW_POINT_COST``.

    ``outer_lo``/``outer_hi``: the caller knows the series has no point in
    [outer_lo, lo) nor in (hi, outer_hi] (lo and hi are the lowest and highest steps of
    what was asked, ``outer_*`` what was asked). Then a tile at either end that reaches
    past lo or hi but not past ``outer_*`` holds only points of [lo, hi] and is read whole
    instead of its points (the usual case: a whole series, whose end tiles are partial).
    """
    if lo > hi or max_points < 1:
        raise ValueError(f"empty plan: lo={lo} hi={hi} max_points={max_points}")
    span = hi - lo + 1
    wanted = _ceil_div(span, max_points)
    density = points / span
    fitting = [lv for lv in LEVELS if lv >= min_level and (1 << lv) <= wanted]
    level = min(
        fitting,
        key=lambda lv: ranks * span / (1 << lv) + RAW_POINT_COST * 2 * (1 << lv) * density,
        default=None,
    )
    if level is not None:
        tile = 1 << level
        base = (lo >> level) << level
        width = _ceil_div(_ceil_div(hi - base + 1, max_points), tile) * tile
        tile_first = -((-lo) >> level)
        tile_last = ((hi + 1) >> level) - 1
        if outer_lo is not None and outer_lo <= base:
            tile_first = lo >> level
        if outer_hi is not None and outer_hi >= (((hi >> level) + 1) << level) - 1:
            tile_last = hi >> level
        if tile_first <= tile_last:
            plan = BucketPlan(lo, hi, base, width, level, tile_first, tile_last,
                              tile_first << level, ((tile_last + 1) << level) - 1)
            _check_fits(plan)
            return plan
    plan = BucketPlan(lo, hi, lo, wanted, None, 0, -1, lo, lo - 1)
    _check_fits(plan)
    return plan


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _check_fits(plan: BucketPlan) -> None:
    if plan.hi - plan.base > MAX_STEP or plan.width > MAX_STEP:
        raise StepRangeTooWideError(
            f"steps {plan.lo}..{plan.hi} span more than 2^63; narrow them with step_min/step_max"
        )


@dataclass(frozen=True, slots=True)
class ChunkHead:
    """What ``merge_float_chunks`` needs of one stored chunk: float-only, steps strictly
    increasing (PostgreSQL checked), values already a JSON array in UTF-8."""

    n: int
    step_min: int
    step_max: int
    values_json: bytes


def merge_float_chunks(chunks: Sequence[ChunkHead]) -> bytes | None:
    """The series as one JSON value — a scalar if it has one point, else an array — or
    None when the chunks overlap in steps (their points would interleave).

    ``chunks`` come sorted by (step_min, rank, time_min).
    """
    previous_max: int | None = None
    for chunk in chunks:
        if previous_max is not None and chunk.step_min <= previous_max:
            return None
        previous_max = chunk.step_max
    inner = [float_array_json(c.values_json, c.n)[1:-1] for c in chunks if c.n]
    if sum(c.n for c in chunks) == 1:
        return inner[0]
    return b"[" + b",".join(inner) + b"]"


def merge_points(
    chunks: Sequence[tuple[int, Sequence[int], Sequence[float], Sequence[int],
                           bytes | None, Sequence[str | None] | None]],
) -> list[JsonValue]:
    """All points of (rank, steps, values, times, kinds, texts) chunks, typed, in
    (step, rank, time) order; ties keep storage order."""
    keyed: list[tuple[int, int, int, JsonValue]] = []
    for rank, steps, values, times, kinds, texts in chunks:
        if kinds is None:
            keyed.extend(
                (s, rank, t, typed_value(v, 102, None))
                for s, v, t in zip(steps, values, times, strict=True)
            )
        else:
            text_of = texts if texts is not None else [None] * len(steps)
            keyed.extend(
                (s, rank, t, typed_value(v, k, x))
                for s, v, t, k, x in zip(steps, values, times, kinds, text_of, strict=True)
            )
    keyed.sort(key=operator.itemgetter(0, 1, 2))
    return [point[3] for point in keyed]
