"""Agents against the real pipeline (API with its job routes and lease reaper, Kafka,
worker, PostgreSQL): agents killed with SIGKILL mid-run, retries, many jobs through agents
that die and come back, and a one-slot target's queue (issue 10).

Every agent here is a real ``runstream agent`` process on a target of the test's own,
over the test's own topic, database, worker and API (``pipeline`` + ``start_api``), so
the stack's agent (target ``local``) never sees these runs. Each job records its own
start and end in a file the test reads, and holds an exclusive ``flock`` on a file named
after its run while it runs: a second copy of the run starting while the first still
runs finds the lock taken and writes ``DOUBLE`` — "never twice at the same time" is
checked by the kernel, not by timestamps.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from ingest.api.routes.jobs import JobTiming
from producer import Environment, Experiment, ScriptRunConfig, Workspace
from tests.helpers import unique
from tests.integration.agents import AgentProcess
from tests.integration.helpers import fetch
from tests.integration.pipelines import READ_TOKEN, Pipeline, ReadPipeline, call, start_api

pytestmark = pytest.mark.integration

#: The contract's deadline for a dead agent's run to end Failed ("agent lost").
AGENT_LOST_S = 60.0
BOUND_S = 300.0  # generous: only a hang reaches it

JOB = r'''
import fcntl, os, sys, time
record, locks, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
run_id, attempt = os.environ["RUNSTREAM_RUN_ID"], os.environ["RUNSTREAM_ATTEMPT"]

def note(what):
    with open(record, "a") as f:
        f.write(f"{what} {run_id} {attempt} {os.getpid()} {time.time():.6f}\n")

lock = open(os.path.join(locks, run_id), "a")
try:
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    note("DOUBLE")
    raise
note("start")
if seconds < 0:  # wait until attempt -seconds (a retry) is the one running
    while int(attempt) < -seconds:
        time.sleep(0.05)
else:
    time.sleep(seconds)
note("end")
'''


@pytest.fixture
async def agents(tmp_path: Path) -> AsyncIterator[Callable[..., AgentProcess]]:
    """``agents(pipeline, target, slots=1)`` → a started ``AgentProcess``; all are stopped
    at the end, while the test's event loop (which serves its API) still runs."""
    made: list[AgentProcess] = []

    def make(pipeline: ReadPipeline, target: str, *, slots: int = 1,
             name: str | None = None) -> AgentProcess:
        agent = AgentProcess(pipeline, target, slots, tmp_path / "agents",
                             name or f"{target}-{len(made)}")
        made.append(agent)
        return agent

    yield make
    await asyncio.gather(*(asyncio.to_thread(agent.stop) for agent in made))


@pytest.fixture
async def fast_pipeline(pipeline: Pipeline, tmp_path: Path) -> AsyncIterator[ReadPipeline]:
    """``read_pipeline`` with a 6 s lease (agents kill after 4 s without a poll) and a
    reaper every 0.5 s, so lost agents cost seconds, not half minutes."""
    async with AsyncExitStack() as exits:
        url = await start_api(exits, dsn=pipeline.dsn, blob_root=tmp_path / "server-blobs",
                              token=READ_TOKEN, registry=CollectorRegistry(),
                              bootstrap=pipeline.bootstrap, topic=pipeline.topic,
                              job_timing=JobTiming(lease_s=6.0, poll_max_s=2.0,
                                                   reap_interval_s=0.5))
        yield ReadPipeline(pipeline.bootstrap, url, pipeline.topic, pipeline.dsn,
                           pipeline.group, pipeline.worker, home=tmp_path)


def job_folder(root: Path) -> Path:
    folder = root / "job"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "job.py").write_text(JOB)
    (root / "locks").mkdir(exist_ok=True)
    return folder


def config(root: Path, target: str, seconds: float) -> ScriptRunConfig:
    env = Environment("agent-tests")
    env.python.user_managed_dependencies = True
    return ScriptRunConfig(str(job_folder(root)), script="job.py",
                           arguments=[str(root / "record.txt"), str(root / "locks"), seconds],
                           compute_target=target, environment=env)


def records(root: Path) -> list[tuple[str, str, int, int, float]]:
    """(what, run id, attempt, pid, time) of every line the jobs wrote."""
    path = root / "record.txt"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        what, run_id, attempt, pid, at = line.split()
        out.append((what, run_id, int(attempt), int(pid), float(at)))
    return out


