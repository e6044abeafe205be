"""What ``Run.resume`` reads before it reopens a run: whether the run may be resumed, at
which attempt, and where each of its series and images goes on.

``Run.resume(workspace_or_experiment, run_id)`` (``_workspace.py``) reopens a run that is
still active — any status but Completed, Failed and Canceled; NotResponding included, a
run whose process was killed — for logging from this process, as a new producer of its
own (its own ``producer_id`` and gap-free ``seq``, so the worker's exactly-once and
ordering hold beside every other producer of the run). Before opening anything it reads,
through the API:

- the run (``GET /v1/runs/{id}``): ``NotFoundError`` if there is no such run (yet: a run
  appears when the worker stores its first event), ``RunEndedError`` naming the status if
  it has ended;
- its attempt, for a submitted run (``GET /v1/submissions/{id}``; 0 for any other run):
  the statuses it reports must be of the run's current try, or the worker ignores them;
- where its series go on: for each series of the run (``GET …/metric-index``, kinds
  ``series`` and ``value``), its highest stored step over all ranks
  (``GET …/metrics/{name}?max_points=1``) — ``run.log(name, v)`` without ``step=`` then
  logs at that step + 1, as if the handle that logged them had gone on. Likewise each
  image's steps (``GET …/files``: ``log_image`` without ``step=``). A series first
  logged after the resume starts at 0.

The steps are those *stored* when ``resume`` is called. Points the first process sent
but the worker has not stored yet (it closed a moment ago) are not counted: let it read
its own writes before it exits (any read — ``run.get_metrics()`` — waits until they are
stored), or pass ``step=`` explicitly. Two processes logging into one series at once
both continue from the same steps; give them different names or ranks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from ._client import ApiClient, segment
from ._errors import ApiError, NotFoundError, RunEndedError
from ._session import Session

__all__ = ["ENDED", "ResumePoint", "resume_point"]

#: The statuses a run cannot be resumed from.
ENDED: Final = ("Completed", "Failed", "Canceled")
#: The metric-index kinds that are series (``log`` of a name once, or more).
_SERIES_KINDS: Final = ("series", "value")


@dataclass(frozen=True)
class ResumePoint:
    """A resumable run as stored: its details, attempt and where its steps go on."""

    details: dict[str, Any]
    attempt: int
    #: Series name → the step after its highest stored one.
    next_steps: dict[str, int]
    #: Image name → the step after its highest stored one.
    next_image_steps: dict[str, int]


def resume_point(session: Session, run_id: str) -> ResumePoint:
    """Read what ``Run.resume`` needs; raises ``NotFoundError``/``RunEndedError``."""
    what = "Run.resume()"
    try:
        details = session.run_details(run_id)
    except NotFoundError as exc:
        raise NotFoundError(
            404,
            f"no run {run_id!r} to resume (a run exists once the worker has stored its "
            f"first event; is it in workspace {session.name!r}?)",
            what=what,
            retriable=False,
        ) from exc
    status = str(details.get("status"))
    if status in ENDED:
        raise RunEndedError(
            run_id,
            status,
            what,
            message=(
                f"{what}: run {run_id!r} has ended ({status}) and cannot be resumed: only "
                "a run that is still active takes more metrics. Start a new run "
                "(experiment.start_logging()), or tag this one: "
                f"Run(experiment, {run_id!r}).tag(...)"
            ),
        )
    api = session.api
    path = f"/v1/runs/{segment(run_id)}"
    return ResumePoint(
        details=details,
        attempt=_attempt(api, run_id),
        next_steps=_next_steps(api, path),
        next_image_steps=_next_image_steps(api, path),
    )


def _attempt(api: ApiClient, run_id: str) -> int:
    """The try of a submitted run its statuses must carry (0: not submitted)."""
    try:
        submission = api.get_json(f"/v1/submissions/{segment(run_id)}")
    except NotFoundError:
        return 0
    attempt = submission.get("attempt")
    return attempt if type(attempt) is int and attempt >= 0 else 0


def _next_steps(api: ApiClient, path: str) -> dict[str, int]:
    index = api.get_json(f"{path}/metric-index")
    names = [str(e["name"]) for e in index.get("metrics") or []
             if isinstance(e, dict) and e.get("kind") in _SERIES_KINDS and e.get("count")]
    out = {}
    for name in names:
        last = _last_step(api, f"{path}/metrics/{segment(name)}")
        if last is not None:
            out[name] = last + 1
    return out


def _last_step(api: ApiClient, series_path: str) -> int | None:
    """The highest stored step of a series, all ranks: the one bucket (or point) of
    ``max_points=1``."""
    try:
        document = api.get_json(series_path, [("max_points", "1"), ("format", "columns")])
    except NotFoundError:
        return None  # not a series after all (a name also logged as a list or table)
    columns = document.get("columns")
    if not isinstance(columns, dict):
        raise ApiError(200, "answer has no 'columns' object", what=f"GET {series_path}",
                       retriable=False)
    steps = columns.get("step_max" if document.get("downsampled") else "step") or []
    return _highest(steps)


def _next_image_steps(api: ApiClient, path: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for file in api.pages(f"{path}/files", (), "files"):
        image, step = file.get("image"), file.get("step")
        if isinstance(image, str) and type(step) is int:
            out[image] = max(out.get(image, step + 1), step + 1)
    return out


def _highest(steps: Iterable[Any]) -> int | None:
    ints = [s for s in steps if type(s) is int]
    return max(ints) if ints else None
