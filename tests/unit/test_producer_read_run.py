"""Run, Experiment and Workspace read methods against canned API answers (no network).

``FakeApi`` (the client's ``urlopen`` seam) answers from routes; ``MemoryKafka`` stands
in for the broker where a test needs a run this process logs into. The real server,
worker and database are in tests/integration/test_producer_read*.py.
"""

from __future__ import annotations

import email.message
import io
import json
import math
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from producer import (
    Experiment,
    NotFoundError,
    ProducerTimeoutError,
    ReadOnlyRunError,
    Run,
    RunClosedError,
    RunFailedError,
)
from tests.unit.producer_fakes import (
    API,
    Answer,
    FakeApi,
    FakeWorkspace,
    ok,
)

RUN_ID = "exp_1700000000_0a1b2c3d"
RUN_PATH = f"/v1/runs/{RUN_ID}"


def details(status: str = "Running", **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "run_id": RUN_ID,
        "experiment": "exp",
        "workspace": "default",
        "parent_run_id": None,
        "display_name": "ridge",
        "status": status,
        "compute_target": "local",
        "tags": {},
        "portal_url": f"{API}{RUN_PATH}",
        "error": None,
    }
    base.update(over)
    return base


def not_found(params: list[tuple[str, str]]) -> Answer:
    return 404, {"error": {"status": 404, "message": "no such run"}}


# ---- attaching ------------------------------------------------------------------------


def test_attach_reads_the_run_and_gives_a_read_only_handle(
    make_ws: Callable[..., FakeWorkspace],
) -> None:
    parent = "exp_1699999999_ffffffff"
    ws = make_ws(FakeApi({RUN_PATH: ok(details(parent_run_id=parent))}))

    run = ws.get_run(RUN_ID)

    assert isinstance(run, Run)
    assert (run.id, run.experiment.name, run.display_name) == (RUN_ID, "exp", "ridge")
    assert run.parent is not None
    assert (run.parent.id, run.parent.experiment.name) == (parent, "exp")
    assert run.closed
    assert ws._session.sender is None  # attaching starts no sender thread
    for call in (
        lambda: run.log("loss", 0.5),
        lambda: run.log("note", "text", step=3),
        lambda: run.log_list("l", [1]),
        lambda: run.log_row("t", x=1),
        lambda: run.log_table("t", {"x": [1]}),
        lambda: run.upload_file("a.txt", io.BytesIO(b"x")),
        run.complete,
        lambda: run.fail("boom"),
        run.cancel,
        lambda: run.child_run("c"),
    ):
        with pytest.raises(ReadOnlyRunError, match="attached by id for reading"):
            call()
    assert issubclass(ReadOnlyRunError, RunClosedError)
    run.flush(1.0)  # nothing of its own to deliver
    run.close()
    assert ws._session.sender is None


def test_attach_to_an_unknown_run_is_not_found(make_ws: Callable[..., FakeWorkspace]) -> None:
    ws = make_ws(FakeApi({RUN_PATH: not_found}))
    with pytest.raises(NotFoundError, match="no such run"):
        Run.attach(ws, RUN_ID)
    with pytest.raises(ValueError, match="run id"):
        ws.get_run("")


# ---- reads ----------------------------------------------------------------------------


def test_get_metrics_keeps_types_and_decodes_non_finite_values(
    make_ws: Callable[..., FakeWorkspace],
) -> None:
    asked: list[list[tuple[str, str]]] = []
    metrics = {
        "alpha": 0.5,
        "loss": [1.0, "NaN", "Infinity", "-Infinity", 2],
        "note": "warm start",
        "flag": True,
        "Y over X": {"x": [1, 2], "y": [0.4, "NaN"]},
    }

    def answer(params: list[tuple[str, str]]) -> Answer:
        asked.append(params)
        return 200, {"metrics": metrics}

    ws = make_ws(FakeApi({RUN_PATH: ok(details()), f"{RUN_PATH}/metrics": answer}))
    run = ws.get_run(RUN_ID)

    got = run.get_metrics()
    assert got["alpha"] == 0.5
    assert got["loss"][0] == 1.0
    assert math.isnan(got["loss"][1])
    assert got["loss"][2:] == [math.inf, -math.inf, 2]
    assert type(got["loss"][4]) is int
    assert (got["note"], got["flag"]) == ("warm start", True)
    assert got["Y over X"]["x"] == [1, 2]
    assert math.isnan(got["Y over X"]["y"][1])
    run.get_metrics(name="loss")
    run.get_metrics(name=["loss", "Y over X"])
    assert asked == [[], [("name", "loss")], [("name", "loss"), ("name", "Y over X")]]
    with pytest.raises(ValueError, match="metric name"):
        run.get_metrics(name="")


