"""decode: wire bytes → validated events, or the dead-letter reason a user would see."""

from __future__ import annotations

import io
import json
import math
import os
from typing import Any

import fastavro
import pytest

from ingest.bench.events import EventFactory, packed_series
from ingest.errors import InvalidEventError
from ingest.worker.decode import (
    Artifact,
    Lifecycle,
    ListValue,
    MetricBatch,
    TableBlock,
    Tag,
    decode_event,
    scalar_json,
)
from schemas.codec import EVENTS_SUBJECT, HEADER, NAMESPACE, Codec, schema_versions

CODEC = Codec()


def f() -> EventFactory:
    return EventFactory("exp_1700000000_0123abcd")


def reason_for(data: bytes | None) -> str:
    with pytest.raises(InvalidEventError) as info:
        decode_event(CODEC, data)
    return info.value.reason


def test_metric_batch_keeps_packed_arrays_and_computes_ranges() -> None:
    ev = f().metrics(
        packed_series(
            "loss",
            [0.5, math.nan, 3, True, "warm"],
            steps=[10, 11, 12, 13, 14],
            times_us=[5, 1, 9, 2, 3],
        )
    )
    out = decode_event(CODEC, CODEC.encode(ev))
    assert isinstance(out.payload, MetricBatch)
    (s,) = out.payload.series
    assert (s.name, s.n, s.step_min, s.step_max, s.time_min_us, s.time_max_us) == (
        "loss",
        5,
        10,
        14,
        1,
        9,
    )
    assert s.kinds == b"ffibs"
    assert s.texts == (None, None, None, None, "warm")
    assert out.points == 5


def test_all_float_kinds_are_normalised_to_null() -> None:
    series = packed_series("x", [1.0, 2.0])
    series["kinds"] = b"ff"
    out = decode_event(CODEC, CODEC.encode(f().metrics(series)))
    assert isinstance(out.payload, MetricBatch)
    assert out.payload.series[0].kinds is None


def test_typed_values_of_lists_rows_and_tables() -> None:
    out = decode_event(CODEC, CODEC.encode(f().list_value("l", [True, 2, 0.5, "s"])))
    assert isinstance(out.payload, ListValue)
    v = out.payload.values
    assert v.kinds == b"bifs"
    assert v.nums[:3] == (1.0, 2.0, 0.5)
    assert math.isnan(v.nums[3])
    assert v.texts == (None, None, None, "s")
    row = decode_event(CODEC, CODEC.encode(f().row("r", {"x": 1, "y": "a"})))
    assert isinstance(row.payload, TableBlock)
    assert row.payload.source == "row"
    assert [c for c, _ in row.payload.columns] == ["x", "y"]


def test_nul_in_free_text_is_replaced_not_rejected() -> None:
    out = decode_event(CODEC, CODEC.encode(f().tag("k", "a\x00b")))
    assert isinstance(out.payload, Tag)
    assert out.payload.value == "a\ufffdb"


def test_lifecycle_metadata() -> None:
    ev = f().lifecycle(
        "Queued",
        display_name="ridge",
        compute_target="gpu",
        parent_run_id="exp_1_parent",
        properties={"a": "1"},
    )
    out = decode_event(CODEC, CODEC.encode(ev))
    assert out.payload == Lifecycle("Queued", "exp_1_parent", "ridge", "gpu", None, {"a": "1"})


def _mutate(event: dict[str, Any], **envelope: Any) -> bytes:
    return CODEC.encode({**event, **envelope})


