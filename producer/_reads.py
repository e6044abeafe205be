"""Reading runs back through the API: the read methods of ``Run``, and the query of
``Experiment.get_runs`` (``runs_query``).

``RunReads`` is mixed into ``Run``; it needs only the run's id, its session (for the
``ApiClient``) and ``_writes_here`` (whether this handle logs into the run). Every method
returns one fixed type, and every method first calls ``Session.flush_for_read``.

What a read shows is what the ingest worker has committed: usually well under a second
after the events reach Kafka. A read of a run this process wrote into (through any
handle) first waits, up to ``read_flush_timeout_s``, until the API has stored every event
this process sent there (``Session.run_details``): a script reads its own writes instead
of a ``NotFoundError`` or a missing tag a moment too early.
"""

from __future__ import annotations

import io
import os
import sys
import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from ._client import decode_non_finite, file_path, segment
from ._errors import ApiError, RunFailedError
from ._follow import wait_for_completion
from ._history import MetricHistory, check_history_args, read_history
from ._session import Session
from ._typed_metrics import artifact_location, parse_typed_metric
from ._validate import check_artifact_name, check_name

if TYPE_CHECKING:
    from ._workspace import Run

#: The API's page size bounds (``limit``).
MAX_PAGE_SIZE = 1000
#: Where ``get_details_with_logs`` puts the run's captured output, as Azure ML does.
STD_LOG = "user_logs/std_log.txt"


