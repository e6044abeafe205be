"""Property tests of the wire path: codec round trips for every payload kind, the size
limit, mutated and arbitrary bytes, decode's accept-or-reject contract, and the pure fold
of decoded events into store rows (run state, producers, the metric COPY stream).

Two families of generated events:

- ``schema_events``: anything the Avro schema (as fastavro writes it) can carry, including
  values the ingest contract rejects: empty or NUL names, packed arrays of odd length,
  kinds without texts, unequal table columns, negative seq, ranks beyond Avro ``int``,
  timestamps outside years 1..9999. The codec must round-trip all of them; ``decode_event``
  must turn each into an ``Event`` or an ``InvalidEventError``, never anything else.
- ``sdk_events``: what a well-behaved producer sends. ``decode_event`` must accept every one
  and keep its content.
"""

from __future__ import annotations

import array
import itertools
import math
import struct
import sys
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ingest.bench.events import EventFactory, packed_series
from ingest.db.runstatus import STATUS_COLUMNS, derive_status
from ingest.errors import InvalidEventError
from ingest.worker.decode import (
    MAX_ID_CHARS,
    MAX_NAME_BYTES,
    MAX_NAME_CHARS,
    MAX_PRODUCER_ID_CHARS,
    MAX_TAG_VALUE_BYTES,
    MAX_TIME_US,
    MIN_TIME_US,
    Artifact,
    Event,
    Heartbeat,
    Lifecycle,
    ListValue,
    LogLines,
    MetricBatch,
    TableBlock,
    Tag,
    decode_event,
)
from ingest.worker.status import reduce_producers, reduce_runs
from ingest.worker.store import _metric_copy
from schemas.codec import PAYLOAD_KINDS, Codec, DecodeError, MessageTooLargeError

CODEC = Codec()
CODEC_REASONS = {"empty", "bad_magic", "unknown_schema_id", "bad_avro"}
INT32_MAX = 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# Example counts keep the whole file near 20 s on a busy 2-core machine.
FEW = settings(max_examples=40, deadline=None)
PER_KIND = settings(max_examples=60, deadline=None)  # x 9 payload kinds
SOME = settings(max_examples=150, deadline=None)
MANY = settings(max_examples=250, deadline=None)

Draw = st.DrawFn
Record = dict[str, Any]

# --- building blocks ------------------------------------------------------------------

int64 = st.integers(INT64_MIN, INT64_MAX)
int64_edges = st.sampled_from([INT64_MIN, INT64_MIN + 1, -1, 0, 1, 2**53 + 1, INT64_MAX])
any_int64 = st.one_of(int64, int64_edges)
floats = st.one_of(
    st.floats(),  # includes NaN (several bit patterns) and ±inf
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 5e-324, sys.float_info.max]),
)
#: Unicode without surrogates (Avro strings are UTF-8); NUL, emoji and combining marks in.
text = st.text(max_size=12)
#: What the contract accepts as a name: non-empty, no NUL.
name_chars = st.characters(codec="utf-8", exclude_characters="\x00")
short_name = st.text(name_chars, min_size=1, max_size=12)


#: Name-like fields and their limits (characters, and UTF-8 bytes for names).
NAME, ID, PRODUCER_ID = MAX_NAME_CHARS, MAX_ID_CHARS, MAX_PRODUCER_ID_CHARS


