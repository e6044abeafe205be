"""Pure pieces of the read path: bucket plans, series merges, value encoding, cursors."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.api.params import decode_cursor, encode_cursor, storable
from ingest.db.series import (
    LEVELS,
    MAX_STEP,
    MIN_STEP,
    ChunkHead,
    StepRangeTooWideError,
    merge_float_chunks,
    merge_points,
    plan_buckets,
)
from ingest.db.values import float_array_json, json_float, micros_to_iso, typed_values

steps = st.integers(min_value=-(2**61), max_value=2**61)


@settings(max_examples=500)
@given(lo=steps, span=st.integers(min_value=1, max_value=2**50),
       max_points=st.integers(min_value=1, max_value=100_000),
       density=st.floats(min_value=0.001, max_value=256), ranks=st.integers(1, 300),
       min_level=st.sampled_from(LEVELS))
def test_bucket_plans(lo: int, span: int, max_points: int, density: float, ranks: int,
                      min_level: int) -> None:
    hi = lo + span - 1
    plan = plan_buckets(lo, hi, max_points, points=max(1, int(span * density)), ranks=ranks,
                        min_level=min_level)
    assert 1 <= plan.buckets <= max_points
    assert plan.base <= lo
    assert (lo - plan.base) // plan.width == 0  # the first bucket holds lo
    if plan.level is None:
        return
    tile = 1 << plan.level
    assert plan.level >= min_level
    assert tile <= -(-span // max_points)  # a tile is never wider than a bucket must be
    assert plan.base % tile == 0
    assert plan.width % tile == 0  # so every bucket is a union of whole tiles
    assert lo <= plan.full_lo <= plan.full_hi <= hi
    assert plan.full_lo == plan.tile_first * tile
    assert plan.full_hi == (plan.tile_last + 1) * tile - 1
    assert plan.full_lo - lo < tile  # raw ends: less than a tile each
    assert hi - plan.full_hi < tile


def test_bucket_plan_examples() -> None:
    plan = plan_buckets(0, 999_999, 1000, points=1_000_000)
    assert (plan.level, plan.width, plan.buckets) == (9, 1024, 977)
    assert (plan.full_lo, plan.full_hi) == (0, 999_935)
    small = plan_buckets(0, 99, 10, points=100)
    assert (small.level, small.width, small.buckets) == (None, 10, 10)
    assert plan_buckets(5, 5, 1, points=1).buckets == 1
    with pytest.raises(StepRangeTooWideError, match="step_min/step_max"):
        plan_buckets(MIN_STEP, MAX_STEP, 1000, points=10)


def head(steps_: list[int], values: str) -> ChunkHead:
    return ChunkHead(n=len(steps_), step_min=min(steps_), step_max=max(steps_),
                     values_json=values.encode())


def test_float_chunks_merge_without_parsing() -> None:
    merged = merge_float_chunks([head([0, 1], "[0.5,2]"), head([2], '["NaN"]')])
    assert merged == b'[0.5,2.0,"NaN"]'
    assert merge_float_chunks([head([7], "[3]")]) == b"3.0"
    assert merge_float_chunks([head([0, 5], "[1.5,2.5]"), head([5, 6], "[1.5,2.5]")]) is None


def test_points_merge_in_step_rank_time_order_with_types() -> None:
    chunks = [
        (1, [0, 1], [10.0, 11.0], [5, 6], None, None),
        (0, [1, 0], [1.0, 0.0], [9, 8], b"if", None),
        (0, [1], [float("nan")], [2], b"s", ["late"]),
    ]
    assert merge_points(chunks) == [0.0, 10.0, "late", 1, 11.0]


def test_value_encoding() -> None:
    assert [json_float(v) for v in (1.5, math.nan, math.inf, -math.inf)] == [
        1.5, "NaN", "Infinity", "-Infinity"]
    assert typed_values([1.0, 0.0, math.nan, 2.0], b"ibsf", [None, None, "x", None]) == [
        1, False, "x", 2.0]
    assert typed_values([math.inf], None, None) == ["Infinity"]
    for text, count, want in (
        (b"[0.5,1e-07]", 2, b"[0.5,1e-07]"),
        (b"[3,-0,12345,1e+16,\"NaN\"]", 5, b"[3.0,-0.0,12345.0,1e+16,\"NaN\"]"),
        (b"[7]", 1, b"[7.0]"),
    ):
        fixed = float_array_json(text, count)
        assert fixed == want
        assert all(isinstance(v, float | str) for v in json.loads(fixed))


@settings(max_examples=300)
@given(st.integers(min_value=-62_135_596_800_000_000, max_value=253_402_300_799_999_999))
def test_micros_to_iso_matches_datetime(us: int) -> None:
    expected = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)
    assert micros_to_iso(us) == expected.isoformat(timespec="microseconds")


def test_cursors() -> None:
    cursor = encode_cursor("runs:created_at:desc", [1_700_000_000_000_000, "exp_1_ab"])
    assert decode_cursor(cursor, "runs:created_at:desc") == [1_700_000_000_000_000, "exp_1_ab"]
    for bad in ("", "%%%", "e30", encode_cursor("logs", [1]), encode_cursor("runs", [2**70]),
                encode_cursor("runs", ["a\x00b"]), "x" * 5000):
        with pytest.raises(web.HTTPBadRequest) as refused:
            decode_cursor(bad, "runs")
        assert "'cursor'" in (refused.value.text or "")
    assert storable("é ok")
    assert not storable("nul\x00")
    assert not storable("\ud800")