class RunReads:
    """``get_metrics``, ``get_metric_history``, ``get_file_names``, ``download_file``,
    ``get_status``, ``get_details``, ``get_portal_url`` and ``wait_for_completion``."""

    _session: Session
    #: Set once the API has answered for this run (see the module docstring).
    _seen_by_api: bool = False

    @property
    def id(self) -> str:
        raise NotImplementedError

    @property
    def _writes_here(self) -> bool:
        return False

    def _path(self, suffix: str = "") -> str:
        return f"/v1/runs/{segment(self.id)}{suffix}"

    def _before_read(self) -> None:
        self._session.flush_for_read()
        if (self._seen_by_api or not self._writes_here) and not (
                self._session.has_unconfirmed(self.id)):
            return
        self._session.run_details(self.id)  # waits (bounded) until our events are stored
        self._seen_by_api = True

    def get_metrics(
        self,
        name: str | Iterable[str] | None = None,
        recursive: bool = False,
        run_type: str | None = None,
        populate: bool = False,
    ) -> dict[str, Any]:
        """Every metric of the run (or only ``name``: one name or several), shaped as on the
        product page and azureml-core: a value logged once → that value; a series → the
        list of its values ordered by (step, rank, time), all ranks included; ``log_list``
        → the list; ``log_row``/``log_table`` → ``{column: [values...]}``. One row is bare,
        as in Azure ML: a one-value list is that value, a one-row table ``{column:
        value}``. Values keep their type (int, bool, str, float, NaN and ±Inf included).
        An unknown name is left out.

        ``recursive=True``: ``{run_id: metrics}`` of this run and all its descendants, as
        Azure ML returns it (runs without metrics left out). ``run_type`` must be None
        (Runstream has no run types).

        Typed metrics (``log_confusion_matrix``, ``log_accuracy_table``, ``log_residuals``,
        ``log_predictions``) are among the metrics, as in Azure ML: by default as their
        location ``aml://artifactId/ExperimentRun/dcid.<run id>/<name>`` (the file
        ``name`` of the run); with ``populate=True`` as the logged JSON, downloaded and
        parsed into a dict (azureml-core gives an ``Artifact`` whose ``.data`` holds the
        bytes, ``JsonArtifact.convert_to_object()`` that dict). A name that is both a
        typed metric and another metric shows the typed metric. ``populate`` changes
        nothing else (other values are always returned whole).
        """
        if run_type is not None:
            raise ValueError("run_type: Runstream runs have no type; leave it None")
        names = [name] if isinstance(name, str) else list(name or ())
        for each in names:
            check_name(each, "metric name")
        if recursive:
            out = {}
            for run in [*self.get_children(recursive=True), self]:
                metrics = run._metrics(names, populate)
                if metrics:
                    out[run.id] = metrics
            return out
        return self._metrics(names, populate)

    def _metrics(self, names: list[str], populate: bool = False) -> dict[str, Any]:
        self._before_read()
        answer = self._session.api.get_json(
            self._path("/metrics"), [("name", each) for each in names]
        )
        metrics = answer.get("metrics")
        if not isinstance(metrics, dict):
            raise ApiError(
                200,
                "answer has no 'metrics' object",
                what=f"GET {self._path('/metrics')}",
                retriable=False,
            )
        out = {name: _one_row_bare(decode_non_finite(value)) for name, value in metrics.items()}
        typed = answer.get("typed") or {}  # absent: none (or an API from before them)
        if typed:
            for name in typed:
                out[name] = self._typed_value(name, populate)
            out = dict(sorted(out.items()))
        return out

    def _typed_value(self, name: str, populate: bool) -> Any:
        """A typed metric as ``get_metrics`` shows it: its location, or its JSON."""
        if not populate:
            return artifact_location(self.id, name)
        body = io.BytesIO()
        path = self._path(f"/files/{file_path(name)}")
        self._session.api.download(path, body)
        try:
            return parse_typed_metric(body.getvalue(), f"typed metric {name!r}")
        except ValueError as exc:
            raise ApiError(200, str(exc), what=f"GET {path}", retriable=False) from None

    def get_metric_history(
        self,
        name: str,
        *,
        max_points: int | None = None,
        step_min: int | None = None,
        step_max: int | None = None,
        rank: int | None = None,
    ) -> MetricHistory:
        """One series with its steps: a ``MetricHistory`` of equal-length lists ``step``,
        ``value``, ``time`` (aware UTC datetimes) and ``rank``, in (step, rank, time)
        order, every rank's points included (``rank=``: one rank's). ``to_dict()`` gives
        ``{"step": [...], "value": [...], "time": [...], "rank": [...]}``,
        ``to_dataframe()`` a pandas DataFrame (pandas is optional).

        ``max_points=None``: every point, read in pages of at most 100,000 (windows of
        steps, as the API answers). ``max_points=N`` (1..100,000): as
        ``GET /v1/runs/{id}/metrics/{name}?max_points=N`` answers — the points when at
        most N match, else at most N buckets by step range (``downsampled``; each bucket's
        highest step, last value and latest time, with ``step_min``, ``count``, ``min`` and
        ``max``). ``step_min``/``step_max`` narrow the steps. Sees every point this
        process logged before the call; ``NotFoundError`` when the run has no series
        ``name`` (``log_list``/``log_row`` names are not series)."""
        check_name(name, "metric name")
        lo, hi = check_history_args(max_points, rank, step_min, step_max)
        self._before_read()
        return read_history(
            self._session.api, self._path(f"/metrics/{segment(name)}"), self.id, name,
            max_points=max_points, rank=rank, lo=lo, hi=hi,
        )

    def get_file_names(self) -> list[str]:
        """Names of the run's files and images (``outputs/...`` included), as uploaded."""
        self._before_read()
        files = self._session.api.pages(self._path("/files"), (), "files")
        return [str(f["name"]) for f in files]

    def download_file(
        self, name: str, output_file_path: str | os.PathLike[str] | None = None
    ) -> Path:
        """Download artifact ``name`` to ``output_file_path`` (a file, or an existing
        directory to put it in; default: its base name in the current directory).

        The file appears whole or not at all (written aside, then renamed); its parent
        directories are created. Returns the path written. ``NotFoundError`` if the run
        has no such file.
        """
        check_artifact_name(name)
        base = PurePosixPath(name).name
        target = Path(base) if output_file_path is None else Path(output_file_path)
        if target.is_dir():
            target = target / base
        self._before_read()
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            with part.open("xb") as out:
                self._session.api.download(self._path(f"/files/{file_path(name)}"), out)
            os.replace(part, target)
        finally:
            part.unlink(missing_ok=True)
        return target

    def get_details(self) -> dict[str, Any]:
        """The run's details: ``status``, per-state ``status_times``, ``tags``,
        ``parent_run_id``, ``children``, ``compute_target``, ``error``, ``properties``,
        ``portal_url``… (timestamps are ISO 8601 strings in UTC, or None)."""
        details = self._session.run_details(self.id)  # flushes and waits, as _before_read
        self._seen_by_api = True
        return details

    def get_status(self) -> str:
        """NotStarted, Queued, Preparing, Running, NotResponding, Finalizing,
        CancelRequested, Completed, Failed or Canceled."""
        return str(self.get_details()["status"])

    @property
    def number(self) -> int:
        """The run's place in its experiment by creation: 1 for the first run."""
        return int(self.get_details()["number"])

    @property
    def status(self) -> str:
        """The run's status now (``get_status()``)."""
        return self.get_status()

    def get_tags(self) -> dict[str, str | int | float | bool | None]:
        """The run's tags as stored: ``{key: value}``, each value of the type it was given
        as — str, int, float or bool (text from SDKs before event schema v3) —, None for a
        tag without a value."""
        tags: dict[str, str | int | float | bool | None] = dict(
            self.get_details().get("tags") or {})
        return tags

    @property
    def tags(self) -> dict[str, str | int | float | bool | None]:
        """The run's tags now (``get_tags()``)."""
        return self.get_tags()

    def get_properties(self) -> dict[str, str | int | float | bool]:
        """The run's properties: those it started with and those added since
        (``add_properties``); each keeps its first value, of the type it was given as."""
        properties: dict[str, str | int | float | bool] = dict(
            self.get_details().get("properties") or {})
        return properties

    @property
    def properties(self) -> dict[str, str | int | float | bool]:
        """The run's properties now (``get_properties()``)."""
        return self.get_properties()

    def get_children(
        self,
        recursive: bool = False,
        tags: str | Iterable[str] | Mapping[str, str | None] | None = None,
        properties: str | Iterable[str] | Mapping[str, str | None] | None = None,
        type: str | None = None,
        status: str | Iterable[str] | None = None,
    ) -> list[Run]:
        """The run's child runs, oldest first (``recursive``: grandchildren too, each
        after its parent). ``tags``/``properties``: a key, ``"key:value"``, a list of those
        or ``{key: value or None}`` that a child must carry; ``status``: one or several.
        ``type`` must be None (Runstream runs have no type). Read-only handles. Children
        this process started are listed at once, with the status it last gave them."""
        if type is not None:
            raise ValueError("type: Runstream runs have no type; leave it None")
        filtered = not (tags is None and properties is None and status is None)
        found: list[Run] = []
        parents = [self.id]
        while parents:
            parent = parents.pop(0)
            self._session.wait_for_children(parent)  # the children this process started
            level = list(self._children_of(parent))
            if filtered:
                matching = {
                    r.id for r in self._children_of(parent, tags, properties, status)
                }
                found.extend(r for r in level if r.id in matching)
            else:
                found.extend(level)
            if recursive:
                parents.extend(r.id for r in level)
        return found

    def _children_of(
        self,
        parent_run_id: str,
        tags: str | Iterable[str] | Mapping[str, str | None] | None = None,
        properties: str | Iterable[str] | Mapping[str, str | None] | None = None,
        status: str | Iterable[str] | None = None,
    ) -> Iterator[Run]:
        params = runs_query(
            experiment=None, status=status, tags=tags, properties=properties, order_by=None,
            order="asc", compute_target=None, parent_run_id=parent_run_id,
            created_after=None, created_before=None, page_size=MAX_PAGE_SIZE,
        )
        self._before_read()
        for summary in self._session.api.pages("/v1/runs", params, "runs"):
            yield self._handle(summary)

    def _handle(self, summary: Mapping[str, Any]) -> Run:
        """A read-only handle on another run of this workspace (``Run`` provides it)."""
        raise NotImplementedError

    def get_portal_url(self) -> str:
        """Where to look at the run (the API's run page until a studio exists)."""
        return str(self.get_details()["portal_url"])

    def wait_for_completion(
        self,
        show_output: bool = False,
        wait_post_processing: bool = False,
        raise_on_error: bool = True,
        *,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """Block until the run is Completed, Failed or Canceled and return its details.

        With ``show_output`` the run's log lines (from the start) and its status changes
        are printed to stdout as they are committed. A Failed run raises
        ``RunFailedError`` (with the run's error text) unless ``raise_on_error`` is False.
        ``ProducerTimeoutError`` after ``timeout_s`` (None: no limit); the run itself is
        not affected. ``wait_post_processing`` is accepted as in Azure ML: a run's
        outputs are stored before it ends, so there is nothing after it to wait for.
        """
        self._before_read()
        details = wait_for_completion(
            self._session.api,
            self._path(),
            self.id,
            show_output=show_output,
            timeout_s=timeout_s,
            out=sys.stdout,
        )
        if raise_on_error and details.get("status") == "Failed":
            raise RunFailedError(self.id, details.get("error"), details)
        return details

    def get_details_with_logs(self) -> dict[str, Any]:
        """``get_details()`` plus ``logFiles``: ``{"user_logs/std_log.txt": text}`` — the
        run's captured output (every rank, in order), as Azure ML returns log contents."""
        details = self.get_details()
        details["logFiles"] = {STD_LOG: "".join(line + "\n" for line in self._read_log_lines())}
        return details

    def get_all_logs(self, destination: str | os.PathLike[str] | None = None) -> list[str]:
        """Write the run's logs under ``destination`` (default ``./assets/<run id>``);
        the paths written."""
        root = Path(destination) if destination is not None else Path("assets") / self.id
        written = []
        for name, text in self.get_details_with_logs()["logFiles"].items():
            target = root / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
            written.append(str(target))
        return written

    def _read_log_lines(self) -> Iterator[str]:
        self._before_read()
        after: str | None = None
        while True:
            params = [("limit", str(MAX_PAGE_SIZE))] + ([("after", after)] if after else [])
            page = self._session.api.get_json(self._path("/logs"), params)
            lines = page.get("lines") or []
            for line in lines:
                yield str(line["line"])
            if len(lines) < MAX_PAGE_SIZE:
                return
            after = page.get("next_cursor")

    def download_files(
        self,
        prefix: str | None = None,
        output_directory: str | os.PathLike[str] | None = None,
        output_paths: list[str] | None = None,
        batch_size: int = 100,
        append_prefix: bool = True,
        timeout_seconds: float | None = None,
    ) -> list[Path]:
        """Download the run's files whose names start with ``prefix`` (all by default)
        into ``output_directory`` (default: the current directory), keeping their paths
        (without ``prefix`` when ``append_prefix`` is False), or to ``output_paths`` (one
        per file, in ``get_file_names()`` order). ``batch_size``/``timeout_seconds`` are
        accepted as in Azure ML. The paths written."""
        names = [n for n in self.get_file_names() if prefix is None or n.startswith(prefix)]
        if output_paths is not None and len(output_paths) != len(names):
            raise ValueError(
                f"output_paths has {len(output_paths)} paths for {len(names)} files"
            )
        root = Path(output_directory) if output_directory is not None else Path()
        written = []
        for i, name in enumerate(names):
            if output_paths is not None:
                target = Path(output_paths[i])
            else:
                relative = name if append_prefix or not prefix else name[len(prefix):]
                target = root / relative.lstrip("/")
            written.append(self.download_file(name, target))
        return written


def _one_row_bare(value: Any) -> Any:
    """Azure ML's shapes: one row is bare — a list of one value is that value, a table of
    one row is ``{column: value}`` (longer lists and tables stay lists)."""
    if isinstance(value, list) and len(value) == 1:
        return value[0]
    if isinstance(value, dict) and value and all(
        isinstance(column, list) and len(column) == 1 for column in value.values()
    ):
        return {name: column[0] for name, column in value.items()}
    return value


def runs_query(
    *,
    experiment: str | None,
    status: str | Iterable[str] | None,
    tags: str | Iterable[str] | Mapping[str, str | None] | None,
    properties: str | Iterable[str] | Mapping[str, str | None] | None = None,
    top_level: bool = False,
    order_by: str | None,
    order: str | None,
    compute_target: str | None,
    parent_run_id: str | None,
    created_after: datetime | str | None,
    created_before: datetime | str | None,
    page_size: int,
) -> list[tuple[str, str]]:
    """Query parameters of ``GET /v1/runs``; bad arguments raise ValueError/TypeError here."""
    params: list[tuple[str, str]] = []
    if experiment is not None:
        params.append(("experiment", experiment))
    statuses = [status] if isinstance(status, str) else (status or ())
    params.extend(("status", check_name(each, "status")) for each in statuses)
    params.extend(_pairs("tag", tags))
    params.extend(_pairs("property", properties))
    if top_level:
        params.append(("top_level", "true"))
    if order_by is not None:
        if order_by != "created_at" and not (
            order_by.startswith("metric:") and len(order_by) > len("metric:")
        ):
            raise ValueError(f"order_by must be 'created_at' or 'metric:<name>', not {order_by!r}")
        params.append(("order_by", order_by))
    if order is not None:
        if order not in ("asc", "desc"):
            raise ValueError(f"order must be 'asc' or 'desc', not {order!r}")
        params.append(("order", order))
    if compute_target is not None:
        params.append(("compute_target", check_name(compute_target, "compute_target")))
    if parent_run_id is not None:
        params.append(("parent_run_id", check_name(parent_run_id, "parent_run_id")))
    for key, when in (("created_after", created_after), ("created_before", created_before)):
        if when is not None:
            params.append((key, _timestamp(key, when)))
    if type(page_size) is not int or not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValueError(f"page_size must be an int in 1..{MAX_PAGE_SIZE}, not {page_size!r}")
    params.append(("limit", str(page_size)))
    return params


def _pairs(
    name: str, pairs: str | Iterable[str] | Mapping[str, str | None] | None
) -> list[tuple[str, str]]:
    """``tag``/``property`` parameters: a key, ``"key:value"``, a list, or a mapping."""
    if isinstance(pairs, Mapping):
        out = []
        for key, value in pairs.items():
            check_name(key, f"{name} key")
            out.append((name, key if value is None else f"{key}:{value}"))
        return out
    listed = [pairs] if isinstance(pairs, str) else (pairs or ())
    return [(name, check_name(each, name)) for each in listed]


def _timestamp(what: str, when: datetime | str) -> str:
    if isinstance(when, str):
        return check_name(when, what)
    if not isinstance(when, datetime):
        raise TypeError(f"{what} must be a datetime or an ISO 8601 str, not {type(when).__name__}")
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (e.g. datetime.now(timezone.utc))")
    return when.isoformat()
