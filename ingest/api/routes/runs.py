"""``/v1/experiments`` and ``/v1/runs…``: experiments, run lists, one run, its files and logs.

Pagination is by keyset, never by offset: a page ends with a cursor holding the sort key
of its last item, and the next page starts strictly after it, so walking the pages of a
listing that does not change yields every item exactly once. Run lists order by
``created_at`` (newest first by default) or by a metric's last value (``order_by=metric:
<name>``: the value at the run's highest step, ties broken by the latest time; runs
without a numeric last value come last in both directions), then by run id.

Log lines are ordered by (time, producer, seq, line). Their ``next_cursor`` is a *tail*
cursor: the position after the last line returned, given even on the last page (and the
``after`` given when no line is new), so a follower polls with it and receives exactly the
lines committed since. (A line committed later with an older time than the cursor — a
spool replayed late — is not seen by a follower; it is in the listing.)

File downloads stream the artifact's bytes from the blob store (``BlobStore``), with the
artifact's content type.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import quote

from aiohttp import hdrs, web

from ingest.api.auth import forbidden_workspace, grant_of
from ingest.api.blobstore import BlobStore, is_valid_digest
from ingest.api.http import RouteSpec
from ingest.api.params import (
    CURSOR_PARAMETER,
    LIMIT_PARAMETER,
    UNAVAILABLE,
    bad_request,
    bool_param,
    cursor_param,
    encode_cursor,
    int_param,
    json_ok,
    limit_param,
    not_found,
    path_param,
    query_parameter,
    str_param,
    str_params,
    time_param,
)
from ingest.api.routes.blobs import send_blob
from ingest.api.shapes import (
    RUN_STATUSES,
    list_answer,
    ref,
    run_details,
    run_summary,
    schemas_for,
)
from ingest.db.reads import ReadStore, RunFilter, RunOrder
from ingest.db.values import iso
from schemas.image_names import image_of

__all__ = ["RUN_ID_PARAMETER", "RunRoutes", "safe_content_type", "serve_artifact"]

#: A stored content type is served only if it is a plain ``type/subtype`` (parameters
#: are dropped); anything else — line breaks, quotes, garbage — becomes octet-stream.
_MEDIA_PART: Final = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
_MEDIA_TYPE: Final = re.compile(f"{_MEDIA_PART}/{_MEDIA_PART}")
#: Artifacts are user content served from the API's origin: never sniffed into another
#: type, and an HTML/SVG file opened directly runs no script (CSP sandbox).
_ARTIFACT_HEADERS: Final = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox"
    ),
}


def safe_content_type(stored: str | None) -> str:
    """The media type to send for a stored artifact content type."""
    media = (stored or "").split(";", 1)[0].strip()
    return media.lower() if _MEDIA_TYPE.fullmatch(media) else "application/octet-stream"


async def serve_artifact(request: web.Request, blobs: BlobStore, *, name: str, digest: str,
                         content_type: str | None) -> web.StreamResponse:
    """Stream a stored file's bytes with the artifact headers (a run's file, a model's
    file: ``routes/models.py``); 404 when the blob store lacks them."""
    info = await asyncio.to_thread(blobs.stat, digest) if is_valid_digest(digest) else None
    if info is None:
        raise not_found(f"the bytes of {name!r} (sha256 {digest}) are not in the blob store")
    response = web.StreamResponse(headers={hdrs.ETAG: f'"{digest}"', **_ARTIFACT_HEADERS})
    response.content_type = safe_content_type(content_type)
    response.content_length = info.size_bytes
    await response.prepare(request)
    try:
        await send_blob(response, info)
    except ConnectionError:
        response.force_close()
        return response
    await response.write_eof()
    return response


RUN_ID_PARAMETER: Final = {
    "name": "run_id", "in": "path", "required": True, "description": "The run's id.",
    "schema": {"type": "string", "minLength": 1},
}
_FILE_NAME_PARAMETER: Final = {
    "name": "name", "in": "path", "required": True,
    "description": "The artifact's name, a relative POSIX path (its '/' need no escaping).",
    "schema": {"type": "string", "minLength": 1},
}
_STRING: Final = {"type": "string", "minLength": 1}
_TIME_PARAM: Final = {"type": "string", "format": "date-time"}
_RUN_LIST_PARAMETERS: Final[list[dict[str, Any]]] = [
    query_parameter("experiment", "Only runs of this experiment.", _STRING),
    query_parameter("workspace", "Only runs of this workspace.", _STRING),
    query_parameter(
        "status", "Only runs in one of these statuses (repeat, or a comma-separated list).",
        {"type": "string", "enum": list(RUN_STATUSES)}, repeatable=True,
    ),
    query_parameter(
        "tag", "Only runs with this tag: 'key' (any value) or 'key:value'; repeat to "
        "require several. A value given as text must equal it; a number must equal it read "
        "as a number (epochs:10 matches 10, 10.0 and the text \"10\"); a boolean matches "
        "true/false in any case.", _STRING, repeatable=True,
    ),
    query_parameter("compute_target", "Only runs on this compute target.", _STRING),
    query_parameter(
        "property", "Only runs with this property: 'key' (any value) or 'key:value'; "
        "repeat to require several. Values match as tag values do.", _STRING,
        repeatable=True,
    ),
    query_parameter("parent_run_id", "Only children of this run.", _STRING),
    query_parameter(
        "metric_filter", "Only runs whose metric's last value compares so: NAME<VALUE, "
        "NAME<=VALUE, NAME>VALUE, NAME>=VALUE or NAME=VALUE (the value at the highest step, "
        "as order_by=metric: sorts; runs without a numeric one never match); repeat to "
        "require several.", {"type": "string", "pattern": "^.+(<|>|=).+$"}, repeatable=True),
    query_parameter("top_level", "true: only runs without a parent (no child runs).",
                    {"type": "string", "enum": ["true", "false"]}),
    query_parameter("created_after", "Only runs created after this time (ISO 8601; no "
                    "zone = UTC).", _TIME_PARAM),
    query_parameter("created_before", "Only runs created before this time.", _TIME_PARAM),
    query_parameter(
        "order_by", "created_at (default) or metric:<name>, a metric's last value (runs "
        "without a numeric value last).",
        {"type": "string", "pattern": "^(created_at|metric:.+)$"},
    ),
    query_parameter("order", "desc (default: newest/highest first) or asc.",
                    {"type": "string", "enum": ["asc", "desc"]}),
    LIMIT_PARAMETER,
    CURSOR_PARAMETER,
]
_PAGE_PARAMETERS: Final = [LIMIT_PARAMETER, CURSOR_PARAMETER]

_TIME: Final = {"type": "string", "format": "date-time"}

#: How many ``?producer=`` ids one run details request may ask about.
MAX_PRODUCERS_ASKED: Final = 100
_PRODUCER_PARAMETER: Final = query_parameter(
    "producer", "Also answer how much of this producer (an SDK run handle) is stored; "
    f"repeat for several, up to {MAX_PRODUCERS_ASKED}.", {"type": "string"}, repeatable=True)
_EXPERIMENTS_PAGE: Final = list_answer("experiments", {
    "name": {"type": "string"},
    "workspace": {"type": "string"},
    "runs": {"type": "integer", "minimum": 1},
    "statuses": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 1},
                 "description": "Runs per status (statuses without runs left out)."},
    "last_run_at": {**_TIME, "description": "When the newest run was created."},
    "last_activity_at": {**_TIME, "description": "The latest event of any of its runs."},
}, cursor={"type": ["string", "null"]})
_FILES: Final = list_answer("files", {
    "name": {"type": "string"},
    "kind": {"type": "string", "description": "FILE or IMAGE."},
    "sha256": {"type": "string"},
    "size_bytes": {"type": "integer", "minimum": 0},
    "content_type": {"type": "string"},
    "created_at": _TIME,
    "metric": {"type": ["string", "null"], "description": "A typed metric's schema type "
               "(confusion_matrix, accuracy_table, residuals, predictions), else null."},
    "image": {"type": ["string", "null"], "description": "For an IMAGE: the name it was "
              "logged under (log_image stores step s of image n as n/step_s.ext), else null."},
    "step": {"type": ["integer", "null"], "description": "For an IMAGE: its step (null for "
             "an image stored before steps were kept), else null."},
})
_LOGS: Final = list_answer("lines", {
    "stream": {"type": "string"},
    "line": {"type": "string"},
    "rank": {"type": "integer"},
    "time": _TIME,
}, cursor={
    "type": ["string", "null"],
    "description": "Position after the last line returned (also on the last page): pass "
    "as ?after= to continue or to poll for new lines.",
})


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


#: Summarises the named series of some runs (``MetricRoutes.series_summaries``): by
#: (run_id, name), a series that does not exist left out.
Summarize = Callable[[Sequence[str], Sequence[str]],
                     Awaitable[dict[tuple[str, str], dict[str, Any]]]]
#: GET /v1/metric-names looks at this many of the newest matching runs (at most the max).
DEFAULT_NAME_RUNS: Final = 500
MAX_NAME_RUNS: Final = 5000
_METRIC_NAMES: Final = {
    "type": "object",
    "required": ["names", "runs_scanned"],
    "properties": {
        "names": {"type": "array", "items": {
            "type": "object", "required": ["name", "kinds", "runs"],
            "properties": {
                "name": {"type": "string"},
                "kinds": {"type": "array", "items": {"enum": ["list", "series", "table"]},
                          "description": "How the name was logged: series (run.log, once "
                          "or repeated), list (log_list), table (log_row/log_table)."},
                "runs": {"type": "integer", "minimum": 1,
                         "description": "How many of the scanned runs logged it."},
            }}},
        "runs_scanned": {"type": "integer", "minimum": 0,
                         "description": "The newest runs matching the filters that were "
                         "looked at (at most ?runs=)."},
    },
}
#: Metric names one run list may ask summaries of.
MAX_SUMMARY_METRICS: Final = 20
_METRIC_PARAMETER: Final = query_parameter(
    "metric", "Add each run's summary of these series: \"metrics\": {name: {kind, count, "
    "last, min, max}} as in /metric-index (a run without the series leaves it out); "
    f"repeat, up to {MAX_SUMMARY_METRICS}.", _STRING, repeatable=True)


class RunRoutes:
    def __init__(self, *, reads: ReadStore, blob_store: BlobStore,
                 public_url: str | None = None, summarize: Summarize | None = None) -> None:
        self._reads = reads
        self._blobs = blob_store
        self._public_url = public_url.rstrip("/") if public_url else None
        self._summarize = summarize

    def specs(self) -> list[RouteSpec]:
        run = [RUN_ID_PARAMETER]
        return [
            RouteSpec(
                method="GET", path="/v1/experiments", handler=self.experiments,
                operation_id="listExperiments",
                summary="Experiments (per workspace) with their run counts, by name.",
                responses={**UNAVAILABLE, 200: "A page of experiments.", 400: "A bad parameter."},
                response_content={200: _json(_EXPERIMENTS_PAGE)},
                extra={"parameters": _PAGE_PARAMETERS},
            ),
            RouteSpec(
                method="GET", path="/v1/runs", handler=self.runs, operation_id="listRuns",
                summary="Runs, filtered and ordered (by creation or a metric's last value).",
                responses={**UNAVAILABLE, 200: "A page of runs.", 400: "A bad parameter."},
                response_content={200: _json(ref("RunPage"))},
                extra={"parameters": [*_RUN_LIST_PARAMETERS, _METRIC_PARAMETER]},
                schemas=schemas_for("RunPage"),
            ),
            RouteSpec(
                method="GET", path="/v1/metric-names", handler=self.metric_names,
                operation_id="listMetricNames",
                summary="The metric names of the newest runs matching the run-list filters "
                "(an experiment's, a run's children…), how each was logged and by how many "
                "runs: for metric choosers and column pickers.",
                responses={**UNAVAILABLE, 200: "The names, sorted.", 400: "A bad parameter.",
                           403: "A workspace the token does not grant."},
                response_content={200: _json(_METRIC_NAMES)},
                extra={"parameters": [
                    *(p for p in _RUN_LIST_PARAMETERS
                      if p["name"] not in ("order_by", "order", "limit", "cursor")),
                    query_parameter("runs", "Look at this many of the newest matching runs "
                                    f"(default {DEFAULT_NAME_RUNS}).",
                                    {"type": "integer", "minimum": 1,
                                     "maximum": MAX_NAME_RUNS, "default": DEFAULT_NAME_RUNS}),
                ]},
            ),
            RouteSpec(
                method="GET", path="/v1/runs/{run_id}", handler=self.run,
                operation_id="getRun",
                summary="One run: status and the time of each status, tags, parent, "
                "children, error, properties, portal URL.",
                responses={**UNAVAILABLE, 200: "The run.", 400: "A bad parameter.",
                           404: "No such run."},
                response_content={200: _json(ref("RunDetails"))},
                extra={"parameters": [*run, _PRODUCER_PARAMETER]},
                schemas=schemas_for("RunDetails"),
            ),
            RouteSpec(
                method="GET", path="/v1/runs/{run_id}/children", handler=self.children,
                operation_id="listChildRuns", summary="A run's child runs, oldest first.",
                responses={**UNAVAILABLE, 200: "A page of runs.", 400: "A bad parameter.",
                           404: "No such run."},
                response_content={200: _json(ref("RunPage"))},
                extra={"parameters": [*run, *_PAGE_PARAMETERS, _METRIC_PARAMETER]},
                schemas=schemas_for("RunPage"),
            ),
            RouteSpec(
                method="GET", path="/v1/runs/{run_id}/files", handler=self.files,
                operation_id="listRunFiles", summary="A run's files and images, by name.",
                responses={**UNAVAILABLE, 200: "The files.", 404: "No such run."},
                response_content={200: _json(_FILES)},
                extra={"parameters": run},
            ),
            RouteSpec(
                method="GET", path="/v1/runs/{run_id}/files/{name:.+}", handler=self.file,
                operation_id="downloadRunFile", summary="The bytes of one of a run's files.",
                responses={**UNAVAILABLE, 200: "The file's bytes (Content-Type of the artifact).",
                           404: "No such run, file, or stored bytes."},
                response_content={200: {"*/*": {"schema": {"type": "string",
                                                           "format": "binary"}}}},
                extra={"parameters": [*run, _FILE_NAME_PARAMETER]},
            ),
            RouteSpec(
                method="GET", path="/v1/runs/{run_id}/logs", handler=self.logs,
                operation_id="listRunLogLines",
                summary="A run's captured log lines, in (time, producer, seq, line) order.",
                responses={**UNAVAILABLE, 200: "A page of lines.", 400: "A bad parameter.",
                           404: "No such run."},
                response_content={200: _json(_LOGS)},
                extra={"parameters": [
                    *run,
                    query_parameter("after", "Continue after this position (a next_cursor).",
                                    _STRING),
                    LIMIT_PARAMETER,
                ]},
            ),
        ]

    # -- handlers -----------------------------------------------------------------------------

    async def experiments(self, request: web.Request) -> web.StreamResponse:
        limit = limit_param(request)
        after = cursor_param(request, "experiments")
        if after is not None and not _strings(after, 2):
            raise bad_request("parameter 'cursor' is not a cursor of this listing")
        rows = await self._reads.experiments(
            None if after is None else (after[0], after[1]), limit + 1,
            workspaces=grant_of(request).sorted(),
        )
        page, more = rows[:limit], len(rows) > limit
        return json_ok({
            "experiments": [
                {"name": r["name"], "workspace": r["workspace"], "runs": int(r["runs"]),
                 "statuses": _json_counts(r["statuses"]),
                 "last_run_at": iso(r["last_run_at"]),
                 "last_activity_at": iso(r["last_activity_at"] or r["last_run_at"])}
                for r in page
            ],
            "next_cursor": encode_cursor("experiments", [page[-1]["name"],
                                                         page[-1]["workspace"]])
            if more else None,
        })

    async def runs(self, request: web.Request) -> web.StreamResponse:
        where = _run_filter(request)
        metric = _order_metric(request)
        order = str_param(request, "order") or "desc"
        if order not in ("asc", "desc"):
            raise bad_request(f"parameter 'order' must be asc or desc, got {order[:20]!r}")
        return await self._run_page(request, where, metric=metric, descending=order == "desc")

    async def metric_names(self, request: web.Request) -> web.StreamResponse:
        where = _run_filter(request)
        runs = int_param(request, "runs", default=DEFAULT_NAME_RUNS, minimum=1,
                         maximum=MAX_NAME_RUNS)
        rows = await self._reads.metric_names(where, runs)
        scanned = int(rows[0]["scanned"]) if rows else 0
        names: dict[str, dict[str, Any]] = {}
        for r in rows:  # a name logged several ways: every kind, with the most runs
            if r["name"] is None:  # no names: one row with the count only
                continue
            entry = names.setdefault(r["name"], {"name": r["name"], "kinds": [], "runs": 0})
            entry["kinds"].append(r["kind"])
            entry["runs"] = max(entry["runs"], int(r["runs"]))
        return json_ok({"names": list(names.values()), "runs_scanned": scanned})

    async def run(self, request: web.Request) -> web.StreamResponse:
        run_id = path_param(request, "run_id", "run")
        asked = request.query.getall("producer", [])
        producers = None
        if asked:
            if len(asked) > MAX_PRODUCERS_ASKED or not all(0 < len(p) <= 200 for p in asked):
                raise bad_request(f"parameter 'producer': 1 to {MAX_PRODUCERS_ASKED} ids of "
                                  "1 to 200 characters")
            # Before the details, never after: what they count as stored is then in the
            # details too (a batch committing between two reads would otherwise be counted
            # and not shown, and the SDK's read-your-writes would stop waiting too soon).
            producers = {
                r["producer_id"]: {"events": int(r["events"]), "max_seq": int(r["max_seq"])}
                for r in await self._reads.run_producers(run_id, asked)
            }
        row = await self._reads.run_details(run_id)
        if row is None:
            raise not_found(f"no run {run_id!r}")
        base = self._public_url or str(request.url.origin())
        # The studio's page of the run (routes/studio.py serves it).
        details = run_details(row, portal_url=f"{base}/runs/{quote(run_id, safe='')}")
        if producers is not None:
            details["producers"] = producers
        return json_ok(details)

    async def children(self, request: web.Request) -> web.StreamResponse:
        run_id = await self._existing_run(request)
        return await self._run_page(
            request,
            RunFilter(parent_run_id=run_id, workspaces=grant_of(request).sorted()),
            metric=None,
            descending=False,
        )

    async def files(self, request: web.Request) -> web.StreamResponse:
        run_id = await self._existing_run(request)
        rows = await self._reads.files(run_id)
        files = []
        for r in rows:
            image, step = image_of(r["name"]) if r["kind"] == "IMAGE" else (None, None)
            files.append({"name": r["name"], "kind": r["kind"], "sha256": r["sha256"],
                          "size_bytes": int(r["size_bytes"]), "content_type": r["content_type"],
                          "created_at": iso(r["created_at"]), "metric": r["metric"],
                          "image": image, "step": step})
        return json_ok({"files": files})

    async def file(self, request: web.Request) -> web.StreamResponse:
        run_id = await self._existing_run(request)
        name = path_param(request, "name", f"file in run {run_id!r}:")
        row = await self._reads.file(run_id, name)
        if row is None:
            raise not_found(f"run {run_id!r} has no file {name!r}")
        return await serve_artifact(request, self._blobs, name=name, digest=row["sha256"],
                                    content_type=row["content_type"])

    async def logs(self, request: web.Request) -> web.StreamResponse:
        run_id = await self._existing_run(request)
        limit = limit_param(request)
        after = cursor_param(request, "logs", name="after")
        position = None
        if after is not None:
            if (len(after) != 4 or not isinstance(after[0], int) or not isinstance(after[1], str)
                    or not isinstance(after[2], int) or not isinstance(after[3], int)):
                raise bad_request("parameter 'after' is not a cursor of this listing")
            position = (_from_micros(after[0], "after"), after[1], after[2], after[3])
        rows = await self._reads.log_lines(run_id, position, limit)
        if rows:
            last = rows[-1]
            next_cursor: str | None = encode_cursor("logs", [
                _micros(last["logged_at"]), last["producer_id"], last["seq"], last["line_no"]])
        else:
            next_cursor = str_param(request, "after")
        return json_ok({
            "lines": [{"stream": r["stream"], "line": r["line"], "rank": r["rank"],
                       "time": iso(r["logged_at"])} for r in rows],
            "next_cursor": next_cursor,
        })

    # -- helpers ------------------------------------------------------------------------------

    async def _existing_run(self, request: web.Request) -> str:
        run_id = path_param(request, "run_id", "run")
        if not await self._reads.run_exists(run_id):
            raise not_found(f"no run {run_id!r}")
        return run_id

    async def _run_page(self, request: web.Request, where: RunFilter, *, metric: str | None,
                        descending: bool) -> web.Response:
        limit = limit_param(request)
        kind = f"runs:{'metric:' + metric if metric else 'created_at'}:" + (
            "desc" if descending else "asc")
        after = cursor_param(request, kind)
        key: tuple[Any, str] | None = None
        if after is not None:
            key = _run_keyset(after, by_metric=metric is not None)
        rows = await self._reads.runs(where, RunOrder(metric=metric, descending=descending,
                                                      after=key), limit + 1)
        page, more = rows[:limit], len(rows) > limit
        next_cursor = None
        if more:
            last = page[-1]
            sort_key = (_json_sort_value(last["sort_value"]) if metric is not None
                        else _micros(last["created_at"]))
            next_cursor = encode_cursor(kind, [sort_key, last["run_id"]])
        summaries = [run_summary(r) for r in page]
        await self._add_metric_summaries(request, summaries)
        return json_ok({"runs": summaries, "next_cursor": next_cursor})

    async def _add_metric_summaries(self, request: web.Request,
                                    runs: list[dict[str, Any]]) -> None:
        """``?metric=``: each run's summary of those series, all in one query."""
        names = list(dict.fromkeys(str_params(request, "metric")))
        if not names:
            return
        if len(names) > MAX_SUMMARY_METRICS or not all(names):
            raise bad_request(f"parameter 'metric': 1 to {MAX_SUMMARY_METRICS} metric names")
        if self._summarize is None:  # pragma: no cover - the app always passes one
            raise bad_request("metric summaries are not available here")
        found = await self._summarize([r["run_id"] for r in runs], names) if runs else {}
        for run in runs:
            run["metrics"] = {name: summary for name in names
                              if (summary := found.get((run["run_id"], name))) is not None}


