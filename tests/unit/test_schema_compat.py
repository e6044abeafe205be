"""Every pair of schema versions in the manifest is backward and forward compatible.

For each ordered pair (writer, reader) — including each version with itself — sample
events of every payload kind written with the writer schema must be readable with the
reader schema by Avro schema resolution. Running it over all ordered pairs covers both
backward (new reads old) and forward (old reads new) compatibility.
"""

from __future__ import annotations

import io
import itertools
from typing import Any

import fastavro
import pytest

from schemas.codec import EVENTS_SUBJECT, NAMESPACE, SchemaVersion, schema_versions
from tests.unit.codec_samples import SAMPLES, envelope

VERSIONS = [v for v in schema_versions() if v.subject == EVENTS_SUBJECT]
PAIRS = list(itertools.product(VERSIONS, repeat=2))


def _roundtrip(writer: SchemaVersion, reader: SchemaVersion, event: dict[str, Any]) -> Any:
    w = fastavro.parse_schema(writer.schema)
    r = fastavro.parse_schema(reader.schema)
    buf = io.BytesIO()
    kind, record = event["payload"]
    fastavro.schemaless_writer(buf, w, {**event, "payload": (f"{NAMESPACE}.{kind}", record)})
    buf.seek(0)
    return fastavro.schemaless_reader(buf, w, r, return_record_name=True)


@pytest.mark.parametrize(
    ("writer", "reader"), PAIRS, ids=[f"w{w.version}-r{r.version}" for w, r in PAIRS]
)
@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_versions_resolve_both_ways(
    writer: SchemaVersion, reader: SchemaVersion, kind: str
) -> None:
    event = envelope((kind, SAMPLES[kind]))
    back = _roundtrip(writer, reader, event)
    assert str(back["event_id"]) == event["event_id"]
    assert back["payload"][0].rsplit(".", 1)[-1] == kind
