"""Hyper-parameters on the real stack (issue 15, item 4): tags and properties given as
str, int, float or bool are stored typed (event schema v3, migration 0016) and read back
typed — by the process that wrote them, by another one, through the API and the SQL
views —; filters match them as the README says; ``log_metrics`` logs several series at one
step; and events of older SDKs (schema v1/v2, no types) still read as text.
"""

from __future__ import annotations

import io
import json
import math
from typing import Any

import fastavro
import pytest

from ingest.bench.events import EventFactory
from producer import Experiment, UnknownExperimentWarning
from schemas.codec import EVENTS_SUBJECT, HEADER, NAMESPACE, schema_versions
from tests.integration.pipelines import ReadPipeline, call
from tests.integration.test_ingest_worker import produce

pytestmark = pytest.mark.integration

PROPERTIES: dict[str, Any] = {"lr": 0.1, "epochs": 10, "amp": True, "opt": "adam",
                              "big": 1e20, "tiny": 1e-7, "whole": 3.0}
TAGS: dict[str, Any] = {"batch": 64, "momentum": 0.9, "frozen": False, "name": "ten",
                        "ten": "10", "bare": None}


def typed(values: dict[str, Any]) -> dict[str, tuple[str, Any]]:
    """Each value with its type's name: 1, 1.0, True and "1" are four values here."""
    return {k: (type(v).__name__, v) for k, v in values.items()}


async def test_tags_and_properties_keep_their_types_everywhere(
    read_pipeline: ReadPipeline,
) -> None:
    def train() -> dict[str, Any]:
        ws = read_pipeline.workspace("trainer")
        with Experiment(ws, "sweep").start_logging(properties=PROPERTIES,
                                                   outputs_dir=None) as run:
            for key, value in TAGS.items():
                run.tag(key, value)
            run.tag("nan", math.nan)  # JSON has no NaN: kept as its text
            run.add_properties({"seed": 7})
            run.log_metrics({"loss": 0.25, "acc": 0.875, "epoch": 2}, step=200)
            # Read back by the process that wrote them: it waits for its own events.
            seen = {"tags": run.get_tags(), "properties": run.get_properties(),
                    "details": run.get_details()}
        ws.close(10.0)
        return {"run_id": run.id, **seen}

    mine = await call(train)
    run_id = mine["run_id"]
    want_tags = {**TAGS, "nan": "nan"}
    want_properties = {**PROPERTIES, "seed": 7}
    assert typed(mine["tags"]) == typed(want_tags)
    assert typed(mine["properties"]) == typed(want_properties)
    assert typed(mine["details"]["tags"]) == typed(want_tags)
    assert typed(mine["details"]["properties"]) == typed(want_properties)
    await read_pipeline.drained()

    def other_process() -> dict[str, Any]:
        ws = read_pipeline.workspace("reader")
        exp = Experiment(ws, "sweep")
        fetched = ws.get_run(run_id)

        def ids(**filters: Any) -> list[str]:
            return [r.id for r in exp.get_runs(**filters)]

        return {
            "tags": fetched.get_tags(),
            "properties": fetched.get_properties(),
            "metrics": fetched.get_metrics(),
            # What matches (README "Hyper-parameters"): text equal, numbers equal as numbers,
            # booleans by name in any case.
            "match": {
                "int as int": ids(tags={"batch": 64}),
                "int as text": ids(tags={"batch": "64"}),
                "int as 64.0": ids(tags={"batch": "64.0"}),
                "float": ids(tags={"momentum": 0.9}),
                "bool": ids(tags={"frozen": False}),
                "bool lower": ids(tags={"frozen": "false"}),
                "text": ids(tags={"name": "ten"}),
                "text 10": ids(tags={"ten": 10}),
                "key only": ids(tags="bare"),
                "property float": ids(properties={"lr": 0.1}),
                "property 0.10": ids(properties={"lr": "0.10"}),
                "property int": ids(properties={"epochs": "10"}),
                "property bool": ids(properties={"amp": True}),
                "property big": ids(properties={"big": 1e20}),
                "property text": ids(properties={"opt": "adam"}),
                "property added": ids(properties={"seed": 7}),
                "two at once": ids(tags={"batch": 64, "frozen": False}, properties="lr"),
            },
            "no match": {
                "other int": ids(tags={"batch": 65}),
                "bool is not 0": ids(tags={"frozen": 0}),
                "text is exact": ids(tags={"name": "TEN"}),
                "text 10 is not 10.0": ids(tags={"ten": "10.0"}),
                "number is not text": ids(tags={"batch": "sixty-four"}),
                "property text exact": ids(properties={"opt": "Adam"}),
                "property other": ids(properties={"lr": 0.01}),
            },
        }

    seen = await call(other_process)
    assert typed(seen["tags"]) == typed(want_tags)
    assert typed(seen["properties"]) == typed(want_properties)
    assert seen["metrics"] == {"loss": 0.25, "acc": 0.875, "epoch": 2}
    assert seen["match"] == {k: [run_id] for k in seen["match"]}
    assert seen["no match"] == {k: [] for k in seen["no match"]}

    # The analytics views: typed JSON in runstream.runs; runstream.tags keeps the text
    # beside the typed value.
    [row] = await read_pipeline.rows(
        "SELECT tags::text AS tags, properties::text AS properties FROM runstream.runs "
        "WHERE run_id = $1", run_id)
    assert typed(json.loads(row["tags"])) == typed(want_tags)
    assert typed(json.loads(row["properties"])) == typed(want_properties)
    tag_rows = await read_pipeline.rows(
        "SELECT key, value, value_json::text AS value_json FROM runstream.tags "
        "WHERE run_id = $1 ORDER BY key", run_id)
    assert [(r["key"], r["value"], r["value_json"]) for r in tag_rows] == [
        ("bare", None, None), ("batch", "64", "64"), ("frozen", "False", "false"),
        ("momentum", "0.9", "0.9"), ("name", "ten", '"ten"'), ("nan", "nan", '"nan"'),
        ("ten", "10", '"10"')]

    # log_metrics: three series at one step, in one event.
    stored = await read_pipeline.rows(
        "SELECT name, step_min, step_max, seq FROM runstream_data.metric_chunks "
        "WHERE run_id = $1 ORDER BY name", run_id)
    assert [(r["name"], r["step_min"], r["step_max"]) for r in stored] == [
        ("acc", 200, 200), ("epoch", 200, 200), ("loss", 200, 200)]
    assert len({r["seq"] for r in stored}) == 1


