"""Reading a run back through the API: the read methods of ``Run``.

``RunReads`` is mixed into ``Run``; it needs only the run's id, its workspace (for the
``ApiClient``) and ``_writes_here`` (whether this handle logs into the run). Every method
returns one fixed type, and every method first calls ``Workspace._flush_for_read``.

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
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from ._client import decode_non_finite, file_path, segment
from ._errors import ApiError, NotFoundError
from ._follow import wait_for_completion
from ._validate import check_artifact_name, check_name

if TYPE_CHECKING:
    from ._workspace import Workspace

#: Between looks while waiting for a run started here to appear in the API.
VISIBLE_POLL_S = 0.05


class RunReads:
    """``get_metrics``, ``get_file_names``, ``download_file``, ``get_status``,
    ``get_details``, ``get_portal_url`` and ``wait_for_completion``."""

    _workspace: Workspace
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
        self._workspace._flush_for_read()
        if self._seen_by_api or not self._writes_here:
            return
        deadline = time.monotonic() + self._workspace.options.read_flush_timeout_s
        while True:
            try:
                self._workspace._api.get_json(self._path())
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
        answer = self._workspace._api.get_json(
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
        files = self._workspace._api.pages(self._path("/files"), (), "files")
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
                self._workspace._api.download(self._path(f"/files/{file_path(name)}"), out)
            os.replace(part, target)
        finally:
            part.unlink(missing_ok=True)
        return target

    def get_details(self) -> dict[str, Any]:
        """The run's details: ``status``, per-state ``status_times``, ``tags``,
        ``parent_run_id``, ``children``, ``compute_target``, ``error``, ``properties``,
        ``portal_url``… (timestamps are ISO 8601 strings in UTC, or None)."""
        self._before_read()
        return self._workspace._api.get_json(self._path())

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
            self._workspace._api,
            self._path(),
            self.id,
            show_output=show_output,
            timeout_s=timeout_s,
            out=sys.stdout,
        )
