"""Builders of wire-format events for tests and benchmarks (no SDK needed).

Each builder returns the dict ``schemas.codec.Codec.encode`` takes. ``EventFactory`` keeps
the per-producer ``seq`` counter the SDK would keep.
"""

from __future__ import annotations

import array
import itertools
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from schemas.event_ids import new_event_id

__all__ = ["EventFactory", "packed_series"]


def _le(typecode: str, values: Sequence[float] | Sequence[int]) -> bytes:
    arr = array.array(typecode, values)
    if sys.byteorder != "little":
        arr.byteswap()
    return arr.tobytes()


def packed_series(
    name: str,
    values: Sequence[float | int | bool | str],
    *,
    steps: Sequence[int] | None = None,
    times_us: Sequence[int] | None = None,
) -> dict[str, Any]:
    """A MetricBatch series the way the SDK packs it (kinds only when not all floats)."""
    n = len(values)
    nums: list[float] = []
    kinds = bytearray()
    texts: list[str] = []
    for v in values:
        if isinstance(v, bool):
            nums.append(float(v))
            kinds.append(ord("b"))
        elif isinstance(v, int):
            nums.append(float(v))
            kinds.append(ord("i"))
        elif isinstance(v, str):
            nums.append(float("nan"))
            kinds.append(ord("s"))
            texts.append(v)
        else:
            nums.append(float(v))
            kinds.append(ord("f"))
    now = time.time_ns() // 1000
    return {
        "name": name,
        "steps": _le("q", list(range(n)) if steps is None else steps),
        "values": _le("d", nums),
        "times": _le("q", [now + i for i in range(n)] if times_us is None else times_us),
        "kinds": None if kinds.count(b"f") == n else bytes(kinds),
        "texts": texts,
    }


@dataclass
class EventFactory:
    """Envelopes for one producer of one run; ``seq`` counts up from 0 like the SDK's."""

    run_id: str
    experiment: str = "exp"
    workspace: str = "default"
    rank: int = 0
    producer_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    _seq: Iterator[int] = field(default_factory=itertools.count, repr=False)

    def event(self, kind: str, record: dict[str, Any], *, ts_us: int | None = None,
              seq: int | None = None, event_id: str | None = None) -> dict[str, Any]:
        return {
            "event_id": event_id or new_event_id(),
            "run_id": self.run_id,
            "experiment": self.experiment,
            "workspace": self.workspace,
            "producer_id": self.producer_id,
            "seq": next(self._seq) if seq is None else seq,
            "rank": self.rank,
            "ts": time.time_ns() // 1000 if ts_us is None else ts_us,
            "payload": (kind, record),
        }

    def metrics(self, *series: dict[str, Any], **kw: Any) -> dict[str, Any]:
        return self.event("MetricBatch", {"series": list(series)}, **kw)

    def lifecycle(self, status: str, *, parent_run_id: str | None = None,
                  display_name: str | None = None, compute_target: str | None = None,
                  error: str | None = None, properties: dict[str, str] | None = None,
                  property_types: dict[str, str] | None = None,
                  **kw: Any) -> dict[str, Any]:
        """``property_types``: schema v3, the type of each property that is not text."""
        return self.event("Lifecycle", {
            "status": status, "parent_run_id": parent_run_id, "display_name": display_name,
            "compute_target": compute_target, "error": error, "properties": properties or {},
            "property_types": property_types or {},
        }, **kw)

    def list_value(self, name: str, values: Sequence[Any], **kw: Any) -> dict[str, Any]:
        return self.event("ListValue", {"name": name, "values": list(values)}, **kw)

    def row(self, name: str, cells: dict[str, Any], **kw: Any) -> dict[str, Any]:
        return self.event("Row", {"name": name, "cells": [
            {"column": k, "value": v} for k, v in cells.items()]}, **kw)

    def table(self, name: str, columns: dict[str, Sequence[Any]], **kw: Any) -> dict[str, Any]:
        return self.event("Table", {"name": name, "columns": [
            {"name": k, "values": list(v)} for k, v in columns.items()]}, **kw)

    def tag(self, key: str, value: str | None = None, *, target: str = "tag",
            value_type: str = "str", **kw: Any) -> dict[str, Any]:
        """A tag, or with ``target`` an edit: untag, property, display_name, description;
        ``value_type`` (schema v3): what ``value`` is the text of (str, int, float, bool)."""
        return self.event("Tag", {"key": key, "value": value, "target": target,
                                  "value_type": value_type}, **kw)

    def artifact(self, name: str, sha256: str, size_bytes: int, *, kind: str = "FILE",
                 content_type: str = "application/octet-stream", metric: str | None = None,
                 **kw: Any) -> dict[str, Any]:
        return self.event("Artifact", {"name": name, "kind": kind, "sha256": sha256,
                                       "size_bytes": size_bytes, "content_type": content_type,
                                       "metric": metric}, **kw)

    def log_lines(self, stream: str, lines: Sequence[str], **kw: Any) -> dict[str, Any]:
        return self.event("LogLines", {"stream": stream, "lines": list(lines)}, **kw)

    def heartbeat(self, dropped_events: int = 0, **kw: Any) -> dict[str, Any]:
        return self.event("Heartbeat", {"dropped_events": dropped_events}, **kw)