async def submission(http: aiohttp.ClientSession, api_url: str, run_id: str) -> dict[str, Any]:
    async with http.get(f"{api_url}/v1/submissions/{run_id}",
                        headers={"Authorization": f"Bearer {READ_TOKEN}"}) as response:
        assert response.status == 200, await response.text()
        body: dict[str, Any] = await response.json()
        return body


async def wait_submissions(http: aiohttp.ClientSession, api_url: str, run_ids: list[str],
                           done: Callable[[dict[str, Any]], bool], *, timeout_s: float,
                           what: str) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    pending = list(run_ids)
    found: dict[str, dict[str, Any]] = {}
    while pending:
        for run_id in list(pending):
            doc = await submission(http, api_url, run_id)
            if done(doc):
                found[run_id] = doc
                pending.remove(run_id)
        if not pending:
            break
        assert time.monotonic() < deadline, f"{len(pending)} runs not {what}: {pending[:5]}"
        await asyncio.sleep(0.2)
    return found


def ended(doc: dict[str, Any]) -> bool:
    return doc["state"] in ("finished", "canceled")


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def workspace(read_pipeline: ReadPipeline) -> AsyncIterator[Workspace]:
    ws = read_pipeline.workspace()
    yield ws
    await call(ws.close, 10.0)


async def test_kill_9_of_an_agent_mid_run_fails_the_run_or_runs_it_again(
    read_pipeline: ReadPipeline, workspace: Workspace, agents: Callable[..., AgentProcess],
    http: aiohttp.ClientSession, tmp_path: Path,
) -> None:
    """The real 30 s lease: an agent killed mid-run → its run ends Failed "agent lost"
    within 60 s (max_retries=0), or runs again once on a restarted agent (max_retries=1)."""
    once, twice = unique("once-"), unique("twice-")
    experiment = Experiment(workspace, "agent-kill")
    lone = agents(read_pipeline, once)
    retried = agents(read_pipeline, twice)
    # Attempt 0 waits until it is attempt 1 (never): only a retry ends it.
    lost_run = await call(experiment.submit, config(tmp_path, once, -1))
    retry_run = await call(experiment.submit, config(tmp_path, twice, -1), max_retries=1)
    await wait_until(lambda: {r for _, r, *_ in records(tmp_path)} >= {lost_run.id,
                                                                        retry_run.id},
                     "both scripts to start", lone, retried)
    scripts = [pid for what, _, _, pid, _ in records(tmp_path) if what == "start"]
    killed_at = time.monotonic()
    lone.kill9()
    retried.kill9()
    # The scripts die with their agents (PR_SET_PDEATHSIG, the watchdog).
    await wait_until(lambda: all(gone(pid) for pid in scripts), "the scripts to die")
    retried.start()  # the same target, a new agent process

    lost = await wait_submissions(http, read_pipeline.api_url, [lost_run.id], ended,
                                  timeout_s=AGENT_LOST_S, what="ended")
    assert time.monotonic() - killed_at <= AGENT_LOST_S
    doc = lost[lost_run.id]
    assert (doc["state"], doc["outcome"], doc["attempt"]) == ("finished", "Failed", 0)
    assert doc["error"].startswith("agent lost: agent ")
    details = await wait_status(http, read_pipeline.api_url, lost_run.id, {"Failed"})
    assert details["error"].startswith("agent lost: agent ")

    done = await wait_submissions(http, read_pipeline.api_url, [retry_run.id], ended,
                                  timeout_s=BOUND_S, what="ended")
    doc = done[retry_run.id]
    assert (doc["outcome"], doc["attempt"]) == ("Completed", 1), retried.output()
    details = await wait_status(http, read_pipeline.api_url, retry_run.id, {"Completed"})
    assert details["status"] == "Completed"
    starts = [(run, attempt) for what, run, attempt, *_ in records(tmp_path)
              if what == "start"]
    assert sorted(starts) == sorted([(lost_run.id, 0), (retry_run.id, 0), (retry_run.id, 1)])
    assert not [r for r in records(tmp_path) if r[0] == "DOUBLE"]


