"""pgcopy: the fast array encoding equals PostgreSQL's binary array format."""

from __future__ import annotations

import array
import math
import random
import struct

import pytest

from ingest.db import pgcopy


def reference_array(values: list[float] | list[int], oid: int) -> bytes:
    fmt = ">q" if oid == pgcopy.INT8_OID else ">d"
    body = b"".join(struct.pack(">i", 8) + struct.pack(fmt, v) for v in values)
    head = struct.pack(">iiiii", 1, 0, oid, len(values), 1) if values else struct.pack(
        ">iii", 0, 0, oid)
    return struct.pack(">i", len(head) + len(body)) + head + body


@pytest.mark.parametrize("n", [0, 1, 7, 1000])
def test_packed_int8_and_float8_arrays(n: int) -> None:
    ints = [random.randint(-(2**63), 2**63 - 1) for _ in range(n)]
    floats = [random.choice([random.random(), math.inf, -math.inf, -0.0, 1e308])
              for _ in range(n)]
    le_ints = array.array("q", ints).tobytes() if n else b""
    le_floats = array.array("d", floats).tobytes() if n else b""
    assert pgcopy.field_packed_array(le_ints, pgcopy.INT8_OID) == reference_array(
        ints, pgcopy.INT8_OID)
    assert pgcopy.field_packed_array(le_floats, pgcopy.FLOAT8_OID) == reference_array(
        floats, pgcopy.FLOAT8_OID)


def test_nan_bits_survive() -> None:
    nan = struct.pack("<d", math.nan)
    field = pgcopy.field_packed_array(nan, pgcopy.FLOAT8_OID)
    assert math.isnan(struct.unpack(">d", field[-8:])[0])


def test_text_array_with_nulls() -> None:
    field = pgcopy.field_text_array(["a", None, "ü"])
    (length,) = struct.unpack_from(">i", field)
    assert length == len(field) - 4
    assert struct.unpack_from(">iiiii", field, 4) == (1, 1, 25, 3, 1)
    assert field[24:] == b"\x00\x00\x00\x01a" + b"\xff\xff\xff\xff" + b"\x00\x00\x00\x02\xc3\xbc"


def test_timestamps_use_the_postgres_epoch() -> None:
    assert pgcopy.field_timestamptz_us(946_684_800_000_000) == struct.pack(">iq", 8, 0)
