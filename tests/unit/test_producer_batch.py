"""MetricBatch building: columnar packing, kinds/texts, size-capped splitting via the codec."""

from __future__ import annotations

import gc
import math
import struct
import uuid
from array import array
from typing import Any

import pytest

from producer import _batch as batch_module
from producer import _buffer as buffer_module
from producer._batch import column_bytes, event_dict, metric_batches
from producer._buffer import Series, SeriesPoints, Stream
from producer._validate import KIND_FLOAT, metric_value
from schemas.codec import Codec
from tests.helpers import unpack_series

CODEC = Codec()
STREAM = Stream(
    run_id="exp_1700000000_0a1b2c3d",
    experiment="exp",
    workspace="default",
    producer_id=uuid.uuid4().hex,
    rank=0,
)


def fill(name: str, values: list[Any], steps: list[int] | None = None) -> SeriesPoints:
    """What Run.log leaves in a Series for these values (same fast/slow paths)."""
    series = Series(name)
    for i, value in enumerate(values):
        kind, number, text = (KIND_FLOAT, value, None) if type(value) is float else (
            metric_value(value, 1 << 20))
        series.write(steps[i] if steps is not None else i,
                     1_700_000_000_000_000_000 + i * 1000, kind, number, text)
    taken = series.take()
    if len(taken) == 1:
        return taken[0]
    # Longer than one set (SET_SLOTS): one SeriesPoints of them all, as the packer's tests
    # of one long series want.
    kinds = None if all(t.kinds is None for t in taken) else bytearray().join(
        t.kinds if t.kinds is not None else bytearray(b"f") * t.n for t in taken)
    all_steps, all_values, all_times = array("q"), array("d"), array("q")
    for t in taken:
        all_steps += t.steps[:t.n]
        all_values += t.values[:t.n]
        all_times += t.times[:t.n]
    return SeriesPoints(name, all_steps, all_values, all_times, kinds,
                        [x for t in taken for x in t.texts], len(all_steps))