def _run_filter(request: web.Request) -> RunFilter:
    """The run-list filters of a request (403 for a workspace the token does not grant)."""
    grant = grant_of(request)
    workspace = str_param(request, "workspace")
    if workspace is not None and not grant.allows(workspace):
        raise forbidden_workspace(workspace)
    return RunFilter(
        experiment=str_param(request, "experiment"),
        workspace=workspace,
        workspaces=grant.sorted(),
        statuses=_statuses(request),
        tags=_pairs(request, "tag"),
        properties=_pairs(request, "property"),
        compute_target=str_param(request, "compute_target"),
        parent_run_id=str_param(request, "parent_run_id"),
        top_level=bool_param(request, "top_level"),
        created_after=time_param(request, "created_after"),
        created_before=time_param(request, "created_before"),
        metric_filters=_metric_filters(request),
    )


#: ``NAME<VALUE`` and the like: the name is everything before the last comparison.
_METRIC_FILTER: Final = re.compile(
    r"^(?P<name>.*[^<>=\s])\s*(?P<op><=|>=|<|>|=)\s*(?P<value>[^<>=\s]+)\s*$", re.DOTALL)
MAX_METRIC_FILTERS: Final = 10


def _metric_filters(request: web.Request) -> tuple[tuple[str, str, float], ...]:
    out: list[tuple[str, str, float]] = []
    for text in str_params(request, "metric_filter"):
        match = _METRIC_FILTER.match(text)
        bound = None
        if match:
            try:
                bound = float(match["value"])
            except ValueError:
                bound = None
        if match is None or bound is None or math.isnan(bound):
            raise bad_request(
                f"parameter 'metric_filter' must be NAME<VALUE (or <=, >, >=, =) with a "
                f"number, e.g. loss<0.5; got {text[:60]!r}")
        out.append((match["name"], match["op"], bound))
    if len(out) > MAX_METRIC_FILTERS:
        raise bad_request(f"parameter 'metric_filter': at most {MAX_METRIC_FILTERS}")
    return tuple(out)


