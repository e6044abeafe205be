"""The read-only Confluent Schema Registry endpoints through the real server, and the proof
that matters: confluent-kafka's own ``DeserializingConsumer`` + ``AvroDeserializer``,
pointed at the API as its registry, decodes what the real SDK wrote to a topic."""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ingest.api.routes.registry import REGISTRY_CONTENT_TYPE
from ingest.stack.kafka import topic_ends
from producer import Experiment, Workspace
from schemas.codec import EVENTS_SUBJECT
from tests.helpers import StackInfo, TopicFactory, unique
from tests.integration.api_servers import API_TOKEN, Api, ApiFactory, error_of

pytestmark = pytest.mark.integration

def manifest_schema(version: int = 2) -> dict[str, Any]:
    text = resources.files("schemas").joinpath(f"event.v{version}.avsc").read_text(
        encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


async def registry_get(http: aiohttp.ClientSession, url: str,
                       status: int = 200) -> Any:
    async with http.get(url) as r:
        assert r.status == status, (url, await r.text())
        assert r.content_type == REGISTRY_CONTENT_TYPE
        return json.loads(await r.text())


async def test_every_endpoint_answers_in_confluent_shapes(
    api: Api, http: aiohttp.ClientSession
) -> None:
    base = api.url
    assert await registry_get(http, f"{base}/subjects") == [EVENTS_SUBJECT]
    assert await registry_get(http, f"{base}/subjects?subjectPrefix=runstream.") == [
        EVENTS_SUBJECT]
    assert await registry_get(http, f"{base}/subjects?subjectPrefix=other") == []
    assert await registry_get(http, f"{base}/subjects/{EVENTS_SUBJECT}/versions") == [1, 2, 3]
    for version, (number, schema_id) in {"1": (1, 1), "2": (2, 2), "3": (3, 3),
                                         "latest": (3, 3), "-1": (3, 3)}.items():
        got = await registry_get(http, f"{base}/subjects/{EVENTS_SUBJECT}/versions/{version}")
        assert set(got) == {"subject", "version", "id", "schema"}
        assert (got["subject"], got["version"], got["id"]) == (EVENTS_SUBJECT, number, schema_id)
        assert json.loads(got["schema"]) == manifest_schema(number)
        raw = await registry_get(
            http, f"{base}/subjects/{EVENTS_SUBJECT}/versions/{version}/schema")
        assert raw == manifest_schema(number)

    for schema_id in (1, 2, 3):
        by_id = await registry_get(
            http, f"{base}/schemas/ids/{schema_id}?subject={EVENTS_SUBJECT}")
        assert set(by_id) == {"schema"}
        assert json.loads(by_id["schema"]) == manifest_schema(schema_id)
        assert await registry_get(
            http, f"{base}/schemas/ids/{schema_id}/schema") == manifest_schema(schema_id)
        assert await registry_get(http, f"{base}/schemas/ids/{schema_id}/versions") == [
            {"subject": EVENTS_SUBJECT, "version": schema_id}]
    assert await registry_get(http, f"{base}/schemas/types") == ["AVRO"]
    assert await registry_get(http, f"{base}/config") == {
        "compatibilityLevel": "FULL_TRANSITIVE"}


@pytest.mark.parametrize(("path", "status", "error_code", "words"), [
    ("/schemas/ids/999", 404, 40403, "Schema 999 not found"),
    ("/schemas/ids/abc", 404, 40403, "Schema abc not found"),
    ("/schemas/ids/999/versions", 404, 40403, "Schema 999 not found"),
    ("/schemas/ids/0/schema", 404, 40403, "Schema 0 not found"),
    ("/subjects/nope/versions", 404, 40401, "Subject 'nope' not found."),
    ("/subjects/nope/versions/1", 404, 40401, "Subject 'nope' not found."),
    ("/subjects/nope/versions/latest/schema", 404, 40401, "Subject 'nope' not found."),
    (f"/subjects/{EVENTS_SUBJECT}/versions/7", 404, 40402, "Version 7 not found."),
    (f"/subjects/{EVENTS_SUBJECT}/versions/0", 422, 42202, "not a valid version"),
    (f"/subjects/{EVENTS_SUBJECT}/versions/first", 422, 42202, "not a valid version"),
    (f"/subjects/{EVENTS_SUBJECT}/versions/99999999999", 422, 42202, "not a valid version"),
])  # fmt: skip
async def test_unknown_ids_subjects_and_versions_get_confluent_errors(
    api: Api, http: aiohttp.ClientSession,
    path: str, status: int, error_code: int, words: str,
) -> None:
    body = await registry_get(http, f"{api.url}{path}", status=status)
    assert set(body) == {"error_code", "message"}
    assert body["error_code"] == error_code
    assert words in body["message"]


async def test_the_registry_is_read_only_and_behind_the_token(
    api_factory: ApiFactory, http: aiohttp.ClientSession
) -> None:
    secured = await api_factory(token=API_TOKEN)
    async with http.post(f"{secured.url}/subjects/{EVENTS_SUBJECT}/versions",
                         headers={"Authorization": f"Bearer {API_TOKEN}"},
                         json={"schema": "{}"}) as r:
        assert r.status == 405
        await error_of(r)  # middleware errors keep Runstream's shape
    async with http.get(f"{secured.url}/schemas/ids/1") as r:
        assert r.status == 401
    async with http.get(f"{secured.url}/schemas/ids/1",
                        headers={"Authorization": f"Bearer {API_TOKEN}"}) as r:
        assert r.status == 200


async def test_openapi_documents_the_registry(api: Api,
                                              http: aiohttp.ClientSession) -> None:
    async with http.get(f"{api.url}/v1/openapi.json") as r:
        paths = (await r.json())["paths"]
    operation = paths["/subjects/{subject}/versions/{version}"]["get"]
    assert set(operation["responses"]) == {"200", "404", "422"}
    assert REGISTRY_CONTENT_TYPE in operation["responses"]["404"]["content"]
    assert "/schemas/ids/{id}" in paths


# -- the round trip ----------------------------------------------------------------------


def consume_with_confluent(bootstrap: str, topic: str, registry_url: str,
                           expected: int) -> list[tuple[str, dict[str, Any]]]:
    """Read ``expected`` messages with stock confluent-kafka tooling (blocking)."""
    from confluent_kafka import DeserializingConsumer
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer
    from confluent_kafka.serialization import StringDeserializer

    registry = SchemaRegistryClient({"url": registry_url})
    consumer = DeserializingConsumer({
        "bootstrap.servers": bootstrap,
        "group.id": unique("confluent-"),
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "key.deserializer": StringDeserializer("utf_8"),
        "value.deserializer": AvroDeserializer(registry),
    })
    out: list[tuple[str, dict[str, Any]]] = []
    try:
        consumer.subscribe([topic])
        for _ in range(600):
            if len(out) >= expected:
                break
            msg = consumer.poll(0.1)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            key, value = msg.key(), msg.value()
            assert isinstance(key, str), key
            assert isinstance(value, dict), value
            out.append((key, value))
    finally:
        consumer.close()
        registry.close()
    return out


async def test_confluent_deserializing_consumer_reads_the_sdk_s_events(
    api: Api, stack: StackInfo, topic_factory: TopicFactory, tmp_path: Path,
) -> None:
    topic = await topic_factory(partitions=2)
    ws = Workspace(kafka_bootstrap=stack.kafka_bootstrap, api_url=api.url,
                   home=tmp_path / "sdk", topic=topic)

    def train() -> str:
        with Experiment(ws, "registry").start_logging(
                display_name="avro", compute_target="cpu", outputs_dir=None) as run:
            run.log("loss", 0.5)
            run.log("loss", math.inf)
            run.log("note", "warm start")
            run.log_list("accuracies", [0.6, 2, True, "n/a"])
            run.tag("selected", "yes")
            run.tag("epochs", 10)
        ws.flush(30.0)
        return run.id

    run_id = await asyncio.to_thread(train)
    await asyncio.to_thread(ws.close, 10.0)
    expected = sum((await topic_ends(stack.kafka_bootstrap, topic)).values())
    records = await asyncio.to_thread(consume_with_confluent, stack.kafka_bootstrap, topic,
                                      api.url, expected)
    assert len(records) == expected >= 5

    producers = set()
    for key, event in records:
        assert key == run_id
        assert set(event) == {"event_id", "run_id", "experiment", "workspace", "producer_id",
                              "seq", "rank", "ts", "payload"}
        assert (event["run_id"], event["experiment"], event["rank"]) == (run_id, "registry", 0)
        uuid.UUID(str(event["event_id"]))
        assert isinstance(event["ts"], datetime)  # logical type timestamp-micros
        assert isinstance(event["payload"], dict)  # the union's branch, as a plain dict
        producers.add(event["producer_id"])
    assert len(producers) == 1
    seqs = sorted(event["seq"] for _, event in records)
    assert seqs == list(range(len(records)))  # gap-free, every event read once

    payloads = [event["payload"] for _, event in records]
    lifecycles = [p for p in payloads if set(p) == {
        "status", "parent_run_id", "display_name", "compute_target", "error", "properties",
        "attempt", "property_types"}]
    assert [p["status"] for p in lifecycles][-1] == "Completed"
    assert any(p["display_name"] == "avro" and p["compute_target"] == "cpu"
               for p in lifecycles)
    series = [s for p in payloads if set(p) == {"series"} for s in p["series"]]
    loss = [s for s in series if s["name"] == "loss"]
    # Packed little-endian arrays come through as bytes: 8 bytes per point.
    assert sum(len(s["steps"]) for s in loss) == 16
    assert all(isinstance(s["values"], bytes) for s in series)
    note = next(s for s in series if s["name"] == "note")
    assert (note["kinds"], note["texts"]) == (b"s", ["warm start"])
    (lst,) = [p for p in payloads if set(p) == {"name", "values"}]
    assert (lst["name"], lst["values"]) == ("accuracies", [0.6, 2, True, "n/a"])
    assert {"key": "selected", "value": "yes", "target": "tag", "value_type": "str"} in payloads
    assert {"key": "epochs", "value": "10", "target": "tag", "value_type": "int"} in payloads
