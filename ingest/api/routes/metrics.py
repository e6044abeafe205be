"""``/v1/runs/{run_id}/metrics``: all of a run's metrics in the SDK's shape, and one series
downsampled.

The metrics dict (``run.get_metrics()``): a series logged once → its value; more than once
→ the list of its values in (step, rank, time) order, every rank's points included;
``log_list`` → the list (several calls with one name: concatenated, in logging order);
``log_row``/``log_table`` → ``{column: [values…]}`` with rows in logging order (a cell a
row did not give is null). If one name was used for several of these, tables win over
lists, and lists over series. The answer is assembled as JSON text: float-only series
arrive from PostgreSQL already encoded (``series.merge_float_chunks``), which is what
keeps 100 series x 10,000 points well under a second.

Typed metrics (``run.log_confusion_matrix`` and co.: a file of the run whose ``metric`` is
its schema type) are listed apart, under ``"typed"``: ``{name: {"schema_type", "file",
"sha256", "size_bytes", "content_type"}}``, their JSON being the file ``file`` (always the
metric's name) at ``/v1/runs/{run_id}/files/{file}``. The key is present only when the run
has typed metrics (among the named ones), so an answer without them is unchanged. The SDK
merges them into the metrics dict (as ``aml://…`` locations or the parsed JSON, as Azure
ML does).

One series (``…/metrics/{name}``) is returned exactly when at most ``max_points`` points
match, else as at most ``max_points`` buckets by step range (``series.plan_buckets``)
with count, min/max over finite values, the last value (highest step, then latest time,
then highest rank) and the time range. Before bucketing, chunks not yet summarised into
tiles are summarised when there are more than ``TILE_AFTER_UNTILED_POINTS`` of their
points (the first request after a large upload pays for that once); fewer are read raw.
Tiles that still count chunks since deleted (retention) are rebuilt first.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Final

import asyncpg
from aiohttp import web

from ingest.api.auth import grant_of
from ingest.api.http import RouteSpec
from ingest.api.params import (
    UNAVAILABLE,
    bad_request,
    int_param,
    not_found,
    optional_int_param,
    path_param,
    query_parameter,
    str_param,
    str_params,
)
from ingest.api.routes.runs import RUN_ID_PARAMETER
from ingest.api.shapes import SCHEMAS, ref
from ingest.db.reads import (
    TILE_AFTER_UNTILED_POINTS,
    DatabaseUnavailableError,
    ReadStore,
    SeriesStats,
)
from ingest.db.series import (
    LEVELS,
    MAX_STEP,
    MIN_STEP,
    BucketPlan,
    ChunkHead,
    StepRangeTooWideError,
    merge_float_chunks,
    merge_points,
    plan_buckets,
)
from ingest.db.values import (
    KIND_FLOAT,
    JsonValue,
    dumps,
    float_array_json,
    json_float,
    micros_to_iso,
    typed_value,
    typed_values,
)

__all__ = ["MetricRoutes"]

DEFAULT_MAX_POINTS: Final = 1000
MAX_MAX_POINTS: Final = 100_000
MAX_RANK: Final = 2**31 - 1
#: Queries the series of a whole run is split into (by name), run concurrently.
SERIES_QUERY_PARTS: Final = 2

#: Runs one GET /v1/series may ask about, and how many of them are read at once.
MAX_SERIES_RUNS: Final = 200
MANY_SERIES_CONCURRENCY: Final = 4

#: Up to this many points a series' summary is computed from its points, above from tiles
#: (the same bound is in migration 0012's metric_summaries).
INDEX_POINTS_READ: Final = 1000

_VALUE: Final = ref("Value")
_TYPED_METRIC: Final = {
    "type": "object",
    "required": ["schema_type", "file", "sha256", "size_bytes", "content_type"],
    "properties": {
        "schema_type": {"type": "string",
                        "enum": ["confusion_matrix", "accuracy_table", "residuals",
                                 "predictions"]},
        "file": {"type": "string", "description": "The run's file holding the JSON (the "
                 "metric's name): GET /v1/runs/{run_id}/files/{file}."},
        "sha256": {"type": "string"},
        "size_bytes": {"type": "integer", "minimum": 0},
        "content_type": {"type": "string"},
    },
}
_INDEX: Final = {
    "type": "object",
    "required": ["metrics"],
    "properties": {
        "metrics": {"type": "array", "items": {
            "type": "object",
            "required": ["name", "kind", "count"],
            "properties": {
                "name": {"type": "string"},
                "kind": {"type": "string", "enum": ["series", "value", "list", "table"],
                         "description": "series: run.log repeated (all ranks); value: "
                         "run.log once; list: log_list; table: log_row/log_table. A name "
                         "logged several ways is shown as get_metrics shows it (table over "
                         "list over series)."},
                "count": {"type": "integer", "minimum": 0,
                          "description": "Points, list values or table rows."},
                "last": {"description": "series/value: the last point (highest step, then "
                         "latest time), typed as in the metrics dict."},
                "min": {"type": ["number", "string", "null"],
                        "description": "series/value: the lowest number (null: none)."},
                "max": {"type": ["number", "string", "null"],
                        "description": "series/value: the highest number (null: none)."},
                "columns": {"type": "array", "items": {"type": "string"},
                            "description": "table: its columns, first logged first."},
            },
        }},
        "typed": {"type": "object", "additionalProperties": _TYPED_METRIC},
    },
}
_METRICS: Final = {
    "type": "object",
    "required": ["metrics"],
    "properties": {
        "metrics": {
            "type": "object",
            "description": "Metric name → a value (logged once), a list (series, log_list) "
            "or {column: [values]} (log_row, log_table).",
            "additionalProperties": {
                "anyOf": [
                    _VALUE,
                    {"type": "array", "items": _VALUE},
                    {"type": "object", "additionalProperties": {"type": "array",
                                                                "items": _VALUE}},
                ],
            },
        },
        "typed": {
            "type": "object",
            "description": "Typed metrics (log_confusion_matrix, log_accuracy_table, "
            "log_residuals, log_predictions): name → the file holding its JSON in Azure "
            "ML's format. Present only when there are some.",
            "additionalProperties": _TYPED_METRIC,
        },
    },
}
_TIME: Final = {"type": "string", "format": "date-time"}
_POINT: Final = {
    "type": "object",
    "required": ["step", "value", "rank", "time"],
    "properties": {"step": {"type": "integer"}, "value": _VALUE, "rank": {"type": "integer"},
                   "time": _TIME},
}
_STAT: Final = {"type": ["number", "string", "null"],
                "description": "Over the finite numeric values (null: none)."}
_BUCKET: Final = {
    "type": "object",
    "required": ["step_min", "step_max", "count", "min", "max", "last", "first_time",
                 "last_time"],
    "properties": {
        "step_min": {"type": "integer", "description": "Lowest step present."},
        "step_max": {"type": "integer", "description": "Highest step present."},
        "count": {"type": "integer", "minimum": 1},
        "min": _STAT,
        "max": _STAT,
        "last": {**_VALUE, "description": "The value at the highest step (then latest time)."},
        "first_time": _TIME,
        "last_time": _TIME,
    },
}
_SERIES_COMMON: Final = {
    "name": {"type": "string"},
    "run_id": {"type": "string"},
    "total_points": {"type": "integer", "minimum": 0},
    "downsampled": {"type": "boolean"},
}
_SERIES: Final = {
    "oneOf": [
        {
            "type": "object",
            "required": ["name", "run_id", "total_points", "downsampled", "points"],
            "properties": {**_SERIES_COMMON, "downsampled": {"const": False},
                           "points": {"type": "array", "items": _POINT}},
            "not": {"required": ["buckets"]},
        },
        {
            "type": "object",
            "required": ["name", "run_id", "total_points", "downsampled", "buckets"],
            "properties": {**_SERIES_COMMON, "downsampled": {"const": True},
                           "buckets": {"type": "array", "items": _BUCKET}},
            "not": {"required": ["points"]},
        },
        {
            "type": "object",
            "description": "format=columns: the points or buckets as arrays, one entry per "
            "point (step, value, rank, time_us) or bucket (step_min, step_max, count, min, "
            "max, last, first_time_us, last_time_us); times in microseconds since the epoch.",
            "required": ["name", "run_id", "total_points", "downsampled", "columns"],
            "properties": {**_SERIES_COMMON, "columns": {
                "type": "object",
                "additionalProperties": {"type": "array"},
            }},
            "not": {"anyOf": [{"required": ["points"]}, {"required": ["buckets"]}]},
        },
    ],
}
_FORMAT_PARAMETER: Final = query_parameter(
    "format", "objects (default: a list of point or bucket objects) or columns (one array "
    "per field: several times smaller and faster to read, for charts).",
    {"type": "string", "enum": ["objects", "columns"]})
_INT64: Final = {"type": "integer", "minimum": MIN_STEP, "maximum": MAX_STEP}
_MANY_SERIES: Final = {
    "type": "object",
    "required": ["name", "series"],
    "properties": {
        "name": {"type": "string"},
        "series": {"type": "array", "description": "One per run_id asked, in that order.",
                   "items": {"oneOf": [
                       *_SERIES["oneOf"],
                       {"type": "object", "required": ["run_id", "name", "missing"],
                        "properties": {"run_id": {"type": "string"}, "name": {"type": "string"},
                                       "missing": {"type": "string", "description":
                                                   "Why there is no series: no such run "
                                                   "(or one the token cannot see), or no "
                                                   "series of that name in it."}}},
                   ]}},
    },
}


class MetricRoutes:
    def __init__(self, *, reads: ReadStore) -> None:
        self._reads = reads

    def specs(self) -> list[RouteSpec]:
        schemas = {"Value": SCHEMAS["Value"]}
        return [
            RouteSpec(
                method="GET", path="/v1/runs/{run_id}/metrics", handler=self.metrics,
                operation_id="getRunMetrics",
                summary="All metrics of a run (or the named ones), shaped like "
                "run.get_metrics(). Non-finite floats are the strings NaN, Infinity, "
                "-Infinity; a string value spelled like one of them is {\"str\": \"NaN\"}.",
                responses={**UNAVAILABLE, 200: "The metrics (an unknown name is left out).",
                           400: "A bad parameter.", 404: "No such run."},
                response_content={200: {"application/json": {"schema": _METRICS}}},
                extra={"parameters": [
                    RUN_ID_PARAMETER,
                    query_parameter("name", "Only these metrics (repeat for several).",
                                    {"type": "string", "minLength": 1}, repeatable=True),
                ]},
                schemas=schemas,
            ),
            RouteSpec(
                method="GET", path="/v1/runs/{run_id}/metric-index", handler=self.index,
                operation_id="getRunMetricIndex",
                summary="What a run logged, without its points: each metric's kind and "
                "count, a series' last, min and max (from its tiles, so in milliseconds "
                "for any size), a table's columns; typed metrics as in /metrics.",
                responses={**UNAVAILABLE, 200: "The index, by name.", 404: "No such run."},
                response_content={200: {"application/json": {"schema": _INDEX}}},
                extra={"parameters": [RUN_ID_PARAMETER]},
                schemas=schemas,
            ),
            RouteSpec(
                method="GET", path="/v1/runs/{run_id}/metrics/{name:.+}", handler=self.series,
                operation_id="getRunMetricSeries",
                summary="One metric series: its points, or at most max_points buckets by "
                "step range with count, min, max and last, so spikes stay visible.",
                responses={**UNAVAILABLE, 200: "The series.", 400: "A bad parameter.",
                           404: "No such run, or the run has no such series."},
                response_content={200: {"application/json": {"schema": _SERIES}}},
                extra={"parameters": [
                    RUN_ID_PARAMETER,
                    {"name": "name", "in": "path", "required": True,
                     "description": "The metric's name ('/' need not be escaped).",
                     "schema": {"type": "string", "minLength": 1}},
                    query_parameter(
                        "max_points", "Most points or buckets to return (default "
                        f"{DEFAULT_MAX_POINTS}).",
                        {"type": "integer", "minimum": 1, "maximum": MAX_MAX_POINTS,
                         "default": DEFAULT_MAX_POINTS}),
                    query_parameter("rank", "Only this rank's points.",
                                    {"type": "integer", "minimum": 0, "maximum": MAX_RANK}),
                    query_parameter("step_min", "Lowest step to include.", _INT64),
                    query_parameter("step_max", "Highest step to include.", _INT64),
                    _FORMAT_PARAMETER,
                ]},
                schemas=schemas,
            ),
            RouteSpec(
                method="GET", path="/v1/series", handler=self.many_series,
                operation_id="getSeriesOfRuns",
                summary="One metric series of many runs in one request (overlays): each "
                "as GET /v1/runs/{run_id}/metrics/{name} answers it, in the order asked; a "
                "run that does not exist, that the token cannot see, or that has no such "
                "series is {run_id, name, missing}.",
                responses={**UNAVAILABLE, 200: "The series, one per run_id.",
                           400: "A bad parameter."},
                response_content={200: {"application/json": {"schema": _MANY_SERIES}}},
                extra={"parameters": [
                    query_parameter("name", "The metric's name.",
                                    {"type": "string", "minLength": 1}, required=True),
                    query_parameter("run_id", f"A run (repeat: 1 to {MAX_SERIES_RUNS}).",
                                    {"type": "string", "minLength": 1}, repeatable=True,
                                    required=True),
                    query_parameter(
                        "max_points", "Most points or buckets per run (default "
                        f"{DEFAULT_MAX_POINTS}).",
                        {"type": "integer", "minimum": 1, "maximum": MAX_MAX_POINTS,
                         "default": DEFAULT_MAX_POINTS}),
                    query_parameter("step_min", "Lowest step to include.", _INT64),
                    query_parameter("step_max", "Highest step to include.", _INT64),
                    _FORMAT_PARAMETER,
                ]},
                schemas=schemas,
            ),
        ]

    # -- the metrics dict -------------------------------------------------------------------

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        run_id = path_param(request, "run_id", "run")
        names = str_params(request, "name") or None
        if names is not None and not all(names):
            raise bad_request("parameter 'name' is empty")
        # All series: split by name over two connections, so PostgreSQL formats on two cores.
        parts = 1 if names is not None else SERIES_QUERY_PARTS
        exists, lists, tables, chunks, files = await asyncio.gather(
            self._reads.run_exists(run_id),
            self._reads.list_values(run_id, names),
            self._reads.table_columns(run_id, names),
            self._chunk_heads(run_id, names, parts),
            self._reads.files(run_id),
        )
        if not exists:
            raise not_found(f"no run {run_id!r}")
        fragments = await self._series_fragments(run_id, chunks)
        for name, values in _lists(lists).items():
            fragments[name] = dumps(values).encode()
        for name, columns in _tables(tables).items():
            fragments[name] = dumps(columns).encode()
        body = b",".join(dumps(name).encode() + b":" + fragments[name]
                         for name in sorted(fragments))
        typed = _typed(files, names)
        tail = b',"typed":' + dumps(typed).encode() if typed else b""
        return web.Response(body=b'{"metrics":{' + body + b"}" + tail + b"}",
                            content_type="application/json")

    async def _chunk_heads(
        self, run_id: str, names: list[str] | None, parts: int
    ) -> list[asyncpg.Record]:
        pieces = await asyncio.gather(*(
            self._reads.metric_chunks(run_id, names, part=i, parts=parts) for i in range(parts)
        ))
        return [row for rows in pieces for row in rows]

    async def _series_fragments(
        self, run_id: str, chunks: list[asyncpg.Record]
    ) -> dict[str, bytes]:
        by_name: dict[str, list[asyncpg.Record]] = defaultdict(list)
        for row in chunks:
            by_name[row["name"]].append(row)
        fragments: dict[str, bytes] = {}
        general: list[str] = []
        for name, rows in by_name.items():
            merged = None
            if all(r["values_json"] is not None for r in rows):
                merged = merge_float_chunks([
                    ChunkHead(n=r["n"], step_min=r["step_min"], step_max=r["step_max"],
                              values_json=r["values_json"])
                    for r in rows
                ])
            if merged is None:
                general.append(name)
            else:
                fragments[name] = merged
        if general:
            full: dict[str, list[Any]] = defaultdict(list)
            for r in await self._reads.metric_chunks_full(run_id, general):
                full[r["name"]].append(
                    (r["rank"], r["steps"], r["values"], r["times"], r["kinds"], r["texts"]))
            for name in general:
                values = merge_points(full[name])
                fragments[name] = dumps(values[0] if len(values) == 1 else values).encode()
        return fragments

    # -- the index ---------------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.StreamResponse:
        run_id = path_param(request, "run_id", "run")
        exists, (series, lists, tables), files = await asyncio.gather(
            self._reads.run_exists(run_id), self._reads.metric_index(run_id),
            self._reads.files(run_id))
        if not exists:
            raise not_found(f"no run {run_id!r}")
        entries: dict[str, dict[str, Any]] = {}
        summaries = await self.series_summaries([run_id], series) if series else {}
        for name in series:
            entries[name] = {"name": name, **summaries.get((run_id, name), _summary_entry(None))}
        for row in lists:
            entries[row["name"]] = {"name": row["name"], "kind": "list",
                                    "count": int(row["count"])}
        for row in tables:
            entries[row["name"]] = {"name": row["name"], "kind": "table",
                                    "count": int(row["count"]), "columns": list(row["columns"])}
        document: dict[str, Any] = {"metrics": [entries[n] for n in sorted(entries)]}
        typed = _typed(files, None)
        if typed:
            document["typed"] = typed
        return _json(document)

    async def series_summaries(
        self, run_ids: Sequence[str], names: Sequence[str]
    ) -> dict[tuple[str, str], dict[str, Any]]:
        """Kind, count, last, min and max of each of ``names`` that is a series of one of
        ``run_ids``, by (run_id, name), all in one query (``ReadStore.series_summaries``):
        stored by the worker for runs that have gone quiet, else computed — a series of up
        to ``INDEX_POINTS_READ`` points from its points, a larger one from its tiles and
        the points not yet in them. A larger series with more than
        ``TILE_AFTER_UNTILED_POINTS`` of those (or tiles holding dropped chunks) is tiled
        first, as its own route does. (Also the run lists' ``?metric=`` summaries:
        routes/runs.py.)"""
        rows = list(await self._reads.series_summaries(run_ids, names))
        redo = sorted({(r["run_id"], r["name"]) for r in rows
                       if r["stale"] or r["untiled"] > TILE_AFTER_UNTILED_POINTS})
        if redo:
            for run_id, name in redo:
                await self._reads.tile_series(run_id, name)
            again = await self._reads.series_summaries(sorted({r for r, _ in redo}),
                                                       sorted({n for _, n in redo}))
            fresh = {(r["run_id"], r["name"]): r for r in again}
            rows = [fresh.get((r["run_id"], r["name"]), r) for r in rows]
        return {(r["run_id"], r["name"]): _summary_entry(r) for r in rows if r["points"]}

    # -- one series -------------------------------------------------------------------------

    async def series(self, request: web.Request) -> web.StreamResponse:
        run_id = path_param(request, "run_id", "run")
        name = path_param(request, "name", f"metric series in run {run_id!r}:")
        rank = optional_int_param(request, "rank", minimum=0, maximum=MAX_RANK)
        max_points, lo, hi = _range_params(request)
        columns = _columns_param(request)
        document = await self._series_document(run_id, name, rank, lo, hi, max_points,
                                               columns=columns)
        return web.Response(body=_encoded(document), content_type="application/json")

    async def many_series(self, request: web.Request) -> web.StreamResponse:
        name = str_param(request, "name")
        if not name:
            raise bad_request("parameter 'name' (the metric) is required")
        run_ids = str_params(request, "run_id")
        if not 0 < len(run_ids) <= MAX_SERIES_RUNS or not all(run_ids):
            raise bad_request(f"parameter 'run_id': 1 to {MAX_SERIES_RUNS} run ids")
        max_points, lo, hi = _range_params(request)
        columns = _columns_param(request)
        grant = grant_of(request)
        workspaces = await self._reads.run_workspaces(sorted(set(run_ids)))
        readable = sorted(r for r, w in workspaces.items() if grant.allows(w))
        # Every run's stats in one statement; a run absent from them (no such series, or
        # no point in range) goes the single-series way, which tells which.
        stats = await self._reads.many_series_stats(readable, name, lo, hi) if readable else {}
        gate = asyncio.Semaphore(MANY_SERIES_CONCURRENCY)

        async def one(run_id: str) -> dict[str, Any] | bytes:
            workspace = workspaces.get(run_id)
            if workspace is None or not grant.allows(workspace):  # not even whether it exists
                return {"run_id": run_id, "name": name, "missing": f"no run {run_id!r}"}
            async with gate:
                try:
                    return await self._series_document(run_id, name, None, lo, hi, max_points,
                                                       columns=columns,
                                                       stats=stats.get(run_id))
                except web.HTTPNotFound as exc:
                    return {"run_id": run_id, "name": name, "missing": exc.text or "not found"}

        documents = await asyncio.gather(*(one(r) for r in run_ids))
        return web.Response(
            body=b'{"name":' + dumps(name).encode() + b',"series":['
            + b",".join(_encoded(d) for d in documents) + b"]}",
            content_type="application/json")

    async def _series_document(self, run_id: str, name: str, rank: int | None, lo: int,
                               hi: int, max_points: int, *, columns: bool = False,
                               stats: SeriesStats | None = None) -> dict[str, Any] | bytes:
        """One series as GET /v1/runs/{run_id}/metrics/{name} answers it (404: raised);
        ``columns``: its points or buckets as arrays (``format=columns``), downsampled
        ones already as JSON (bytes). ``stats``: the series' (read with others'), if read."""
        head: dict[str, Any] = {"name": name, "run_id": run_id}
        if stats is None:
            stats = await self._reads.series_stats(run_id, name, rank, lo, hi)
        if stats.chunks == 0:
            if not await self._reads.run_exists(run_id):
                raise not_found(f"no run {run_id!r}")
            if not await self._reads.series_exists(run_id, name):
                raise not_found(f"run {run_id!r} has no metric series {name!r}")
        if stats.points <= max_points:
            points = (await self._reads.series_points(run_id, name, rank, lo, hi,
                                                      max_points + 1) if stats.points else [])
            if len(points) <= max_points:
                if columns:
                    return {**head, "total_points": len(points), "downsampled": False,
                            "columns": _point_columns(points)}
                return {**head, "total_points": len(points), "downsampled": False,
                        "points": [_point(r) for r in points]}
            # More arrived since: downsample after all.
            stats = await self._reads.series_stats(run_id, name, rank, lo, hi)
        if stats.step_min is None or stats.step_max is None:
            raise DatabaseUnavailableError("the series vanished while being read")
        # Every point asked for (steps outer_lo..outer_hi) lies in lo..hi, so a partial
        # tile at either end holds no other point: it is read whole (plan_buckets).
        outer = (lo, hi)
        lo, hi = max(lo, stats.step_min), min(hi, stats.step_max)
        plan = self._plan(stats, lo, hi, max_points, outer)
        if plan.level is not None and (stats.untiled_points > TILE_AFTER_UNTILED_POINTS
                                       or stats.stale_tiles):
            await self._reads.tile_series(run_id, name)
            stats = await self._reads.series_stats(run_id, name, rank, lo, hi)
            plan = self._plan(stats, lo, hi, max_points, outer)
        if columns:
            arrays = await self._reads.series_bucket_columns(run_id, name, rank, plan)
            order = arrays["bucket"] or []
            # (bucket numbers are distinct: sorted means strictly increasing)
            if arrays["last"] is not None and order == sorted(order):
                # Every last value a float, the arrays in bucket order: JSON from PostgreSQL.
                return _bucket_columns_json(head, arrays)
        rows = await self._reads.series_buckets(run_id, name, rank, plan)
        # Counted from the buckets, so they agree even while points keep arriving.
        total = sum(r["count"] for r in rows)
        if columns:
            return {**head, "total_points": total, "downsampled": True,
                    "columns": _bucket_columns(rows)}
        return {**head, "total_points": total, "downsampled": True,
                "buckets": [_bucket(r) for r in rows]}

    @staticmethod
    def _plan(stats: SeriesStats, lo: int, hi: int, max_points: int,
              outer: tuple[int, int]) -> BucketPlan:
        try:
            return plan_buckets(lo, hi, max_points, points=stats.points, ranks=stats.ranks,
                                min_level=stats.min_level or LEVELS[0], outer_lo=outer[0],
                                outer_hi=outer[1])
        except StepRangeTooWideError as exc:
            raise bad_request(str(exc)) from None


def _summary_entry(row: asyncpg.Record | None) -> dict[str, Any]:
    """A series' index entry but its name, from a ``series_summaries`` row (None: no
    points)."""
    if row is None:
        return {"kind": "series", "count": 0, "last": None, "min": None, "max": None}
    count = int(row["points"])
    vmin, vmax = row["vmin"], row["vmax"]
    return {"kind": "value" if count == 1 else "series", "count": count,
            "last": typed_value(row["last_v"], row["last_k"], row["last_x"]),
            "min": None if vmin is None else json_float(float(vmin)),
            "max": None if vmax is None else json_float(float(vmax))}


def _columns_param(request: web.Request) -> bool:
    fmt = str_param(request, "format") or "objects"
    if fmt not in ("objects", "columns"):
        raise bad_request(f"parameter 'format' must be objects or columns, got {fmt[:20]!r}")
    return fmt == "columns"


def _point_columns(rows: list[asyncpg.Record]) -> dict[str, list[Any]]:
    """Points as arrays: step, value, rank, time_us (µs since the epoch)."""
    return {
        "step": [r["step"] for r in rows],
        "value": [typed_value(r["value"], ord(r["kind"]) if r["kind"] else KIND_FLOAT, r["text"])
                  for r in rows],
        "rank": [r["rank"] for r in rows],
        "time_us": [r["time_us"] for r in rows],
    }


def _bucket_columns(rows: list[asyncpg.Record]) -> dict[str, list[Any]]:
    """Buckets as arrays, one entry per bucket, times in µs since the epoch."""
    return {
        "step_min": [r["step_min"] for r in rows],
        "step_max": [r["step_max"] for r in rows],
        "count": [r["count"] for r in rows],
        "min": [None if r["vmin"] is None else json_float(r["vmin"]) for r in rows],
        "max": [None if r["vmax"] is None else json_float(r["vmax"]) for r in rows],
        "last": [typed_value(r["last_v"], r["last_k"], r["last_x"]) for r in rows],
        "first_time_us": [r["time_min"] for r in rows],
        "last_time_us": [r["time_max"] for r in rows],
    }


def _bucket_columns_json(head: dict[str, Any], arrays: asyncpg.Record) -> bytes:
    """``_bucket_columns`` of a series whose last values are all floats, from the arrays
    PostgreSQL wrote (``ReadStore.series_bucket_columns``): the same JSON document."""
    buckets = int(arrays["buckets"])
    fields = (
        (b"step_min", arrays["step_min"]), (b"step_max", arrays["step_max"]),
        (b"count", arrays["count"]),
        (b"min", float_array_json(arrays["vmin"], int(arrays["vmins"]))),
        (b"max", float_array_json(arrays["vmax"], int(arrays["vmaxs"]))),
        (b"last", float_array_json(arrays["last"], buckets)),
        (b"first_time_us", arrays["time_min"]), (b"last_time_us", arrays["time_max"]),
    )
    return (dumps({**head, "total_points": int(arrays["total"]), "downsampled": True}
                  ).encode()[:-1]
            + b',"columns":{' + b",".join(b'"' + k + b'":' + v for k, v in fields) + b"}}")


def _encoded(document: dict[str, Any] | bytes) -> bytes:
    return document if isinstance(document, bytes) else dumps(document).encode()


def _range_params(request: web.Request) -> tuple[int, int, int]:
    """``max_points``, ``step_min`` and ``step_max`` of a series request."""
    max_points = int_param(request, "max_points", default=DEFAULT_MAX_POINTS, minimum=1,
                           maximum=MAX_MAX_POINTS)
    lo = int_param(request, "step_min", default=MIN_STEP)
    hi = int_param(request, "step_max", default=MAX_STEP)
    if lo > hi:
        raise bad_request("parameter 'step_min' is above 'step_max'")
    return max_points, lo, hi


def _typed(files: list[asyncpg.Record], names: list[str] | None) -> dict[str, Any]:
    """The typed metrics among a run's files (``ReadStore.files``), of ``names`` if given."""
    wanted = None if names is None else set(names)
    return {
        r["name"]: {"schema_type": r["metric"], "file": r["name"], "sha256": r["sha256"],
                    "size_bytes": int(r["size_bytes"]), "content_type": r["content_type"]}
        for r in files
        if r["metric"] is not None and (wanted is None or r["name"] in wanted)
    }


