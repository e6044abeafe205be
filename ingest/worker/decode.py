"""Decode stage: Kafka message bytes → validated events, or dead-letter reasons.

Everything a message needs to be stored is checked here, before the write transaction,
so one bad message can never fail a batch: it becomes a ``DeadLetter`` and its partition
keeps flowing. DLQ reasons (the ``reason`` header):

- ``empty``, ``bad_magic``, ``unknown_schema_id``, ``bad_avro`` (garbled or truncated
  Avro, trailing bytes) — from ``schemas.codec``;
- ``invalid_value`` — decodes but breaks the contract: bad uuid, empty or over-long
  names, packed arrays of unequal length, kinds/texts that do not match, table columns of
  unequal length, unsafe artifact paths, times outside what PostgreSQL can store, NUL in
  a name, over-size tag values.

Name limits are what keeps the store able to take every event that decodes: a name is at
most 1024 UTF-8 bytes, an id at most 256 characters (≤ 1024 bytes), a producer id at most
64 characters, so an index entry such as (run_id, name, producer_id, …) stays under
PostgreSQL's 2704-byte btree limit. The SDK's own limits (``producer/_validate.py``) are
within these.

NUL characters inside free text (string values, log lines, tag values, errors) cannot be
stored in PostgreSQL ``text``; they are replaced with U+FFFD rather than losing the event.

Typed tags and properties (schema v3 ``Tag.value_type``, ``Lifecycle.property_types``):
the value travels as its Python ``str`` with a type beside it; ``typed_scalar`` reads it
back as that int, float or bool (v1/v2 events, and text that is not what its type says —
a producer's mistake — stay text), and ``scalar_json`` writes it as the JSON the store's
``jsonb`` keeps and reads back as the same type.

Metric series keep their packed little-endian arrays as they came off the wire (the
store writes them with a byteswap, see ``pgcopy``); only min/max are computed here.
"""

from __future__ import annotations

import array
import json
import math
import re
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from ingest.errors import InvalidEventError
from schemas.codec import Codec, DecodeError

__all__ = [
    "Artifact",
    "DeadLetter",
    "Event",
    "Heartbeat",
    "Lifecycle",
    "ListValue",
    "LogLines",
    "MetricBatch",
    "Payload",
    "Series",
    "TableBlock",
    "Tag",
    "Values",
    "decode_event",
    "scalar_json",
    "typed_scalar",
    "values_from_items",
]

MAX_NAME_CHARS: Final = 1024
MAX_NAME_BYTES: Final = 1024
MAX_ID_CHARS: Final = 256
MAX_PRODUCER_ID_CHARS: Final = 64
#: rank is an Avro int (the store's ``integer``), but fastavro writes and reads any int64.
MAX_RANK: Final = 2**31 - 1
#: The SDK enforces the same limit where ``run.tag`` is called.
MAX_TAG_VALUE_BYTES: Final = 8 * 1024
#: Accepted timestamp range (microseconds since the Unix epoch): years 0001..9999.
MIN_TIME_US: Final = -62_135_596_800_000_000
MAX_TIME_US: Final = 253_402_300_799_999_999
_KINDS: Final = b"fibs"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_LITTLE = sys.byteorder == "little"
REASON_INVALID: Final = "invalid_value"
#: The highest try of a submitted run a Lifecycle event may name.
MAX_ATTEMPT: Final = 1000
#: Tag targets (schema v2) whose value may not be null.
_EDITS_NEEDING_VALUE: Final = frozenset({"property", "display_name", "description"})


@dataclass(frozen=True, slots=True)
class Series:
    """One metric series of one event. Arrays are packed little-endian (wire format)."""

    name: str
    n: int
    steps: bytes
    values: bytes
    times: bytes
    kinds: bytes | None
    #: Aligned with the points: the text of string points, None elsewhere; None if no strings.
    texts: tuple[str | None, ...] | None
    step_min: int
    step_max: int
    time_min_us: int
    time_max_us: int


@dataclass(frozen=True, slots=True)
class Values:
    """Typed values of a list, row or table column (see migrations/0001 list_values)."""

    nums: tuple[float, ...]
    kinds: bytes
    texts: tuple[str | None, ...]


@dataclass(frozen=True, slots=True)
class MetricBatch:
    series: tuple[Series, ...]


@dataclass(frozen=True, slots=True)
class ListValue:
    name: str
    values: Values


