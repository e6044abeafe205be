"""``Experiment.submit``, ``run.cancel()`` of a submitted run, ``run.restore_snapshot`` and
``wait_for_completion``'s summary and Ctrl-C (``producer/_submit.py``, ``_workspace.py``,
``_follow.py``) against a fake API (HTTP contract: issue 10) and the in-memory Kafka.

Signatures are checked against azureml-core 1.60.0 as in test_producer_azure.py: Azure's
public parameters (names, order, defaults), then Runstream's keyword-only extras.
"""

from __future__ import annotations

import email.message
import hashlib
import inspect
import io
import json
import re
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

import producer._submit as submit_module
from producer import (
    ApiError,
    Environment,
    Experiment,
    NotFoundError,
    ReadOnlyRunError,
    RunConfiguration,
    ScriptRunConfig,
    SnapshotError,
)
from producer._workspace import Run
from tests.unit.producer_fakes import (
    API,
    FakeApi,
    FakeResponse,
    FakeWorkspace,
    MemoryKafka,
    of_kind,
    options,
    run_details,
    wait_until,
)

EMPTY = inspect.Parameter.empty
RUN_ID_FORMAT = re.compile(r"exp_\d+_[0-9a-f]{8}")

#: (class, method) → azureml-core 1.60.0's public parameters, then Runstream's extras.
SIGNATURES: dict[tuple[type, str], tuple[list[Any], list[str]]] = {
    # azureml/core/experiment.py:144 submit(self, config, tags=None, **kwargs)
    (Experiment, "submit"): (
        ["config", ("tags", None)], ["run_id", "display_name", "priority", "max_retries"]
    ),
    # azureml/core/run.py:2209 restore_snapshot(self, snapshot_id=None, path=None)
    (Run, "restore_snapshot"): ([("snapshot_id", None), ("path", None)], []),
    # azureml/core/run.py:2224 get_snapshot_id(self)
    (Run, "get_snapshot_id"): ([], []),
    # azureml/core/run.py:1427 cancel(self)
    (Run, "cancel"): ([], []),
    # azureml/core/run.py:834 (timeout_s is Runstream's)
    (Run, "wait_for_completion"): (
        [("show_output", False), ("wait_post_processing", False), ("raise_on_error", True)],
        ["timeout_s"],
    ),
}


@pytest.mark.parametrize(("cls", "method"), list(SIGNATURES), ids=str)
def test_signatures_match_azureml_core(cls: type, method: str) -> None:
    azure, extras = SIGNATURES[cls, method]
    params = [
        p for p in inspect.signature(getattr(cls, method)).parameters.values()
        if p.name not in ("self", "cls") and p.kind is not p.VAR_KEYWORD
    ]
    want = [(a, EMPTY) if isinstance(a, str) else a for a in azure]
    assert [(p.name, p.default) for p in params[: len(want)]] == want
    assert all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params[: len(want)])
    assert [p.name for p in params[len(want):]] == extras
    assert all(p.kind is p.KEYWORD_ONLY for p in params[len(want):])


# ---- a fake API that knows methods and bodies ----------------------------------------------


Handler = Callable[[urllib.request.Request, re.Match[str]], tuple[int, Any]]


