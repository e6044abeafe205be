"""Plain helpers shared by unit and integration tests (fixtures live in the conftest files).

- ``StackInfo``, ``TopicFactory``, ``DbFactory``: what the ``stack``, ``topic_factory`` and
  ``db_factory`` fixtures (tests/conftest.py) give a test, for its annotations;
- ``unique``: a fresh name (topic, group, database, experiment);
- ``unpack_series`` / ``run_points``: decoded ``MetricBatch`` events back to points, as a
  reader would see them.
"""

from __future__ import annotations

import math
import uuid
from array import array
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ingest.settings import Settings

__all__ = ["DbFactory", "StackInfo", "TopicFactory", "run_points", "unique", "unpack_series"]


@dataclass(frozen=True)
class StackInfo:
    """The running local stack (the session's ``stack`` fixture)."""

    settings: Settings
    kafka_bootstrap: str
    db_dsn: str


#: ``await topic_factory(partitions=6)`` → a fresh topic name; its ``.dlq`` exists too.
TopicFactory = Callable[..., Awaitable[str]]
#: ``await db_factory()`` → the DSN of a fresh, empty database.
DbFactory = Callable[[], Awaitable[str]]

# A Series' kind codes, as schemas/event.v1.avsc defines them (f: float, the default).
KIND_INT, KIND_BOOL, KIND_STR = ord("i"), ord("b"), ord("s")


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def unpack_series(s: dict[str, Any]) -> list[tuple[int, Any, int]]:
    """(step, value, time) of one decoded Series, values typed back by kind, as a reader would."""
    steps = array("q", s["steps"]).tolist()
    values = array("d", s["values"]).tolist()
    times = array("q", s["times"]).tolist()
    kinds = s["kinds"] or b"f" * len(steps)
    texts = iter(s["texts"])
    assert len(steps) == len(values) == len(times) == len(kinds)
    out: list[tuple[int, Any, int]] = []
    for step, value, t, kind in zip(steps, values, times, kinds, strict=True):
        shown: Any = value
        if kind == KIND_STR:
            assert math.isnan(value)
            shown = next(texts)
        elif kind == KIND_INT:
            shown = int(value)
        elif kind == KIND_BOOL:
            shown = value == 1.0
        out.append((step, shown, t))
    assert next(texts, None) is None
    return out


def run_points(events: list[dict[str, Any]], run_id: str) -> dict[str, list[tuple[int, Any]]]:
    """{name: [(step, value)]} of one run's decoded events, in (producer, seq) order."""
    out: dict[str, list[tuple[int, Any]]] = {}
    for event in sorted(events, key=lambda e: (e["producer_id"], e["seq"])):
        if event["run_id"] == run_id and event["payload"][0] == "MetricBatch":
            for s in event["payload"][1]["series"]:
                out.setdefault(s["name"], []).extend((st, v) for st, v, _ in unpack_series(s))
    return out
