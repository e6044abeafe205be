"""``Experiment``: a named group of runs in a workspace; ``start_logging`` opens one,
``get_runs`` lists them (read-only handles, newest first by default)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path

from ._run import Run, attached_run, new_run_id, open_run
from ._validate import check_experiment_name, check_name
from ._workspace import Workspace

#: The API's page size bounds (``limit``).
MAX_PAGE_SIZE = 1000


class Experiment:
    def __init__(self, workspace: Workspace, name: str) -> None:
        if not isinstance(workspace, Workspace):
            raise TypeError(f"workspace must be a Workspace, not {type(workspace).__name__}")
        self.workspace = workspace
        self.name = check_experiment_name(name)

    def __repr__(self) -> str:
        return f"Experiment(name={self.name!r}, workspace={self.workspace.name!r})"

    def start_logging(
        self,
        *,
        display_name: str | None = None,
        compute_target: str | None = "local",
        capture_output: bool = False,
        outputs_dir: str | os.PathLike[str] | None = "outputs",
        properties: Mapping[str, str] | None = None,
    ) -> Run:
        """Start an interactive run (NotStarted → Running) and return its handle.

        ``outputs_dir`` (relative to the current directory now) is uploaded as
        ``outputs/...`` artifacts when the run completes; None disables that.
        ``capture_output`` also records stdout/stderr lines until the run ends.
        """
        if display_name is not None:
            check_name(display_name, "display_name")
        if compute_target is not None:
            check_name(compute_target, "compute_target")
        return open_run(
            self,
            new_run_id(self.name),
            parent=None,
            rank=0,
            world_size=1,
            display_name=display_name,
            compute_target=compute_target,
            properties=properties or {},  # checked by open_run
            outputs_dir=Path(outputs_dir).absolute() if outputs_dir is not None else None,
            statuses=("NotStarted", "Running"),
            capture_output=capture_output,
        )

    def get_runs(
        self,
        status: str | Iterable[str] | None = None,
        tags: str | Iterable[str] | Mapping[str, str | None] | None = None,
        order_by: str | None = None,
        *,
        order: str | None = None,
        compute_target: str | None = None,
        parent_run_id: str | None = None,
        created_after: datetime | str | None = None,
        created_before: datetime | str | None = None,
        limit: int | None = None,
        page_size: int = 100,
    ) -> Iterator[Run]:
        """The experiment's runs as read-only handles, fetched page by page as iterated.

        ``status``: one status or several ("Running", "Completed"…). ``tags``: a key, a
        ``"key:value"``, a list of those, or ``{key: value or None}``; a run must carry all
        of them. ``order_by``: ``"created_at"`` (default, newest first) or
        ``"metric:<name>"`` (by the metric's last value; runs without it come last), with
        ``order`` ``"asc"`` or ``"desc"``. ``created_after``/``created_before``: aware
        datetimes or ISO 8601 strings. ``limit`` caps how many runs are yielded.
        """
        params = runs_query(
            experiment=self.name,
            status=status,
            tags=tags,
            order_by=order_by,
            order=order,
            compute_target=compute_target,
            parent_run_id=parent_run_id,
            created_after=created_after,
            created_before=created_before,
            page_size=page_size,
        )
        if limit is not None and limit < 0:
            raise ValueError("limit must not be negative")
        return itertools.islice(self._runs(params), limit)

    def _runs(self, params: list[tuple[str, str]]) -> Iterator[Run]:
        self.workspace._flush_for_read()
        for summary in self.workspace._api.pages("/v1/runs", params, "runs"):
            yield attached_run(self.workspace, summary, self)


def runs_query(
    *,
    experiment: str | None,
    status: str | Iterable[str] | None,
    tags: str | Iterable[str] | Mapping[str, str | None] | None,
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
    if isinstance(tags, Mapping):
        for key, value in tags.items():
            check_name(key, "tag key")
            params.append(("tag", key if value is None else f"{key}:{value}"))
    else:
        tag_list = [tags] if isinstance(tags, str) else (tags or ())
        params.extend(("tag", check_name(each, "tag")) for each in tag_list)
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


def _timestamp(what: str, when: datetime | str) -> str:
    if isinstance(when, str):
        return check_name(when, what)
    if not isinstance(when, datetime):
        raise TypeError(f"{what} must be a datetime or an ISO 8601 str, not {type(when).__name__}")
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (e.g. datetime.now(timezone.utc))")
    return when.isoformat()