class JobsApi(FakeApi):
    """The routes of job submission, by method and path pattern; records what was sent.

    ``blobs`` are the stored blobs; ``submissions`` the POSTed bodies by run id;
    ``fail_next`` answers the next requests of a route key with these statuses (None:
    no response at all, like a refused connection)."""

    def __init__(self) -> None:
        super().__init__({})
        self.blobs: dict[str, bytes] = {}
        self.submissions: dict[str, dict[str, Any]] = {}
        self.posts: list[dict[str, Any]] = []
        self.cancels: list[str] = []
        self.cancel_answer: dict[str, Any] = {"action": "canceled", "state": "canceled"}
        self.fail_next: dict[str, list[int | None]] = {}
        self.snapshot_override: bytes | None = None
        self.handlers: list[tuple[str, re.Pattern[str], str, Handler]] = [
            ("HEAD", re.compile(r"/v1/blobs/(\w+)"), "head", self.head_blob),
            ("PUT", re.compile(r"/v1/blobs/(\w+)"), "put", self.put_blob),
            ("POST", re.compile(r"/v1/submissions"), "post", self.post_submission),
            ("GET", re.compile(r"/v1/submissions/([^/]+)"), "get", self.get_submission),
            ("POST", re.compile(r"/v1/runs/([^/]+)/cancel"), "cancel", self.cancel),
            ("GET", re.compile(r"/v1/runs/([^/]+)/snapshot"), "snapshot", self.snapshot),
        ]

    def methods(self) -> list[str]:
        return [f"{r.get_method()} {urlsplit(r.full_url).path}"
                for r in self.requests]

    def __call__(self, request: urllib.request.Request, timeout: float) -> FakeResponse:
        path = urlsplit(request.full_url).path
        for method, pattern, key, handler in self.handlers:
            match = pattern.fullmatch(path)
            if match is None or request.get_method() != method:
                continue
            self.requests.append(request)
            failures = self.fail_next.get(key)
            if failures:
                status = failures.pop(0)
                if status is None:
                    raise urllib.error.URLError(ConnectionRefusedError(111, "refused"))
                return self.answer(request, status, {"error": {"status": status,
                                                               "message": "try later"}})
            status, body = handler(request, match)
            return self.answer(request, status, body)
        return super().__call__(request, timeout)

    @staticmethod
    def answer(request: urllib.request.Request, status: int, body: Any) -> FakeResponse:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        if status >= 400:
            headers = email.message.Message()
            headers["Content-Type"] = "application/json"
            raise urllib.error.HTTPError(request.full_url, status, "Reason", headers,
                                         io.BytesIO(raw))
        return FakeResponse(status, raw, "application/octet-stream" if isinstance(
            body, bytes) else "application/json")

    @staticmethod
    def body(request: urllib.request.Request) -> bytes:
        data: Any = request.data
        return bytes(data.read())

    def head_blob(self, request: urllib.request.Request, m: re.Match[str]) -> tuple[int, Any]:
        return (200, b"") if m[1] in self.blobs else (404, {"error": {"status": 404,
                                                                      "message": "no blob"}})

    def put_blob(self, request: urllib.request.Request, m: re.Match[str]) -> tuple[int, Any]:
        data = self.body(request)
        assert hashlib.sha256(data).hexdigest() == m[1]
        existed = m[1] in self.blobs
        self.blobs[m[1]] = data
        return (200 if existed else 201), {"sha256": m[1], "size_bytes": len(data)}

    def post_submission(self, request: urllib.request.Request,
                        m: re.Match[str]) -> tuple[int, Any]:
        body = json.loads(self.body(request))
        self.posts.append(body)
        sha = body["snapshot"]["sha256"]
        if sha not in self.blobs:
            return 409, {"error": {"status": 409, "message":
                                   f"snapshot blob {sha} is not stored: PUT /v1/blobs/{sha} first"}}
        known = self.submissions.get(body["run_id"])
        if known is not None and known != body:
            return 409, {"error": {"status": 409, "message": "run_id already submitted"}}
        self.submissions[body["run_id"]] = body
        answer = {"run_id": body["run_id"], "target": body["target"], "state": "queued",
                  "position": len(self.submissions), "submitted_at": "2026-12-03T10:00:00Z"}
        return (200 if known else 201), answer

    def get_submission(self, request: urllib.request.Request,
                       m: re.Match[str]) -> tuple[int, Any]:
        body = self.submissions.get(unquote(m[1]))
        if body is None:
            return 404, {"error": {"status": 404, "message": "not submitted"}}
        return 200, {**body, "state": "queued", "attempt": 0}

    def cancel(self, request: urllib.request.Request, m: re.Match[str]) -> tuple[int, Any]:
        run_id = unquote(m[1])
        self.cancels.append(run_id)
        if run_id not in self.submissions:
            return 409, {"error": {"status": 409, "message": f"run {run_id} was not submitted"}}
        return 200, {"run_id": run_id, **self.cancel_answer}

    def snapshot(self, request: urllib.request.Request, m: re.Match[str]) -> tuple[int, Any]:
        body = self.submissions.get(unquote(m[1]))
        if body is None:
            return 404, {"error": {"status": 404, "message": "not submitted"}}
        if self.snapshot_override is not None:
            return 200, self.snapshot_override
        return 200, self.blobs[body["snapshot"]["sha256"]]


@pytest.fixture
def api() -> JobsApi:
    return JobsApi()


@pytest.fixture
def ws(tmp_path: Path, api: JobsApi) -> Iterator[FakeWorkspace]:
    workspace = FakeWorkspace(api, MemoryKafka(), home=tmp_path / "home", options=options())
    yield workspace
    workspace.close(5.0)