@dataclass(frozen=True, slots=True)
class TableBlock:
    """A log_row call (``source="row"``, one row) or a log_table call (a block of rows)."""

    name: str
    source: str
    columns: tuple[tuple[str, Values], ...]


@dataclass(frozen=True, slots=True)
class Artifact:
    name: str
    kind: str
    sha256: str
    size_bytes: int
    content_type: str
    #: A typed metric's schema type (``confusion_matrix``…); None for a plain file/image.
    metric: str | None = None


#: A tag's or property's value: text, or (schema v3) the number or boolean it was given as.
Scalar = str | int | float | bool


@dataclass(frozen=True, slots=True)
class Tag:
    """A tag or a metadata edit: ``target`` is tag, untag, property, display_name or
    description (schema v2; v1 events are all tags). ``value`` is the text; ``typed`` the
    int, float or bool it is the text of (schema v3), None for text."""

    key: str
    value: str | None
    target: str = "tag"
    typed: int | float | bool | None = None


@dataclass(frozen=True, slots=True)
class Lifecycle:
    status: str
    parent_run_id: str | None
    display_name: str | None
    compute_target: str | None
    error: str | None
    #: Text, or the int, float or bool a property was given as (schema v3).
    properties: dict[str, Scalar]
    #: Which try of a submitted run (schema v2; 0 for v1 events and the first try).
    attempt: int = 0


@dataclass(frozen=True, slots=True)
class LogLines:
    stream: str
    lines: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Heartbeat:
    dropped_events: int


Payload = (
    MetricBatch | ListValue | TableBlock | Artifact | Tag | Lifecycle | LogLines | Heartbeat
)


@dataclass(frozen=True, slots=True)
class Event:
    event_id: str
    run_id: str
    experiment: str
    workspace: str
    producer_id: str
    seq: int
    rank: int
    ts_us: int
    payload: Payload

    @property
    def points(self) -> int:
        p = self.payload
        return sum(s.n for s in p.series) if isinstance(p, MetricBatch) else 0


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A poison message, with everything the DLQ record and the store need."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    reason: str
    detail: str


def _invalid(detail: str) -> InvalidEventError:
    return InvalidEventError(REASON_INVALID, detail)


def _name(value: Any, what: str, max_chars: int = MAX_NAME_CHARS) -> str:
    if not isinstance(value, str) or not value:
        raise _invalid(f"{what} is empty")
    if len(value) > max_chars:
        raise _invalid(f"{what} is {len(value)} characters, over {max_chars}")
    if len(value) * 4 > MAX_NAME_BYTES and len(value.encode()) > MAX_NAME_BYTES:
        raise _invalid(f"{what} is {len(value.encode())} bytes of UTF-8, over {MAX_NAME_BYTES}")
    if "\x00" in value:
        raise _invalid(f"{what} contains NUL")
    return value


def _text(value: str) -> str:
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def _time(us: int, what: str) -> int:
    if not MIN_TIME_US <= us <= MAX_TIME_US:
        raise _invalid(f"{what} {us} µs is outside years 1..9999")
    return us


def native_array(packed: bytes, typecode: str) -> array.array[Any]:
    """A packed little-endian wire array in this host's order."""
    out = array.array(typecode)
    out.frombytes(packed)
    if not _LITTLE:
        out.byteswap()
    return out


def _series(raw: dict[str, Any], idx: int) -> Series:
    name = _name(raw["name"], f"series[{idx}].name")
    steps, values, times = raw["steps"], raw["values"], raw["times"]
    n, rem = divmod(len(steps), 8)
    if rem or len(values) != len(steps) or len(times) != len(steps):
        raise _invalid(
            f"series {name!r}: packed arrays of unequal length or not a multiple of 8 "
            f"(steps {len(steps)}, values {len(values)}, times {len(times)} bytes)"
        )
    kinds: bytes | None = raw["kinds"]
    texts_in: list[str] = raw["texts"]
    texts: tuple[str | None, ...] | None = None
    if kinds is not None:
        if len(kinds) != n:
            raise _invalid(f"series {name!r}: {len(kinds)} kinds for {n} points")
        if kinds.translate(None, _KINDS):
            raise _invalid(f"series {name!r}: kinds must be f, i, b or s")
        n_str = kinds.count(b"s")
        if n_str != len(texts_in):
            raise _invalid(f"series {name!r}: {n_str} string points but {len(texts_in)} texts")
        if n_str:
            it = iter(texts_in)
            texts = tuple(_text(next(it)) if k == 115 else None for k in kinds)
        elif kinds.count(b"f") == n:
            kinds = None
    elif texts_in:
        raise _invalid(f"series {name!r}: texts without kinds")
    if n == 0:
        return Series(name, 0, b"", b"", b"", None, None, 0, 0, 0, 0)
    step_arr = native_array(steps, "q")
    time_arr = native_array(times, "q")
    tmin, tmax = min(time_arr), max(time_arr)
    _time(tmin, f"series {name!r} time")
    _time(tmax, f"series {name!r} time")
    return Series(
        name, n, steps, values, times, kinds, texts, min(step_arr), max(step_arr), tmin, tmax
    )


