"""Documents of the read API: database records → JSON, and their OpenAPI schemas.

Each shape is written once here, as a function and as the JSON Schema that
``/v1/openapi.json`` publishes (``SCHEMAS``); route modules reference the schemas by name
(``ref("RunSummary")``) and list the ones they use in their RouteSpecs.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Final

import asyncpg

from ingest.db.queues import QueueState
from ingest.db.runstatus import STATUS_COLUMNS
from ingest.db.values import iso

__all__ = [
    "RUN_STATUSES",
    "SCHEMAS",
    "list_answer",
    "model_document",
    "queue_state",
    "ref",
    "run_details",
    "run_summary",
    "schemas_for",
]

#: Every status a run can show (NotResponding is derived, never stored).
RUN_STATUSES: Final = (
    "NotStarted", "Queued", "Preparing", "Running", "NotResponding", "Finalizing",
    "CancelRequested", "Completed", "Failed", "Canceled",
)


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def run_summary(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "run_id": row["run_id"],
        "experiment": row["experiment"],
        "workspace": row["workspace"],
        "parent_run_id": row["parent_run_id"],
        "display_name": row["display_name"],
        "status": row["status"],
        "compute_target": row["compute_target"],
        "created_at": iso(row["created_at"]),
        "queued_at": iso(row["queued_at"]),
        "started_at": iso(row["started_at"]),
        "ended_at": iso(row["ended_at"]),
        "tags": _json_object(row["tags"]),
        "description": row["description"],
    }


def run_details(row: asyncpg.Record, *, portal_url: str) -> dict[str, Any]:
    status_times = {
        status: iso(row["queued_at_" if column == "queued_at" else column])
        for status, column in STATUS_COLUMNS.items()
    }
    return {
        **run_summary(row),
        "status_times": status_times,
        "error": row["error"],
        "properties": _json_object(row["properties"]),
        "children": list(row["children"]),
        "last_heartbeat_at": iso(row["last_heartbeat_at"]),
        "dropped_events": int(row["dropped_events"]),
        "number": int(row["number"]),
        "portal_url": portal_url,
        "logged_after_end": int(row["logged_after_end"]),
    }


def model_document(row: asyncpg.Record) -> dict[str, Any]:
    """A registered model version (``ingest/db/models.py``'s ``MODEL_COLUMNS``)."""
    name, version = row["name"], row["version"]
    files: list[dict[str, Any]] = _json_decoded(row["files"]) or []
    return {
        "id": f"{name}:{version}",
        "name": name,
        "version": version,
        "workspace": row["workspace"],
        "run_id": row["run_id"],
        "experiment": row["experiment"],
        "path": row["path"],
        "files": [{"name": f["name"], "sha256": f["sha256"], "size_bytes": int(f["size_bytes"])}
                  for f in files],
        "tags": _json_object(row["tags"]),
        "properties": _json_object(row["properties"]),
        "description": row["description"],
        "created_at": iso(row["created_at"]),
        "url": f"/v1/models/{name}/versions/{version}",
    }


def queue_state(state: QueueState) -> dict[str, Any]:
    document: dict[str, Any] = dataclasses.asdict(state)
    return document


def empty_queue_state(target: str) -> dict[str, Any]:
    """The queue state of a target that has no run yet (only submissions or agents)."""
    return queue_state(QueueState(target, 0, 0, 0, 0, None, None, None, 0, 0, 0))


def _json_object(value: Any) -> dict[str, Any]:
    return dict(_json_decoded(value) or {})


def _json_decoded(value: Any) -> Any:
    # asyncpg returns jsonb as text unless the connection has a codec for it.
    return json.loads(value) if isinstance(value, str) else value


# --- schemas ---------------------------------------------------------------------------------

_TIME: Final = {
    "type": ["string", "null"],
    "format": "date-time",
    "description": "ISO 8601 in UTC, e.g. 2026-11-28T04:21:33.511565+00:00.",
}
_NULLABLE_STRING: Final = {"type": ["string", "null"]}
#: A tag's or property's value: text, or the number or boolean it was given as.
_SCALAR: Final = {"type": ["string", "number", "boolean"]}
_COUNT: Final = {"type": "integer", "minimum": 0}
_SECONDS: Final = {"type": ["number", "null"]}
_VALUE: Final = {
    "description": (
        "A logged value with its type: number (int or float), boolean or string. JSON has "
        "no NaN or infinities: those floats are the strings \"NaN\", \"Infinity\", "
        "\"-Infinity\" — so a string value spelled exactly like one of those three is "
        "the object {\"str\": \"NaN\"}; every other string is itself."
    ),
    "anyOf": [
        {"type": ["number", "boolean", "string", "null"]},
        {"type": "object", "required": ["str"], "additionalProperties": False,
         "properties": {"str": {"type": "string", "enum": ["NaN", "Infinity", "-Infinity"]}}},
    ],
}
_CURSOR: Final = {
    "type": ["string", "null"],
    "description": "Pass as ?cursor= for the next page; null on the last page.",
}

SCHEMAS: Final[dict[str, dict[str, Any]]] = {
    "Value": _VALUE,
    "RunSummary": {
        "type": "object",
        "required": [
            "run_id", "experiment", "workspace", "parent_run_id", "display_name", "status",
            "compute_target", "created_at", "queued_at", "started_at", "ended_at", "tags",
            "description",
        ],
        "properties": {
            "run_id": {"type": "string"},
            "experiment": {"type": "string"},
            "workspace": {"type": "string"},
            "parent_run_id": _NULLABLE_STRING,
            "display_name": _NULLABLE_STRING,
            "status": {"type": "string", "enum": list(RUN_STATUSES)},
            "compute_target": _NULLABLE_STRING,
            "created_at": {**_TIME, "type": "string"},
            "queued_at": _TIME,
            "started_at": _TIME,
            "ended_at": _TIME,
            "tags": {
                "type": "object",
                "additionalProperties": {"type": ["string", "number", "boolean", "null"]},
                "description": "Tag → value: text, or the number or boolean it was given "
                "as (run.tag('epochs', 10) → 10; SDKs before event schema v3 sent text); "
                "null for a tag without value.",
            },
            "description": {
                **_NULLABLE_STRING,
                "description": "Set with run.description = ... (null: never set).",
            },
            "metrics": {
                "type": "object",
                "description": "Only with ?metric=: the run's summary of each series asked "
                "for (a name the run has no series of is left out).",
                "additionalProperties": {
                    "type": "object",
                    "required": ["kind", "count", "last", "min", "max"],
                    "properties": {
                        "kind": {"type": "string", "enum": ["series", "value"]},
                        "count": {"type": "integer", "minimum": 1},
                        "last": ref("Value"),
                        "min": {"type": ["number", "string", "null"]},
                        "max": {"type": ["number", "string", "null"]},
                    },
                },
            },
        },
    },
    "RunDetails": {
        "allOf": [
            ref("RunSummary"),
            {
                "type": "object",
                "required": [
                    "status_times", "error", "properties", "children", "last_heartbeat_at",
                    "dropped_events", "number", "portal_url", "logged_after_end",
                ],
                "properties": {
                    "status_times": {
                        "type": "object",
                        "description": "When the run first reached each status (null: never).",
                        "required": list(STATUS_COLUMNS),
                        "properties": {status: _TIME for status in STATUS_COLUMNS},
                        "additionalProperties": False,
                    },
                    "error": {**_NULLABLE_STRING, "description": "Error text of a Failed "
                              "run, or why a Canceled one was canceled (\"terminated by "
                              "SIGTERM\", \"KeyboardInterrupt (Ctrl-C)\")."},
                    "properties": {
                        "type": "object", "additionalProperties": _SCALAR,
                        "description": "Property → value, typed as tags' values are.",
                    },
                    "children": {
                        "type": "array", "items": {"type": "string"},
                        "description": "Child run ids, oldest first.",
                    },
                    "last_heartbeat_at": _TIME,
                    "dropped_events": {
                        **_COUNT, "description": "Events the SDK reported dropping.",
                    },
                    "number": {
                        "type": "integer", "minimum": 1,
                        "description": "The run's place in its experiment, by creation (1 first).",
                    },
                    "portal_url": {"type": "string"},
                    "logged_after_end": {
                        **_COUNT, "description": "Metric points, list values and table "
                        "cells logged (by their own time) after the run ended: late data of "
                        "other ranks or processes, stored like the rest; 0 while it runs.",
                    },
                    "producers": {
                        "type": "object",
                        "description": "Only with ?producer=ID: for each asked producer "
                        "(an SDK process or run handle) stored for the run, the events "
                        "stored and its highest seq; one not listed has nothing stored yet.",
                        "additionalProperties": {
                            "type": "object", "required": ["events", "max_seq"],
                            "properties": {"events": _COUNT, "max_seq": {"type": "integer"}},
                        },
                    },
                },
            },
        ],
    },
    "RunPage": {
        "type": "object",
        "required": ["runs", "next_cursor"],
        "properties": {
            "runs": {"type": "array", "items": ref("RunSummary")},
            "next_cursor": _CURSOR,
        },
    },
    "Model": {
        "type": "object",
        "description": "A registered model version: versions 1, 2, 3… per workspace and name; "
        "its files are content-addressed, so a version never changes.",
        "required": [
            "id", "name", "version", "workspace", "run_id", "experiment", "path", "files",
            "tags", "properties", "description", "created_at", "url",
        ],
        "properties": {
            "id": {"type": "string", "description": "<name>:<version>."},
            "name": {"type": "string"},
            "version": {"type": "integer", "minimum": 1},
            "workspace": {"type": "string"},
            "run_id": {**_NULLABLE_STRING,
                       "description": "The run it was registered from (null: local files)."},
            "experiment": _NULLABLE_STRING,
            "path": {"type": "string",
                     "description": "The run's file or folder it was registered from (or the "
                     "local path given)."},
            "files": {
                "type": "array",
                "description": "By name; names are relative to the parent of path.",
                "items": {
                    "type": "object",
                    "required": ["name", "sha256", "size_bytes"],
                    "properties": {
                        "name": {"type": "string"},
                        "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                        "size_bytes": _COUNT,
                    },
                },
            },
            "tags": {"type": "object", "additionalProperties": {"type": "string"}},
            "properties": {"type": "object", "additionalProperties": {"type": "string"}},
            "description": _NULLABLE_STRING,
            "created_at": {**_TIME, "type": "string"},
            "url": {"type": "string", "description": "This version's path on the API."},
        },
    },
    "ModelPage": {
        "type": "object",
        "required": ["models", "next_cursor"],
        "properties": {
            "models": {"type": "array", "items": ref("Model")},
            "next_cursor": _CURSOR,
        },
    },
    "QueueState": {
        "type": "object",
        "required": [
            "compute_target", "queued", "preparing", "running", "not_responding",
            "oldest_queued_age_s", "queue_wait_p50_s", "queue_wait_p95_s", "completed_1h",
            "failed_1h", "canceled_1h",
        ],
        "properties": {
            "compute_target": {"type": "string"},
            "queued": _COUNT,
            "preparing": _COUNT,
            "running": {**_COUNT, "description": "Running runs, not responding ones included."},
            "not_responding": _COUNT,
            "oldest_queued_age_s": {
                **_SECONDS, "description": "Age of the oldest queued run (null: none queued).",
            },
            "queue_wait_p50_s": {
                **_SECONDS,
                "description": "Median time from Queued to Preparing/Running over runs that "
                "left the queue in the last 24 h (null: none).",
            },
            "queue_wait_p95_s": _SECONDS,
            "completed_1h": _COUNT,
            "failed_1h": _COUNT,
            "canceled_1h": _COUNT,
        },
    },
}


def list_answer(
    key: str, item_properties: dict[str, Any], *, cursor: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Schema of ``{key: [item, …]}`` (plus ``next_cursor`` when ``cursor`` is given)."""
    properties: dict[str, Any] = {key: {"type": "array", "items": {
        "type": "object", "required": list(item_properties), "properties": item_properties,
    }}}
    if cursor is not None:
        properties["next_cursor"] = cursor
    return {"type": "object", "required": list(properties), "properties": properties}


def schemas_for(*names: str) -> dict[str, dict[str, Any]]:
    """The named component schemas plus those they reference (for a RouteSpec)."""
    out: dict[str, dict[str, Any]] = {}
    pending = list(names)
    while pending:
        name = pending.pop()
        if name in out:
            continue
        out[name] = SCHEMAS[name]
        pending += _references(SCHEMAS[name])
    return out


def _references(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = []
        target = node.get("$ref")
        if isinstance(target, str) and target.startswith("#/components/schemas/"):
            found.append(target.rsplit("/", 1)[1])
        for value in node.values():
            found += _references(value)
        return found
    if isinstance(node, list):
        return [name for item in node for name in _references(item)]
    return []
