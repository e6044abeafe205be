"""Typed metrics (``log_confusion_matrix``, ``log_accuracy_table``, ``log_residuals``,
``log_predictions``) through the real stack: SDK → Kafka → worker → PostgreSQL → API →
SDK. What was logged comes back from ``get_metrics()`` as Azure ML's ``aml://`` locations,
with ``populate=True`` as the logged JSON; ``/v1/runs/{id}/files`` marks the files with
their schema type, ``/v1/runs/{id}/metrics`` lists them under ``typed`` (as its OpenAPI
schema says), and the bytes download as stored.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema  # type: ignore[import-untyped]  # no stubs in the dev extras
import pytest

from producer import Experiment, Run
from tests.integration.pipelines import READ_TOKEN, ReadPipeline, call, mismatch
from tests.unit.test_typed_metrics import EXAMPLES, canonical

pytestmark = pytest.mark.integration

NAMES = {
    "confusion_matrix": "confusion matrix",  # a space, as Azure ML's examples name them
    "accuracy_table": "eval/accuracy_table",
    "residuals": "residuals",
    "predictions": "predictions",
}


def location(run_id: str, name: str) -> str:
    return f"aml://artifactId/ExperimentRun/dcid.{run_id}/{name}"


async def get(http: aiohttp.ClientSession, url: str) -> tuple[bytes, str]:
    async with http.get(url, headers={"Authorization": f"Bearer {READ_TOKEN}"}) as r:
        body = await r.read()
        assert r.status == 200, (url, r.status, body[:500])
        return body, r.content_type


async def test_typed_metrics_are_logged_listed_and_read_back(
    read_pipeline: ReadPipeline, tmp_path: Path
) -> None:
    writer = read_pipeline.workspace("writer")
    residuals = copy.deepcopy(EXAMPLES["residuals"])
    del residuals["schema_version"], residuals["schema_type"]  # filled in

    def train() -> tuple[str, str]:
        with Experiment(writer, "typed").start_logging() as run:
            run.log("accuracy", 0.91)
            run.log("accuracy", 0.93)
            run.upload_file("notes.txt", _notes(tmp_path))
            run.log_confusion_matrix(NAMES["confusion_matrix"],
                                     json.dumps(EXAMPLES["confusion_matrix"]))
            run.log_accuracy_table(NAMES["accuracy_table"], EXAMPLES["accuracy_table"],
                                   description="one vs rest")
            run.log_residuals(NAMES["residuals"], residuals)
            run.log_predictions(NAMES["predictions"], EXAMPLES["predictions"])
            with run.child_run("fold 1") as child:
                child.log_predictions("predictions", EXAMPLES["predictions"])
                child_id = child.id
            own = run.get_metrics()  # read-your-writes through the writing handle
            assert own[NAMES["residuals"]] == location(run.id, NAMES["residuals"])
            return run.id, child_id

    run_id, child_id = await call(train)
    await read_pipeline.drained()
    reader = read_pipeline.workspace("reader")
    fetched = await call(Run, Experiment(reader, "typed"), run_id)

    metrics = await call(fetched.get_metrics)
    assert metrics == {"accuracy": [0.91, 0.93],
                       **{name: location(run_id, name) for name in NAMES.values()}}
    populated = await call(fetched.get_metrics, populate=True)
    want = {"accuracy": [0.91, 0.93],
            **{name: EXAMPLES[schema_type] for schema_type, name in NAMES.items()}}
    assert mismatch(populated, want) is None, mismatch(populated, want)
    assert await call(fetched.get_metrics, name=["residuals", "accuracy", "nope"]) == {
        "residuals": location(run_id, "residuals"), "accuracy": [0.91, 0.93]}
    assert await call(fetched.get_metrics, name="predictions", populate=True) == {
        "predictions": EXAMPLES["predictions"]}
    recursive = await call(fetched.get_metrics, name="predictions", recursive=True)
    assert recursive == {child_id: {"predictions": location(child_id, "predictions")},
                         run_id: {"predictions": location(run_id, "predictions")}}

    files = await call(fetched.get_file_names)
    assert sorted(files) == sorted([*NAMES.values(), "notes.txt"])
    target = await call(fetched.download_file, NAMES["confusion_matrix"], tmp_path / "cm.json")
    assert target.read_bytes() == canonical(EXAMPLES["confusion_matrix"])

    api = f"{read_pipeline.api_url}/v1"
    async with aiohttp.ClientSession() as http:
        listing = json.loads((await get(http, f"{api}/runs/{run_id}/files"))[0])
        kinds = {f["name"]: (f["metric"], f["content_type"]) for f in listing["files"]}
        assert kinds == {**{name: (schema_type, "application/json")
                            for schema_type, name in NAMES.items()},
                         "notes.txt": (None, "text/plain")}
        body, content_type = await get(http, f"{api}/runs/{run_id}/files/residuals")
        assert (body, content_type) == (canonical(EXAMPLES["residuals"]), "application/json")

        answer = json.loads((await get(http, f"{api}/runs/{run_id}/metrics"))[0])
        sizes = {f["name"]: (f["sha256"], f["size_bytes"]) for f in listing["files"]}
        assert answer["typed"] == {
            name: {"schema_type": schema_type, "file": name, "sha256": sizes[name][0],
                   "size_bytes": sizes[name][1], "content_type": "application/json"}
            for schema_type, name in NAMES.items()
        }
        assert answer["metrics"] == {"accuracy": [0.91, 0.93]}
        named = json.loads((await get(http, f"{api}/runs/{run_id}/metrics?name=accuracy"))[0])
        assert named == {"metrics": {"accuracy": [0.91, 0.93]}}  # no typed ones: no key
        document = json.loads((await get(http, f"{api}/openapi.json"))[0])
    _validate(document, "/v1/runs/{run_id}/metrics", answer)
    _validate(document, "/v1/runs/{run_id}/metrics", named)


def _notes(tmp_path: Path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text("not a metric\n")
    return path


def _validate(document: dict[str, Any], path: str, body: Any) -> None:
    """``body`` against the 200 answer's schema of GET ``path`` in the OpenAPI document."""
    schema = document["paths"][path]["get"]["responses"]["200"]["content"][
        "application/json"]["schema"]
    assert "typed" in schema["properties"]
    jsonschema.Draft202012Validator({**schema, "components": document["components"]}).validate(
        body)
