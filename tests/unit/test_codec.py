"""The shared Confluent-wire Avro codec: round trips, limits and rejected input."""

from __future__ import annotations

import contextlib
import math
import struct
from array import array
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.codec import (
    PAYLOAD_KINDS,
    Codec,
    DecodeError,
    MessageTooLargeError,
    schema_versions,
)
from tests.unit.codec_samples import SAMPLES, envelope, series

CODEC = Codec()


def test_samples_cover_every_payload_kind() -> None:
    assert set(SAMPLES) == set(PAYLOAD_KINDS)


@pytest.mark.parametrize("kind", PAYLOAD_KINDS)
def test_every_payload_kind_round_trips(kind: str) -> None:
    event = envelope((kind, SAMPLES[kind]))
    data = CODEC.encode(event)
    assert data[0] == 0
    assert struct.unpack(">I", data[1:5])[0] == CODEC.schema_id
    back = CODEC.decode(data)
    assert back["payload"][0] == kind
    assert {k: v for k, v in back.items() if k != "payload"} == {
        k: v for k, v in event.items() if k != "payload"
    }
    if kind == "MetricBatch":
        got = array("d")
        got.frombytes(back["payload"][1]["series"][0]["values"])
        assert got[0] == 0.5
        assert math.isnan(got[1])
        assert got[2:] == array("d", [math.inf, -math.inf])
    else:
        assert back["payload"][1] == SAMPLES[kind]


def test_value_unions_keep_bool_int_float_and_str_apart() -> None:
    back = CODEC.decode(CODEC.encode(envelope(("ListValue", SAMPLES["ListValue"]))))
    values = back["payload"][1]["values"]
    assert [type(v) for v in values] == [float, int, bool, str]


def test_oversized_event_is_rejected_at_encode_time() -> None:
    small = Codec(max_message_bytes=1000)
    big = {"series": [series("loss", [0.0] * 200)]}
    with pytest.raises(MessageTooLargeError, match="over the 1000-byte limit") as info:
        small.encode(envelope(("MetricBatch", big)))
    assert info.value.size_bytes > 1000


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"\x00\x00\x00", "empty"),
        (b"\x01\x00\x00\x00\x01rest", "bad_magic"),
        (b"\x00\x00\x00\x03\xe7rest", "unknown_schema_id"),
        (b"\x00\x00\x00\x00\x01\xff\xff\xff\xff\xff\xff", "bad_avro"),
    ],
)
def test_garbage_is_a_decode_error_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        CODEC.decode(data)
    assert info.value.reason == reason


def test_truncated_and_padded_messages_are_rejected() -> None:
    data = CODEC.encode(envelope(("Tag", SAMPLES["Tag"])))
    for bad in (data[:-1], data[: len(data) // 2], data + b"\x00"):
        with pytest.raises(DecodeError) as info:
            CODEC.decode(bad)
        assert info.value.reason == "bad_avro"


def test_manifest_ids_are_unique_and_files_parse() -> None:
    versions = schema_versions()
    assert versions
    assert len({v.schema_id for v in versions}) == len(versions)
    assert len({(v.subject, v.version) for v in versions}) == len(versions)
    assert all(v.schema["type"] == "record" for v in versions)


scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=20),
)


@settings(max_examples=200, deadline=None)
@given(
    name=st.text(min_size=1, max_size=50),
    values=st.lists(scalars, max_size=30),
    seq=st.integers(min_value=0, max_value=2**63 - 1),
    rank=st.integers(min_value=0, max_value=2**31 - 1),
)
def test_list_payload_round_trips_any_values(
    name: str, values: list[Any], seq: int, rank: int
) -> None:
    event = envelope(("ListValue", {"name": name, "values": values}), seq=seq, rank=rank)
    back = CODEC.decode(CODEC.encode(event))
    assert back["payload"] == ("ListValue", {"name": name, "values": values})
    assert [type(v) for v in back["payload"][1]["values"]] == [type(v) for v in values]
    assert (back["seq"], back["rank"]) == (seq, rank)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_escape_as_anything_but_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        CODEC.decode(data)