def values_from_items(items: Sequence[Any]) -> Values:
    """Avro value-union items (bool, int, float, str) → typed parallel arrays."""
    nums: list[float] = []
    kinds = bytearray()
    texts: list[str | None] = []
    for item in items:
        if isinstance(item, bool):
            nums.append(1.0 if item else 0.0)
            kinds.append(98)
            texts.append(None)
        elif isinstance(item, int):
            nums.append(float(item))
            kinds.append(105)
            texts.append(None)
        elif isinstance(item, float):
            nums.append(item)
            kinds.append(102)
            texts.append(None)
        elif isinstance(item, str):
            nums.append(math.nan)
            kinds.append(115)
            texts.append(_text(item))
        else:
            raise _invalid(f"unsupported value type {type(item).__name__}")
    return Values(tuple(nums), bytes(kinds), tuple(texts))


def _unique_columns(names: Sequence[str], what: str) -> None:
    if len(set(names)) != len(names):
        raise _invalid(f"{what}: duplicate column names")


def _artifact_name(value: Any) -> str:
    name = _name(value, "artifact name")
    parts = name.split("/")
    if name.startswith("/") or "\\" in name or any(p in ("", ".", "..") for p in parts):
        raise _invalid(f"artifact name {name!r} is not a clean relative POSIX path")
    if _CONTROL.search(name):
        # Served back as a path and in a Content-Disposition header: no line breaks there.
        raise _invalid(f"artifact name {name!r} contains a control character")
    return name


def _attempt(value: int) -> int:
    if not 0 <= value <= MAX_ATTEMPT:
        raise _invalid(f"lifecycle attempt {value} is not in 0..{MAX_ATTEMPT}")
    return value


def _tag_value(value: str | None) -> str | None:
    if value is None:
        return None
    if len(value) * 4 > MAX_TAG_VALUE_BYTES and len(value.encode()) > MAX_TAG_VALUE_BYTES:
        raise _invalid(
            f"tag value is {len(value.encode())} bytes of UTF-8, over {MAX_TAG_VALUE_BYTES}"
        )
    return _text(value)


_INT_TEXT = re.compile(r"-?[0-9]{1,19}")
_FLOAT_TEXT = re.compile(r"-?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]{1,4})?")
_BOOL_TEXT: Final = {"True": True, "true": True, "False": False, "false": False}


def typed_scalar(text: str, value_type: str) -> Scalar:
    """The value a schema v3 tag or property was given as: ``text`` read as ``value_type``
    (str, int, float, bool). Text that is not one (or an int outside 64 bits, a float
    that is not finite) stays text: it is stored, as a v2 reader would store it."""
    if value_type == "int" and _INT_TEXT.fullmatch(text):
        number = int(text)
        if -(2**63) <= number < 2**63:
            return number
    elif value_type == "float" and len(text) <= 64 and _FLOAT_TEXT.fullmatch(text):
        real = float(text)
        if math.isfinite(real):
            return real
    elif value_type == "bool" and text in _BOOL_TEXT:
        return _BOOL_TEXT[text]
    return text