@pytest.fixture
def scripts(tmp_path: Path) -> Path:
    folder = tmp_path / "scripts"
    folder.mkdir()
    (folder / "train.py").write_text("print('hello')\n")
    (folder / "mylib.py").write_text("def get_alphas():\n    return [0.1]\n")
    return folder


def user_managed() -> Environment:
    env = Environment("user-managed-env")
    env.python.user_managed_dependencies = True
    return env


# ---- submit ---------------------------------------------------------------------------------


def test_submit_uploads_the_snapshot_queues_and_opens_the_run_queued(
    ws: FakeWorkspace, api: JobsApi, scripts: Path
) -> None:
    src = ScriptRunConfig(source_directory=str(scripts), script="train.py",
                          compute_target="local", environment=user_managed())
    run = Experiment(ws, "exp").submit(src, tags={"team": "vision", "n": 3})

    assert isinstance(run, Run)
    assert RUN_ID_FORMAT.fullmatch(run.id)
    assert "Status: Queued" in repr(run)
    body = api.posts[0]
    sha = body["snapshot"]["sha256"]
    assert api.methods() == [f"HEAD /v1/blobs/{sha}", f"PUT /v1/blobs/{sha}",
                             "POST /v1/submissions"]
    assert body == {
        "run_id": run.id, "experiment": "exp", "workspace": "default", "target": "local",
        "spec": src.to_submission(), "snapshot": {"sha256": sha,
                                                  "size_bytes": len(api.blobs[sha])},
        "priority": 0, "max_retries": 0, "display_name": None,
    }
    with zipfile.ZipFile(io.BytesIO(api.blobs[sha])) as archive:
        assert archive.namelist() == ["mylib.py", "train.py"]
        assert archive.read("train.py") == b"print('hello')\n"

    wait_until(lambda: len(of_kind(ws.kafka.events(), "Tag")) == 2)
    events = ws.kafka.events()
    lifecycle = of_kind(events, "Lifecycle")
    assert [e["status"] for e in lifecycle] == ["NotStarted", "Queued"]
    assert lifecycle[0]["compute_target"] == "local"
    assert lifecycle[0]["properties"] == {
        "azureml.runsource": "azureml.scriptrun", "ContentSnapshotId": sha,
    }
    assert {(t["key"], t["value"]) for t in of_kind(events, "Tag")} == {
        ("team", "vision"), ("n", "3"),
    }
    assert {e["run_id"] for e in events} == {run.id}
    assert not run._writes_here  # a reading handle: the script logs, not this process


def test_resubmitting_an_unchanged_folder_uploads_nothing(
    ws: FakeWorkspace, api: JobsApi, scripts: Path
) -> None:
    exp = Experiment(ws, "exp")
    src = ScriptRunConfig(str(scripts), script="train.py")
    first = exp.submit(src)
    second = exp.submit(src)
    assert first.id != second.id
    assert [m.split(" ")[0] for m in api.methods()] == ["HEAD", "PUT", "POST", "HEAD", "POST"]
    assert api.posts[0]["snapshot"] == api.posts[1]["snapshot"]


def test_keywords_options_and_the_run_configuration(
    ws: FakeWorkspace, api: JobsApi, scripts: Path
) -> None:
    exp = Experiment(ws, "exp")
    src = ScriptRunConfig(str(scripts), script="train.py", compute_target="gpu",
                          arguments=["--alpha", 0.5])
    src.run_config.priority = 5
    src.run_config.max_retries = 2
    run = exp.submit(src, run_id="exp_1_deadbeef", display_name="sweep")
    assert run.id == "exp_1_deadbeef"
    assert run.display_name == "sweep"
    body = api.posts[-1]
    assert (body["priority"], body["max_retries"], body["display_name"], body["target"]) == (
        5, 2, "sweep", "gpu")
    assert body["spec"]["arguments"] == ["--alpha", "0.5"]
    exp.submit(src, priority=-1, max_retries=0)
    assert (api.posts[-1]["priority"], api.posts[-1]["max_retries"]) == (-1, 0)
    # the same run id and content again: the server answers 200, nothing new is queued
    again = exp.submit(src, run_id="exp_1_deadbeef", display_name="sweep")
    assert again.id == "exp_1_deadbeef"
    assert len(api.submissions) == 2


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"priority": True}, TypeError, "priority must be an int"),
    ({"priority": 1001}, ValueError, "priority must be between -1000 and 1000"),
    ({"max_retries": 101}, ValueError, "max_retries must be between 0 and 100"),
    ({"max_retries": -1}, ValueError, "max_retries must be between 0 and 100"),
    ({"tags": {"": "x"}}, ValueError, "tag key must not be empty"),
    ({"tags": {"k": object()}}, TypeError, "tag value must be a str"),
    ({"tags": "team"}, TypeError, "tags must be a dict"),
    ({"display_name": ""}, ValueError, "display_name must not be empty"),
    ({"run_id": "a\nb"}, ValueError, "run id"),
    ({"wait": True}, TypeError, r"unexpected keyword arguments \['wait'\]; it takes"),
])
def test_bad_arguments_are_refused_before_anything_is_sent(
    ws: FakeWorkspace, api: JobsApi, scripts: Path, kwargs: dict[str, Any],
    error: type[Exception], match: str,
) -> None:
    with pytest.raises(error, match=match):
        Experiment(ws, "exp").submit(ScriptRunConfig(str(scripts), script="train.py"), **kwargs)
    assert api.requests == []
    assert ws.kafka.events() == []