async def test_200_jobs_through_3_agents_one_killed_and_restarted_repeatedly(
    fast_pipeline: ReadPipeline, agents: Callable[..., AgentProcess],
    http: aiohttp.ClientSession, tmp_path: Path,
) -> None:
    target = unique("many-")
    ws = fast_pipeline.workspace()
    try:
        experiment = Experiment(ws, "agent-many")
        rng = random.Random(10)
        runs = []
        for i in range(200):
            seconds = round(rng.uniform(0.0, 0.3), 3)
            runs.append(await call(experiment.submit, config(tmp_path, target, seconds),
                                   max_retries=10, display_name=f"job {i}"))
        run_ids = [r.id for r in runs]
        steady = [agents(fast_pipeline, target, slots=2, name=f"steady{i}") for i in range(2)]
        victim = agents(fast_pipeline, target, slots=2, name="victim")
        kills = 0
        deadline = time.monotonic() + BOUND_S
        while kills < 6 and time.monotonic() < deadline:
            await asyncio.sleep(rng.uniform(1.0, 3.0))
            if len([r for r in records(tmp_path) if r[0] == "end"]) >= len(run_ids):
                break
            victim.kill9()
            kills += 1
            await asyncio.sleep(rng.uniform(0.0, 1.0))
            victim.start()
        found = await wait_submissions(http, fast_pipeline.api_url, run_ids, ended,
                                       timeout_s=BOUND_S, what="ended")
    finally:
        await call(ws.close, 10.0)
    outcomes = Counter(doc["outcome"] for doc in found.values())
    logs = "\n".join(a.output()[-3000:] for a in (*steady, victim))
    assert outcomes == {"Completed": 200}, (outcomes, logs)
    seen = records(tmp_path)
    assert [r for r in seen if r[0] == "DOUBLE"] == []
    # Every run's last start has its end, and the attempt that ended is the one finished.
    last: dict[str, tuple[str, int]] = {}
    for what, run_id, attempt, _, _ in seen:
        last[run_id] = (what, attempt)
    assert {run_id: what for run_id, (what, _) in last.items()} == dict.fromkeys(run_ids, "end")
    for run_id, doc in found.items():
        assert last[run_id][1] == doc["attempt"]
    # The run statuses agree (stored by the worker from the agents' events).
    await fast_pipeline.drained()
    rows = await fetch(fast_pipeline.dsn, "SELECT run_id, status FROM runstream.runs WHERE "
                       "experiment = 'agent-many'")
    assert Counter(r["status"] for r in rows) == {"Completed": 200}
    assert kills >= 1
    retried = sum(1 for doc in found.values() if doc["attempt"] > 0)
    print(f"{kills} kills of one agent; {retried} of 200 runs ran again after one")


async def test_a_one_slot_target_runs_one_and_queues_the_rest_in_order(
    read_pipeline: ReadPipeline, workspace: Workspace, agents: Callable[..., AgentProcess],
    http: aiohttp.ClientSession, tmp_path: Path,
) -> None:
    target = unique("one-slot-")
    experiment = Experiment(workspace, "agent-queue")
    go_on = tmp_path / "go-on"
    script = (f"import os, time\nprint('running', flush=True)\n"
              f"while not os.path.exists({str(go_on)!r}):\n    time.sleep(0.02)\n")
    folder = tmp_path / "waits"
    folder.mkdir()
    (folder / "wait.py").write_text(script)
    env = Environment("agent-tests")
    env.python.user_managed_dependencies = True
    runs = [await call(experiment.submit, ScriptRunConfig(str(folder), script="wait.py",
                                                          compute_target=target,
                                                          environment=env))
            for _ in range(3)]
    agents(read_pipeline, target, slots=1)
    first = await wait_submissions(http, read_pipeline.api_url, [runs[0].id],
                                   lambda d: d["state"] == "leased", timeout_s=BOUND_S,
                                   what="leased")
    assert first[runs[0].id]["state"] == "leased"
    await wait_status(http, read_pipeline.api_url, runs[0].id, {"Running"})
    headers = {"Authorization": f"Bearer {READ_TOKEN}"}
    async with http.get(f"{read_pipeline.api_url}/v1/compute/{target}",
                        headers=headers) as response:
        assert response.status == 200, await response.text()
        state = await response.json()
    assert [r["run_id"] for r in state["leased"]] == [runs[0].id]
    assert [(r["run_id"], r["position"]) for r in state["queue"]] == [
        (runs[1].id, 1), (runs[2].id, 2)]
    assert [(a["slots"], a["busy"], a["alive"]) for a in state["agents"]] == [(1, 1, True)]
    for run in runs[1:]:
        assert (await submission(http, read_pipeline.api_url, run.id))["state"] == "queued"
    go_on.touch()
    done = await wait_submissions(http, read_pipeline.api_url, [r.id for r in runs], ended,
                                  timeout_s=BOUND_S, what="ended")
    assert {d["outcome"] for d in done.values()} == {"Completed"}
    ended_at = [done[r.id]["ended_at"] for r in runs]
    assert ended_at == sorted(ended_at)