def test_status_details_portal_url_and_file_names(make_ws: Callable[..., FakeWorkspace]) -> None:
    files = [{"name": "outputs/model.pkl", "sha256": "0" * 64}, {"name": "ROC"}]
    ws = make_ws(
        FakeApi(
            {
                RUN_PATH: ok(details("Completed")),
                f"{RUN_PATH}/files": ok({"files": files}),
            }
        )
    )
    run = ws.get_run(RUN_ID)
    assert run.get_status() == "Completed"
    assert run.get_details()["display_name"] == "ridge"
    assert run.get_portal_url() == f"{API}{RUN_PATH}"
    assert run.get_file_names() == ["outputs/model.pkl", "ROC"]


def test_download_file_writes_whole_files_only(
    make_ws: Callable[..., FakeWorkspace], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = os.urandom(300_000)
    fake = FakeApi(
        {
            RUN_PATH: ok(details()),
            f"{RUN_PATH}/files/outputs/model%20v2.pkl": lambda p: (200, payload, "x/y"),
            f"{RUN_PATH}/files/missing.bin": lambda p: (
                404,
                {"error": {"status": 404, "message": "no file 'missing.bin'"}},
            ),
        }
    )
    run = make_ws(fake).get_run(RUN_ID)

    target = run.download_file("outputs/model v2.pkl", tmp_path / "deep" / "m.pkl")
    assert target == tmp_path / "deep" / "m.pkl"
    assert target.read_bytes() == payload

    into_dir = run.download_file("outputs/model v2.pkl", tmp_path / "deep")
    assert into_dir == tmp_path / "deep" / "model v2.pkl"
    assert into_dir.read_bytes() == payload

    monkeypatch.chdir(tmp_path)
    assert run.download_file("outputs/model v2.pkl") == Path("model v2.pkl")
    assert (tmp_path / "model v2.pkl").read_bytes() == payload

    with pytest.raises(NotFoundError, match="no file"):
        run.download_file("missing.bin", tmp_path / "none.bin")
    assert not (tmp_path / "none.bin").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    with pytest.raises(ValueError, match="relative POSIX path"):
        run.download_file("/etc/passwd", tmp_path / "x")


def test_get_runs_pages_lazily_into_read_only_handles(
    make_ws: Callable[..., FakeWorkspace],
) -> None:
    summaries = [
        details(run_id=f"exp_1700000000_0000000{i}", display_name=f"r{i}") for i in range(5)
    ]
    asked: list[list[tuple[str, str]]] = []

    def runs(params: list[tuple[str, str]]) -> Answer:
        asked.append(params)
        start = int(dict(params).get("cursor", "0"))
        end = start + 2
        return 200, {"runs": summaries[start:end], "next_cursor": str(end) if end < 5 else None}

    ws = make_ws(FakeApi({"/v1/runs": runs}))
    exp = Experiment(ws, "exp")

    handles = exp.get_runs(status="Completed", tags={"best": None}, order_by="metric:loss")
    assert asked == []  # nothing fetched until iterated
    got = list(handles)
    assert [r.display_name for r in got] == ["r0", "r1", "r2", "r3", "r4"]
    assert all(r.experiment is exp and r.closed for r in got)
    assert len(asked) == 3
    assert asked[0] == [
        ("experiment", "exp"),
        ("status", "Completed"),
        ("tag", "best"),
        ("top_level", "true"),  # Azure's include_children=False
        ("order_by", "metric:loss"),
        ("limit", "100"),
    ]
    asked.clear()
    assert [r.id for r in exp.get_runs(limit=3)] == [s["run_id"] for s in summaries[:3]]
    assert len(asked) == 2
    with pytest.raises(ValueError, match="order"):
        exp.get_runs(order_by="created_at", order="sideways")


def test_compute_targets(make_ws: Callable[..., FakeWorkspace]) -> None:
    state = {"compute_target": "gpu a", "queued": 2, "running": 1}
    ws = make_ws(
        FakeApi(
            {
                "/v1/compute": ok({"targets": [state]}),
                "/v1/compute/gpu%20a": ok({**state, "active_runs": [details()]}),
                "/v1/compute/nope": not_found,
            }
        )
    )
    assert ws.compute_targets() == [state]
    assert ws.compute_target("gpu a")["active_runs"][0]["run_id"] == RUN_ID
    with pytest.raises(NotFoundError):
        ws.compute_target("nope")


# ---- a run this process logs into ----------------------------------------------------------


def test_reads_flush_pending_events_first_and_wait_for_the_run_to_appear(
    make_ws: Callable[..., FakeWorkspace],
) -> None:
    seen_at_read: list[int] = []
    details_calls = 0
    fake = FakeApi({})
    ws = make_ws(fake)
    run = Experiment(ws, "exp").start_logging(outputs_dir=None)
    path = f"/v1/runs/{run.id}"

    def run_details(params: list[tuple[str, str]]) -> Answer:
        nonlocal details_calls
        details_calls += 1
        if details_calls <= 3:  # the worker has not committed the first event yet
            return not_found(params)
        # then every event the read asked about is stored
        asked = [value for key, value in params if key == "producer"]
        return 200, details(run_id=run.id, producers={
            p: {"events": 10**6, "max_seq": 10**6 - 1} for p in asked})

    def metrics(params: list[tuple[str, str]]) -> Answer:
        seen_at_read.append(len(ws.kafka.delivered))
        return 200, {"metrics": {"loss": 0.25}}

    fake.routes.update({path: run_details, f"{path}/metrics": metrics})
    run.log("loss", 0.25)

    assert run.get_metrics() == {"loss": 0.25}
    assert details_calls == 4
    assert seen_at_read == [3]  # NotStarted, Running and the metric batch: all sent before

    run.get_metrics()
    assert details_calls == 4  # the run is known now: no more visibility checks


def test_a_run_that_never_appears_is_not_found_after_the_read_flush_timeout(
    make_ws: Callable[..., FakeWorkspace],
) -> None:
    fake = FakeApi({})
    ws = make_ws(fake, read_flush_timeout_s=0.3)
    run = Experiment(ws, "exp").start_logging(outputs_dir=None)
    fake.routes[f"/v1/runs/{run.id}"] = not_found
    started = time.monotonic()
    with pytest.raises(NotFoundError):
        run.get_status()
    assert 0.3 <= time.monotonic() - started < 3.0


# ---- wait_for_completion --------------------------------------------------------------------


class LogServer:
    """/logs pages with cursors; lines can be appended while a wait runs."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def add(self, *texts: str, rank: int = 0) -> None:
        with self.lock:
            self.lines += [{"stream": "stdout", "line": t, "rank": rank} for t in texts]

    def __call__(self, params: list[tuple[str, str]]) -> Answer:
        args = dict(params)
        start = int(args.get("after", "0"))
        limit = int(args.get("limit", "100"))
        with self.lock:
            page = self.lines[start : start + limit]
        return 200, {"lines": page, "next_cursor": str(start + len(page))}


def test_wait_polls_without_an_event_stream_and_prints_the_log_and_status(
    make_ws: Callable[..., FakeWorkspace], capsys: pytest.CaptureFixture[str]
) -> None:
    statuses = iter(["Queued", "Running", "Running", "Running", "Completed"])
    logs = LogServer()
    logs.add("epoch 1")

    def run_details(params: list[tuple[str, str]]) -> Answer:
        status = next(statuses, "Completed")
        if status == "Completed":
            logs.add("epoch 2", "done")
            logs.add("rank one", rank=1)
        return 200, details(status)

    ws = make_ws(
        FakeApi({RUN_PATH: run_details, f"{RUN_PATH}/logs": logs})  # no /events: 404
    )
    run = Run.attach(ws, RUN_ID)
    capsys.readouterr()

    got = run.wait_for_completion(show_output=True, timeout_s=30)

    assert got["status"] == "Completed"
    out = capsys.readouterr().out
    assert out.index("RunId: " + RUN_ID) < out.index("epoch 1") < out.index("Status: Running")
    assert out.index("Status: Running") < out.index("epoch 2") < out.index("Execution Summary")
    assert out.count("epoch 1") == 1
    assert "[rank 1] rank one" in out
    assert "Status: Completed" in out


def test_wait_quietly_returns_details_of_a_finished_run(
    make_ws: Callable[..., FakeWorkspace], capsys: pytest.CaptureFixture[str]
) -> None:
    ws = make_ws(FakeApi({RUN_PATH: ok(details("Failed", error="boom"))}))
    got = ws.get_run(RUN_ID).wait_for_completion(show_output=False, raise_on_error=False)
    assert (got["status"], got["error"]) == ("Failed", "boom")
    assert capsys.readouterr().out == ""


def test_waiting_on_a_failed_run_raises_its_error_by_default(
    make_ws: Callable[..., FakeWorkspace],
) -> None:
    ws = make_ws(FakeApi({RUN_PATH: ok(details("Failed", error="Traceback…\nValueError: boom"))}))
    with pytest.raises(RunFailedError, match="ValueError: boom") as raised:
        ws.get_run(RUN_ID).wait_for_completion()
    assert raised.value.run_id == RUN_ID
    assert raised.value.error == "Traceback…\nValueError: boom"
    assert raised.value.details["status"] == "Failed"


def test_wait_times_out_with_the_sdk_timeout_error(make_ws: Callable[..., FakeWorkspace]) -> None:
    ws = make_ws(FakeApi({RUN_PATH: ok(details("Running"))}))
    run = ws.get_run(RUN_ID)
    started = time.monotonic()
    with pytest.raises(ProducerTimeoutError, match="still Running") as raised:
        run.wait_for_completion(show_output=False, timeout_s=0.4)
    assert isinstance(raised.value, TimeoutError)
    assert raised.value.operation == "wait_for_completion"
    assert 0.4 <= time.monotonic() - started < 2.0


class EventStream(io.RawIOBase):
    """An open ``text/event-stream`` response whose lines the test pushes (b"" ends it)."""

    def __init__(self, *events: tuple[str, str, str | None]) -> None:
        self.status = 200
        self.headers = email.message.Message()
        self.headers["Content-Type"] = "text/event-stream"
        self.pending: queue.Queue[bytes] = queue.Queue()
        for event in events:
            self.event(*event)

    def readline(self, size: int | None = -1) -> bytes:
        return self.pending.get(timeout=30)

    def push(self, *lines: bytes) -> None:
        for line in lines:
            self.pending.put(line)

    def event(self, name: str, data: str, event_id: str | None = None) -> None:
        self.push(f"event: {name}\n".encode(), f"data: {data}\n".encode())
        if event_id is not None:
            self.push(f"id: {event_id}\n".encode())
        self.push(b"\n")

    def end(self) -> None:
        self.push(b"")


def status_event(status: str) -> tuple[str, str, None]:
    return "status", json.dumps({"run_id": RUN_ID, "status": status}), None


def log_event(text: str, event_id: str, rank: int = 0) -> tuple[str, str, str]:
    return "log", json.dumps({"stream": "stdout", "line": text, "rank": rank}), event_id


class StreamingApi(FakeApi):
    """FakeApi whose /events requests get the next of ``streams`` (and are recorded)."""

    def __init__(self, routes: dict[str, Callable[[list[tuple[str, str]]], Answer]]) -> None:
        super().__init__(routes)
        self.streams: queue.Queue[EventStream] = queue.Queue()
        self.stream_requests: list[tuple[str, str | None]] = []

    def __call__(self, request: Any, timeout: float) -> Any:
        if "/events?" in request.full_url:
            assert request.get_header("Accept") == "text/event-stream"
            self.stream_requests.append(
                (request.full_url.split("?", 1)[1], request.get_header("Last-event-id"))
            )
            return self.streams.get(timeout=10)
        return super().__call__(request, timeout)


def in_thread(fn: Callable[[], dict[str, Any]]) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(fn()))
    thread.start()
    return thread, result


def test_wait_wakes_on_server_sent_events_not_on_the_safety_poll(
    make_ws: Callable[..., FakeWorkspace],
) -> None:
    stream = EventStream(status_event("Running"))
    status = {"now": "Running"}
    fake = StreamingApi({RUN_PATH: lambda p: (200, details(status["now"]))})
    fake.streams.put(stream)
    run = make_ws(fake).get_run(RUN_ID)

    waiter, result = in_thread(lambda: run.wait_for_completion(show_output=False, timeout_s=20))
    time.sleep(1.5)
    assert waiter.is_alive()
    assert fake.stream_requests == [("types=status", None)]
    # attach and the first look; polling would have made 3 more by now
    assert sum(r.full_url.endswith(RUN_PATH) for r in fake.requests) == 2
    status["now"] = "Completed"
    started = time.monotonic()
    stream.push(b": keep-alive\n\n")
    stream.event(*status_event("Completed"))
    waiter.join(timeout=10)
    assert not waiter.is_alive()
    assert result["status"] == "Completed"
    assert time.monotonic() - started < 2.0  # woken by the event, not the 5 s safety poll
    stream.end()


def test_wait_prints_the_stream_from_the_start_and_resumes_after_a_break(
    make_ws: Callable[..., FakeWorkspace], capsys: pytest.CaptureFixture[str]
) -> None:
    fake = StreamingApi({RUN_PATH: ok(details("Running"))})
    first = EventStream(
        status_event("Running"),
        log_event("epoch 0", "0_10"),
        log_event("epoch 1", "0_20", rank=2),
    )
    first.end()  # e.g. the API restarted
    second = EventStream(log_event("epoch 2", "0_30"), status_event("Completed"))
    fake.streams.put(first)
    fake.streams.put(second)
    run = make_ws(fake).get_run(RUN_ID)
    capsys.readouterr()

    got = run.wait_for_completion(show_output=True, timeout_s=20)

    assert got == details("Running")  # what GET /v1/runs/{id} answers (a stub here)
    assert fake.stream_requests == [("types=log%2Cstatus", "0_0"), ("types=log%2Cstatus", "0_20")]
    out = capsys.readouterr().out
    assert out.split("\n")[3:9] == [
        "Status: Running",
        "epoch 0",
        "[rank 2] epoch 1",
        "epoch 2",
        "Status: Completed",
        "",
    ]
    second.end()


def test_a_terminal_status_opening_a_stream_is_followed_by_what_it_replays(
    make_ws: Callable[..., FakeWorkspace], capsys: pytest.CaptureFixture[str]
) -> None:
    # the run ends between the first look and the stream's start
    answers = iter(["Running", "Running"])
    fake = StreamingApi({RUN_PATH: lambda p: (200, details(next(answers, "Failed")))})
    stream = EventStream(status_event("Failed"), log_event("last words", "0_1"))
    fake.streams.put(stream)
    run = make_ws(fake).get_run(RUN_ID)
    capsys.readouterr()

    done = run.wait_for_completion(show_output=True, timeout_s=20, raise_on_error=False)
    assert done["status"] == "Failed"
    out = capsys.readouterr().out
    assert out.index("last words") < out.index("Status: Failed") < out.index("Execution Summary")
    stream.end()


def test_waiting_on_a_run_that_already_ended_prints_its_log_without_a_stream(
    make_ws: Callable[..., FakeWorkspace], capsys: pytest.CaptureFixture[str]
) -> None:
    logs = LogServer()
    logs.add(*(f"line {i}" for i in range(2500)))  # three pages
    fake = StreamingApi({RUN_PATH: ok(details("Completed")), f"{RUN_PATH}/logs": logs})
    run = make_ws(fake).get_run(RUN_ID)
    capsys.readouterr()

    run.wait_for_completion(show_output=True)

    out = capsys.readouterr().out.split("\n")
    assert out[3:2503] == [f"line {i}" for i in range(2500)]
    assert out[2503] == "Status: Completed"
    assert fake.stream_requests == []