def test_submit_takes_a_script_run_config(ws: FakeWorkspace, api: JobsApi) -> None:
    with pytest.raises(TypeError, match="submit takes a ScriptRunConfig"):
        Experiment(ws, "exp").submit(RunConfiguration(script="train.py"))
    assert api.requests == []


def test_a_missing_or_ignored_script_is_a_clear_error(
    ws: FakeWorkspace, api: JobsApi, scripts: Path, tmp_path: Path
) -> None:
    exp = Experiment(ws, "exp")
    with pytest.raises(FileNotFoundError, match=r"script 'tain\.py' is not a file in "
                                                r"source_directory"):
        exp.submit(ScriptRunConfig(str(scripts), script="tain.py"))
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        exp.submit(ScriptRunConfig(str(tmp_path / "nowhere"), script="train.py"))
    (scripts / "sub").mkdir()
    with pytest.raises(FileNotFoundError, match="is not a file"):
        exp.submit(ScriptRunConfig(str(scripts), script="sub"))
    (scripts / ".amlignore").write_text("train.py\n")
    with pytest.raises(SnapshotError, match=r"left out of the snapshot by \.amlignore"):
        exp.submit(ScriptRunConfig(str(scripts), script="train.py"))
    assert api.requests == []


def test_a_command_needs_no_script_file(ws: FakeWorkspace, api: JobsApi, scripts: Path) -> None:
    run = Experiment(ws, "exp").submit(
        ScriptRunConfig(str(scripts), command=["python", "-c", "print(1)"]))
    assert api.submissions[run.id]["spec"]["command"] == ["python", "-c", "print(1)"]