async def test_runstream_cancel_stops_a_running_run(
    read_pipeline: ReadPipeline, workspace: Workspace, agents: Callable[..., AgentProcess],
    http: aiohttp.ClientSession, tmp_path: Path,
) -> None:
    target = unique("cancel-")
    experiment = Experiment(workspace, "agent-cancel")
    run = await call(experiment.submit, config(tmp_path, target, 600))
    queued = await call(experiment.submit, config(tmp_path, target, 600))
    agent = agents(read_pipeline, target, slots=1)
    await wait_until(lambda: any(r[1] == run.id for r in records(tmp_path)), "the script",
                     agent)
    env = read_pipeline.env("cli")

    def cancel(run_id: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ingest.cli", "cancel", run_id], env=env,
                              capture_output=True, text=True, check=False, timeout=60)

    said = await call(cancel, queued.id)
    assert said.returncode == 0, said.stderr
    assert said.stdout == f"run {queued.id}: canceled (it was queued) (state: canceled)\n"
    said = await call(cancel, run.id)
    assert said.returncode == 0, said.stderr
    assert said.stdout.startswith(f"run {run.id}: cancel requested: its agent stops it")
    done = await wait_submissions(http, read_pipeline.api_url, [run.id], ended,
                                  timeout_s=BOUND_S, what="ended")
    assert done[run.id]["outcome"] == "Canceled"
    await wait_status(http, read_pipeline.api_url, run.id, {"Canceled"})
    said = await call(cancel, run.id)
    assert said.stdout == f"run {run.id}: nothing to cancel: it has already ended (state: " \
                          "finished)\n"
    unknown = await call(cancel, "no-such-run")
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("runstream cancel: error: 409: ")


# ---- helpers ------------------------------------------------------------------------------


async def wait_until(condition: Callable[[], bool], what: str, *watched: AgentProcess,
                     timeout_s: float = BOUND_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        logs = "\n".join(a.output()[-2000:] for a in watched)
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{logs}"
        await asyncio.sleep(0.05)


async def wait_status(http: aiohttp.ClientSession, api_url: str, run_id: str,
                      wanted: set[str], timeout_s: float = BOUND_S) -> dict[str, Any]:
    """The run's details (``GET /v1/runs/{id}``) once its stored status is in ``wanted``."""
    deadline = time.monotonic() + timeout_s
    headers = {"Authorization": f"Bearer {READ_TOKEN}"}
    while True:
        async with http.get(f"{api_url}/v1/runs/{run_id}", headers=headers) as response:
            details: dict[str, Any] = await response.json() if response.status == 200 else {}
        if details.get("status") in wanted:
            return details
        assert time.monotonic() < deadline, f"run {run_id} is {details.get('status')}, " \
                                            f"never {wanted}"
        await asyncio.sleep(0.1)


async def test_a_zip_slip_snapshot_fails_the_run_and_writes_nothing_outside(
    read_pipeline: ReadPipeline, agents: Callable[..., AgentProcess], tmp_path: Path,
    http: aiohttp.ClientSession,
) -> None:
    """A snapshot no SDK would build (an entry ``../escaped.txt``), submitted by hand: the
    agent refuses to extract it, the run ends Failed saying why, and nothing lands outside
    the run's working directory."""
    import hashlib
    import io
    import uuid
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        zipped.writestr("job.py", "print('never runs')\n")
        zipped.writestr("../escaped.txt", "planted")
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    auth = {"Authorization": f"Bearer {READ_TOKEN}"}
    async with http.put(f"{read_pipeline.api_url}/v1/blobs/{digest}", data=data,
                        headers=auth) as r:
        assert r.status in (200, 201)
    run_id = f"slip_1800000000_{uuid.uuid4().hex[:8]}"
    spec = config(tmp_path, "slip", 0).to_submission()
    async with http.post(f"{read_pipeline.api_url}/v1/submissions", headers=auth, json={
            "run_id": run_id, "experiment": "slip", "workspace": "default",
            "target": "slip", "spec": spec,
            "snapshot": {"sha256": digest, "size_bytes": len(data)}}) as r:
        assert r.status == 201, await r.text()
    agent = agents(read_pipeline, "slip")
    (doc,) = (await wait_submissions(http, read_pipeline.api_url, [run_id], ended,
                                     timeout_s=BOUND_S, what="ended")).values()
    assert doc["outcome"] == "Failed"
    assert ".." in (doc["error"] or "")
    assert not await call(lambda: list(tmp_path.rglob("escaped.txt")))
    assert "never runs" not in agent.output()
