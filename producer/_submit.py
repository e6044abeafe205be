"""``Experiment.submit``, ``run.cancel()`` of a submitted run and ``run.restore_snapshot``:
the HTTP side of submitting a script to a compute target (issue 10).

Submitting (``submission``, then ``Experiment.submit`` opens the run):

1. The configuration is checked (``ScriptRunConfig.to_submission``), the script must be a
   file inside ``source_directory``, and the tags, priority and retry count are checked,
   all before anything is read or sent.
2. ``source_directory`` is packed into a snapshot zip (``_snapshot.build_snapshot``: the
   ``.amlignore``/``.gitignore`` rules, the size and file-count limits, refused before any
   file is read), which must contain the script (an ignore rule may not drop it).
3. The zip's bytes are uploaded only if the API does not have them: ``HEAD
   /v1/blobs/{sha256}``, then ``PUT`` (the blob route artifacts use); the store is
   content-addressed, so resubmitting an unchanged folder uploads nothing.
4. ``POST /v1/submissions`` queues the run. The answer is durable (committed in
   PostgreSQL) and the call is idempotent (the same document again answers 200), so
   connection failures and 5xx answers are retried with backoff for at most
   ``SUBMIT_DEADLINE_S``; then the run is *not* submitted and ``ApiError`` says so.

Only then is the run opened as a producer (NotStarted, Queued, with its display name,
target, properties and tags): it shows up like any run. The agent that leases it opens it
again (``Run.open``) and reports Preparing, Running, Finalizing and the end.

This module does the HTTP; the run handles are ``_workspace``'s (which imports this
module, never the other way round).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Final

from ._blobs import upload
from ._client import ApiClient, segment
from ._errors import ApiError, BlobUploadError, NotFoundError, ReadOnlyRunError
from ._runconfig import ScriptRunConfig
from ._snapshot import Snapshot, SnapshotError, build_snapshot
from ._validate import Scalar, check_name, check_tag_value

logger = logging.getLogger(__name__)

__all__ = [
    "MAX_RETRIES_LIMIT",
    "SUBMIT_DEADLINE_S",
    "NotSubmittedError",
    "Submission",
    "cancel_run",
    "restore_snapshot",
    "snapshot_id",
    "submission",
]

#: How long ``submit`` keeps retrying an unreachable or failing API before giving up.
SUBMIT_DEADLINE_S: Final = 60.0
#: First pause between retries; doubled each time, at most ``MAX_BACKOFF_S``.
FIRST_BACKOFF_S: Final = 0.25
MAX_BACKOFF_S: Final = 5.0
#: Largest ``max_retries`` (the submissions table's own bound).
MAX_RETRIES_LIMIT: Final = 100
#: ``priority``'s bounds (the API's: it refuses others with 400).
PRIORITY_RANGE: Final = (-1000, 1000)
#: Properties every submitted run starts with, as Azure ML names them.
RUN_SOURCE: Final = {"azureml.runsource": "azureml.scriptrun"}
SNAPSHOT_PROPERTY: Final = "ContentSnapshotId"
CHUNK_BYTES: Final = 1 << 20


@dataclass(frozen=True)
class Submission:
    """A queued run, as ``POST /v1/submissions`` answered: what ``Experiment.submit`` needs
    to open it."""

    run_id: str
    target: str
    display_name: str | None
    tags: list[tuple[str, Scalar | None]]
    snapshot_sha256: str
    snapshot_bytes: int
    #: The server's answer: ``state`` ("queued"), ``position`` (1 = next), ``submitted_at``.
    answer: dict[str, Any]

    @property
    def properties(self) -> dict[str, str]:
        return {**RUN_SOURCE, SNAPSHOT_PROPERTY: self.snapshot_sha256}


# ---- checks -------------------------------------------------------------------------------


def _int_option(value: object, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{what} must be between {low} and {high}, not {value}")
    return value


def _tags(tags: object) -> list[tuple[str, Scalar | None]]:
    """``tags`` as ``Experiment.submit`` takes them (Azure: ``{"tag": "value"}``; a list of
    keys tags without values), checked as ``run.set_tags`` checks them."""
    if tags is None:
        return []
    if isinstance(tags, Mapping):
        items = list(tags.items())
    elif isinstance(tags, Iterable) and not isinstance(tags, str | bytes):
        items = [(key, None) for key in tags]
    else:
        raise TypeError(f"tags must be a dict of key -> value, not {type(tags).__name__}")
    return [(check_name(key, "tag key"), check_tag_value(value)) for key, value in items]


def _script_problem(source: Path, script: str) -> str | None:
    """Why ``script`` cannot be run from ``source`` (the snapshot's root), or None."""
    if not source.is_dir():
        return f"source_directory {str(source)!r} is not a directory"
    path = source / script
    if not path.is_file():
        return (
            f"script {script!r} is not a file in source_directory {str(source.absolute())!r}; "
            "the script path is relative to source_directory"
        )
    try:
        path.resolve().relative_to(source.resolve())
    except ValueError:
        return f"script {script!r} leads out of source_directory {str(source)!r} (a link)"
    return None


def _snapshot_name(script: str) -> str:
    """The zip entry name of ``script`` (relative, '/' separated, no '.' parts)."""
    return PurePosixPath(os.path.normpath(script).replace(os.sep, "/")).as_posix()


# ---- HTTP with bounded retries ------------------------------------------------------------


class _Deadline:
    """Retries of one submission, sharing ``SUBMIT_DEADLINE_S``."""

    def __init__(self, deadline_s: float) -> None:
        self.deadline_s = deadline_s
        self.ends = time.monotonic() + deadline_s
        self.backoff_s = FIRST_BACKOFF_S
        self.attempts = 0

    def again(self, exc: ApiError | BlobUploadError) -> bool:
        """After a failed attempt: True (having slept) to try again, False to give up."""
        self.attempts += 1
        if not exc.retriable:
            return False
        pause = min(self.backoff_s, self.ends - time.monotonic())
        if pause <= 0:
            return False
        logger.info("submit: %s; retrying in %.2f s", exc, pause)
        time.sleep(pause)
        self.backoff_s = min(self.backoff_s * 2, MAX_BACKOFF_S)
        return True

    def progress(self) -> None:
        """A step succeeded: the next step's retries start with a short pause again."""
        self.backoff_s = FIRST_BACKOFF_S

    def gave_up(self, exc: ApiError | BlobUploadError, what: str) -> ApiError:
        status = exc.status
        if status is None or exc.retriable:
            message = (
                f"{what} failed {self.attempts} time(s) over {self.deadline_s:g} s, the last "
                f"time with: {exc}. The run was not submitted (nothing is queued): start the "
                "stack (runstream up) or check RUNSTREAM_API, then submit again"
            )
        else:
            message = f"{what} was refused: {exc}"
        return ApiError(status, message, what=what, retriable=exc.retriable)


def _has_blob(api: ApiClient, sha256: str, deadline: _Deadline) -> bool:
    while True:
        try:
            with api.request("HEAD", f"/v1/blobs/{sha256}", accept="*/*"):
                deadline.progress()
                return True
        except NotFoundError:
            deadline.progress()
            return False
        except ApiError as exc:
            if not deadline.again(exc):
                raise deadline.gave_up(exc, "checking for the snapshot's bytes") from exc


def _upload(api: ApiClient, snapshot: Snapshot, timeout_s: float, deadline: _Deadline) -> None:
    while True:
        try:
            upload(api, snapshot.sha256, snapshot.path, timeout_s=timeout_s)
            deadline.progress()
            return
        except BlobUploadError as exc:
            if not deadline.again(exc):
                raise deadline.gave_up(exc, "uploading the snapshot") from exc


def _post(api: ApiClient, body: dict[str, Any], deadline: _Deadline) -> dict[str, Any]:
    while True:
        try:
            return api.post_json("/v1/submissions", body)
        except ApiError as exc:
            if not deadline.again(exc):
                raise deadline.gave_up(exc, "POST /v1/submissions") from exc


# ---- submitting ---------------------------------------------------------------------------


def submission(
    api: ApiClient,
    *,
    config: object,
    experiment: str,
    workspace: str,
    run_id: str,
    tags: object,
    display_name: str | None,
    priority: int | None,
    max_retries: int | None,
    blob_timeout_s: float,
    deadline_s: float | None = None,
) -> Submission:
    """Check ``config`` and the options, snapshot, upload and queue the run (see the
    module's docstring). Raises ``TypeError``/``ValueError`` for a bad call,
    ``FileNotFoundError`` for a missing script, ``SnapshotError`` for a folder over a limit,
    ``ApiError`` when the API refused or could not be reached in time."""
    if not isinstance(config, ScriptRunConfig):
        raise TypeError(
            "submit takes a ScriptRunConfig (from producer import ScriptRunConfig), not "
            f"{type(config).__name__}"
        )
    spec = config.to_submission()
    run_config = config.run_config
    priority = _int_option(
        run_config.priority if priority is None else priority, "priority", *PRIORITY_RANGE
    )
    max_retries = _int_option(
        run_config.max_retries if max_retries is None else max_retries,
        "max_retries", 0, MAX_RETRIES_LIMIT,
    )
    checked_tags = _tags(tags)
    check_name(run_id, "run id")
    if display_name is not None:
        check_name(display_name, "display_name")
    source = Path(spec["source_directory"])
    script = spec["script"]
    if script is not None and (problem := _script_problem(source, script)) is not None:
        raise FileNotFoundError(problem)
    with build_snapshot(source) as snapshot:
        if script is not None and _snapshot_name(script) not in snapshot.names:
            ignore = snapshot.ignore_file.name if snapshot.ignore_file else "an ignore file"
            raise SnapshotError(
                f"script {script!r} is left out of the snapshot by {ignore} in "
                f"{str(source)!r}: the agent would not get it; change the rules"
            )
        deadline = _Deadline(SUBMIT_DEADLINE_S if deadline_s is None else deadline_s)
        if not _has_blob(api, snapshot.sha256, deadline):
            _upload(api, snapshot, blob_timeout_s, deadline)
        body = {
            "run_id": run_id,
            "experiment": experiment,
            "workspace": workspace,
            "target": spec["target"],
            "spec": spec,
            "snapshot": {"sha256": snapshot.sha256, "size_bytes": snapshot.size},
            "priority": priority,
            "max_retries": max_retries,
            "display_name": display_name,
        }
        try:
            answer = _post(api, body, deadline)
        except ApiError as exc:
            if exc.status != 409 or "is not stored" not in exc.message:
                raise
            # The blob went between HEAD and POST (or HEAD was answered from elsewhere).
            _upload(api, snapshot, blob_timeout_s, deadline)
            answer = _post(api, body, deadline)
    logger.info(
        "submitted run %s to target %s (position %s in its queue)",
        run_id, spec["target"], answer.get("position"),
    )
    return Submission(
        run_id=run_id,
        target=spec["target"],
        display_name=display_name,
        tags=checked_tags,
        snapshot_sha256=snapshot.sha256,
        snapshot_bytes=snapshot.size,
        answer=answer,
    )


# ---- controlling and reading a submitted run ----------------------------------------------


#: ``POST /v1/runs/{id}/cancel``'s action → the status the run takes.
CANCEL_STATUS: Final = {"canceled": "Canceled", "cancel_requested": "CancelRequested"}


class NotSubmittedError(ReadOnlyRunError, ApiError):
    """``run.cancel()`` on a handle attached by id to a run that was not submitted: the
    API cancels submitted runs only (it answered 409, or 404 for a run it does not
    know); a ``start_logging`` run is canceled by the handle that logs into it. Both a
    ``ReadOnlyRunError`` (this handle cannot end the run) and an ``ApiError`` (``status``,
    ``message``: the server's)."""

    def __init__(self, run_id: str, status: int, message: str) -> None:
        hint = "" if "start_logging" in message else (
            "; a run started with start_logging is canceled by the handle that logs into it"
        )
        Exception.__init__(
            self,
            f"run {run_id!r} cannot be canceled from this handle, which was attached by id "
            f"for reading: the API cancels submitted runs only (HTTP {status}: {message})"
            + hint,
        )
        self.run_id = run_id
        self.status = status
        self.message = message
        self.retriable = False


def cancel_run(api: ApiClient, run_id: str) -> dict[str, Any]:
    """Cancel a submitted run: ``{"run_id", "action", "state"}`` with ``action``
    "canceled" (it was queued: Canceled now), "cancel_requested" (running: its agent stops
    it) or "none" (it had ended). ``NotSubmittedError`` for a run that was not submitted."""
    path = f"/v1/runs/{segment(run_id)}/cancel"
    try:
        answer = api.post_json(path, {})
    except ApiError as exc:
        if exc.status in (404, 409):
            raise NotSubmittedError(run_id, exc.status, exc.message) from exc
        raise
    logger.info("cancel of run %s: %s", run_id, answer.get("action"))
    return answer


def snapshot_id(api: ApiClient, run_id: str) -> str:
    """The run's snapshot id: the SHA-256 of its snapshot zip (``GET /v1/submissions/{id}``).
    ``NotFoundError`` for a run that was not submitted."""
    path = f"/v1/submissions/{segment(run_id)}"
    try:
        document = api.get_json(path)
    except NotFoundError as exc:
        raise NotFoundError(
            404,
            f"run {run_id!r} was not submitted (experiment.submit), so it has no snapshot",
            what=f"GET {path}",
            retriable=False,
        ) from exc
    snapshot = document.get("snapshot")
    sha256 = snapshot.get("sha256") if isinstance(snapshot, dict) else None
    if not isinstance(sha256, str):
        raise ApiError(200, "answer has no snapshot.sha256", what=f"GET {path}", retriable=False)
    return sha256


def _target_file(path: str | os.PathLike[str] | None, name: str) -> Path:
    """Azure's rule: ``path`` is the directory to put ``<snapshot id>.zip`` in (default:
    the system's temporary directory). Also accepted: a path ending in ``.zip`` that is not
    an existing directory, taken as the file to write."""
    if path is None:
        return Path(tempfile.gettempdir()) / name
    target = Path(path)
    if target.suffix.lower() == ".zip" and not target.is_dir():
        return target
    return target / name


def restore_snapshot(
    api: ApiClient,
    run_id: str,
    snapshot: str | None = None,
    path: str | os.PathLike[str] | None = None,
) -> str:
    """Download the run's snapshot zip (``GET /v1/runs/{id}/snapshot``), check its SHA-256,
    and return the absolute path written (see ``_target_file``)."""
    own = snapshot_id(api, run_id)
    if snapshot is not None and snapshot != own:
        raise ValueError(
            f"snapshot_id {snapshot!r} is not run {run_id!r}'s snapshot ({own!r}): a "
            "submitted run has one snapshot; pass None or run.get_snapshot_id()"
        )
    target = _target_file(path, f"{own}.zip").absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")
    route = f"/v1/runs/{segment(run_id)}/snapshot"
    try:
        with part.open("xb") as out:
            api.download(route, out)
        digest = hashlib.sha256()
        with part.open("rb") as written:
            while chunk := written.read(CHUNK_BYTES):
                digest.update(chunk)
        if digest.hexdigest() != own:
            raise ApiError(
                200,
                f"the snapshot downloaded has SHA-256 {digest.hexdigest()}, not {own}",
                what=f"GET {route}",
                retriable=True,
            )
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)
    return str(target)