def encode_all(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Encode each record as a real event and decode it back (the wire round trip)."""
    out = []
    for seq, record in enumerate(records):
        data = CODEC.encode(
            event_dict(
                STREAM,
                seq=seq,
                event_id=str(uuid.uuid4()),
                ts_us=1,
                kind="MetricBatch",
                record=record,
            )
        )
        kind, decoded = CODEC.decode(data)["payload"]
        assert kind == "MetricBatch"
        out.append(decoded)
    return out


def points(batches: list[dict[str, Any]]) -> dict[str, list[tuple[int, Any, int]]]:
    """{name: [(step, value, time)]} of decoded MetricBatch records."""
    out: dict[str, list[tuple[int, Any, int]]] = {}
    for batch in batches:
        for s in batch["series"]:
            out.setdefault(s["name"], []).extend(unpack_series(s))
    return out


def test_float_series_packs_columns_and_leaves_kinds_null() -> None:
    values = [0.5, -1.25, math.inf, -math.inf, 1e-300]
    (batch,) = encode_all(list(metric_batches([fill("loss", values)], max_bytes=1 << 18)))

    (series,) = batch["series"]
    assert series["name"] == "loss"
    assert series["kinds"] is None
    assert series["texts"] == []
    assert array("d", series["values"]).tolist() == values
    assert array("q", series["steps"]).tolist() == [0, 1, 2, 3, 4]
    assert series["values"] == array("d", values).tobytes()  # little-endian on this host


def test_nan_is_kept() -> None:
    (batch,) = encode_all(list(metric_batches([fill("x", [math.nan])], max_bytes=1 << 18)))
    assert math.isnan(array("d", batch["series"][0]["values"])[0])


def test_mixed_kinds_keep_bool_int_and_text_in_order() -> None:
    values: list[Any] = [1.5, 2, True, "warm start", False, 3.25, "done", -(2**63)]
    batches = encode_all(list(metric_batches([fill("mixed", values)], max_bytes=1 << 18)))

    (batch,) = batches
    assert batch["series"][0]["kinds"] == b"fibsbfsi"
    assert batch["series"][0]["texts"] == ["warm start", "done"]
    assert [v for _, v, _ in points(batches)["mixed"]] == values


def test_int_beyond_int64_is_stored_as_float() -> None:
    batches = encode_all(list(metric_batches([fill("big", [2**70])], max_bytes=1 << 18)))
    assert batches[0]["series"][0]["kinds"] is None  # a float point
    assert points(batches)["big"][0][1] == float(2**70)


def test_several_series_share_one_batch_when_they_fit() -> None:
    series = [fill("a", [1.0, 2.0]), fill("b", [3.0]), fill("c", ["x"])]
    (batch,) = encode_all(list(metric_batches(series, max_bytes=1 << 18)))
    assert [s["name"] for s in batch["series"]] == ["a", "b", "c"]


@pytest.mark.parametrize("max_bytes", [4096, 10_000, 65_536])
def test_long_series_split_in_order_and_every_event_fits(max_bytes: int) -> None:
    n = 20_000
    values = [float(i) for i in range(n)]
    records = list(
        metric_batches([fill("loss", values), fill("lr", values[:10])], max_bytes=max_bytes)
    )
    limit_codec = Codec(max_message_bytes=max_bytes + 512)  # envelope headroom for the test stream

    batches = []
    for seq, record in enumerate(records):
        event = event_dict(
            STREAM, seq=seq, event_id=str(uuid.uuid4()), ts_us=1, kind="MetricBatch", record=record
        )
        batches.append(limit_codec.decode(limit_codec.encode(event))["payload"][1])

    assert len(records) > 1
    got = points(batches)
    assert [step for step, _, _ in got["loss"]] == list(range(n))
    assert [v for _, v, _ in got["loss"]] == values
    assert [v for _, v, _ in got["lr"]] == values[:10]


def test_text_heavy_series_split_by_encoded_size() -> None:
    texts = ["é" * 1000 + str(i) for i in range(50)]  # 2 KB of UTF-8 each
    records = list(metric_batches([fill("notes", texts)], max_bytes=8192))
    batches = encode_all(records)

    assert len(records) >= 50 * 2000 // 8192
    assert all(
        len(
            CODEC.encode(
                event_dict(
                    STREAM, seq=0, event_id=str(uuid.uuid4()), ts_us=1, kind="MetricBatch", record=r
                )
            )
        )
        < 8192 + 512
        for r in records
    )
    assert [v for _, v, _ in points(batches)["notes"]] == texts


def test_explicit_steps_are_kept_as_given() -> None:
    batches = encode_all(
        list(metric_batches([fill("loss", [0.3, 0.2, 0.1], steps=[120, 5, 120])], max_bytes=4096))
    )
    assert [s for s, _, _ in points(batches)["loss"]] == [120, 5, 120]


def test_empty_input_makes_no_batch() -> None:
    assert list(metric_batches([], max_bytes=4096)) == []


def test_a_series_reuses_two_sets_of_arrays_that_the_collector_never_walks() -> None:
    # The arrays a series fills are its own for life: a take hands the filled set to the
    # sender and puts the other one back. They hold machine numbers, not objects, so no
    # collection walks them (a young collection the sender triggered once walked
    # millions of buffered list items with the GIL held), and a pass frees nothing.
    series = Series("x")
    first = (series.steps, series.values, series.times)
    [second] = series.spares
    for column in (*first, *second):
        assert isinstance(column, array)
        assert gc.get_referents(column) in ([], [array])  # no items to walk (3.11: its type)
    sets = []
    for round_, count in enumerate([5000, 10, 3000, 7]):
        for i in range(count):
            series.write(round_ * 10_000 + i, i, KIND_FLOAT, float(i), None)
        [taken] = series.take()
        assert taken.n == count
        sets.append(tuple(id(c) for c in (taken.steps, taken.values, taken.times)))
        records = list(metric_batches([taken], max_bytes=1 << 20))
        points = unpack_series(encode_all(records)[0]["series"][0])
        assert points == [(round_ * 10_000 + i, float(i), i) for i in range(count)]
        taken.recycle()
        taken.recycle()  # idempotent: the set is handed back once
    assert sets[0] == sets[2] == tuple(id(c) for c in first)
    assert sets[1] == sets[3] == tuple(id(c) for c in second)
    assert series.take() == []


def test_a_set_not_handed_back_is_replaced_by_new_arrays() -> None:
    # A pass that failed half-way never recycles: the next take still has arrays.
    series = Series("x")
    for step in range(3):
        series.write(step, step, KIND_FLOAT, float(step), None)
        [taken] = series.take()  # never recycled
        assert taken.n == 1
        assert (taken.steps[0], taken.values[0], taken.times[0]) == (step, float(step), step)


def test_sets_double_up_to_set_slots_then_are_retired_whole_in_order() -> None:
    # No call copies an array of more than SET_SLOTS slots: growing one by realloc moved
    # it to fresh memory, and the call that did it faulted in every page (1,000+ faults,
    # milliseconds on a guest) when the sender had fallen behind and a pass grew large.
    series = Series("x")
    caps = []
    for i in range(300_000):
        series.write(i, i, KIND_FLOAT, i / 2, None)
        if series.cap not in caps:
            caps.append(series.cap)
        assert len(series.steps) <= buffer_module.SET_SLOTS
    assert caps == [64 << i for i in range(9)] == [64, 128, 256, 512, 1024, 2048, 4096,
                                                    8192, buffer_module.SET_SLOTS]
    assert len(series.full) == 300_000 // buffer_module.SET_SLOTS
    taken = series.take()
    assert series.full == []
    assert series.n == 0
    assert [t.n for t in taken[:-1]] == [buffer_module.SET_SLOTS] * 18
    assert sum(t.n for t in taken) == 300_000
    steps = [s for t in taken for s in t.steps[:t.n].tolist()]
    assert steps == list(range(300_000))
    records = list(metric_batches(taken, max_bytes=1 << 20))
    decoded = [p for r in encode_all(records) for s in r["series"] for p in unpack_series(s)]
    assert decoded == [(i, i / 2, i) for i in range(300_000)]
    for t in taken:  # handed back: a series keeps SPARE_SETS of them for its next sets
        t.recycle()
    assert len(series.spares) == buffer_module.SPARE_SETS
    for i in range(3 * buffer_module.SET_SLOTS):
        series.write(i, i, KIND_FLOAT, 0.0, None)
    # The set being filled (grown to SET_SLOTS) retired, then two handed-back sets taken:
    assert len(series.full) == 2
    assert len(series.spares) == buffer_module.SPARE_SETS - 2


def test_a_retired_set_keeps_its_texts_and_the_next_set_starts_without() -> None:
    series = Series("x")
    for i in range(buffer_module.SET_SLOTS + 2):
        kind, number, text = (ord("s"), math.nan, f"t{i}") if i % 1000 == 0 else (
            KIND_FLOAT, float(i), None)
        series.write(i, i, kind, number, text)
    first, second = series.take()
    assert first.n == buffer_module.SET_SLOTS
    assert second.n == 2
    assert first.texts == [f"t{i}" for i in range(0, buffer_module.SET_SLOTS, 1000)]
    assert first.kinds is not None
    assert len(first.kinds) == first.n
    assert second.kinds is None
    assert second.texts == []
    records = list(metric_batches([first, second], max_bytes=1 << 20))
    decoded = [p for r in encode_all(records) for s in r["series"] for p in unpack_series(s)]
    assert [p[0] for p in decoded] == list(range(buffer_module.SET_SLOTS + 2))


@pytest.mark.parametrize("little_endian", [True, False])
def test_columns_are_little_endian_slices_on_either_host(
    monkeypatch: pytest.MonkeyPatch, little_endian: bool
) -> None:
    # A big-endian host is simulated by arrays whose memory is byte-swapped, as that
    # host would hold those numbers: the swapping path must still give little-endian.
    monkeypatch.setattr(batch_module, "_LITTLE_ENDIAN", little_endian)
    steps = array("q", [-(1 << 62), -1, 0, 7, 1 << 62])
    values = array("d", [-0.0, math.inf, 1.5, math.pi, 2.0])
    if not little_endian:
        steps.byteswap()
        values.byteswap()
    assert column_bytes(steps, 1, 4) == struct.pack("<3q", -1, 0, 7)
    assert column_bytes(values, 0, 5) == struct.pack("<5d", -0.0, math.inf, 1.5, math.pi, 2.0)
    assert column_bytes(steps, 2, 2) == b""
    steps.extend([1, 2])  # no buffer export is left behind: the array can still grow


def test_default_batches_fill_a_message_and_never_pass_its_limit() -> None:
    """The default batch is the whole default message (1 MiB): the sender's estimate is an
    upper bound, so a batch packed to it — floats, and text at its widest — still encodes."""
    from producer._batch import envelope_bytes, max_text_bytes
    from producer._options import DEFAULT_BATCH_MAX_BYTES, ProducerOptions

    options = ProducerOptions()
    assert options.batch_max_bytes == DEFAULT_BATCH_MAX_BYTES == options.max_message_bytes
    codec = Codec(max_message_bytes=options.max_message_bytes)
    max_bytes = options.batch_max_bytes - envelope_bytes(STREAM)
    widest = "é" * (max_text_bytes(STREAM, options.batch_max_bytes) // 2)
    series = [fill("loss", [float(i) for i in range(100_000)]),
              fill("note", ["a", widest, "b"])]
    sizes = []
    for seq, record in enumerate(metric_batches(series, max_bytes=max_bytes)):
        event = event_dict(STREAM, seq=seq, event_id=str(uuid.uuid4()), ts_us=1,
                           kind="MetricBatch", record=record)
        sizes.append(len(codec.encode(event)))  # raises past max_message_bytes
    assert len(sizes) >= 3, sizes
    assert max(sizes) > options.max_message_bytes * 0.9, sizes


def test_the_default_batch_is_cut_to_a_smaller_message_limit() -> None:
    from producer._options import ProducerOptions

    assert ProducerOptions(max_message_bytes=300_000).batch_max_bytes == 300_000
    assert ProducerOptions(batch_max_bytes=65_536).batch_max_bytes == 65_536
    with pytest.raises(ValueError, match="batch_max_bytes"):
        ProducerOptions(max_message_bytes=300_000, batch_max_bytes=400_000)