def _bad_series(**changes: Any) -> bytes:
    series = packed_series("m", [1.0, 2.0])
    series.update(changes)
    return CODEC.encode(f().metrics(series))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (None, "empty"),
        (b"\x07" + os.urandom(40), "bad_magic"),
        (b"\x00\x00\x00\x00\x2a" + b"\x02", "unknown_schema_id"),
        (CODEC.encode(EventFactory("r").heartbeat())[:-1], "bad_avro"),
        (CODEC.encode(EventFactory("r").heartbeat()) + b"\x00", "bad_avro"),
        (_bad_series(values=b"\x00" * 8), "invalid_value"),  # 2 steps, 1 value
        (_bad_series(times=b"\x00" * 24), "invalid_value"),
        (_bad_series(steps=b"\x00" * 15, values=b"\x00" * 15, times=b"\x00" * 15), "invalid_value"),
        (_bad_series(kinds=b"fx"), "invalid_value"),
        (_bad_series(kinds=b"fs"), "invalid_value"),  # one string point, no text
        (_bad_series(texts=["orphan"]), "invalid_value"),
        (_bad_series(name=""), "invalid_value"),
        (_bad_series(name="a\x00b"), "invalid_value"),
        (_bad_series(times=(2**62).to_bytes(8, "little") * 2), "invalid_value"),
        (_mutate(EventFactory("r").heartbeat(), event_id="not-a-uuid"), "invalid_value"),
        (_mutate(EventFactory("r").heartbeat(), run_id=""), "invalid_value"),
        (_mutate(EventFactory("r").heartbeat(), seq=-1), "invalid_value"),
        (CODEC.encode(EventFactory("r").table("t", {"a": [1, 2], "b": [1]})), "invalid_value"),
        (CODEC.encode(EventFactory("r").table("t", {})), "invalid_value"),
        (CODEC.encode(EventFactory("r").row("", {"a": 1})), "invalid_value"),
        (CODEC.encode(EventFactory("r").tag("")), "invalid_value"),
        (CODEC.encode(EventFactory("r").artifact("../x", "a" * 64, 1)), "invalid_value"),
        (CODEC.encode(EventFactory("r").artifact("/etc/x", "a" * 64, 1)), "invalid_value"),
        (CODEC.encode(EventFactory("r").artifact("x", "A" * 64, 1)), "invalid_value"),
        (CODEC.encode(EventFactory("r").artifact("x", "a" * 64, -1)), "invalid_value"),
        (CODEC.encode(EventFactory("r").lifecycle("Running", parent_run_id="r")), "invalid_value"),
        (CODEC.encode(EventFactory("r").heartbeat(dropped_events=-3)), "invalid_value"),
    ],
)
def test_poison_gets_a_reason(data: bytes | None, reason: str) -> None:
    assert reason_for(data) == reason


def test_uuid_is_canonicalised() -> None:
    ev = f().heartbeat(event_id="0123456789ABCDEF0123456789ABCDEF")
    assert decode_event(CODEC, CODEC.encode(ev)).event_id == "01234567-89ab-cdef-0123-456789abcdef"


# ---- limits that keep every decoded event storable and every artifact name safe to serve --

SHA = "a" * 64


@pytest.mark.parametrize(
    "name",
    [
        "../x",
        "a/../../b",
        "a/..",
        "/etc/passwd",
        "//server/share",
        "a\\..\\b",
        "C:\\x",
        "a\x00b",
        "x\r\nSet-Cookie: a=b",
        "tab\there",
        "del\x7f",
        "a//b",
        "./a",
        "a/",
        "é" * 513,  # 513 characters but 1026 bytes of UTF-8
    ],
)
def test_unsafe_artifact_names_are_dead_lettered(name: str) -> None:
    assert reason_for(CODEC.encode(f().artifact(name, SHA, 1))) == "invalid_value"


@pytest.mark.parametrize(
    "name", ["outputs/model v2.pkl", "é" * 512, "a..b/..c/d..", "'; DROP TABLE x; --", "%2e%2e/x"]
)
def test_hostile_but_safe_artifact_names_pass(name: str) -> None:
    out = decode_event(CODEC, CODEC.encode(f().artifact(name, SHA, 1)))
    assert isinstance(out.payload, Artifact)
    assert out.payload.name == name


def _named_events(name: str) -> list[dict[str, Any]]:
    return [
        f().metrics(packed_series(name, [1.0])),
        f().list_value(name, [1]),
        f().row("r", {name: 1}),
        f().table(name, {"c": [1]}),
        f().tag(name, "v"),
    ]


def test_names_are_limited_in_utf8_bytes_so_the_store_can_index_them() -> None:
    fits, over = "😀" * 256, "😀" * 257  # 1024 and 1028 bytes, far under 1024 characters
    for event in _named_events(fits):
        decode_event(CODEC, CODEC.encode(event))
    for event in _named_events(over):
        assert reason_for(CODEC.encode(event)) == "invalid_value"


def test_producer_ids_are_short() -> None:
    ok = EventFactory("r", producer_id="p" * 64).heartbeat()
    assert decode_event(CODEC, CODEC.encode(ok)).producer_id == "p" * 64
    long = EventFactory("r", producer_id="p" * 65).heartbeat()
    assert reason_for(CODEC.encode(long)) == "invalid_value"


