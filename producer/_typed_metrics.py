"""Azure ML's typed metrics: ``log_confusion_matrix``, ``log_accuracy_table``,
``log_residuals`` and ``log_predictions``.

Each takes a JSON document (a ``str`` or a ``dict``) in Azure ML's format::

    {"schema_type": "confusion_matrix", "schema_version": "1.0.0", "data": {...}}

azureml-core stores it unchecked; here it is checked at the call site (``ValueError``
naming the offending field) against the format azureml-core 1.60.0 documents for that
type, so a chart that cannot be drawn is refused while the code that made it is still
running:

- ``confusion_matrix``: ``class_labels`` (C ≥ 1 labels, strings or numbers) and
  ``matrix``, C rows of C numbers.
- ``accuracy_table``: ``class_labels`` (C), ``probability_thresholds`` and
  ``percentile_thresholds`` (M ≥ 1 numbers each), ``probability_tables`` and
  ``percentile_tables`` of shape [C][M][4] (per class, per threshold of that kind:
  TP, FP, TN, FN as integers ≥ 0).
- ``residuals``: ``bin_edges`` (n + 1 numbers) and ``bin_counts`` (n ≥ 1 numbers).
- ``predictions``: ``bin_averages``, ``bin_errors``, ``bin_counts`` (n ≥ 1 numbers each)
  and ``bin_edges`` (n + 1).

A missing ``schema_type`` or ``schema_version`` is filled in (the type of the method, the
version azureml-core documents for it); a ``schema_type`` of another method is refused.
Keys beyond the required ones are kept. Numbers must be finite (JSON has no NaN or
infinity); numpy arrays and scalars are accepted and stored as plain JSON.

What is stored is the canonical JSON (``json.dumps(document, sort_keys=True)``, UTF-8): an
artifact named exactly ``name``, as Azure ML does, with content type
``application/json`` and the artifact's ``metric`` set to the schema type. Its location
in ``get_metrics()`` is ``aml://artifactId/ExperimentRun/dcid.<run id>/<name>``
(``artifact_location``), the string azureml-core returns for a run's artifact-backed
metric.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any, Final

__all__ = [
    "CONTENT_TYPE",
    "SCHEMA_VERSIONS",
    "TYPED_METRICS",
    "artifact_location",
    "parse_typed_metric",
    "typed_metric_json",
]

#: The schema types, as ``Artifact.metric`` (event schema v2) names them.
TYPED_METRICS: Final = ("confusion_matrix", "accuracy_table", "residuals", "predictions")
#: The ``schema_version`` azureml-core 1.60.0's docstrings give each type (filled in if absent).
SCHEMA_VERSIONS: Final = {
    "confusion_matrix": "1.0.0",
    "accuracy_table": "1.0.1",
    "residuals": "1.0.0",
    "predictions": "1.0.0",
}
CONTENT_TYPE: Final = "application/json"
#: Deepest nesting accepted (an accuracy table needs 5 levels; this only stops cycles).
MAX_DEPTH: Final = 32

Json = Any


def artifact_location(run_id: str, name: str) -> str:
    """What ``get_metrics()`` shows for a typed metric: Azure ML's artifact URI shape."""
    return f"aml://artifactId/ExperimentRun/dcid.{run_id}/{name}"


def typed_metric_json(schema_type: str, name: str, value: object) -> bytes:
    """The canonical JSON bytes of ``value`` as a ``schema_type`` metric called ``name``.

    ``value``: a JSON ``str`` or a ``dict``. Raises ``TypeError`` for any other type,
    ``ValueError`` for invalid JSON or a document not in the type's format.
    """
    label = f"{schema_type} {name!r}"
    if isinstance(value, str):
        try:
            parsed = json.loads(value, parse_constant=_no_constant)
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            raise ValueError(f"{label}: Invalid JSON provided: {exc}") from None
    elif isinstance(value, Mapping):
        parsed = value
    else:
        raise TypeError(
            f"{label}: value must be a JSON str or a dict, not {type(value).__name__}"
        )
    try:
        document = _plain(parsed, "value", 0)
        if not isinstance(document, dict):
            raise ValueError(f"the JSON value is a {_kind(document)}, not an object")
        _complete_and_check(schema_type, document)
    except ValueError as exc:
        raise ValueError(f"{label}: {exc}") from None
    return json.dumps(document, sort_keys=True, allow_nan=False).encode()