def _encoded_as(version: int, event: dict[str, Any]) -> tuple[bytes, bytes]:
    """``event`` as an SDK of schema ``version`` wrote it (fields it lacks not sent)."""
    [old] = [v for v in schema_versions() if v.subject == EVENTS_SUBJECT and v.version == version]
    kind, record = event["payload"]
    buf = io.BytesIO()
    buf.write(HEADER.pack(0, old.schema_id))
    fastavro.schemaless_writer(buf, fastavro.parse_schema(old.schema),
                               {**event, "payload": (f"{NAMESPACE}.{kind}", record)})
    return event["run_id"].encode(), buf.getvalue()


@pytest.mark.parametrize("version", [1, 2])
async def test_events_of_older_sdks_read_as_text(
    read_pipeline: ReadPipeline, version: int
) -> None:
    run_id = f"legacy_1700000000_0000000{version}"
    f = EventFactory(run_id, experiment="legacy")
    events = [
        f.lifecycle("NotStarted", properties={"lr": "0.1", "epochs": "10"},
                    property_types={"lr": "float", "epochs": "int"}, seq=0),
        f.lifecycle("Running", seq=1),
        f.tag("batch", "64", value_type="int", seq=2),  # v1/v2 writers drop value_type
        f.tag("frozen", "False", value_type="bool", seq=3),
    ]
    await produce(read_pipeline.bootstrap, read_pipeline.topic,
                  [_encoded_as(version, e) for e in events])
    await read_pipeline.drained()

    def read() -> dict[str, Any]:
        run = read_pipeline.workspace("reader").get_run(run_id)
        return {"tags": run.get_tags(), "properties": run.get_properties(),
                "batch": [r.id for r in Experiment(run.experiment.workspace, "legacy")
                          .get_runs(tags={"batch": 64})]}

    seen = await call(read)
    assert typed(seen["tags"]) == typed({"batch": "64", "frozen": "False"})
    assert typed(seen["properties"]) == typed({"lr": "0.1", "epochs": "10"})
    assert seen["batch"] == [run_id]  # the text "64" matches 64 as it always did


async def test_get_runs_of_an_experiment_that_never_logged_warns(
    read_pipeline: ReadPipeline,
) -> None:
    def log() -> None:
        ws = read_pipeline.workspace("trainer")
        with Experiment(ws, "diabetes").start_logging(outputs_dir=None) as run:
            run.log("mse", 3100.0)
        ws.close(10.0)

    def read() -> tuple[list[str], list[str], str]:
        reader = read_pipeline.workspace("reader")
        with pytest.warns(UnknownExperimentWarning) as caught:
            typo = [r.id for r in Experiment(reader, "diabetis").get_runs()]
        right = [r.id for r in Experiment(reader, "diabetes").get_runs()]
        return typo, right, str(caught[0].message)

    await call(log)
    await read_pipeline.drained()  # another process: it sees what is stored
    typo, right, message = await call(read)
    assert typo == []
    assert len(right) == 1
    assert message == ("no run of experiment 'diabetis' exists in workspace 'default': "
                       "get_runs() is empty; did you mean 'diabetes'?")
