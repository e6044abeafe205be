"""The agent with real child processes: one run (``RunJob``) from its snapshot to its last
status, and the agent (``Agent``) against an in-memory implementation of the jobs
contract (register, long poll, finish, delete, snapshot; ingest/api/routes/jobs.py serves it).

Statuses, log lines and files go to a recording ``FakeReporter`` instead of the SDK
(one test drives the SDK's real ``Run.open`` over an in-memory broker). Waits are
event-based (a line seen, a file written) with generous bounds; no assertion depends on
how fast the machine is.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
import zipfile
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web

from ingest.agent.client import AgentApi
from ingest.agent.envs import EnvironmentCache
from ingest.agent.runner import Lease, Outcome, RunJob, RunReport
from ingest.agent.service import Agent, AgentConfig, SdkReporter
from ingest.server import HttpServer
from producer._snapshot import build_snapshot
from tests.unit.producer_fakes import (
    FakeApi,
    FakeResponse,
    FakeWorkspace,
    MemoryKafka,
    of_kind,
    options,
)

HOSTILE = ["a b", "it's", 'say "hi"', "$(touch pwned)", "`id`", "; rm -rf /", "ünï©ødé ✓",
           "--flag=x y", "", "*", "\\n", "-", "$HOME", "%s"]
BOUND_S = 60.0  # generous: only a hang reaches it


# ---- fakes ------------------------------------------------------------------------------


class FakeReport:
    """Records what the agent reports for one run (thread-safe: the agent calls some of
    it from worker threads)."""

    def __init__(self, lease: Lease, outputs_dir: Path) -> None:
        self.lease = lease
        self.outputs_dir = outputs_dir
        self.lock = threading.Lock()
        self.statuses = ["Preparing"]
        self.error: str | None = None
        self.lines: dict[str, list[str]] = {}
        self.uploads: dict[str, bytes] = {}
        self.closed = False
        self.flushed = False

    def set_status(self, status: str) -> None:
        with self.lock:
            self.statuses.append(status)

    def log_output(self, stream: str, lines: Iterable[str]) -> None:
        with self.lock:
            self.lines.setdefault(stream, []).extend(lines)

    def upload_file(self, name: str, path_or_stream: Path) -> None:
        with self.lock:
            self.uploads[name] = Path(path_or_stream).read_bytes()

    def complete(self) -> None:
        with self.lock:
            if self.outputs_dir.is_dir():
                for p in sorted(self.outputs_dir.rglob("*")):
                    if p.is_file():
                        name = f"outputs/{p.relative_to(self.outputs_dir).as_posix()}"
                        self.uploads[name] = p.read_bytes()
            self.statuses += ["Finalizing", "Completed"]

    def fail(self, error: str) -> None:
        with self.lock:
            self.statuses.append("Failed")
            self.error = error

    def cancel(self) -> None:
        with self.lock:
            self.statuses.append("Canceled")

    def flush(self, timeout_s: float = 0) -> None:
        self.flushed = True

    def close(self, timeout_s: float = 0) -> None:
        self.closed = True

    def text(self, stream: str = "stdout") -> list[str]:
        with self.lock:
            return list(self.lines.get(stream, []))


class FakeReporter:
    def __init__(self) -> None:
        self.reports: dict[str, FakeReport] = {}

    def open(self, lease: Lease, outputs_dir: Path) -> RunReport:
        report = FakeReport(lease, outputs_dir)
        self.reports[lease.run_id] = report
        return report


class Snapshots:
    """The snapshot download of the contract, from memory."""

    def __init__(self) -> None:
        self.zips: dict[str, bytes] = {}

    async def download_snapshot(self, run_id: str, path: Path) -> tuple[str, int]:
        data = self.zips[run_id]
        await asyncio.to_thread(path.write_bytes, data)
        return hashlib.sha256(data).hexdigest(), len(data)


def snapshot_of(tmp_path: Path, files: Mapping[str, str]) -> tuple[bytes, str]:
    """The zip bytes and sha256 of a folder with ``files``, as the SDK snapshots it."""
    source = tmp_path / f"src-{len(list(tmp_path.glob('src-*')))}"
    for name, text in files.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text(textwrap.dedent(text))
    with build_snapshot(source, work_dir=tmp_path) as snap:
        return snap.path.read_bytes(), snap.sha256


def spec(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "schema": 1, "source_directory": ".", "script": "main.py", "arguments": [],
        "command": None, "shell_command": None, "target": "local",
        "environment": {"user_managed": True, "interpreter": "python", "variables": {},
                        "docker": False},
        "distributed": None, "max_run_duration_seconds": None, "environment_variables": {},
    }
    base.update(over)
    return base


RUN_VARIABLES = {
    "RUNSTREAM_API": "http://127.0.0.1:1",
    "RUNSTREAM_TOKEN": "tok-for-runs",
    "RUNSTREAM_KAFKA": "127.0.0.1:2",
    "RUNSTREAM_TOPIC": "agent.test",
}


class Jobs:
    """Makes ``RunJob``s over one work dir, reporter and snapshot store."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.work = tmp_path / "work"
        self.work.mkdir()
        self.reporter = FakeReporter()
        self.snapshots = Snapshots()
        self.count = 0

    def lease(self, files: Mapping[str, str], **over: Any) -> Lease:
        self.count += 1
        data, sha = snapshot_of(self.tmp_path, files)
        run_id = f"exp_1700000000_{self.count:08x}"
        self.snapshots.zips[run_id] = data
        return Lease(run_id=run_id, experiment="exp", workspace="ws1", target="local",
                     attempt=over.pop("attempt", 0), spec=spec(**over), snapshot_sha256=sha,
                     snapshot_bytes=len(data))

    def job(self, lease: Lease, *, grace_s: float = 10.0,
            base_env: Mapping[str, str] | None = None) -> RunJob:
        return RunJob(
            lease, work_dir=self.work, snapshots=self.snapshots, reporter=self.reporter,
            envs=EnvironmentCache(self.work / "envs"),
            base_env=dict(os.environ) if base_env is None else base_env,
            run_variables=RUN_VARIABLES, grace_s=grace_s,
        )

    def report(self, lease: Lease) -> FakeReport:
        return self.reporter.reports[lease.run_id]


