"""Azure ML's typed metrics (``log_confusion_matrix``, ``log_accuracy_table``,
``log_residuals``, ``log_predictions``): signatures, the format checks at the call site,
the Artifact event each builds, and how ``get_metrics`` shows them (canned API answers).
The real stack is in tests/integration/test_typed_metrics.py.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import io
import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from producer import Experiment, ReadOnlyRunError, Run, RunEndedError
from producer._typed_metrics import (
    SCHEMA_VERSIONS,
    TYPED_METRICS,
    artifact_location,
    typed_metric_json,
)
from tests.unit.producer_fakes import (
    Answer,
    FakeApi,
    FakeWorkspace,
    MemoryKafka,
    MemoryWorkspace,
    of_kind,
    ok,
    run_details,
    wait_until,
)

RUN_ID = "exp_1700000000_0a1b2c3d"
RUN_PATH = f"/v1/runs/{RUN_ID}"

#: The examples of azureml-core 1.60.0's docstrings (run.py, log_confusion_matrix and co.).
EXAMPLES: dict[str, dict[str, Any]] = {
    "confusion_matrix": {
        "schema_type": "confusion_matrix",
        "schema_version": "1.0.0",
        "data": {
            "class_labels": ["0", "1", "2", "3"],
            "matrix": [[3, 0, 1, 0], [0, 1, 0, 1], [0, 0, 1, 0], [0, 0, 0, 1]],
        },
    },
    "accuracy_table": {
        "schema_type": "accuracy_table",
        "schema_version": "1.0.1",
        "data": {
            "probability_tables": [
                [[82, 118, 0, 0], [75, 31, 87, 7], [66, 9, 109, 16], [46, 2, 116, 36],
                 [0, 0, 118, 82]],
                [[60, 140, 0, 0], [56, 20, 120, 4], [47, 4, 136, 13], [28, 0, 140, 32],
                 [0, 0, 140, 60]],
                [[58, 142, 0, 0], [53, 29, 113, 5], [40, 10, 132, 18], [24, 1, 141, 34],
                 [0, 0, 142, 58]],
            ],
            "percentile_tables": [
                [[82, 118, 0, 0], [82, 67, 51, 0], [75, 26, 92, 7], [48, 3, 115, 34],
                 [3, 0, 118, 79]],
                [[60, 140, 0, 0], [60, 89, 51, 0], [60, 41, 99, 0], [46, 5, 135, 14],
                 [3, 0, 140, 57]],
                [[58, 142, 0, 0], [56, 93, 49, 2], [54, 47, 95, 4], [41, 10, 132, 17],
                 [3, 0, 142, 55]],
            ],
            "probability_thresholds": [0.0, 0.25, 0.5, 0.75, 1.0],
            "percentile_thresholds": [0.0, 0.01, 0.24, 0.98, 1.0],
            "class_labels": ["0", "1", "2"],
        },
    },
    "residuals": {
        "schema_type": "residuals",
        "schema_version": "1.0.0",
        "data": {"bin_edges": [50, 100, 200, 300, 350], "bin_counts": [0.88, 20, 30, 50.99]},
    },
    "predictions": {
        "schema_type": "predictions",
        "schema_version": "1.0.0",
        "data": {
            "bin_averages": [0.25, 0.75],
            "bin_errors": [0.013, 0.042],
            "bin_counts": [56, 34],
            "bin_edges": [0.0, 0.5, 1.0],
        },
    },
}


def example(schema_type: str) -> dict[str, Any]:
    return copy.deepcopy(EXAMPLES[schema_type])


def canonical(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True).encode()


def method(run: Run, schema_type: str) -> Callable[..., None]:
    fn: Callable[..., None] = getattr(run, f"log_{schema_type}")
    return fn


# ---- signatures ------------------------------------------------------------------------


@pytest.mark.parametrize("schema_type", TYPED_METRICS)
def test_signatures_are_azureml_cores(schema_type: str) -> None:
    """azureml-core 1.60.0: ``log_confusion_matrix(self, name, value, description="")``
    and likewise for the other three."""
    params = list(inspect.signature(getattr(Run, f"log_{schema_type}")).parameters.values())
    assert [p.name for p in params] == ["self", "name", "value", "description"]
    assert [p.default for p in params[1:]] == [inspect.Parameter.empty] * 2 + [""]
    assert all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params)


# ---- the format --------------------------------------------------------------------------


@pytest.mark.parametrize("schema_type", TYPED_METRICS)
def test_azures_examples_are_accepted_as_dict_and_as_str(schema_type: str) -> None:
    doc = example(schema_type)
    assert typed_metric_json(schema_type, "m", doc) == canonical(doc)
    assert typed_metric_json(schema_type, "m", json.dumps(doc, indent=4)) == canonical(doc)
    assert doc == EXAMPLES[schema_type]  # the caller's dict is not changed


@pytest.mark.parametrize("schema_type", TYPED_METRICS)
def test_a_missing_schema_type_and_version_are_filled_in(schema_type: str) -> None:
    doc = example(schema_type)
    del doc["schema_type"], doc["schema_version"]
    stored = json.loads(typed_metric_json(schema_type, "m", doc))
    assert stored["schema_type"] == schema_type
    assert stored["schema_version"] == SCHEMA_VERSIONS[schema_type]
    assert SCHEMA_VERSIONS["accuracy_table"] == "1.0.1"
    assert "schema_type" not in doc  # filled into the stored copy only


def test_extra_keys_are_kept_and_numpy_is_plain_json() -> None:
    doc = example("confusion_matrix")
    doc["data"]["matrix"] = np.array(doc["data"]["matrix"], dtype=np.int64)
    doc["data"]["normalized"] = False
    doc["comment"] = "from sklearn"
    stored = json.loads(typed_metric_json("confusion_matrix", "cm", doc))
    assert stored["data"]["matrix"] == EXAMPLES["confusion_matrix"]["data"]["matrix"]
    assert (stored["comment"], stored["data"]["normalized"]) == ("from sklearn", False)
    residuals = {"data": {"bin_edges": np.linspace(0.0, 1.0, 3),
                          "bin_counts": [np.float32(0.5), np.int32(2)]}}
    stored = json.loads(typed_metric_json("residuals", "r", residuals))
    assert stored["data"] == {"bin_edges": [0.0, 0.5, 1.0], "bin_counts": [0.5, 2]}


def _without(schema_type: str, key: str) -> dict[str, Any]:
    doc = example(schema_type)
    del doc["data"][key]
    return doc


def _with(schema_type: str, key: str, value: Any) -> dict[str, Any]:
    doc = example(schema_type)
    doc["data"][key] = value
    return doc


def _accuracy_cell(value: Any) -> dict[str, Any]:
    doc = example("accuracy_table")
    doc["data"]["percentile_tables"][1][2] = value
    return doc


BAD: list[tuple[str, Any, str]] = [
    # the document
    ("confusion_matrix", "{not json", r"confusion_matrix 'm': Invalid JSON provided"),
    ("confusion_matrix", '{"data": NaN}', r"Invalid JSON provided: NaN is not JSON"),
    ("residuals", '{"data": {"bin_edges": [0, 1e400], "bin_counts": [1]}}',
     r"value\.data\.bin_edges\[1\] is inf: JSON has no NaN or infinity"),
    ("confusion_matrix", "[1, 2]", r"the JSON value is a list, not an object"),
    ("confusion_matrix", {**example("confusion_matrix"), "schema_type": "residuals"},
     r"schema_type is 'residuals', but this method logs 'confusion_matrix' "
     r"\(use the log_residuals method"),
    ("predictions", {**example("predictions"), "schema_type": "bar_chart"},
     r"schema_type is 'bar_chart', not 'predictions'"),
    ("predictions", {**example("predictions"), "schema_version": 1},
     r"schema_version must be a non-empty string like '1.0.0', not 1"),
    ("residuals", {"schema_type": "residuals"}, r"^residuals 'm': data is missing$"),
    ("residuals", {"data": [1, 2]}, r"data is a list, not an object"),
    ("confusion_matrix", {"data": {"matrix": [[1]], "class_labels": ["a"]}, 3: "x"},
     r"value has a key 3: JSON object keys are strings"),
    ("confusion_matrix", {"data": {"matrix": [[1]], "class_labels": [{1, 2}]}},
     r"value\.data\.class_labels\[0\] is a set, not a JSON value"),
    # confusion_matrix
    ("confusion_matrix", _without("confusion_matrix", "class_labels"),
     r"data\.class_labels is missing"),
    ("confusion_matrix", _with("confusion_matrix", "class_labels", []),
     r"data\.class_labels is empty"),
    ("confusion_matrix", _with("confusion_matrix", "class_labels", ["0", None, "2", "3"]),
     r"data\.class_labels\[1\] is None, not a string or number"),
    ("confusion_matrix", _without("confusion_matrix", "matrix"), r"data\.matrix is missing"),
    ("confusion_matrix", _with("confusion_matrix", "matrix", [[1, 0], [0, 1]]),
     r"data\.matrix has 2 items, not 4 \(a row per class label\)"),
    ("confusion_matrix", _with("confusion_matrix", "matrix", [[1] * 4, [1] * 4, [1] * 3, [1] * 4]),
     r"data\.matrix\[2\] has 3 items, not 4 \(one per class label: the matrix is square\)"),
    ("confusion_matrix", _with("confusion_matrix", "matrix", [[1] * 4] * 3 + [[1, 1, "x", 1]]),
     r"data\.matrix\[3\]\[2\] is 'x', not a number"),
    ("confusion_matrix", _with("confusion_matrix", "matrix", [[1] * 4] * 3 + [[1, True, 1, 1]]),
     r"data\.matrix\[3\]\[1\] is True, not a number"),
    ("confusion_matrix", _with("confusion_matrix", "matrix", [[1.0] * 4] * 3 + [[math.nan] * 4]),
     r"value\.data\.matrix\[3\]\[0\] is nan: JSON has no NaN or infinity"),
    # accuracy_table
    ("accuracy_table", _without("accuracy_table", "percentile_tables"),
     r"data\.percentile_tables is missing"),
    ("accuracy_table", _without("accuracy_table", "probability_thresholds"),
     r"data\.probability_thresholds is missing"),
    ("accuracy_table", _with("accuracy_table", "class_labels", ["0", "1"]),
     r"data\.probability_tables has 3 items, not 2 \(a table per class label\)"),
    ("accuracy_table", _with("accuracy_table", "percentile_thresholds", [0.0, 0.5, 1.0]),
     r"data\.percentile_tables\[0\] has 5 rows, not 3 \(one per percentile threshold\)"),
    ("accuracy_table", _with("accuracy_table", "probability_thresholds", [0.0, "a"]),
     r"data\.probability_thresholds\[1\] is 'a', not a number"),
    ("accuracy_table", _accuracy_cell([1, 2, 3]),
     r"data\.percentile_tables\[1\]\[2\] is \[1, 2, 3\], not \[TP, FP, TN, FN\]"),
    ("accuracy_table", _accuracy_cell([1, 2, 3, 4.5]),
     r"data\.percentile_tables\[1\]\[2\] is \[1, 2, 3, 4\.5\]: TP, FP, TN and FN must be "
     r"integers >= 0"),
    ("accuracy_table", _accuracy_cell([1, -2, 3, 4]), r"must be integers >= 0"),
    # residuals
    ("residuals", _without("residuals", "bin_counts"), r"data\.bin_counts is missing"),
    ("residuals", _with("residuals", "bin_edges", [1, 2, 3, 4]),
     r"data\.bin_edges has 4 items, not 5 \(one more edge than bin_counts\)"),
    ("residuals", _with("residuals", "bin_counts", []), r"data\.bin_counts is empty"),
    ("residuals", _with("residuals", "bin_counts", "1 2 3 4"),
     r"data\.bin_counts is a string, not a list"),
    # predictions
    ("predictions", _without("predictions", "bin_errors"), r"data\.bin_errors is missing"),
    ("predictions", _with("predictions", "bin_averages", [0.5]),
     r"data\.bin_averages has 1 items, not 2 \(one per bin, as bin_counts\)"),
    ("predictions", _with("predictions", "bin_edges", [0.0, 1.0]),
     r"data\.bin_edges has 2 items, not 3 \(one more edge than bin_counts\)"),
    ("predictions", _with("predictions", "bin_errors", [0.1, None]),
     r"data\.bin_errors\[1\] is None, not a number"),
]


@pytest.mark.parametrize(("schema_type", "value", "match"), BAD)
def test_bad_documents_raise_value_error_naming_the_problem(
    schema_type: str, value: Any, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        typed_metric_json(schema_type, "m", value)


def test_a_value_neither_str_nor_dict_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"value must be a JSON str or a dict, not list"):
        typed_metric_json("residuals", "m", [1, 2])


def test_cycles_are_refused_not_a_recursion_error() -> None:
    doc: dict[str, Any] = {"data": {}}
    doc["data"]["self"] = doc
    with pytest.raises(ValueError, match="nested more than"):
        typed_metric_json("residuals", "m", doc)


def test_the_location_is_azures_artifact_uri() -> None:
    assert artifact_location(RUN_ID, "cm/validation") == (
        f"aml://artifactId/ExperimentRun/dcid.{RUN_ID}/cm/validation"
    )


# ---- the events ------------------------------------------------------------------------


def test_each_method_stages_the_canonical_json_as_a_typed_artifact(
    ws: MemoryWorkspace, kafka: MemoryKafka
) -> None:
    logged = {t: example(t) for t in TYPED_METRICS}
    del logged["residuals"]["schema_version"]
    with Experiment(ws, "exp").start_logging() as run:
        run.log("accuracy", 0.9)
        run.log_confusion_matrix("cm", json.dumps(logged["confusion_matrix"]))
        run.log_accuracy_table("eval/accuracy table", logged["accuracy_table"],
                               description="one vs rest")
        run.log_residuals("residuals", logged["residuals"])
        run.log_predictions(name="predictions", value=logged["predictions"], description="")
    wait_until(
        lambda: any(s["status"] == "Completed" for s in of_kind(kafka.events(), "Lifecycle"))
    )
    artifacts = {a["name"]: a for a in of_kind(kafka.events(), "Artifact")}
    names = {"confusion_matrix": "cm", "accuracy_table": "eval/accuracy table",
             "residuals": "residuals", "predictions": "predictions"}
    assert sorted(artifacts) == sorted(names.values())
    for schema_type, name in names.items():
        want = canonical(EXAMPLES[schema_type])  # residuals: the version filled in
        artifact = artifacts[name]
        assert artifact == {
            "name": name, "kind": "FILE", "sha256": hashlib.sha256(want).hexdigest(),
            "size_bytes": len(want), "content_type": "application/json",
            "metric": schema_type,
        }
        assert (ws.blob_dir / artifact["sha256"]).read_bytes() == want  # the API is unreachable


def test_other_files_carry_no_metric(ws: MemoryWorkspace, kafka: MemoryKafka) -> None:
    with Experiment(ws, "exp").start_logging() as run:
        run.upload_file("a.txt", io.BytesIO(b"x"))
    wait_until(lambda: bool(of_kind(kafka.events(), "Artifact")))
    assert of_kind(kafka.events(), "Artifact")[0]["metric"] is None


def test_bad_calls_raise_at_the_call_site_and_send_nothing(
    ws: MemoryWorkspace, kafka: MemoryKafka
) -> None:
    run = Experiment(ws, "exp").start_logging()
    good = example("residuals")
    with pytest.raises(ValueError, match=r"must not contain '\.\.'"):
        run.log_residuals("../r", good)
    with pytest.raises(ValueError, match="must be a relative POSIX path"):
        run.log_residuals("/r", good)
    with pytest.raises(ValueError, match="metric name must not be empty"):
        run.log_residuals("", good)
    with pytest.raises(ValueError, match="metric name is 256 characters"):
        run.log_residuals("r" * 256, good)
    with pytest.raises(TypeError, match="description must be a str"):
        run.log_residuals("r", good, 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"residuals 'r': data\.bin_counts is missing"):
        run.log_residuals("r", {"data": {"bin_edges": [1, 2]}})
    with pytest.raises(ValueError, match=r"but this method logs 'predictions'"):
        run.log_predictions("p", good)
    run.close(5.0)
    assert of_kind(kafka.events(), "Artifact") == []
    assert not ws.blob_dir.exists() or list(ws.blob_dir.iterdir()) == []


def test_an_ended_run_refuses_typed_metrics(ws: MemoryWorkspace) -> None:
    run = Experiment(ws, "exp").start_logging()
    run.complete()
    with pytest.raises(RunEndedError):
        run.log_confusion_matrix("cm", example("confusion_matrix"))


# ---- reading ---------------------------------------------------------------------------


def typed_entry(name: str, schema_type: str, body: bytes) -> dict[str, Any]:
    return {"schema_type": schema_type, "file": name,
            "sha256": hashlib.sha256(body).hexdigest(), "size_bytes": len(body),
            "content_type": "application/json"}


def test_get_metrics_lists_typed_metrics_as_locations_or_dicts(
    make_ws: Callable[..., FakeWorkspace],
) -> None:
    cm = canonical(EXAMPLES["confusion_matrix"])
    res = canonical(EXAMPLES["residuals"])
    asked: list[list[tuple[str, str]]] = []

    def metrics(params: list[tuple[str, str]]) -> Answer:
        asked.append(params)
        return 200, {"metrics": {"accuracy": [0.9], "zeta": 1},
                     "typed": {"cm": typed_entry("cm", "confusion_matrix", cm),
                               "res": typed_entry("res", "residuals", res)}}

    fake = FakeApi({
        RUN_PATH: ok(run_details(RUN_ID)),
        f"{RUN_PATH}/metrics": metrics,
        f"{RUN_PATH}/files/cm": lambda params: (200, cm, "application/json"),
        f"{RUN_PATH}/files/res": lambda params: (200, res, "application/json"),
    })
    run = make_ws(fake).get_run(RUN_ID)

    got = run.get_metrics()
    assert got == {
        "accuracy": 0.9,
        "cm": f"aml://artifactId/ExperimentRun/dcid.{RUN_ID}/cm",
        "res": f"aml://artifactId/ExperimentRun/dcid.{RUN_ID}/res",
        "zeta": 1,
    }
    assert list(got) == ["accuracy", "cm", "res", "zeta"]
    assert not any("/files/" in r.full_url for r in fake.requests)

    populated = run.get_metrics(populate=True)
    assert populated == {"accuracy": 0.9, "cm": EXAMPLES["confusion_matrix"],
                         "res": EXAMPLES["residuals"], "zeta": 1}
    run.get_metrics(name=["cm", "accuracy"])
    assert asked[-1] == [("name", "cm"), ("name", "accuracy")]


def test_an_answer_without_typed_metrics_reads_as_before(
    make_ws: Callable[..., FakeWorkspace],
) -> None:
    fake = FakeApi({RUN_PATH: ok(run_details(RUN_ID)),
                    f"{RUN_PATH}/metrics": ok({"metrics": {"loss": [1, 2]}})})
    run = make_ws(fake).get_run(RUN_ID)
    assert run.get_metrics(populate=True) == {"loss": [1, 2]}


def test_a_typed_metric_file_that_is_not_json_is_an_api_error(
    make_ws: Callable[..., FakeWorkspace],
) -> None:
    fake = FakeApi({
        RUN_PATH: ok(run_details(RUN_ID)),
        f"{RUN_PATH}/metrics": ok({"metrics": {},
                                   "typed": {"cm": typed_entry("cm", "confusion_matrix", b"")}}),
        f"{RUN_PATH}/files/cm": lambda params: (200, b"\x89PNG", "image/png"),
    })
    run = make_ws(fake).get_run(RUN_ID)
    with pytest.raises(Exception, match=r"typed metric 'cm' is not JSON") as info:
        run.get_metrics(populate=True)
    assert type(info.value).__name__ == "ApiError"


def test_a_fetched_run_cannot_log_typed_metrics(make_ws: Callable[..., FakeWorkspace]) -> None:
    run = make_ws(FakeApi({RUN_PATH: ok(run_details(RUN_ID))})).get_run(RUN_ID)
    with pytest.raises(ReadOnlyRunError):
        run.log_predictions("p", example("predictions"))