def _json_counts(value: Any) -> dict[str, int]:
    """A jsonb object of counts (asyncpg gives jsonb as text), in RUN_STATUSES order."""
    counts = json.loads(value) if isinstance(value, str) else dict(value or {})
    return {s: int(counts[s]) for s in RUN_STATUSES if s in counts}


def _statuses(request: web.Request) -> tuple[str, ...]:
    out: list[str] = []
    for value in str_params(request, "status"):
        for status in value.split(","):
            status = status.strip()
            if status not in RUN_STATUSES:
                raise bad_request(
                    f"parameter 'status' has unknown status {status[:40]!r}; one of "
                    + ", ".join(RUN_STATUSES)
                )
            out.append(status)
    return tuple(out)


def _pairs(request: web.Request, name: str) -> tuple[tuple[str, str | None], ...]:
    """Repeated ``key`` / ``key:value`` parameters (``tag``, ``property``)."""
    out: list[tuple[str, str | None]] = []
    for value in str_params(request, name):
        key, sep, pair_value = value.partition(":")
        if not key:
            raise bad_request(f"parameter {name!r} must be 'key' or 'key:value' with a key")
        out.append((key, pair_value if sep else None))
    return tuple(out)


def _order_metric(request: web.Request) -> str | None:
    order_by = str_param(request, "order_by") or "created_at"
    if order_by == "created_at":
        return None
    prefix, sep, metric = order_by.partition(":")
    if prefix != "metric" or not sep or not metric:
        raise bad_request(
            f"parameter 'order_by' must be created_at or metric:<name>, got {order_by[:60]!r}"
        )
    return metric


def _run_keyset(values: list[Any], *, by_metric: bool) -> tuple[Any, str]:
    problem = bad_request("parameter 'cursor' is not a cursor of this listing")
    if len(values) != 2 or not isinstance(values[1], str):
        raise problem
    value = values[0]
    if by_metric:
        if value is None:
            return None, values[1]
        try:
            return float(value), values[1]
        except (TypeError, ValueError):
            raise problem from None
    if not isinstance(value, int):
        raise problem
    return _from_micros(value), values[1]


def _json_sort_value(value: float | None) -> str | None:
    # repr() round-trips exactly and writes infinities as 'inf', which float() reads back.
    return None if value is None else repr(float(value))


def _strings(values: list[Any], count: int) -> bool:
    return len(values) == count and all(isinstance(v, str) for v in values)


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(value: datetime) -> int:
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _from_micros(us: int, name: str = "cursor") -> datetime:
    try:
        return _EPOCH + timedelta(microseconds=us)
    except OverflowError:
        raise bad_request(f"parameter {name!r} is not a cursor of this listing") from None
