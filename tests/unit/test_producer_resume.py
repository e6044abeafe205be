"""``Run.resume``: reopening a still-active run for logging from another process, against
canned API answers (``FakeApi``) and an in-memory broker. Real processes, the real
worker and database: tests/integration/test_run_resume.py.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from producer import (
    Experiment,
    NotFoundError,
    ReadOnlyRunError,
    Run,
    RunClosedError,
    RunEndedError,
    Workspace,
    _exit,
)
from tests.helpers import run_points
from tests.unit.producer_fakes import (
    Answer,
    FakeApi,
    FakeWorkspace,
    of_kind,
    ok,
    run_details,
)

RUN_ID = "exp_1700000000_0a1b2c3d"
RUN_PATH = f"/v1/runs/{RUN_ID}"
PNG_1X1 = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg==")


def not_found(message: str) -> Callable[[list[tuple[str, str]]], Answer]:
    return lambda params: (404, {"error": {"status": 404, "message": message}})


def last_step_route(last: int, points: int) -> Callable[[list[tuple[str, str]]], Answer]:
    """The series route asked for ``max_points=1``: one bucket (or the one point)."""

    def answer(params: list[tuple[str, str]]) -> Answer:
        assert ("max_points", "1") in params
        head = {"name": "x", "run_id": RUN_ID, "total_points": points}
        if points == 1:
            return 200, {**head, "downsampled": False, "columns": {
                "step": [last], "value": [1.0], "rank": [0], "time_us": [0]}}
        return 200, {**head, "downsampled": True, "columns": {
            "step_min": [0], "step_max": [last], "count": [points], "min": [0.0],
            "max": [1.0], "last": [1.0], "first_time_us": [0], "last_time_us": [1]}}

    return answer


def stored_run(status: str = "Running", *, attempt: int | None = None,
               **details: Any) -> FakeApi:
    """A run with series ``loss`` (steps 0..9), ``acc`` (one value at step 4), a list
    ``labels``, and image ``samples`` at steps 0 and 10."""
    return FakeApi({
        RUN_PATH: ok(run_details(RUN_ID, status, display_name="ridge",
                                 properties={"lr": "0.1"}, **details)),
        f"/v1/submissions/{RUN_ID}": (
            not_found("not submitted") if attempt is None else ok({"run_id": RUN_ID,
                                                                   "attempt": attempt})),
        f"{RUN_PATH}/metric-index": ok({"metrics": [
            {"name": "loss", "kind": "series", "count": 10},
            {"name": "acc", "kind": "value", "count": 1},
            {"name": "labels", "kind": "list", "count": 3},
        ]}),
        f"{RUN_PATH}/metrics/loss": last_step_route(9, 10),
        f"{RUN_PATH}/metrics/acc": last_step_route(4, 1),
        f"{RUN_PATH}/files": ok({"files": [
            {"name": "samples/step_0.png", "image": "samples", "step": 0},
            {"name": "samples/step_10.png", "image": "samples", "step": 10},
            {"name": "model.pkl", "image": None, "step": None},
        ], "next_cursor": None}),
    })


def test_resume_opens_a_producer_of_its_own_and_goes_on_after_the_stored_steps(
    make_ws: Callable[..., FakeWorkspace], tmp_path: Path,
) -> None:
    fake = stored_run()
    fake.routes[f"/v1/blobs/{hashlib.sha256(PNG_1X1).hexdigest()}"] = ok({})  # the upload
    ws = make_ws(fake)
    image = tmp_path / "sample.png"
    image.write_bytes(PNG_1X1)

    run = Run.resume(ws, RUN_ID)
    run.log("loss", 0.5)
    run.log("loss", 0.25)
    run.log("acc", 0.9)
    run.log("new", 1.0)  # first logged now: from 0
    run.log("loss", 0.1, step=100)  # an explicit step as ever
    run.log_image("samples", image)
    run.complete()
    ws.flush(10.0)

    assert (run.id, run.experiment.name, run.display_name) == (RUN_ID, "exp", "ridge")
    events = ws.kafka.events()
    assert {e["producer_id"] for e in events} == {run.producer_id}
    assert all(e["seq"] == i for i, e in enumerate(events))  # a new producer: from 0
    assert run_points(events, RUN_ID) == {
        "loss": [(10, 0.5), (11, 0.25), (100, 0.1)], "acc": [(5, 0.9)], "new": [(0, 1.0)]}
    lifecycle = of_kind(events, "Lifecycle")
    assert [e["status"] for e in lifecycle] == ["Running", "Finalizing", "Completed"]
    # The run keeps its metadata: the resumed handle's first event carries none of it.
    assert (lifecycle[0]["display_name"], lifecycle[0]["properties"]) == (None, {})
    assert {e["attempt"] for e in lifecycle} == {0}
    artifacts = of_kind(events, "Artifact")
    assert [a["name"] for a in artifacts] == ["samples/step_11.png"]


def test_a_submitted_run_is_resumed_at_its_attempt(
    make_ws: Callable[..., FakeWorkspace],
) -> None:
    ws = make_ws(stored_run(attempt=2))
    run = Run.resume(Experiment(ws, "exp"), RUN_ID)
    run.close(5.0)
    assert {e["attempt"] for e in of_kind(ws.kafka.events(), "Lifecycle")} == {2}


@pytest.mark.parametrize("status", ["Completed", "Failed", "Canceled"])
def test_an_ended_run_cannot_be_resumed(
    make_ws: Callable[..., FakeWorkspace], status: str,
) -> None:
    ws = make_ws(stored_run(status))
    with pytest.raises(RunEndedError) as raised:
        Run.resume(ws, RUN_ID)
    assert str(raised.value).startswith(
        f"Run.resume(): run {RUN_ID!r} has ended ({status}) and cannot be resumed")
    assert f"Run(experiment, {RUN_ID!r}).tag(...)" in str(raised.value)
    assert (raised.value.run_id, raised.value.status) == (RUN_ID, status)
    assert isinstance(raised.value, RunClosedError)
    assert ws.kafka.events() == []  # nothing was opened


@pytest.mark.parametrize("status", ["NotResponding", "Queued", "Finalizing"])
def test_any_status_but_an_end_can_be_resumed(
    make_ws: Callable[..., FakeWorkspace], status: str,
) -> None:
    ws = make_ws(stored_run(status))
    run = Run.resume(ws, RUN_ID)
    run.close(5.0)
    assert [e["status"] for e in of_kind(ws.kafka.events(), "Lifecycle")] == ["Running"]


def test_an_unknown_run_is_not_found(make_ws: Callable[..., FakeWorkspace]) -> None:
    ws = make_ws(FakeApi({RUN_PATH: not_found(f"no run {RUN_ID!r}")}))
    with pytest.raises(NotFoundError, match=rf"Run.resume\(\): HTTP 404: no run {RUN_ID!r} "
                       "to resume"):
        Run.resume(ws, RUN_ID)
    assert ws.kafka.events() == []


def test_an_experiment_given_must_be_the_runs(make_ws: Callable[..., FakeWorkspace]) -> None:
    ws = make_ws(stored_run())
    with pytest.raises(NotFoundError, match="is in experiment 'exp', not 'other'"):
        Run.resume(Experiment(ws, "other"), RUN_ID)
    assert ws.kafka.events() == []


def test_bad_arguments(make_ws: Callable[..., FakeWorkspace]) -> None:
    ws = make_ws(stored_run())
    with pytest.raises(TypeError, match="takes a Workspace or an Experiment, not str"):
        Run.resume("default", RUN_ID)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"rank 2 is not in 0\.\.1"):
        Run.resume(ws, RUN_ID, rank=2, world_size=2)
    with pytest.raises(ValueError, match="run id"):
        Run.resume(ws, "")


def test_the_resuming_process_owns_the_run_until_it_ends(
    make_ws: Callable[..., FakeWorkspace],
) -> None:
    ws: Workspace = make_ws(stored_run())
    run = Run.resume(ws, RUN_ID, rank=1, world_size=2)
    assert run in _exit._owned_here()  # ended Failed if this process exits first
    assert (run.rank, run.world_size) == (1, 2)
    run.close(5.0)  # left active for another process: no longer ended at exit
    assert run not in _exit._owned_here()


def test_a_fetched_run_names_resume_when_logged_into(
    make_ws: Callable[..., FakeWorkspace],
) -> None:
    ws = make_ws(stored_run())
    with pytest.raises(ReadOnlyRunError, match=rf"Run.resume\(workspace, {RUN_ID!r}\)"):
        ws.get_run(RUN_ID).log("loss", 1.0)