def test_a_folder_over_the_limits_is_refused_before_any_upload(
    ws: FakeWorkspace, api: JobsApi, scripts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNSTREAM_SNAPSHOT_MAX_FILES", "1")
    with pytest.raises(SnapshotError, match=r"2 files.*limit") as raised:
        Experiment(ws, "exp").submit(ScriptRunConfig(str(scripts), script="train.py"))
    assert "RUNSTREAM_SNAPSHOT_MAX_FILES" in str(raised.value)
    assert api.requests == []


def test_hostile_arguments_reach_the_submission_verbatim(
    ws: FakeWorkspace, api: JobsApi, tmp_path: Path
) -> None:
    folder = tmp_path / "s p a c e"
    folder.mkdir()
    name = "my 'tr\"ain' $(rm -rf ~) ünï.py"
    (folder / name).write_text("import sys\n")
    hostile = ["--x", "a b", "'q'", '"dq"', "$(whoami)", "`id`", "; ls", "ünïcødé ✓", "",
               "-", "--", "\\", "*"]
    run = Experiment(ws, "exp").submit(ScriptRunConfig(str(folder), script=name,
                                                       arguments=hostile))
    spec = api.submissions[run.id]["spec"]
    assert (spec["script"], spec["arguments"]) == (name, hostile)
    with zipfile.ZipFile(io.BytesIO(api.blobs[api.posts[0]["snapshot"]["sha256"]])) as archive:
        assert archive.namelist() == [name]


def test_retries_connection_failures_and_5xx_then_submits(
    ws: FakeWorkspace, api: JobsApi, scripts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(submit_module, "FIRST_BACKOFF_S", 0.01)
    api.fail_next = {"head": [None, 503], "put": [None], "post": [None, 502, 503]}
    run = Experiment(ws, "exp").submit(ScriptRunConfig(str(scripts), script="train.py"))
    assert [m.split(" ")[0] for m in api.methods()] == [
        "HEAD", "HEAD", "HEAD", "PUT", "PUT", "POST", "POST", "POST", "POST"]
    assert run.id in api.submissions


def test_an_unreachable_api_fails_clearly_within_the_deadline(
    ws: FakeWorkspace, api: JobsApi, scripts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(submit_module, "SUBMIT_DEADLINE_S", 1.0)
    api.fail_next = {"head": [None] * 100}
    with pytest.raises(ApiError, match="The run was not submitted") as raised:
        Experiment(ws, "exp").submit(ScriptRunConfig(str(scripts), script="train.py"))
    assert raised.value.status is None
    assert "runstream up" in str(raised.value)
    assert 3 <= len(api.requests) <= 8
    assert api.submissions == {}
    assert ws.kafka.events() == []  # the run was never opened


def test_a_refused_submission_is_not_retried(
    ws: FakeWorkspace, api: JobsApi, scripts: Path
) -> None:
    api.fail_next = {"post": [400]}
    with pytest.raises(ApiError, match="POST /v1/submissions was refused") as raised:
        Experiment(ws, "exp").submit(ScriptRunConfig(str(scripts), script="train.py"))
    assert raised.value.status == 400
    assert [m.split(" ")[0] for m in api.methods()] == ["HEAD", "PUT", "POST"]
    assert ws.kafka.events() == []


def test_a_blob_gone_between_head_and_post_is_uploaded_again(
    ws: FakeWorkspace, api: JobsApi, scripts: Path
) -> None:
    original = api.head_blob

    def lying_head(request: urllib.request.Request, m: re.Match[str]) -> tuple[int, Any]:
        api.handlers[0] = ("HEAD", api.handlers[0][1], "head", original)
        return 200, b""  # says present, but it is not

    api.handlers[0] = ("HEAD", api.handlers[0][1], "head", lying_head)
    run = Experiment(ws, "exp").submit(ScriptRunConfig(str(scripts), script="train.py"))
    assert [m.split(" ")[0] for m in api.methods()] == ["HEAD", "POST", "PUT", "POST"]
    assert run.id in api.submissions


# ---- cancel -----------------------------------------------------------------------------------


def test_cancel_of_a_submitted_run_goes_through_the_api(
    ws: FakeWorkspace, api: JobsApi, scripts: Path
) -> None:
    run = Experiment(ws, "exp").submit(ScriptRunConfig(str(scripts), script="train.py"))
    answer = run.cancel()
    assert answer == {"run_id": run.id, "action": "canceled", "state": "canceled"}
    assert api.cancels == [run.id]
    assert "Status: Canceled" in repr(run)
    fetched = Run._attached(ws, {"run_id": run.id, "experiment": "exp", "status": "Running"})
    api.cancel_answer = {"action": "cancel_requested", "state": "leased"}
    assert fetched.cancel() == {"run_id": run.id, "action": "cancel_requested",
                                "state": "leased"}
    assert "Status: CancelRequested" in repr(fetched)
    api.cancel_answer = {"action": "none", "state": "finished"}
    assert fetched.cancel()["action"] == "none"  # type: ignore[index]
    assert "Status: CancelRequested" in repr(fetched)


def test_cancel_of_a_run_that_was_not_submitted_says_who_can(
    ws: FakeWorkspace, api: JobsApi
) -> None:
    fetched = Run._attached(ws, {"run_id": "exp_1_00000000", "experiment": "exp"})
    with pytest.raises(ReadOnlyRunError, match=r"attached by id for reading: the API cancels "
                       r"submitted runs only \(HTTP 409: run exp_1_00000000 was not "
                       r"submitted\)") as raised:
        fetched.cancel()
    assert isinstance(raised.value, ApiError)
    assert (raised.value.status, raised.value.retriable) == (409, False)
    assert "canceled by the handle that logs into it" in str(raised.value)


def test_cancel_of_a_run_this_process_logs_into_marks_it_canceled(
    ws: FakeWorkspace, api: JobsApi
) -> None:
    run = Experiment(ws, "exp").start_logging(outputs_dir=None)
    assert run.cancel() is None
    assert api.cancels == []
    run.flush()
    assert [e["status"] for e in of_kind(ws.kafka.events(), "Lifecycle")][-1] == "Canceled"


# ---- restore_snapshot -------------------------------------------------------------------------


def test_restore_snapshot_downloads_the_checked_zip(
    ws: FakeWorkspace, api: JobsApi, scripts: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (scripts / ".amlignore").write_text("*.log\n")
    (scripts / "debug.log").write_text("noise")
    run = Experiment(ws, "exp").submit(ScriptRunConfig(str(scripts), script="train.py"))
    sha = api.posts[0]["snapshot"]["sha256"]
    assert run.get_snapshot_id() == sha

    into = tmp_path / "restored"
    path = run.restore_snapshot(path=str(into))
    assert path == str(into / f"{sha}.zip")
    with zipfile.ZipFile(path) as archive:
        assert archive.namelist() == [".amlignore", "mylib.py", "train.py"]
    assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == sha

    as_file = run.restore_snapshot(sha, tmp_path / "exact name.zip")
    assert as_file == str(tmp_path / "exact name.zip")

    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    assert run.restore_snapshot() == str(tmp_path / "tmp" / f"{sha}.zip")

    with pytest.raises(ValueError, match=r"is not run .*'s snapshot"):
        run.restore_snapshot("0" * 64)


def test_restore_snapshot_refuses_damaged_bytes_and_unsubmitted_runs(
    ws: FakeWorkspace, api: JobsApi, scripts: Path, tmp_path: Path
) -> None:
    run = Experiment(ws, "exp").submit(ScriptRunConfig(str(scripts), script="train.py"))
    api.snapshot_override = b"PK not the zip"
    with pytest.raises(ApiError, match="has SHA-256"):
        run.restore_snapshot(path=tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []  # nothing half-written is left
    other = Run._attached(ws, {"run_id": "exp_1_00000000", "experiment": "exp"})
    with pytest.raises(NotFoundError, match="was not submitted"):
        other.restore_snapshot(path=tmp_path / "out")


# ---- wait_for_completion: summary and Ctrl-C ------------------------------------------------


def test_the_summary_gives_the_duration_and_the_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = "exp_1700000000_0a1b2c3d"
    details = run_details(
        run_id, "Failed", error="Traceback...\nValueError: boom",
        queued_at="2026-12-03T10:00:00+00:00", started_at="2026-12-03T10:00:00.400+00:00",
        ended_at="2026-12-03T10:01:05.400+00:00",
    )
    fake = FakeApi({f"/v1/runs/{run_id}": lambda p: (200, details),
                    f"/v1/runs/{run_id}/logs": lambda p: (200, {"lines": [
                        {"stream": "stderr", "line": "ValueError: boom", "rank": 0}],
                        "next_cursor": None})})
    ws = FakeWorkspace(fake, home=tmp_path / "home")
    got = ws.get_run(run_id).wait_for_completion(show_output=True, raise_on_error=False)
    assert got["status"] == "Failed"
    out = capsys.readouterr().out
    assert out.endswith(
        "[stderr] ValueError: boom\nStatus: Failed\n\nExecution Summary\n=================\n"
        f"RunId: {run_id}\nWeb View: {API}/v1/runs/{run_id}\n"
        "Duration: 0:01:05 (queued 0.4 s)\nError:\nTraceback...\nValueError: boom\n"
    )
    ws.close(1.0)


@pytest.mark.parametrize(("times", "shown"), [
    ({"started_at": "2026-12-03T10:00:00Z", "ended_at": "2026-12-03T10:00:12.34Z"}, "12.3 s"),
    ({"queued_at": "2026-12-03T10:00:00Z", "ended_at": "2026-12-03T10:00:03Z"},
     "not started (queued 3.0 s)"),
    ({"started_at": "2026-12-03T10:00:00Z"}, None),
    ({"started_at": "x", "ended_at": "y"}, None),
    ({"started_at": "2026-12-03T10:00:00Z", "ended_at": "2026-12-03T12:00:01Z"}, "2:00:01"),
])
def test_run_duration(times: dict[str, str], shown: str | None) -> None:
    from producer._follow import run_duration

    assert run_duration(times) == shown


def test_ctrl_c_stops_the_wait_not_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = "exp_1700000000_0a1b2c3d"
    calls = {"n": 0}

    def details(params: list[tuple[str, str]]) -> tuple[int, Any]:
        calls["n"] += 1
        if calls["n"] > 2:  # attach, first look, then Ctrl-C while polling
            raise KeyboardInterrupt
        return 200, run_details(run_id, "Running")

    fake = FakeApi({f"/v1/runs/{run_id}": details})  # no event stream: polling
    ws = FakeWorkspace(fake, home=tmp_path / "home")
    run = ws.get_run(run_id)
    capsys.readouterr()
    with pytest.raises(KeyboardInterrupt):
        run.wait_for_completion(show_output=False)
    assert capsys.readouterr().out == (
        f"\nStopped waiting for run {run_id} (interrupted); the run goes on "
        "(status: Running); run.cancel() stops it.\n"
    )
    ws.close(1.0)


def test_statuses_passed_before_the_stream_opened_are_shown_in_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = "exp_1700000000_0a1b2c3d"
    times = {"NotStarted": "2026-12-03T10:00:00+00:00", "Queued": "2026-12-03T10:00:00.1+00:00",
             "Preparing": "2026-12-03T10:00:00.3+00:00", "Running": "2026-12-03T10:00:00.6+00:00"}
    ended = {**times, "Finalizing": "2026-12-03T10:00:02+00:00",
             "Completed": "2026-12-03T10:00:02.5+00:00"}

    def event(name: str, data: dict[str, Any], event_id: str | None = None) -> str:
        return f"event: {name}\ndata: {json.dumps(data)}\n" + (
            f"id: {event_id}\n" if event_id else "") + "\n"

    stream = (
        event("status", {"run_id": run_id, "status": "Running", "status_times": times})
        + event("log", {"stream": "stdout", "line": "epoch 1", "rank": 0}, "0_1")
        + event("status", {"run_id": run_id, "status": "Completed", "status_times": ended})
    ).encode()
    looks = iter(["Queued", "Queued"])  # attach, first look; then the stream
    fake = FakeApi({
        f"/v1/runs/{run_id}": lambda p: (200, run_details(run_id, next(looks, "Completed"))),
        f"/v1/runs/{run_id}/events": lambda p: (200, stream, "text/event-stream"),
    })
    ws = FakeWorkspace(fake, home=tmp_path / "home")
    run = ws.get_run(run_id)
    capsys.readouterr()
    run.wait_for_completion(show_output=True, timeout_s=20)
    lines = capsys.readouterr().out.splitlines()
    assert lines[3:10] == ["Status: Queued", "Status: Preparing", "Status: Running", "epoch 1",
                           "Status: Finalizing", "Status: Completed", ""]
    ws.close(1.0)


def test_statuses_stamped_by_other_clocks_are_shown_in_the_order_a_run_passes_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The notebook stamps Queued after its POST; an agent that picks the run up at once
    can stamp Preparing a few milliseconds earlier. Queued is still shown, first."""
    run_id = "exp_1700000000_0a1b2c3e"
    times = {"NotStarted": "2026-12-03T10:00:00.010+00:00",
             "Queued": "2026-12-03T10:00:00.012+00:00",
             "Preparing": "2026-12-03T10:00:00.005+00:00"}
    ended = {**times, "Running": "2026-12-03T10:00:01+00:00",
             "Finalizing": "2026-12-03T10:00:02+00:00",
             "Completed": "2026-12-03T10:00:02.5+00:00"}

    def event(name: str, data: dict[str, Any]) -> str:
        return f"event: {name}\ndata: {json.dumps(data)}\n\n"

    stream = (
        event("status", {"run_id": run_id, "status": "Preparing", "status_times": times})
        + event("status", {"run_id": run_id, "status": "Completed", "status_times": ended})
    ).encode()
    looks = iter(["Queued", "Queued"])
    fake = FakeApi({
        f"/v1/runs/{run_id}": lambda p: (200, run_details(run_id, next(looks, "Completed"))),
        f"/v1/runs/{run_id}/events": lambda p: (200, stream, "text/event-stream"),
    })
    ws = FakeWorkspace(fake, home=tmp_path / "home")
    run = ws.get_run(run_id)
    capsys.readouterr()
    run.wait_for_completion(show_output=True, timeout_s=20)
    lines = capsys.readouterr().out.splitlines()
    assert lines[3:9] == ["Status: Queued", "Status: Preparing", "Status: Running",
                          "Status: Finalizing", "Status: Completed", ""]
    ws.close(1.0)