def names(limit: int) -> st.SearchStrategy[str]:
    """Valid names, sometimes exactly at a limit (characters, or 1024 bytes of UTF-8)."""
    edges = [c * min(limit, MAX_NAME_BYTES // len(c.encode())) for c in ("a", "é", "😀")]
    return st.one_of(short_name, short_name, short_name, st.sampled_from(edges))


def any_name(limit: int) -> st.SearchStrategy[str]:
    """Anything a string field can hold: empty, NUL, one over a limit, …"""
    over = ["", "a\x00b", "a" * (limit + 1), "😀" * (MAX_NAME_BYTES // 4 + 1)]
    return st.one_of(text, text, names(limit), st.sampled_from(over))


scalars = st.one_of(st.booleans(), any_int64, floats, text)
#: Schema v3 ``ScalarType`` and texts a tag or property value of a type may be (or not).
value_types = st.sampled_from(["str", "int", "float", "bool"])
typed_texts = st.one_of(
    st.integers().map(str), floats.map(repr), st.booleans().map(str),
    st.sampled_from(["true", "false", "TRUE", "1e999", "0x10", " 1", "1_000", "", "-0",
                     "007", "1.", ".5", "1e5", "1e+5", "1e", "-.", "nan", "inf", "+1",
                     "9223372036854775808", "-9223372036854775808", "1.5e-300", "\u0661",
                     "1e12345", "1e-+5"]),
)
times_us = st.one_of(
    st.integers(MIN_TIME_US, MAX_TIME_US), st.sampled_from([MIN_TIME_US, 0, MAX_TIME_US])
)


def _unpack(typecode: str, packed: bytes) -> list[Any]:
    arr = array.array(typecode)
    arr.frombytes(packed)
    if sys.byteorder != "little":
        arr.byteswap()
    return arr.tolist()


# --- payloads ---------------------------------------------------------------------------


@st.composite
def sdk_series(draw: Draw) -> Record:
    """A series packed the way the SDK packs it (``ingest.bench.events.packed_series``)."""
    points = draw(st.lists(st.tuples(any_int64, scalars, times_us), max_size=8))
    series = packed_series(
        draw(names(NAME)),
        [v for _, v, _ in points],
        steps=[s for s, _, _ in points],
        times_us=[t for _, _, t in points],
    )
    if series["kinds"] is None and draw(st.booleans()):
        series["kinds"] = b"f" * len(points)  # explicit all-float kinds are legal too
    return series


@st.composite
def raw_series(draw: Draw) -> Record:
    """Packed fields of any length and kinds/texts that need not agree."""
    return {
        "name": draw(any_name(NAME)),
        "steps": draw(st.binary(max_size=24)),
        "values": draw(st.binary(max_size=24)),
        "times": draw(st.binary(max_size=24)),
        "kinds": draw(
            st.none() | st.binary(max_size=4) | st.text("fibsx", max_size=4).map(str.encode)
        ),
        "texts": draw(st.lists(text, max_size=3)),
    }


@st.composite
def payload(draw: Draw, kind: str, valid: bool) -> tuple[str, Record]:
    name = names(NAME) if valid else any_name(NAME)
    ident = names(ID) if valid else any_name(ID)
    count = st.integers(0, INT64_MAX) if valid else any_int64
    record: Record
    if kind == "MetricBatch":
        series = sdk_series() if valid else st.one_of(sdk_series(), raw_series())
        record = {"series": draw(st.lists(series, max_size=3))}
    elif kind == "ListValue":
        record = {"name": draw(name), "values": draw(st.lists(scalars, max_size=8))}
    elif kind == "Row":
        columns = draw(st.lists(name, min_size=1 if valid else 0, max_size=4, unique=valid))
        record = {
            "name": draw(name),
            "cells": [{"column": c, "value": draw(scalars)} for c in columns],
        }
    elif kind == "Table":
        columns = draw(st.lists(name, min_size=1 if valid else 0, max_size=4, unique=valid))
        rows = draw(st.integers(0, 5))
        record = {
            "name": draw(name),
            "columns": [
                {
                    "name": c,
                    "values": draw(
                        st.lists(scalars, min_size=rows, max_size=rows if valid else rows + 1)
                    ),
                }
                for c in columns
            ],
        }
    elif kind == "Artifact":
        if valid:
            segment = st.text(
                st.characters(exclude_categories=("Cc", "Cs"), exclude_characters="/\\"),
                min_size=1,
                max_size=8,
            ).filter(lambda s: s not in (".", ".."))
            path = st.lists(segment, min_size=1, max_size=4).map("/".join)
            sha = st.binary(min_size=32, max_size=32).map(bytes.hex)
        else:
            path = st.one_of(
                any_name(NAME),
                st.sampled_from(
                    ["../x", "/etc/passwd", "a//b", "a/./b", "a\\b", "outputs/", "a\nb"]
                ),
            )
            sha = st.one_of(
                st.binary(min_size=32, max_size=32).map(bytes.hex), st.just("AB" * 32), text
            )
        record = {
            "name": draw(path),
            "kind": draw(st.sampled_from(["FILE", "IMAGE"])),
            "sha256": draw(sha),
            "size_bytes": draw(count),
            "content_type": draw(name),
            "metric": draw(st.sampled_from(
                [None, "confusion_matrix", "accuracy_table", "residuals", "predictions"])),
        }
    elif kind == "Tag":
        target = draw(st.sampled_from(
            ["tag", "untag", "property", "display_name", "description"]))
        value = text if valid and target in ("property", "display_name", "description") else (
            st.none() | text)
        if not valid:  # one byte over the limit
            value |= st.just("é" * (MAX_TAG_VALUE_BYTES // 2) + "a")
        value |= typed_texts  # schema v3: the text of a number or boolean, or not quite
        record = {"key": draw(name), "value": draw(value), "target": target,
                  "value_type": draw(value_types)}
    elif kind == "Lifecycle":
        record = {
            "status": draw(st.sampled_from(list(STATUS_COLUMNS))),
            "parent_run_id": draw(st.none() | ident),
            "display_name": draw(st.none() | text),
            "compute_target": draw(st.none() | ident),
            "error": draw(st.none() | text),
            "properties": draw(st.dictionaries(text, text | typed_texts, max_size=3)),
            "attempt": draw(st.integers(0, 1000) if valid else st.integers(0, 2**31 - 1)),
        }
        # Schema v3: types of some properties, and of keys the event does not carry.
        keys = [*record["properties"], *draw(st.lists(text, max_size=1))]
        record["property_types"] = draw(st.dictionaries(
            st.sampled_from(keys), value_types, max_size=len(keys))) if keys else {}
    elif kind == "LogLines":
        record = {"stream": draw(name), "lines": draw(st.lists(text, max_size=5))}
    elif kind == "Heartbeat":
        record = {"dropped_events": draw(count)}
    else:  # pragma: no cover - PAYLOAD_KINDS and this function must agree
        raise AssertionError(kind)
    return kind, record


@st.composite
def events(draw: Draw, kind: str, valid: bool) -> Record:
    ident = names(ID) if valid else any_name(ID)
    producer = names(PRODUCER_ID) if valid else any_name(PRODUCER_ID)
    event_id = st.uuids().map(str)
    if not valid:
        event_id = st.one_of(event_id, st.uuids().map(lambda u: u.hex.upper()), text)
    event: Record = {
        "event_id": draw(event_id),
        "run_id": draw(ident),
        "experiment": draw(ident),
        "workspace": draw(ident),
        "producer_id": draw(producer),
        "seq": draw(st.integers(0, INT64_MAX) if valid else any_int64),
        # Avro int; fastavro also writes (and reads back) any int64, so the fuzz does too.
        "rank": draw(
            st.integers(0, INT32_MAX)
            if valid
            else st.one_of(st.integers(-(2**31), INT32_MAX), any_int64)
        ),
        "ts": draw(times_us if valid else any_int64),
        "payload": draw(payload(kind, valid)),
    }
    if valid:
        assume(event["payload"][1].get("parent_run_id") != event["run_id"])
    return event


def schema_events(kind: str) -> st.SearchStrategy[Record]:
    return events(kind, valid=False)


def sdk_events(kind: str) -> st.SearchStrategy[Record]:
    return events(kind, valid=True)


def any_kind(valid: bool) -> st.SearchStrategy[Record]:
    return st.one_of(*(events(k, valid) for k in PAYLOAD_KINDS))


def canon(value: Any) -> Any:
    """A comparable form keeping bool/int/float apart and NaN equal to itself (bitwise)."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int):
        return ("int", value)
    if isinstance(value, float):
        return ("float", struct.pack("<d", value))
    if isinstance(value, dict):
        return ("dict", sorted((k, canon(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return ("seq", [canon(v) for v in value])
    return (type(value).__name__, value)


# --- the codec --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", PAYLOAD_KINDS)
@PER_KIND
@given(data=st.data())
def test_every_payload_kind_round_trips_through_the_codec(kind: str, data: st.DataObject) -> None:
    event = data.draw(schema_events(kind))
    back = CODEC.decode(CODEC.encode(event))
    assert back["payload"][0] == kind
    assert canon(back) == canon(event)


@FEW
@given(event=any_kind(valid=False), slack=st.integers(-3, 3), small=st.integers(0, 400))
def test_size_limit_raises_message_too_large_and_nothing_else(
    event: Record, slack: int, small: int
) -> None:
    full = CODEC.encode(event)
    for limit in (len(full) + slack, small):
        codec = Codec(max_message_bytes=limit)
        if len(full) <= limit:
            assert codec.encode(event) == full
            continue
        with pytest.raises(MessageTooLargeError) as info:
            codec.encode(event)
        assert isinstance(info.value, ValueError)
        assert (info.value.size_bytes, info.value.max_message_bytes) == (len(full), limit)


def test_the_default_limit_is_one_mebibyte_of_encoded_event() -> None:
    f = EventFactory("exp_1_big")
    n = (1 << 20) // 24  # 24 packed bytes per point: just over the limit with the envelope
    big = f.metrics(packed_series("loss", [0.5] * n))
    with pytest.raises(MessageTooLargeError) as info:
        CODEC.encode(big)
    assert info.value.size_bytes > 1 << 20
    fits = f.metrics(packed_series("loss", [0.5] * (n - 20)))
    assert len(CODEC.encode(fits)) <= 1 << 20


def _mutate(data: bytes, draw: Callable[[st.SearchStrategy[Any]], Any]) -> bytes:
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, max(len(out) - 1, 0)))
        op = draw(
            st.sampled_from(
                ["truncate", "flip", "set", "insert", "delete", "append", "schema_id", "duplicate"]
            )
        )
        if op == "truncate":
            del out[at:]
        elif op == "flip" and out:
            out[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and out:
            out[at] = draw(st.integers(0, 255))
        elif op == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del out[at : at + draw(st.integers(1, 8))]
        elif op == "append":
            out += draw(st.binary(min_size=1, max_size=8))
        elif op == "schema_id" and len(out) >= 5:
            out[1:5] = draw(st.binary(min_size=4, max_size=4))
        elif op == "duplicate":
            out[at:at] = out[at : at + draw(st.integers(1, 16))]
    return bytes(out)


def _decode_outcome(data: bytes) -> str:
    """``"ok"`` or the dead-letter reason; any other exception propagates (and fails)."""
    try:
        decode_event(CODEC, data)
    except InvalidEventError as exc:
        return exc.reason
    return "ok"


@MANY
@given(event=any_kind(valid=False), data=st.data())
def test_a_mutated_encoding_decodes_or_raises_decode_error(
    event: Record, data: st.DataObject
) -> None:
    garbled = _mutate(CODEC.encode(event), data.draw)
    try:
        outcome = CODEC.decode(garbled)["payload"][0]
    except DecodeError as exc:
        outcome = exc.reason
    assert outcome in {*PAYLOAD_KINDS, *CODEC_REASONS}
    assert _decode_outcome(garbled) in {"ok", *CODEC_REASONS, "invalid_value"}


@MANY
@given(body=st.binary(max_size=300))
def test_random_avro_behind_a_valid_header_never_escapes_as_another_error(body: bytes) -> None:
    data = struct.pack(">bI", 0, CODEC.schema_id) + body
    assert _decode_outcome(data) in {"ok", "bad_avro", "invalid_value"}


# --- decode_event and the next step: events → store rows ---------------------------------


def _store_rows(event: Event) -> None:
    """Everything the batch write computes from an event before SQL, which must not fail
    for an accepted event: run and producer deltas and the binary COPY of metric chunks."""
    (run,) = reduce_runs([event])
    assert derive_status(run.first_seen_us) in STATUS_COLUMNS
    (producer,) = reduce_producers([event])
    assert producer.events == 1
    copy = b"".join(_metric_copy([event]))
    assert copy.startswith(b"PGCOPY\n\xff\r\n\x00")
    # integer columns: rank is integer, seq/counts bigint, times timestamptz
    assert 0 <= event.rank <= INT32_MAX
    assert 0 <= event.seq <= INT64_MAX
    assert MIN_TIME_US <= event.ts_us <= MAX_TIME_US


@pytest.mark.parametrize("kind", PAYLOAD_KINDS)
@PER_KIND
@given(data=st.data())
def test_decode_accepts_or_rejects_with_invalid_event_error(kind: str, data: st.DataObject) -> None:
    encoded = CODEC.encode(data.draw(schema_events(kind)))
    try:
        event = decode_event(CODEC, encoded)
    except InvalidEventError as exc:
        outcome = (exc.reason, bool(exc.detail))
    else:
        _store_rows(event)
        outcome = ("ok", True)
    assert outcome in {("ok", True), ("invalid_value", True)}


@pytest.mark.parametrize("rank", [-1, INT32_MAX + 1, INT64_MAX])
def test_a_rank_beyond_avro_int_is_dead_lettered_not_a_store_crash(rank: int) -> None:
    # fastavro writes any int64 into the int field; the COPY of metric chunks packs rank
    # as int4 and raised struct.error, which crashed the worker on every restart.
    event = EventFactory("exp_1_rank", rank=0).metrics(packed_series("m", [1.0]))
    assert _decode_outcome(CODEC.encode({**event, "rank": rank})) == "invalid_value"
    assert _decode_outcome(CODEC.encode({**event, "rank": INT32_MAX})) == "ok"


EXPECTED_TYPE: dict[str, type[object]] = {
    "MetricBatch": MetricBatch,
    "ListValue": ListValue,
    "Row": TableBlock,
    "Table": TableBlock,
    "Artifact": Artifact,
    "Tag": Tag,
    "Lifecycle": Lifecycle,
    "LogLines": LogLines,
    "Heartbeat": Heartbeat,
}


def _kind(value: Any) -> bytes:
    for cls, kind in ((bool, b"b"), (int, b"i"), (float, b"f")):
        if isinstance(value, cls):
            return kind
    return b"s"


def _clean(s: str) -> str:
    return s.replace("\x00", "\ufffd")


def _typed_reference(text: str, value_type: str) -> Any:
    """What a schema v3 value of ``value_type`` decodes to: an int (decimal digits, maybe a
    minus, within 64 bits), a float (a decimal literal, as ``repr`` writes a finite float;
    not nan/inf), a bool (True/true/False/false); any other text stays text."""
    if value_type == "int":
        if not (text.removeprefix("-").isascii() and text.removeprefix("-").isdigit()):
            return text
        number = int(text)
        return number if INT64_MIN <= number <= INT64_MAX and len(text) < 21 else text
    if value_type == "float":
        mantissa, e, exponent = text.lower().partition("e")
        digits = mantissa.removeprefix("-").replace(".", "", 1)
        power = exponent[1:] if exponent[:1] in ("+", "-") else exponent
        if not (digits.isascii() and digits.isdigit()) or len(text) > 64 or (
            e and not (power.isascii() and power.isdigit())
        ):
            return text
        real = float(text)
        return real if math.isfinite(real) else text
    if value_type == "bool":
        return {"True": True, "true": True, "False": False, "false": False}.get(text, text)
    return text


def _check_payload(kind: str, raw: Record, got: Any) -> None:
    if kind == "MetricBatch":
        assert len(got.series) == len(raw["series"])
        for s, r in zip(got.series, raw["series"], strict=True):
            steps, times = _unpack("q", r["steps"]), _unpack("q", r["times"])
            assert (s.name, s.n, s.steps, s.values, s.times) == (
                r["name"],
                len(steps),
                r["steps"],
                r["values"],
                r["times"],
            )
            if steps:
                assert (s.step_min, s.step_max) == (min(steps), max(steps))
                assert (s.time_min_us, s.time_max_us) == (min(times), max(times))
            kinds = r["kinds"] or b""
            assert s.kinds == (None if kinds.count(b"f") == len(kinds) else kinds)
            texts = iter(r["texts"])
            expected = tuple(_clean(next(texts)) if k == ord("s") else None for k in kinds)
            assert s.texts == (expected if r["texts"] else None)
    elif kind in ("ListValue", "Row", "Table"):
        if kind == "ListValue":
            columns = [(None, raw["values"])]
            got_columns = [(None, got.values)]
        elif kind == "Row":
            columns = [(c["column"], [c["value"]]) for c in raw["cells"]]
            got_columns = list(got.columns)
        else:
            columns = [(c["name"], c["values"]) for c in raw["columns"]]
            got_columns = list(got.columns)
        assert [c for c, _ in got_columns] == [c for c, _ in columns]
        for (_, values), (_, typed) in zip(columns, got_columns, strict=True):
            assert typed.kinds == b"".join(_kind(v) for v in values)
            assert canon(list(typed.texts)) == canon(
                [_clean(v) if isinstance(v, str) else None for v in values]
            )
            assert canon(list(typed.nums)) == canon(
                [math.nan if isinstance(v, str) else float(v) for v in values]
            )
    elif kind == "Lifecycle":
        assert got == Lifecycle(
            raw["status"],
            raw["parent_run_id"],
            None if raw["display_name"] is None else _clean(raw["display_name"]),
            raw["compute_target"],
            None if raw["error"] is None else _clean(raw["error"]),
            {_clean(k): _typed_reference(_clean(v), raw["property_types"].get(k, "str"))
             for k, v in raw["properties"].items()},
            raw["attempt"],
        )
    elif kind == "Tag":
        value = None if raw["value"] is None else _clean(raw["value"])
        typed = None
        if value is not None and raw["target"] in ("tag", "property"):
            read = _typed_reference(value, raw["value_type"])
            typed = None if isinstance(read, str) else read
        assert got == Tag(raw["key"], value, raw["target"], typed)
        assert type(got.typed) is type(typed)
    elif kind == "LogLines":
        assert got == LogLines(raw["stream"], tuple(_clean(x) for x in raw["lines"]))
    elif kind == "Artifact":
        assert got == Artifact(
            raw["name"], raw["kind"], raw["sha256"], raw["size_bytes"], raw["content_type"],
            raw["metric"],
        )
    else:
        assert got == Heartbeat(raw["dropped_events"])


@pytest.mark.parametrize("kind", PAYLOAD_KINDS)
@PER_KIND
@given(data=st.data())
def test_decode_accepts_every_sdk_event_and_keeps_its_content(
    kind: str, data: st.DataObject
) -> None:
    raw = data.draw(sdk_events(kind))
    event = decode_event(CODEC, CODEC.encode(raw))
    assert (
        event.event_id,
        event.run_id,
        event.experiment,
        event.workspace,
        event.producer_id,
        event.seq,
        event.rank,
        event.ts_us,
    ) == (
        raw["event_id"],
        raw["run_id"],
        raw["experiment"],
        raw["workspace"],
        raw["producer_id"],
        raw["seq"],
        raw["rank"],
        raw["ts"],
    )
    assert type(event.payload) is EXPECTED_TYPE[kind]
    _check_payload(kind, raw["payload"][1], event.payload)
    _store_rows(event)


# --- the run-state fold is independent of arrival order -----------------------------------

T0 = 1_700_000_000_000_000


@st.composite
def lifecycle_histories(draw: Draw) -> list[Event]:
    """Lifecycle events of one run from up to three producers (ranks), SDK-shaped: the first
    events of a producer carry the run's metadata (the same on every rank), Failed and
    Canceled may carry an error, and times may collide; plus heartbeats."""
    rid = "exp_1700000000_0a1b2c3d"
    meta: Record = {
        "display_name": draw(st.none() | short_name),
        "compute_target": draw(st.none() | short_name),
        "properties": draw(st.dictionaries(short_name, short_name, max_size=2)),
    }
    out: list[Record] = []
    for rank in range(draw(st.integers(1, 3))):
        f = EventFactory(rid, rank=rank)
        statuses = draw(st.lists(st.sampled_from(list(STATUS_COLUMNS)), min_size=1, max_size=5))
        carries = draw(st.integers(0, len(statuses)))
        for i, status in enumerate(statuses):
            error = (
                draw(st.none() | st.sampled_from(["boom", "oom", "b", "terminated by SIGTERM"]))
                if status in ("Failed", "Canceled")
                else None
            )
            extra: Record = meta if i < carries else {}
            out.append(
                f.lifecycle(status, error=error, ts_us=T0 + draw(st.integers(0, 6)), **extra)
            )
        out += [
            f.heartbeat(ts_us=T0 + draw(st.integers(0, 9))) for _ in range(draw(st.integers(0, 2)))
        ]
    return [decode_event(CODEC, CODEC.encode(e)) for e in out]


def _run_state(order: list[Event]) -> tuple[Any, ...]:
    (d,) = reduce_runs(order)
    return (
        derive_status(d.first_seen_us),
        sorted(d.first_seen_us.items()),
        d.error,
        d.display_name,
        d.compute_target,
        d.parent_run_id,
        d.properties,
        d.meta_us,
        d.created_us,
        d.last_event_us,
        d.last_heartbeat_us,
    )


@SOME
@given(history=lifecycle_histories(), data=st.data())
def test_run_state_fold_is_the_same_for_every_arrival_order(
    history: list[Event], data: st.DataObject
) -> None:
    expected = _run_state(history)
    for _ in range(3):
        assert _run_state(data.draw(st.permutations(history))) == expected
    status, first_seen, error, *_ = expected
    seen = dict(first_seen)
    assert set(seen) == {e.payload.status for e in history if isinstance(e.payload, Lifecycle)}
    assert all(
        seen[e.payload.status] <= e.ts_us for e in history if isinstance(e.payload, Lifecycle)
    )
    ended = [s for s in ("Completed", "Failed", "Canceled") if s in seen]
    if ended:  # the earliest terminal state sticks, whatever came after it
        assert status == min(
            ended, key=lambda s: (seen[s], ("Completed", "Failed", "Canceled").index(s))
        )
    # the error: of the earliest Failed or Canceled event (a traceback, a cancel's reason)
    with_error = [seen[s] for s in ("Failed", "Canceled") if s in seen]
    earliest = [
        e.payload.error
        for e in history
        if isinstance(e.payload, Lifecycle)
        and e.payload.status in ("Failed", "Canceled")
        and e.ts_us == min(with_error)
    ]
    assert (error in earliest) if earliest else (error is None)


def test_every_permutation_of_a_full_lifecycle_gives_one_run_state() -> None:
    f = EventFactory("exp_1700000000_0a1b2c3d")
    history = [
        decode_event(CODEC, CODEC.encode(e))
        for e in (
            f.lifecycle(
                "NotStarted",
                display_name="ridge",
                compute_target="gpu",
                properties={"a": "1"},
                ts_us=T0,
            ),
            f.lifecycle("Queued", ts_us=T0 + 1),
            f.lifecycle("Preparing", ts_us=T0 + 2),
            f.lifecycle("Running", ts_us=T0 + 3),
            f.lifecycle("Finalizing", ts_us=T0 + 4),
            f.lifecycle("Failed", error="boom", ts_us=T0 + 5),
            f.lifecycle("Completed", ts_us=T0 + 6),
        )
    ]
    states = {repr(_run_state(list(order))) for order in itertools.permutations(history)}
    assert len(states) == 1
    (d,) = reduce_runs(history)
    assert derive_status(d.first_seen_us) == "Failed"
    assert (d.error, d.display_name, d.compute_target, d.properties) == (
        "boom",
        "ridge",
        "gpu",
        {"a": "1"},
    )


def test_canon_tells_types_and_nan_apart() -> None:
    assert canon([1, True, 1.0]) != canon([True, 1, 1.0])
    assert canon(math.nan) == canon(math.nan)
    assert canon(0.0) != canon(-0.0)


@pytest.mark.xfail(
    strict=True,
    reason="known: metadata gaps are filled from whichever later event is merged first; "
    "an order-independent rule needs a first-seen time per metadata field (a migration)",
)
def test_metadata_split_over_lifecycle_events_does_not_depend_on_arrival_order() -> None:
    f = EventFactory("exp_1700000000_0a1b2c3d")
    a, b, c = (
        decode_event(CODEC, CODEC.encode(e))
        for e in (
            f.lifecycle("Queued", compute_target="gpu", ts_us=T0 + 1),
            f.lifecycle("Running", display_name="first", properties={"k": "1"}, ts_us=T0 + 2),
            f.lifecycle("Running", display_name="second", properties={"k": "2"}, ts_us=T0 + 3),
        )
    )
    assert _run_state([a, b, c]) == _run_state([c, a, b])