def _json(document: dict[str, Any]) -> web.Response:
    return web.Response(text=dumps(document), content_type="application/json")


def _point(row: asyncpg.Record) -> dict[str, Any]:
    kind = row["kind"]
    return {
        "step": row["step"],
        "value": typed_value(row["value"], ord(kind) if kind else KIND_FLOAT, row["text"]),
        "rank": row["rank"],
        "time": micros_to_iso(row["time_us"]),
    }


def _bucket(row: asyncpg.Record) -> dict[str, Any]:
    vmin, vmax = row["vmin"], row["vmax"]
    return {
        "step_min": row["step_min"],
        "step_max": row["step_max"],
        "count": row["count"],
        "min": None if vmin is None else json_float(vmin),
        "max": None if vmax is None else json_float(vmax),
        "last": typed_value(row["last_v"], row["last_k"], row["last_x"]),
        "first_time": micros_to_iso(row["time_min"]),
        "last_time": micros_to_iso(row["time_max"]),
    }


def _lists(rows: list[asyncpg.Record]) -> dict[str, list[JsonValue]]:
    out: dict[str, list[JsonValue]] = defaultdict(list)
    for r in rows:
        out[r["name"]] += typed_values(r["nums"], r["kinds"], r["texts"])
    return out


def _tables(rows: list[asyncpg.Record]) -> dict[str, dict[str, list[JsonValue]]]:
    """Blocks (one per log_row/log_table call) → {column: values}, rows aligned."""
    tables: dict[str, dict[str, list[JsonValue]]] = {}
    heights: dict[str, int] = defaultdict(int)
    block_key: tuple[Any, ...] | None = None
    block: dict[str, list[JsonValue]] = {}

    def close_block(name: str) -> None:
        table = tables.setdefault(name, {})
        height = max((len(v) for v in block.values()), default=0)
        for column in block:
            table.setdefault(column, [None] * heights[name])
        for column, values in table.items():
            values += block.get(column, [None] * height)
        heights[name] += height

    current: str | None = None
    for r in rows:
        key = (r["name"], r["logged_at"], r["rank"], r["producer_id"], r["seq"])
        if key != block_key:
            if current is not None:
                close_block(current)
            block_key, block, current = key, {}, r["name"]
        block[r["column_name"]] = typed_values(r["nums"], r["kinds"], r["texts"])
    if current is not None:
        close_block(current)
    return tables