def test_tag_values_over_8_kib_are_dead_lettered() -> None:
    for fits in ("v" * 8192, "€" * 2730):  # 8192 and 8190 bytes
        out = decode_event(CODEC, CODEC.encode(f().tag("k", fits)))
        assert isinstance(out.payload, Tag)
        assert out.payload.value == fits
    for over in ("v" * 8193, "€" * 2731):  # 8193 bytes each
        assert reason_for(CODEC.encode(f().tag("k", over))) == "invalid_value"


# ---- typed tags and properties (schema v3) -------------------------------------------------


def _encode_as(version: int, event: dict[str, Any]) -> bytes:
    """``event`` as an SDK of schema ``version`` writes it (fields it lacks are not sent)."""
    [old] = [v for v in schema_versions() if v.subject == EVENTS_SUBJECT and v.version == version]
    kind, record = event["payload"]
    buf = io.BytesIO()
    buf.write(HEADER.pack(0, old.schema_id))
    fastavro.schemaless_writer(buf, fastavro.parse_schema(old.schema),
                               {**event, "payload": (f"{NAMESPACE}.{kind}", record)})
    return buf.getvalue()


def test_typed_tags_decode_to_their_type_and_keep_their_text() -> None:
    cases = [("10", "int", 10), ("0.1", "float", 0.1), ("1e+20", "float", 1e20),
             ("True", "bool", True), ("false", "bool", False), ("-7", "int", -7)]
    for text, value_type, typed in cases:
        out = decode_event(CODEC, CODEC.encode(f().tag("k", text, value_type=value_type)))
        assert out.payload == Tag("k", text, "tag", typed)
        assert type(out.payload.typed) is type(typed)
    prop = f().tag("lr", "0.1", target="property", value_type="float")
    assert decode_event(CODEC, CODEC.encode(prop)).payload == Tag("lr", "0.1", "property", 0.1)


def test_a_value_that_is_not_what_its_type_says_stays_text() -> None:
    for text, value_type in [("ten", "int"), ("nan", "float"), ("inf", "float"), ("yes", "bool"),
                             (str(2**63), "int"), ("1_0", "int"), (" 1", "float"), ("", "int")]:
        out = decode_event(CODEC, CODEC.encode(f().tag("k", text, value_type=value_type)))
        assert out.payload == Tag("k", text, "tag", None)
    # A display name or description is text whatever the type says.
    edit = f().tag("display_name", "3", target="display_name", value_type="int")
    out = decode_event(CODEC, CODEC.encode(edit))
    assert out.payload == Tag("display_name", "3", "display_name", None)


def test_typed_properties_of_a_lifecycle_event() -> None:
    ev = f().lifecycle("Running", properties={"lr": "0.1", "epochs": "10", "amp": "True",
                                              "opt": "adam", "bad": "x"},
                       property_types={"lr": "float", "epochs": "int", "amp": "bool",
                                       "bad": "int", "absent": "int"})
    out = decode_event(CODEC, CODEC.encode(ev))
    assert isinstance(out.payload, Lifecycle)
    assert out.payload.properties == {"lr": 0.1, "epochs": 10, "amp": True, "opt": "adam",
                                      "bad": "x"}
    assert [type(v) for v in out.payload.properties.values()] == [float, int, bool, str, str]


@pytest.mark.parametrize("version", [1, 2])
def test_tags_and_properties_of_older_sdks_read_as_text(version: int) -> None:
    """Schema v1/v2 events carry no types: "10" stays the string it always was."""
    tag = f().tag("epochs", "10", value_type="int")
    out = decode_event(CODEC, _encode_as(version, tag))
    assert out.payload == Tag("epochs", "10", "tag", None)
    ev = f().lifecycle("Running", properties={"lr": "0.1"}, property_types={"lr": "float"})
    out = decode_event(CODEC, _encode_as(version, ev))
    assert isinstance(out.payload, Lifecycle)
    assert out.payload.properties == {"lr": "0.1"}


def test_scalar_json_reads_back_as_the_same_type() -> None:
    """PostgreSQL's jsonb keeps numbers as numeric: ``1e+20`` would come back as an int;
    scalar_json writes every float with a fraction, exactly."""
    for value in (0.1, 1e20, 1e300, -0.5, 5e-324, 1e-7, 3.0, 2**53 + 0.0, 10, -(2**63), True,
                  False, "x\"é"):
        text = scalar_json(value)
        back = json.loads(text)
        assert type(back) is type(value)
        assert back == value
    assert scalar_json(1e20) == "100000000000000000000.0"
    assert scalar_json(True) == "true"