def scalar_json(value: Scalar) -> str:
    """JSON of a tag or property value that PostgreSQL's ``jsonb`` reads back as the same
    type: a float always with a fraction (``jsonb`` keeps numbers as ``numeric`` and
    writes ``1e+20`` back as ``100000000000000000000``, an int to any reader; ``.1f`` is a
    float's exact decimal expansion, so it parses back to the same float)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format(value, ".1f") if value.is_integer() else repr(value)
    return json.dumps(value, ensure_ascii=False)


def _typed(value: str | None, value_type: str) -> int | float | bool | None:
    if value is None or value_type == "str":
        return None
    typed = typed_scalar(value, value_type)
    return None if isinstance(typed, str) else typed


def _payload(kind: str, raw: dict[str, Any]) -> Payload:
    if kind == "MetricBatch":
        return MetricBatch(tuple(_series(s, i) for i, s in enumerate(raw["series"])))
    if kind == "ListValue":
        return ListValue(_name(raw["name"], "list name"), values_from_items(raw["values"]))
    if kind == "Row":
        cols = [(_name(c["column"], "row column"), values_from_items([c["value"]]))
                for c in raw["cells"]]
        if not cols:
            raise _invalid("row has no cells")
        _unique_columns([c for c, _ in cols], "row")
        return TableBlock(_name(raw["name"], "row name"), "row", tuple(cols))
    if kind == "Table":
        cols = [(_name(c["name"], "table column"), values_from_items(c["values"]))
                for c in raw["columns"]]
        if not cols:
            raise _invalid("table has no columns")
        _unique_columns([c for c, _ in cols], "table")
        if len({len(v.nums) for _, v in cols}) != 1:
            raise _invalid("table columns have unequal lengths")
        return TableBlock(_name(raw["name"], "table name"), "table", tuple(cols))
    if kind == "Artifact":
        sha = raw["sha256"]
        if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
            raise _invalid("artifact sha256 must be 64 lowercase hex digits")
        if raw["size_bytes"] < 0:
            raise _invalid("artifact size_bytes is negative")
        return Artifact(
            _artifact_name(raw["name"]), raw["kind"], sha, raw["size_bytes"],
            _name(raw["content_type"], "artifact content_type"), raw.get("metric"),
        )
    if kind == "Tag":
        target = raw.get("target", "tag")
        value = _tag_value(raw["value"])
        if value is None and target in _EDITS_NEEDING_VALUE:
            raise _invalid(f"a {target} edit needs a value")
        kept = target in ("tag", "property")
        typed = _typed(value, raw.get("value_type", "str")) if kept else None
        return Tag(_name(raw["key"], "tag key"), value, target, typed)
    if kind == "Lifecycle":
        parent = raw["parent_run_id"]
        types = raw.get("property_types") or {}
        return Lifecycle(
            status=raw["status"],
            parent_run_id=None if parent is None else _name(parent, "parent_run_id", MAX_ID_CHARS),
            display_name=None if raw["display_name"] is None else _text(raw["display_name"]),
            compute_target=None if raw["compute_target"] is None
            else _name(raw["compute_target"], "compute_target", MAX_ID_CHARS),
            error=None if raw["error"] is None else _text(raw["error"]),
            properties={
                _text(k): typed_scalar(_text(v), types.get(k, "str"))
                for k, v in raw["properties"].items()
            },
            attempt=_attempt(raw.get("attempt", 0)),
        )
    if kind == "LogLines":
        return LogLines(_name(raw["stream"], "log stream"), tuple(_text(x) for x in raw["lines"]))
    if kind == "Heartbeat":
        if raw["dropped_events"] < 0:
            raise _invalid("heartbeat dropped_events is negative")
        return Heartbeat(raw["dropped_events"])
    raise _invalid(f"unknown payload kind {kind!r}")


def decode_event(codec: Codec, data: bytes | None) -> Event:
    """Decode and validate one message value. Raises ``InvalidEventError``."""
    if not data:
        raise InvalidEventError("empty", "message has no value")
    try:
        raw = codec.decode(data)
    except DecodeError as exc:
        raise InvalidEventError(exc.reason, exc.detail) from exc
    try:
        event_id = str(uuid.UUID(raw["event_id"]))
    except (ValueError, TypeError) as exc:
        raise _invalid(f"event_id {raw['event_id']!r} is not a uuid") from exc
    run_id = _name(raw["run_id"], "run_id", MAX_ID_CHARS)
    if raw["seq"] < 0 or not 0 <= raw["rank"] <= MAX_RANK:
        raise _invalid(f"seq must not be negative and rank must be in 0..{MAX_RANK}")
    kind, body = raw["payload"]
    payload = _payload(kind, body)
    if isinstance(payload, Lifecycle) and payload.parent_run_id == run_id:
        raise _invalid("a run cannot be its own parent")
    return Event(
        event_id=event_id,
        run_id=run_id,
        experiment=_name(raw["experiment"], "experiment", MAX_ID_CHARS),
        workspace=_name(raw["workspace"], "workspace", MAX_ID_CHARS),
        producer_id=_name(raw["producer_id"], "producer_id", MAX_PRODUCER_ID_CHARS),
        seq=raw["seq"],
        rank=raw["rank"],
        ts_us=_time(raw["ts"], "ts"),
        payload=payload,
    )