def parse_typed_metric(data: bytes, what: str) -> dict[str, Any]:
    """A stored typed metric's bytes back as the dict (``ValueError`` if not a JSON object)."""
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise ValueError(f"{what} is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ValueError(f"{what} is a JSON {type(document).__name__}, not an object")
    return document


# ---- plain JSON ---------------------------------------------------------------------------


def _no_constant(constant: str) -> float:
    raise ValueError(f"{constant} is not JSON (JSON has no NaN or infinity)")


def _plain(value: object, path: str, depth: int) -> Json:
    """``value`` as plain JSON data (dict/list/str/int/float/bool/None), numpy arrays and
    scalars converted; non-finite floats and non-JSON objects refused, naming ``path``."""
    if depth > MAX_DEPTH:
        raise ValueError(f"{path} is nested more than {MAX_DEPTH} levels deep")
    if value is None:
        return None
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{path} is {value!r}: JSON has no NaN or infinity")
        return float(value)
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{path} has a key {key!r}: JSON object keys are strings")
            out[str(key)] = _plain(item, f"{path}.{key}", depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [_plain(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
    tolist = getattr(value, "tolist", None)  # numpy arrays and scalars, torch tensors
    if callable(tolist):
        converted = tolist()
        if converted is not value:
            return _plain(converted, path, depth + 1)
    raise ValueError(f"{path} is a {type(value).__name__}, not a JSON value")


def _kind(value: Json) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "list" if isinstance(value, list) else "object"


# ---- the formats --------------------------------------------------------------------------


def _complete_and_check(schema_type: str, document: dict[str, Json]) -> None:
    given = document.setdefault("schema_type", schema_type)
    if given != schema_type:
        raise ValueError(
            f"schema_type is {given!r}, but this method logs {schema_type!r} "
            f"(use the log_{given} method for that)"
            if given in TYPED_METRICS
            else f"schema_type is {given!r}, not {schema_type!r}"
        )
    version = document.setdefault("schema_version", SCHEMA_VERSIONS[schema_type])
    if not isinstance(version, str) or not version:
        raise ValueError(f"schema_version must be a non-empty string like "
                         f"{SCHEMA_VERSIONS[schema_type]!r}, not {version!r}")
    if "data" not in document:
        raise ValueError("data is missing")
    data = document["data"]
    if not isinstance(data, dict):
        raise ValueError(f"data is a {_kind(data)}, not an object")
    _CHECKS[schema_type](data)


def _field(data: dict[str, Json], key: str) -> Json:
    if key not in data:
        raise ValueError(f"data.{key} is missing")
    return data[key]


def _list(data: dict[str, Json], key: str, length: int | None = None, *,
          what: str = "") -> list[Json]:
    value = _field(data, key)
    path = f"data.{key}"
    if not isinstance(value, list):
        raise ValueError(f"{path} is a {_kind(value)}, not a list")
    if length is not None and len(value) != length:
        raise ValueError(f"{path} has {len(value)} items, not {length}{what}")
    if length is None and not value:
        raise ValueError(f"{path} is empty")
    return value


def _numbers(values: list[Json], path: str) -> None:
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError(f"{path}[{i}] is {v!r}, not a number")


def _labels(data: dict[str, Json]) -> int:
    labels = _list(data, "class_labels")
    for i, label in enumerate(labels):
        if isinstance(label, bool) or not isinstance(label, str | int | float):
            raise ValueError(f"data.class_labels[{i}] is {label!r}, not a string or number")
    return len(labels)


def _check_confusion_matrix(data: dict[str, Json]) -> None:
    classes = _labels(data)
    matrix = _list(data, "matrix", classes, what=" (a row per class label)")
    for i, row in enumerate(matrix):
        path = f"data.matrix[{i}]"
        if not isinstance(row, list):
            raise ValueError(f"{path} is a {_kind(row)}, not a list")
        if len(row) != classes:
            raise ValueError(f"{path} has {len(row)} items, not {classes} (one per class "
                             "label: the matrix is square)")
        _numbers(row, path)


def _check_accuracy_table(data: dict[str, Json]) -> None:
    classes = _labels(data)
    for kind in ("probability", "percentile"):
        thresholds = _list(data, f"{kind}_thresholds")
        _numbers(thresholds, f"data.{kind}_thresholds")
        key = f"{kind}_tables"
        tables = _list(data, key, classes, what=" (a table per class label)")
        for c, table in enumerate(tables):
            path = f"data.{key}[{c}]"
            if not isinstance(table, list):
                raise ValueError(f"{path} is a {_kind(table)}, not a list")
            if len(table) != len(thresholds):
                raise ValueError(f"{path} has {len(table)} rows, not {len(thresholds)} (one "
                                 f"per {kind} threshold)")
            for m, row in enumerate(table):
                cell = f"{path}[{m}]"
                if not isinstance(row, list) or len(row) != 4:
                    raise ValueError(f"{cell} is {row!r}, not [TP, FP, TN, FN]")
                for v in row:
                    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                        raise ValueError(f"{cell} is {row!r}: TP, FP, TN and FN must be "
                                         "integers >= 0")


def _check_residuals(data: dict[str, Json]) -> None:
    counts = _list(data, "bin_counts")
    _numbers(counts, "data.bin_counts")
    edges = _list(data, "bin_edges", len(counts) + 1, what=" (one more edge than bin_counts)")
    _numbers(edges, "data.bin_edges")


def _check_predictions(data: dict[str, Json]) -> None:
    counts = _list(data, "bin_counts")
    _numbers(counts, "data.bin_counts")
    for key in ("bin_averages", "bin_errors"):
        _numbers(_list(data, key, len(counts), what=" (one per bin, as bin_counts)"),
                 f"data.{key}")
    edges = _list(data, "bin_edges", len(counts) + 1, what=" (one more edge than bin_counts)")
    _numbers(edges, "data.bin_edges")


_CHECKS: Final[dict[str, Callable[[dict[str, Json]], None]]] = {
    "confusion_matrix": _check_confusion_matrix,
    "accuracy_table": _check_accuracy_table,
    "residuals": _check_residuals,
    "predictions": _check_predictions,
}
