"""Reading runs back through the API: the read methods of ``Run``, and the query of
``Experiment.get_runs`` (``runs_query``).

``RunReads`` is mixed into ``Run``; it needs only the run's id, its session (for the
``ApiClient``) and ``_writes_here`` (whether this handle logs into the run). Every method
returns one fixed type, and every method first calls ``Session.flush_for_read``.

What a read shows is what the ingest worker has committed: usually well under a second
after the events reach Kafka. A run started by this process is unknown to the API until
its first event is committed, so the first read through a handle that logs into the run
waits for the run to appear (up to ``read_flush_timeout_s``) instead of failing with
``NotFoundError`` a moment too early.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from ._client import decode_non_finite, file_path, segment
from ._errors import ApiError, NotFoundError
from ._follow import wait_for_completion
from ._session import Session
from ._validate import check_artifact_name, check_name

#: Between looks while waiting for a run started here to appear in the API.
VISIBLE_POLL_S = 0.05
#: The API's page size bounds (``limit``).
MAX_PAGE_SIZE = 1000


class RunReads:
    """``get_metrics``, ``get_file_names``, ``download_file``, ``get_status``,
    ``get_details``, ``get_portal_url`` and ``wait_for_completion``."""

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
        if self._seen_by_api or not self._writes_here:
            return
        deadline = time.monotonic() + self._session.options.read_flush_timeout_s
        while True:
            try:
                self._session.api.get_json(self._path())
            except NotFoundError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(VISIBLE_POLL_S)
            else:
                self._seen_by_api = True
                return

    def get_metrics(self, name: str | Iterable[str] | None = None) -> dict[str, Any]:
        """Every metric of the run (or only ``name``: one name or several), shaped as on the
        product page: a value logged once → that value; a series → the list of its values
        ordered by (step, rank, time), all ranks included; ``log_list`` → the list;
        ``log_row``/``log_table`` → ``{column: [values...]}``. Values keep their type
        (int, bool, str, float, NaN and ±Inf included). An unknown name is left out.
        """
        names = [name] if isinstance(name, str) else list(name or ())
        for each in names:
            check_name(each, "metric name")
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
        decoded: dict[str, Any] = decode_non_finite(metrics)
        return decoded

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
        self._before_read()
        return self._session.api.get_json(self._path())

    def get_status(self) -> str:
        """NotStarted, Queued, Preparing, Running, NotResponding, Finalizing,
        CancelRequested, Completed, Failed or Canceled."""
        return str(self.get_details()["status"])

    def get_portal_url(self) -> str:
        """Where to look at the run (the API's run page until a studio exists)."""
        return str(self.get_details()["portal_url"])

    def wait_for_completion(
        self, show_output: bool = True, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """Block until the run is Completed, Failed or Canceled and return its details.

        With ``show_output`` the run's log lines (from the start) and its status changes
        are printed to stdout as they are committed. ``ProducerTimeoutError`` after
        ``timeout_s`` (None: no limit); the run itself is not affected.
        """
        self._before_read()
        return wait_for_completion(
            self._session.api,
            self._path(),
            self.id,
            show_output=show_output,
            timeout_s=timeout_s,
            out=sys.stdout,
        )


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
