"""Events of every payload kind, for the codec tests (test_codec.py, test_schema_compat.py)."""

from __future__ import annotations

import math
import uuid
from array import array
from typing import Any

__all__ = ["SAMPLES", "envelope", "series"]


def envelope(payload: tuple[str, dict[str, Any]], **over: Any) -> dict[str, Any]:
    event = {
        "event_id": str(uuid.uuid4()),
        "run_id": "diabetes_1700000000_0a1b2c3d",
        "experiment": "diabetes",
        "workspace": "default",
        "producer_id": "p-1",
        "seq": 7,
        "rank": 3,
        "ts": 1_700_000_000_123_456,
        "payload": payload,
    }
    event.update(over)
    return event


def series(
    name: str, values: list[float], kinds: bytes | None = None, texts: list[str] | None = None
) -> dict[str, Any]:
    n = len(values)
    return {
        "name": name,
        "steps": array("q", range(n)).tobytes(),
        "values": array("d", values).tobytes(),
        "times": array("q", [1_700_000_000_000_000 + i for i in range(n)]).tobytes(),
        "kinds": kinds,
        "texts": texts or [],
    }


SAMPLES: dict[str, dict[str, Any]] = {
    "MetricBatch": {"series": [series("loss", [0.5, math.nan, math.inf, -math.inf])]},
    "ListValue": {"name": "accuracies", "values": [0.6, 7, True, "x"]},
    "Row": {
        "name": "Y over X",
        "cells": [{"column": "x", "value": 1}, {"column": "y", "value": 0.4}],
    },
    "Table": {
        "name": "Sine",
        "columns": [
            {"name": "angle", "values": [0.0, 1.0]},
            {"name": "sine", "values": [0.0, 0.84]},
        ],
    },
    "Artifact": {
        "name": "outputs/model.pkl",
        "kind": "FILE",
        "sha256": "ab" * 32,
        "size_bytes": 12,
        "content_type": "application/octet-stream",
        "metric": None,
    },
    "Tag": {"key": "epochs", "value": "10", "target": "tag", "value_type": "int"},
    "Lifecycle": {
        "status": "Running",
        "parent_run_id": None,
        "display_name": "ridge",
        "compute_target": "local",
        "error": None,
        "properties": {"k": "v", "lr": "0.1"},
        "attempt": 0,
        "property_types": {"lr": "float"},
    },
    "LogLines": {"stream": "stdout", "lines": ["epoch 1", "épöch 2 ✓"]},
    "Heartbeat": {"dropped_events": 0},
}