@pytest.fixture
def jobs(tmp_path: Path) -> Jobs:
    return Jobs(tmp_path)


async def until(condition: Callable[[], bool], what: str, timeout_s: float = BOUND_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def lines_of(jobs: Jobs, lease: Lease, stream: str = "stdout") -> list[str]:
    report = jobs.reporter.reports.get(lease.run_id)
    return [] if report is None else report.text(stream)


def gone(pid: int) -> bool:
    """The process has exited (a zombie nobody reaps counts as exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


# ---- one run ----------------------------------------------------------------------------


async def test_argv_reaches_the_script_verbatim(jobs: Jobs) -> None:
    lease = jobs.lease({"main.py": "import json, sys\nprint(json.dumps(sys.argv[1:]))\n"},
                       arguments=HOSTILE)
    outcome = await jobs.job(lease).run()
    assert outcome == Outcome("Completed", 0)
    report = jobs.report(lease)
    assert json.loads(report.text()[0]) == HOSTILE
    assert not (jobs.work / run_dir(lease) / "pwned").exists()
    assert report.statuses == ["Preparing", "Running", "Finalizing", "Completed"]
    assert report.flushed
    assert report.closed


async def test_a_script_name_with_spaces_and_unicode(jobs: Jobs) -> None:
    name = "my scrïpt $(x).py"
    lease = jobs.lease({name: "import sys\nprint(sys.argv[0])\n"}, script=name)
    assert (await jobs.job(lease).run()) == Outcome("Completed", 0)
    assert jobs.report(lease).text() == [name]


async def test_command_argv_and_shell_command(jobs: Jobs) -> None:
    code = "import json, sys; print(json.dumps(sys.argv[1:]))"
    lease = jobs.lease({"x.txt": ""}, script=None,
                       command=[sys.executable, "-c", code, *HOSTILE])
    assert (await jobs.job(lease).run()) == Outcome("Completed", 0)
    assert json.loads(jobs.report(lease).text()[0]) == HOSTILE
    shell = jobs.lease({"x.txt": ""}, script=None,
                       shell_command='echo $((1+2)) "$RUNSTREAM_RUN_ID"; ls')
    assert (await jobs.job(shell).run()) == Outcome("Completed", 0)
    assert jobs.report(shell).text() == [f"3 {shell.run_id}", "x.txt"]


ENV_SCRIPT = """\
import json, os
keys = ["RUNSTREAM_RUN_ID", "RUNSTREAM_EXPERIMENT", "RUNSTREAM_ATTEMPT", "RUNSTREAM_WORKSPACE",
        "RUNSTREAM_API", "RUNSTREAM_TOKEN", "RUNSTREAM_KAFKA", "RUNSTREAM_TOPIC",
        "RUNSTREAM_HOME", "RUNSTREAM_RANK", "RUNSTREAM_WORLD_SIZE", "RUNSTREAM_DB",
        "RUNSTREAM_KAFKA_SECURITY_PROTOCOL", "FROM_ENV", "FROM_CONFIG", "PYTHONUNBUFFERED",
        "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"]
print(json.dumps({"env": {k: os.environ.get(k) for k in keys}, "cwd": os.getcwd()}))
"""


async def test_the_run_variables_and_the_working_directory(jobs: Jobs) -> None:
    lease = jobs.lease(
        {"main.py": ENV_SCRIPT}, attempt=2,
        environment={"user_managed": True, "interpreter": "python",
                     "variables": {"FROM_ENV": "env", "RUNSTREAM_RUN_ID": "spoofed"}},
        environment_variables={"FROM_CONFIG": "config"},
    )
    base = {**os.environ, "RUNSTREAM_DB": "postgresql://u:secret@db/x",
            "RUNSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}
    assert (await jobs.job(lease, base_env=base).run()) == Outcome("Completed", 0)
    seen = json.loads(jobs.report(lease).text()[0])
    env = seen["env"]
    home = Path(env.pop("RUNSTREAM_HOME"))
    assert env == {
        "RUNSTREAM_RUN_ID": lease.run_id, "RUNSTREAM_EXPERIMENT": "exp",
        "RUNSTREAM_ATTEMPT": "2", "RUNSTREAM_WORKSPACE": "ws1",
        **RUN_VARIABLES, "RUNSTREAM_RANK": "0", "RUNSTREAM_WORLD_SIZE": "1",
        "RUNSTREAM_DB": None, "RUNSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "FROM_ENV": "env", "FROM_CONFIG": "config", "PYTHONUNBUFFERED": "1",
        "RANK": None, "WORLD_SIZE": None, "LOCAL_RANK": None, "MASTER_ADDR": None,
        "MASTER_PORT": None,
    }
    cwd = Path(seen["cwd"])
    assert cwd == (jobs.work / f"{lease.run_id}.2").resolve()
    assert (cwd / "main.py").is_file()
    assert await asyncio.to_thread(home.is_dir)
    assert not home.is_relative_to(cwd)


async def test_distributed_ranks(jobs: Jobs) -> None:
    lease = jobs.lease({"main.py": ENV_SCRIPT},
                       distributed={"kind": "pytorch", "process_count": 3, "node_count": 1})
    assert (await jobs.job(lease).run()) == Outcome("Completed", 0)
    lines = jobs.report(lease).text()
    assert len(lines) == 3
    by_rank = {}
    for line in lines:
        prefix, _, body = line.partition("] ")
        by_rank[prefix] = json.loads(body)["env"]
    assert sorted(by_rank) == ["[rank 0", "[rank 1", "[rank 2"]
    ports = {env["MASTER_PORT"] for env in by_rank.values()}
    assert len(ports) == 1
    assert int(ports.pop()) > 0
    for rank in range(3):
        env = by_rank[f"[rank {rank}"]
        assert env["RANK"] == env["LOCAL_RANK"] == env["RUNSTREAM_RANK"] == str(rank)
        assert env["WORLD_SIZE"] == env["RUNSTREAM_WORLD_SIZE"] == "3"
        assert env["MASTER_ADDR"] == "127.0.0.1"
        assert env["RUNSTREAM_RUN_ID"] == lease.run_id


async def test_one_rank_failing_fails_the_run_and_stops_the_others(jobs: Jobs) -> None:
    script = """\
    import os, sys, time
    if os.environ["RANK"] == "1":
        print("rank one gives up", file=sys.stderr)
        sys.exit(7)
    print("waiting", flush=True)
    time.sleep(600)
    """
    lease = jobs.lease({"main.py": script}, distributed={"kind": "pytorch", "process_count": 2})
    outcome = await asyncio.wait_for(jobs.job(lease, grace_s=1).run(), BOUND_S)
    assert outcome is not None
    assert outcome.status == "Failed"
    assert outcome.exit_code == 7
    assert outcome.error == "rank 1: exit code 7\nrank one gives up"


FAILING = """\
import sys
print("before the error")
def train():
    raise ValueError("the loss is NaN ✗")
train()
"""


async def test_a_failing_script_fails_with_its_exit_code_and_traceback(jobs: Jobs) -> None:
    lease = jobs.lease({"main.py": FAILING})
    outcome = await jobs.job(lease).run()
    assert outcome is not None
    assert (outcome.status, outcome.exit_code) == ("Failed", 1)
    assert outcome.error is not None
    lines = outcome.error.splitlines()
    assert lines[0] == "exit code 1"
    assert lines[1] == "Traceback (most recent call last):"
    assert lines[-1] == "ValueError: the loss is NaN ✗"
    assert '    raise ValueError("the loss is NaN ✗")' in lines
    report = jobs.report(lease)
    assert report.statuses == ["Preparing", "Running", "Failed"]
    assert report.error == outcome.error
    assert report.text() == ["before the error"]
    assert report.text("stderr")[-1] == "ValueError: the loss is NaN ✗"


async def test_std_log_logs_and_outputs_are_uploaded(jobs: Jobs) -> None:
    script = """\
    import os, sys
    os.makedirs("logs/deep", exist_ok=True)
    os.makedirs("outputs", exist_ok=True)
    open("logs/deep/train.log", "w").write("log file")
    open("outputs/model.pkl", "w").write("model")
    print("out one")
    print("err one", file=sys.stderr)
    """
    lease = jobs.lease({"main.py": script})
    assert (await jobs.job(lease).run()) == Outcome("Completed", 0)
    report = jobs.report(lease)
    assert report.uploads["logs/deep/train.log"] == b"log file"
    assert report.uploads["outputs/model.pkl"] == b"model"
    assert sorted(report.uploads["user_logs/std_log.txt"].decode().splitlines()) == [
        "err one", "out one"]
    assert report.outputs_dir == jobs.work / run_dir(lease) / "outputs"


async def test_the_first_line_is_logged_while_the_script_runs(jobs: Jobs, tmp_path: Path) -> None:
    go_on = tmp_path / "go-on"
    script = f"""\
    import os, time
    print("first line")
    while not os.path.exists({str(go_on)!r}):
        time.sleep(0.01)
    print("last line")
    """
    lease = jobs.lease({"main.py": script})
    task = asyncio.create_task(jobs.job(lease).run())
    await until(lambda: lease.run_id in jobs.reporter.reports, "the run to open")
    report = jobs.report(lease)
    await until(lambda: report.text() == ["first line"], "the first line")
    assert not task.done()
    go_on.touch()
    assert (await asyncio.wait_for(task, BOUND_S)) == Outcome("Completed", 0)
    assert report.text() == ["first line", "last line"]


IGNORES_SIGTERM = """\
import signal, time
signal.signal(signal.SIGTERM, lambda *a: print("SIGTERM ignored", flush=True))
print("ready", flush=True)
while True:
    time.sleep(0.05)
"""


async def test_cancel_escalates_to_sigkill_for_a_script_that_ignores_sigterm(jobs: Jobs) -> None:
    lease = jobs.lease({"main.py": IGNORES_SIGTERM})
    job = jobs.job(lease, grace_s=0.5)
    task = asyncio.create_task(job.run())
    await until(lambda: "ready" in lines_of(jobs, lease), "the script to start")
    report = jobs.report(lease)
    job.request_stop("cancel")
    outcome = await asyncio.wait_for(task, BOUND_S)
    assert outcome == Outcome("Canceled", -signal.SIGKILL, None)
    assert "SIGTERM ignored" in report.text()
    assert report.statuses == ["Preparing", "Running", "Canceled"]


async def test_cancel_of_a_script_that_stops_on_sigterm(jobs: Jobs) -> None:
    lease = jobs.lease({"main.py": "import time\nprint('ready', flush=True)\ntime.sleep(600)\n"})
    job = jobs.job(lease, grace_s=BOUND_S)
    task = asyncio.create_task(job.run())
    await until(lambda: "ready" in lines_of(jobs, lease), "the script to start")
    job.request_stop("cancel")
    assert (await asyncio.wait_for(task, BOUND_S)) == Outcome("Canceled", -signal.SIGTERM, None)


async def test_max_run_duration_stops_and_fails_the_run(jobs: Jobs) -> None:
    lease = jobs.lease({"main.py": IGNORES_SIGTERM}, max_run_duration_seconds=1)
    outcome = await asyncio.wait_for(jobs.job(lease, grace_s=0.2).run(), BOUND_S)
    assert outcome is not None
    assert (outcome.status, outcome.exit_code) == ("Failed", -signal.SIGKILL)
    assert outcome.error is not None
    assert outcome.error.startswith(
        "max_run_duration_seconds (1 s) exceeded: the run was stopped (SIGTERM, SIGKILL after "
        "0.2 s); killed by SIGKILL")
    assert jobs.report(lease).statuses[-1] == "Failed"


async def test_a_lost_run_is_killed_at_once_and_reports_nothing(jobs: Jobs, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    script = f"""\
    import os, signal, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    open({str(pid_file)!r}, "w").write(str(os.getpid()))
    time.sleep(600)
    """
    lease = jobs.lease({"main.py": script})
    job = jobs.job(lease, grace_s=BOUND_S)
    task = asyncio.create_task(job.run())
    await until(lambda: pid_file.exists() and pid_file.read_text() != "", "the script's pid")
    job.lose()
    assert (await asyncio.wait_for(task, BOUND_S)) is None
    assert gone(int(pid_file.read_text()))
    report = jobs.report(lease)
    assert report.statuses == ["Preparing", "Running"]
    assert report.closed


async def test_cancel_while_preparing(jobs: Jobs) -> None:
    lease = jobs.lease({"main.py": "print('never')\n"})
    job = jobs.job(lease)
    job.request_stop("cancel")  # before the run even opened
    assert (await job.run()) == Outcome("Canceled", None, None)
    assert jobs.report(lease).statuses == ["Preparing", "Canceled"]


@pytest.mark.parametrize(("over", "message"), [
    ({"environment": {"docker": True, "base_image": "img:1", "user_managed": False}},
     "this agent cannot run containers: the environment asks for Docker (image img:1)"),
    ({"environment": {"user_managed": True, "interpreter": "/no/such/python3"}},
     "interpreter '/no/such/python3' (environment.python.interpreter_path) is not an "
     "executable file on this agent"),
    ({"distributed": {"kind": "tensorflow", "worker_count": 2}},
     "distributed TensorFlow (parameter servers and TF_CONFIG) is not supported"),
    ({"script": None, "command": ["/no/such/program", "x"]},
     "cannot start '/no/such/program': [Errno 2] No such file or directory"),
])
async def test_runs_that_cannot_start_fail_with_a_clear_error(
    jobs: Jobs, over: dict[str, Any], message: str
) -> None:
    lease = jobs.lease({"main.py": "print('never')\n"}, **over)
    outcome = await jobs.job(lease).run()
    assert outcome is not None
    assert outcome.status == "Failed"
    assert outcome.error is not None
    assert outcome.error.startswith(message)
    assert jobs.report(lease).statuses[-1] == "Failed"


async def test_a_zip_slip_snapshot_is_refused(jobs: Jobs, tmp_path: Path) -> None:
    lease = jobs.lease({"main.py": "print('never')\n"})
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("main.py", "print('never')\n")
        archive.writestr("../escaped.txt", "out of the tree")
    data = evil.read_bytes()
    jobs.snapshots.zips[lease.run_id] = data
    lease = Lease(**{**lease.__dict__, "snapshot_sha256": hashlib.sha256(data).hexdigest()})
    outcome = await jobs.job(lease).run()
    assert outcome is not None
    assert outcome.status == "Failed"
    assert outcome.error is not None
    assert ".." in outcome.error
    assert not (jobs.work / "escaped.txt").exists()


async def test_a_snapshot_that_is_not_the_submitted_one_is_refused(jobs: Jobs) -> None:
    lease = jobs.lease({"main.py": "print('never')\n"})
    lease = Lease(**{**lease.__dict__, "snapshot_sha256": "0" * 64})
    outcome = await jobs.job(lease).run()
    assert outcome is not None
    assert outcome.status == "Failed"
    assert outcome.error is not None
    assert f"not {'0' * 64}" in outcome.error


def run_dir(lease: Lease) -> str:
    return f"{lease.run_id}.{lease.attempt}"


class BlobApi(FakeApi):
    """An API that stores every artifact's bytes (it says so, at least)."""

    def __call__(self, request: urllib.request.Request, timeout: float) -> FakeResponse:
        if urlsplit(request.full_url).path.startswith("/v1/blobs/"):
            self.requests.append(request)
            return FakeResponse(201, b"{}", "application/json")
        return super().__call__(request, timeout)


async def test_the_real_sdk_reports_the_statuses_and_lines(jobs: Jobs, tmp_path: Path) -> None:
    """``SdkReporter`` over the SDK's ``Run.open`` (the broker in memory)."""
    kafka = MemoryKafka()
    made: list[FakeWorkspace] = []

    def workspace(name: str) -> FakeWorkspace:
        ws = FakeWorkspace(BlobApi({}), kafka, name=name, home=tmp_path / "sdk",
                           options=options())
        made.append(ws)
        return ws

    reporter = SdkReporter(workspace)
    lease = jobs.lease({"main.py": FAILING})
    job = RunJob(lease, work_dir=jobs.work, snapshots=jobs.snapshots, reporter=reporter,
                 envs=EnvironmentCache(jobs.work / "envs"), base_env=dict(os.environ),
                 run_variables=RUN_VARIABLES)
    outcome = await job.run()
    reporter.close()
    assert outcome is not None
    assert outcome.status == "Failed"
    events = [e for e in kafka.events() if e["run_id"] == lease.run_id]
    assert {e["workspace"] for e in events} == {"ws1"}
    statuses = [(p["status"], p["attempt"]) for p in of_kind(events, "Lifecycle")]
    assert statuses == [("Preparing", 0), ("Running", 0), ("Failed", 0)]
    assert of_kind(events, "Lifecycle")[-1]["error"] == outcome.error
    logged = {(p["stream"], line) for p in of_kind(events, "LogLines") for line in p["lines"]}
    assert ("stdout", "before the error") in logged
    assert ("stderr", "ValueError: the loss is NaN ✗") in logged
    assert "user_logs/std_log.txt" in {p["name"] for p in of_kind(events, "Artifact")}
    for ws in made:
        assert any(r.get_method() == "PUT" for r in ws.fake.requests)


# ---- the agent process dies: its runs die too --------------------------------------------

DRIVER = """\
import asyncio, os, sys
from pathlib import Path
from ingest.agent.procs import Watchdog, spawn

async def main():
    watchdog = Watchdog()
    if sys.argv[1] == "watchdog":
        watchdog.start()
    proc = await spawn(["/bin/sh", "-c", "sleep 600 & echo $!; sleep 600"], cwd=Path("."),
                       env=dict(os.environ))
    watchdog.add(proc.pid)
    background = (await proc.stdout.readline()).decode().strip()
    print(proc.pid, background, watchdog.pid or 0, flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


@pytest.mark.parametrize("mode", ["watchdog", "pdeathsig-only"])
def test_kill_9_of_the_agent_kills_its_runs(tmp_path: Path, mode: str) -> None:
    with subprocess.Popen([sys.executable, "-c", DRIVER, mode], stdout=subprocess.PIPE,
                          text=True, cwd=tmp_path) as driver:
        try:
            check_kill_9(driver, mode)
        finally:
            driver.kill()


def check_kill_9(driver: subprocess.Popen[str], mode: str) -> None:
    leader = background = 0
    try:
        assert driver.stdout is not None
        leader, background, watchdog = map(int, driver.stdout.readline().split())
        assert not gone(leader)
        assert not gone(background)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        deadline = time.monotonic() + BOUND_S
        while not gone(leader) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert gone(leader)  # PR_SET_PDEATHSIG
        if mode == "watchdog":
            while not (gone(background) and gone(watchdog)) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert gone(background)  # the rest of its process group: the watchdog
            assert gone(watchdog)
        else:
            assert not gone(background)  # why the watchdog exists
    finally:
        for pid in (leader, background):
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


# ---- the agent against the contract -------------------------------------------------------


class Contract:
    """The jobs contract's agent side in memory: a queue per target, leases, long polls
    woken by changes, re-delivery of unacknowledged leases, cancels, finish, delete."""

    def __init__(self, *, lease_s: float = 120.0, poll_max_s: float = 60.0) -> None:
        self.lease_s = lease_s
        self.poll_max_s = poll_max_s
        self.queue: list[dict[str, Any]] = []
        self.leased: dict[str, str] = {}  # run id -> agent id
        self.docs: dict[str, dict[str, Any]] = {}
        self.cancel_requested: set[str] = set()
        self.finished: dict[str, dict[str, Any]] = {}
        self.agents: dict[str, dict[str, Any]] = {}
        self.deleted: list[str] = []
        self.polls: list[dict[str, Any]] = []
        self.poll_status = 200  # anything else: polls fail with it
        self.zips: dict[str, bytes] = {}
        self.closing = False
        self._changed = asyncio.Event()

    def submit(self, lease: Lease, data: bytes) -> None:
        doc = {"run_id": lease.run_id, "experiment": lease.experiment,
               "workspace": lease.workspace, "target": lease.target, "attempt": lease.attempt,
               "spec": dict(lease.spec), "display_name": None, "lease_expires_at": None,
               "snapshot": {"sha256": lease.snapshot_sha256, "size_bytes": len(data)}}
        self.docs[lease.run_id] = doc
        self.zips[lease.run_id] = data
        self.queue.append(doc)
        self.changed()

    def cancel(self, run_id: str) -> None:
        self.cancel_requested.add(run_id)
        self.changed()

    def changed(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/agents", self.register)
        app.router.add_post("/v1/agents/{agent}/poll", self.poll)
        app.router.add_post("/v1/agents/{agent}/runs/{run}/finish", self.finish)
        app.router.add_delete("/v1/agents/{agent}", self.delete)
        app.router.add_get("/v1/runs/{run}/snapshot", self.snapshot)
        return app

    async def register(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.agents[body["agent_id"]] = body
        return web.json_response({"agent_id": body["agent_id"], "lease_s": self.lease_s,
                                  "poll_max_s": self.poll_max_s}, status=201)

    def _answer(self, agent: str, free: int, running: list[str]) -> dict[str, Any]:
        lost = [r for r in running if self.leased.get(r) != agent]
        cancel = [r for r in running if r not in lost and r in self.cancel_requested]
        unacknowledged = [self.docs[r] for r, a in self.leased.items()
                          if a == agent and r not in running]
        fresh: list[dict[str, Any]] = []
        target = self.agents[agent]["target"]
        for doc in list(self.queue):
            if len(fresh) >= free - len(unacknowledged):
                break
            if doc["target"] == target:
                self.queue.remove(doc)
                self.leased[doc["run_id"]] = agent
                fresh.append(doc)
        return {"runs": unacknowledged + fresh, "cancel": cancel, "lost": lost,
                "lease_s": self.lease_s}

    async def poll(self, request: web.Request) -> web.Response:
        agent = request.match_info["agent"]
        if agent not in self.agents:
            return web.json_response({"error": {"status": 404, "message": "no agent"}},
                                     status=404)
        body = await request.json()
        self.polls.append(body)
        if self.poll_status != 200:
            return web.json_response({"error": {"status": self.poll_status, "message": "x"}},
                                     status=self.poll_status)
        deadline = time.monotonic() + min(body["wait_s"], self.poll_max_s)
        while True:
            if self.closing or request.transport is None or request.transport.is_closing():
                # The agent gave up on this poll (it sent a newer one): lease nothing more.
                return web.json_response({"runs": [], "cancel": [], "lost": []})
            answer = self._answer(agent, body["free"], body["running"])
            left = deadline - time.monotonic()
            if answer["runs"] or answer["cancel"] or answer["lost"] or left <= 0:
                return web.json_response(answer)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    async def finish(self, request: web.Request) -> web.Response:
        agent, run_id = request.match_info["agent"], request.match_info["run"]
        if self.leased.get(run_id) != agent:
            return web.json_response({"error": {"status": 409, "message": "not held"}},
                                     status=409)
        del self.leased[run_id]
        self.finished[run_id] = await request.json()
        self.changed()
        return web.json_response({"run_id": run_id, "state": "finished"})

    async def delete(self, request: web.Request) -> web.Response:
        self.deleted.append(request.match_info["agent"])
        return web.Response(status=204)

    async def snapshot(self, request: web.Request) -> web.Response:
        return web.Response(body=self.zips[request.match_info["run"]],
                            content_type="application/zip")


class AgentUnderTest:
    def __init__(self, agent: Agent, task: asyncio.Task[None], contract: Contract) -> None:
        self.agent = agent
        self.task = task
        self.contract = contract


@pytest.fixture
async def contract() -> AsyncIterator[tuple[Contract, str]]:
    fake = Contract()
    async with HttpServer(fake.app(), host="127.0.0.1", port=0) as server:
        yield fake, server.url
        fake.closing = True
        fake.changed()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def start_agent(jobs: Jobs, url: str, session: aiohttp.ClientSession, *, slots: int = 1,
                grace_s: float = 10.0) -> Agent:
    config = AgentConfig(target="local", slots=slots, work_dir=jobs.work, grace_s=grace_s,
                         run_variables=RUN_VARIABLES)
    return Agent(config, api=AgentApi(session, url, "agent-token"), reporter=jobs.reporter)


RECORDS = """\
import os, sys, time
with open(sys.argv[1], "a") as f:
    f.write(f"start {os.environ['RUNSTREAM_RUN_ID']} {time.monotonic()}\\n")
time.sleep(float(sys.argv[2]))
with open(sys.argv[1], "a") as f:
    f.write(f"end {os.environ['RUNSTREAM_RUN_ID']} {time.monotonic()}\\n")
"""


async def test_one_slot_runs_the_queue_in_order_one_at_a_time(
    jobs: Jobs, contract: tuple[Contract, str], session: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    fake, url = contract
    record = tmp_path / "record.txt"
    leases = [jobs.lease({"main.py": RECORDS}, arguments=[str(record), "0.2"]) for _ in range(3)]
    for lease in leases:
        fake.submit(lease, jobs.snapshots.zips[lease.run_id])
    agent = start_agent(jobs, url, session, slots=1)
    task = asyncio.create_task(agent.serve())
    await until(lambda: len(fake.finished) == 3, "three runs to finish")
    agent.request_stop()
    await asyncio.wait_for(task, BOUND_S)
    assert fake.deleted == [agent.agent_id]
    assert fake.agents[agent.agent_id]["slots"] == 1
    assert fake.agents[agent.agent_id]["pid"] == os.getpid()
    events = [line.split() for line in record.read_text().splitlines()]
    assert [(kind, run) for kind, run, _ in events] == [
        (kind, lease.run_id) for lease in leases for kind in ("start", "end")]
    for lease in leases:
        assert fake.finished[lease.run_id] == {"outcome": "Completed", "exit_code": 0,
                                               "error": None}
    # A freed slot sends a new poll at once: the server's long poll (60 s here) is cut
    # short, so the next run started well before it would have ended.
    ends = {run: float(t) for kind, run, t in events if kind == "end"}
    starts = {run: float(t) for kind, run, t in events if kind == "start"}
    for before, after in itertools.pairwise(leases):
        assert starts[after.run_id] - ends[before.run_id] < 20.0
    assert all(p["free"] <= 1 for p in fake.polls)


async def test_cancel_and_lost_from_a_poll_answer(
    jobs: Jobs, contract: tuple[Contract, str], session: aiohttp.ClientSession,
) -> None:
    fake, url = contract
    one = jobs.lease({"main.py": IGNORES_SIGTERM})
    two = jobs.lease({"main.py": IGNORES_SIGTERM})
    for lease in (one, two):
        fake.submit(lease, jobs.snapshots.zips[lease.run_id])
    agent = start_agent(jobs, url, session, slots=2, grace_s=0.3)
    task = asyncio.create_task(agent.serve())
    await until(lambda: all("ready" in lines_of(jobs, lease) for lease in (one, two)),
                "both runs to start")
    fake.cancel(one.run_id)
    del fake.leased[two.run_id]  # the server gave up on it (say, the lease expired)
    fake.changed()
    await until(lambda: one.run_id in fake.finished and not agent.jobs, "the runs to end")
    assert fake.finished == {one.run_id: {"outcome": "Canceled", "exit_code": -9, "error": None}}
    assert jobs.report(two).statuses == ["Preparing", "Running"]  # lost: nothing reported
    assert agent.stats["lost"] == 1
    agent.request_stop()
    await asyncio.wait_for(task, BOUND_S)


async def test_runs_are_killed_when_polls_fail_for_two_thirds_of_the_lease(
    jobs: Jobs, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    fake = Contract(lease_s=3.0, poll_max_s=1.0)
    pid_file = tmp_path / "pid"
    script = f"""\
    import os, time
    open({str(pid_file)!r}, "w").write(str(os.getpid()))
    time.sleep(600)
    """
    lease = jobs.lease({"main.py": script})
    async with HttpServer(fake.app(), host="127.0.0.1", port=0) as server:
        fake.submit(lease, jobs.snapshots.zips[lease.run_id])
        agent = start_agent(jobs, server.url, session)
        task = asyncio.create_task(agent.serve())
        await until(lambda: pid_file.exists() and pid_file.read_text() != "", "the script")
        fake.poll_status = 503  # the API is unreachable from now on
        await until(lambda: gone(int(pid_file.read_text())), "the lease rule to kill the run")
        assert agent.stats["lost"] == 1
        assert fake.finished == {}
        assert jobs.report(lease).statuses == ["Preparing", "Running"]
        fake.poll_status = 200
        agent.request_stop()
        await asyncio.wait_for(task, BOUND_S)
        fake.closing = True
        fake.changed()
    assert agent.guard.kill_after_s == pytest.approx(2.0)


async def test_graceful_stop_takes_no_new_runs_and_waits_for_running_ones(
    jobs: Jobs, contract: tuple[Contract, str], session: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    fake, url = contract
    go_on = tmp_path / "go-on"
    script = f"""\
    import os, time
    print("ready", flush=True)
    while not os.path.exists({str(go_on)!r}):
        time.sleep(0.01)
    """
    running = jobs.lease({"main.py": script})
    fake.submit(running, jobs.snapshots.zips[running.run_id])
    agent = start_agent(jobs, url, session, slots=2)
    task = asyncio.create_task(agent.serve())
    await until(lambda: "ready" in lines_of(jobs, running), "the run to start")
    agent.request_stop()
    await until(lambda: fake.polls[-1]["free"] == 0, "a draining poll")
    queued = jobs.lease({"main.py": "print('never')\n"})
    fake.submit(queued, jobs.snapshots.zips[queued.run_id])
    assert not task.done()
    go_on.touch()
    await asyncio.wait_for(task, BOUND_S)
    assert fake.finished[running.run_id]["outcome"] == "Completed"
    assert fake.queue == [fake.docs[queued.run_id]]
    assert fake.deleted == [agent.agent_id]


async def test_a_second_stop_signal_cancels_the_running_runs(
    jobs: Jobs, contract: tuple[Contract, str], session: aiohttp.ClientSession,
) -> None:
    fake, url = contract
    lease = jobs.lease({"main.py": IGNORES_SIGTERM})
    fake.submit(lease, jobs.snapshots.zips[lease.run_id])
    agent = start_agent(jobs, url, session, grace_s=0.3)
    task = asyncio.create_task(agent.serve())
    await until(lambda: "ready" in lines_of(jobs, lease), "the run to start")
    agent.request_stop()
    agent.request_stop()
    await asyncio.wait_for(task, BOUND_S)
    assert fake.finished[lease.run_id]["outcome"] == "Canceled"
    assert fake.deleted == [agent.agent_id]


async def test_an_answer_repeating_a_run_does_not_start_it_twice(
    jobs: Jobs, contract: tuple[Contract, str], session: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    fake, url = contract
    record = tmp_path / "record.txt"
    lease = jobs.lease({"main.py": RECORDS}, arguments=[str(record), "1"])
    fake.submit(lease, jobs.snapshots.zips[lease.run_id])
    agent = start_agent(jobs, url, session, slots=2)
    handled: list[Any] = []
    real = agent._handle

    def twice(answer: Mapping[str, Any]) -> bool:
        handled.append(answer)
        return real(answer) | real(answer)  # the same delivery again

    agent._handle = twice  # type: ignore[method-assign]
    task = asyncio.create_task(agent.serve())
    await until(lambda: lease.run_id in fake.finished, "the run to finish")
    # Delivered again after it ended (an answer lost on the way): ignored too.
    real({"runs": [fake.docs[lease.run_id]], "cancel": [], "lost": []})
    await asyncio.sleep(0.2)
    agent.request_stop()
    await asyncio.wait_for(task, BOUND_S)
    assert [line.split()[0] for line in record.read_text().splitlines()] == ["start", "end"]
    assert agent.stats["started"] == 1
