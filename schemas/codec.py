"""Confluent-wire-format Avro codec shared by the producer SDK and the ingest workers.

Wire format (what standard Kafka/Avro tooling expects)::

    byte 0      magic, always 0
    bytes 1..4  schema id, big-endian unsigned int (static, from manifest.json)
    bytes 5..   Avro binary of one ``Event`` record, no container header

Schema ids are static: ``manifest.json`` maps each (subject, version) to an id and an
``.avsc`` file. The writer always uses the newest version; the reader accepts every id in
the manifest and resolves it to the newest schema (Avro schema resolution), so a worker
reads events written by older and newer SDKs alike as long as versions stay compatible
(``tests/unit/test_schema_compat.py`` proves it for every pair).

Decoding uses a copy of each schema with logical types stripped: ``ts``/``times`` stay
integer microseconds and ``event_id`` a string, which is what the store wants and avoids
building a ``datetime`` per point. The payload union is written and read in fastavro's
tuple notation, ``(record_name, record)``, e.g. ``("MetricBatch", {...})``; short names
are accepted when encoding and returned when decoding.

Schemas are parsed once per process (module-level, immutable after load).
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import fastavro
import fastavro.read
import fastavro.write

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "EVENTS_SUBJECT",
    "NAMESPACE",
    "PAYLOAD_KINDS",
    "Codec",
    "DecodeError",
    "MessageTooLargeError",
    "SchemaVersion",
    "schema_versions",
]

MAGIC = 0
HEADER = struct.Struct(">bI")
DEFAULT_MAX_MESSAGE_BYTES = 1 << 20
EVENTS_SUBJECT = "runstream.events-value"
NAMESPACE = "dev.runstream.v1"
PAYLOAD_KINDS = (
    "MetricBatch",
    "ListValue",
    "Row",
    "Table",
    "Artifact",
    "Tag",
    "Lifecycle",
    "LogLines",
    "Heartbeat",
)

Event = dict[str, Any]


class DecodeError(ValueError):
    """Bytes that are not a Runstream event; ``reason`` is a short machine-readable tag."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class MessageTooLargeError(ValueError):
    """An encoded event exceeds the message size limit (checked before sending)."""

    def __init__(self, size_bytes: int, max_message_bytes: int) -> None:
        super().__init__(
            f"encoded event is {size_bytes} bytes, over the {max_message_bytes}-byte limit; "
            "log fewer points per call or split the table"
        )
        self.size_bytes = size_bytes
        self.max_message_bytes = max_message_bytes


@dataclass(frozen=True)
class SchemaVersion:
    subject: str
    version: int
    schema_id: int
    schema_text: str

    @property
    def schema(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.schema_text)
        return loaded


def _strip_logical_types(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_strip_logical_types(v) for v in node]
    return node


@cache
def schema_versions() -> tuple[SchemaVersion, ...]:
    """Every schema version in the manifest, ordered by (subject, version)."""
    root = resources.files("schemas")
    manifest = json.loads(root.joinpath("manifest.json").read_text(encoding="utf-8"))
    out: list[SchemaVersion] = []
    for subject, versions in manifest["subjects"].items():
        for entry in versions:
            text = root.joinpath(entry["file"]).read_text(encoding="utf-8")
            # Canonical compact text: what the registry endpoints serve.
            compact = json.dumps(json.loads(text), separators=(",", ":"))
            out.append(SchemaVersion(subject, int(entry["version"]), int(entry["id"]), compact))
    return tuple(sorted(out, key=lambda v: (v.subject, v.version)))


@cache
def _parsed() -> tuple[int, Any, dict[int, Any], Any]:
    """(writer id, writer schema, raw writer schema per id, raw reader schema)."""
    versions = [v for v in schema_versions() if v.subject == EVENTS_SUBJECT]
    newest = versions[-1]
    writer = fastavro.parse_schema(newest.schema)
    raw_writers = {
        v.schema_id: fastavro.parse_schema(_strip_logical_types(v.schema)) for v in versions
    }
    reader = raw_writers[newest.schema_id]
    return newest.schema_id, writer, raw_writers, reader


class Codec:
    """Encode and decode events. Stateless apart from the size limit; safe to share."""

    def __init__(self, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self.max_message_bytes = max_message_bytes
        self.schema_id, self._writer, self._raw_writers, self._reader = _parsed()
        self._header = HEADER.pack(MAGIC, self.schema_id)

    def encode(self, event: Mapping[str, Any]) -> bytes:
        """Encode one event; ``payload`` is ``(kind, record)``. Raises ``MessageTooLargeError``."""
        kind, record = event["payload"]
        datum = dict(event)
        datum["payload"] = (f"{NAMESPACE}.{kind}", record)
        buf = io.BytesIO()
        buf.write(self._header)
        fastavro.write.schemaless_writer(buf, self._writer, datum)
        data = buf.getvalue()
        if len(data) > self.max_message_bytes:
            raise MessageTooLargeError(len(data), self.max_message_bytes)
        return data

    def decode(self, data: bytes) -> Event:
        """Decode one message; ``payload`` comes back as ``(kind, record)``.

        Raises ``DecodeError`` with reason ``empty``, ``bad_magic``, ``unknown_schema_id``
        or ``bad_avro``.
        """
        if len(data) < HEADER.size:
            raise DecodeError("empty", f"{len(data)} bytes is shorter than the 5-byte header")
        magic, schema_id = HEADER.unpack_from(data)
        if magic != MAGIC:
            raise DecodeError("bad_magic", f"magic byte is {magic}, expected 0")
        writer = self._raw_writers.get(schema_id)
        if writer is None:
            raise DecodeError("unknown_schema_id", f"schema id {schema_id} is not in the manifest")
        buf = io.BytesIO(data)
        buf.seek(HEADER.size)
        try:
            decoded = fastavro.read.schemaless_reader(
                buf, writer, self._reader, return_record_name=True
            )
        except Exception as exc:  # fastavro raises many types on truncated/garbled input
            raise DecodeError("bad_avro", f"{type(exc).__name__}: {exc}") from exc
        if buf.tell() != len(data):
            raise DecodeError(
                "bad_avro", f"{len(data) - buf.tell()} trailing bytes after the record"
            )
        if not isinstance(decoded, dict):
            raise DecodeError("bad_avro", "the record did not decode to an object")
        event: Event = decoded
        name, record = event["payload"]
        event["payload"] = (name.rsplit(".", 1)[-1], record)
        return event
