"""The queue of submitted runs over the real API, PostgreSQL, Kafka and worker (issue 10):
durable idempotent submission, lease order and exclusivity, push to a waiting agent,
cancel of a queued and of a leased run, and expired leases — failed "agent lost", or
requeued as the run's next attempt, whose statuses start afresh. Agents are played by
the test over HTTP; ``tests/integration/test_agent*.py`` run the real agent."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from ingest.api.routes.jobs import JobTiming
from producer import ScriptRunConfig
from producer._snapshot import build_snapshot
from tests.integration.pipelines import READ_TOKEN, Pipeline, start_api

pytestmark = pytest.mark.integration

LEASE_S = 2.0


class Jobs:
    def __init__(self, url: str, http: aiohttp.ClientSession, pipeline: Pipeline,
                 folder: Path) -> None:
        self.url = url
        self.http = http
        self.pipeline = pipeline
        (folder / "train.py").write_text("print('hi')\n")
        self.snapshot = build_snapshot(folder)
        self.spec = ScriptRunConfig(source_directory=str(folder), script="train.py",
                                    compute_target="gpu").to_submission()

    async def call(self, method: str, path: str, body: Any = None,
                   data: bytes | None = None) -> tuple[int, Any]:
        async with self.http.request(method, self.url + path, json=body, data=data) as r:
            if r.content_type != "application/json":
                return r.status, await r.read()
            doc = await r.json()
            return r.status, doc["error"]["message"] if r.status >= 400 else doc

    async def upload(self) -> None:
        status, _ = await self.call("PUT", f"/v1/blobs/{self.snapshot.sha256}",
                                    data=self.snapshot.path.read_bytes())
        assert status in (200, 201)

    async def submit(self, name: str, **extra: Any) -> str:
        run_id = f"jobs_1800000000_{uuid.uuid4().hex[:8]}"
        status, doc = await self.call("POST", "/v1/submissions", self.document(run_id, **extra))
        assert status == 201, doc
        return run_id

    def document(self, run_id: str, **extra: Any) -> dict[str, Any]:
        return {"run_id": run_id, "experiment": "jobs", "workspace": "default",
                "target": "gpu", "spec": self.spec,
                "snapshot": {"sha256": self.snapshot.sha256, "size_bytes": self.snapshot.size},
                **extra}

    async def agent(self, slots: int = 1) -> str:
        agent_id = uuid.uuid4().hex
        status, doc = await self.call("POST", "/v1/agents", {
            "agent_id": agent_id, "target": "gpu", "slots": slots, "hostname": "test",
            "pid": 1})
        assert status == 201, doc
        return agent_id

    async def poll(self, agent_id: str, free: int = 1, running: list[str] | None = None,
                   wait_s: float = 0) -> dict[str, Any]:
        status, doc = await self.call("POST", f"/v1/agents/{agent_id}/poll",
                                      {"free": free, "running": running or [],
                                       "wait_s": wait_s})
        assert status == 200, doc
        return dict(doc)

    async def run_status(self, run_id: str) -> tuple[str, str | None]:
        status, doc = await self.call("GET", f"/v1/runs/{run_id}")
        return (doc["status"], doc["error"]) if status == 200 else ("unknown", None)

    async def wait_status(self, run_id: str, want: str, timeout_s: float = 60) -> str | None:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while asyncio.get_running_loop().time() < deadline:
            status, error = await self.run_status(run_id)
            if status == want:
                return error
            await asyncio.sleep(0.2)
        raise AssertionError(f"run {run_id} is {await self.run_status(run_id)}, not {want}")


@pytest.fixture
async def jobs(pipeline: Pipeline, tmp_path: Path) -> AsyncIterator[Jobs]:
    async with AsyncExitStack() as exits:
        url = await start_api(exits, dsn=pipeline.dsn, blob_root=tmp_path / "blobs",
                              token=READ_TOKEN, registry=CollectorRegistry(),
                              bootstrap=pipeline.bootstrap, topic=pipeline.topic,
                              job_timing=JobTiming(lease_s=LEASE_S, poll_max_s=5.0,
                                                   reap_interval_s=0.2))
        http = await exits.enter_async_context(aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {READ_TOKEN}"}))
        folder = tmp_path / "src"
        folder.mkdir()
        yield Jobs(url, http, pipeline, folder)


async def test_submissions_are_durable_idempotent_and_leased_in_order(jobs: Jobs) -> None:
    run_id = f"jobs_1800000000_{uuid.uuid4().hex[:8]}"
    status, text = await jobs.call("POST", "/v1/submissions", jobs.document(run_id))
    assert status == 409
    assert "PUT /v1/blobs/" in text
    await jobs.upload()
    first = await jobs.submit("first")
    status, again = await jobs.call("POST", "/v1/submissions", jobs.document(first))
    assert status == 200
    assert again["state"] == "queued"
    status, text = await jobs.call("POST", "/v1/submissions",
                                   jobs.document(first, priority=5))
    assert status == 409
    assert "other content" in text
    second = await jobs.submit("second")
    urgent = await jobs.submit("urgent", priority=10)
    status, doc = await jobs.call("GET", f"/v1/submissions/{second}")
    assert (doc["state"], doc["position"]) == ("queued", 3)
    status, target = await jobs.call("GET", "/v1/compute/gpu")
    assert [q["run_id"] for q in target["queue"]] == [urgent, first, second]

    a, b = await jobs.agent(), await jobs.agent()
    got_a, got_b = await asyncio.gather(jobs.poll(a, free=2), jobs.poll(b, free=2))
    leased = [r["run_id"] for r in got_a["runs"]] + [r["run_id"] for r in got_b["runs"]]
    assert sorted(leased) == sorted([urgent, first, second])  # each once, none twice
    mine = [r["run_id"] for r in got_a["runs"]]
    again_a = await jobs.poll(a, free=2)  # not acknowledged as running: delivered again
    assert [r["run_id"] for r in again_a["runs"]] == mine
    status, target = await jobs.call("GET", "/v1/compute/gpu")
    assert target["queue"] == []
    assert {r["run_id"] for r in target["leased"]} == set(leased)
    assert {x["agent_id"]: x["busy"] for x in target["agents"]} == {
        a: len(mine), b: 3 - len(mine)}
    status, listing = await jobs.call("GET", "/v1/compute")  # ws.compute_targets()
    (gpu,) = [t for t in listing["targets"] if t["compute_target"] == "gpu"]
    assert gpu["agents"] == {"alive": 2, "slots": 2, "busy": 3}
    status, text = await jobs.call("GET", "/metrics")
    assert 'runstream_agents{compute_target="gpu"} 2.0' in text.decode()
    assert 'runstream_agent_slots{compute_target="gpu",state="busy"} 2.0' in text.decode()


async def test_a_waiting_agent_gets_new_work_and_cancels_by_push(jobs: Jobs) -> None:
    await jobs.upload()
    agent = await jobs.agent()
    waiting = asyncio.create_task(jobs.poll(agent, free=1, wait_s=30))
    await asyncio.sleep(0.5)
    assert not waiting.done()
    run_id = await jobs.submit("pushed")
    answer = await asyncio.wait_for(waiting, 30)  # the poll waits at most poll_max_s: 5 s
    assert [r["run_id"] for r in answer["runs"]] == [run_id]  # woken, not timed out empty
    assert answer["runs"][0]["spec"]["script"] == "train.py"
    status, _zipped = await jobs.call("GET", f"/v1/runs/{run_id}/snapshot")
    assert status == 200

    waiting = asyncio.create_task(jobs.poll(agent, free=0, running=[run_id], wait_s=30))
    await asyncio.sleep(0.5)
    status, doc = await jobs.call("POST", f"/v1/runs/{run_id}/cancel")
    assert (status, doc["action"]) == (200, "cancel_requested")
    answer = await asyncio.wait_for(waiting, 30)
    assert answer["cancel"] == [run_id]
    await jobs.wait_status(run_id, "CancelRequested")
    status, doc = await jobs.call("POST", f"/v1/agents/{agent}/runs/{run_id}/finish",
                                  {"outcome": "Canceled", "exit_code": -15})
    assert (status, doc["state"]) == (200, "finished")
    status, _ = await jobs.call("POST", f"/v1/agents/{uuid.uuid4().hex}/runs/{run_id}/finish",
                                {"outcome": "Completed"})
    assert status == 409  # only the lease holder releases a run


async def test_a_poll_the_agent_gave_up_and_a_stopped_agent_lease_nothing(jobs: Jobs) -> None:
    await jobs.upload()
    quitter, other = await jobs.agent(), await jobs.agent()
    waiting = asyncio.create_task(jobs.poll(quitter, free=1, wait_s=30))
    await asyncio.sleep(0.5)
    waiting.cancel()  # the agent closes its connection (a slot freed: it polls anew)
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
    await asyncio.sleep(0.5)
    run_id = await jobs.submit("after the hang-up")
    assert [r["run_id"] for r in (await jobs.poll(other, wait_s=5))["runs"]] == [run_id]
    status, _ = await jobs.call("DELETE", f"/v1/agents/{other}")
    assert status == 204
    second = await jobs.submit("after the stop")
    status, text = await jobs.call("POST", f"/v1/agents/{other}/poll", {"free": 1})
    assert status == 404  # stopped stays stopped: it must register again
    assert "register" in text
    status, doc = await jobs.call("GET", f"/v1/submissions/{second}")
    assert doc["state"] == "queued"


async def test_cancel_of_a_queued_run_is_immediate(jobs: Jobs) -> None:
    await jobs.upload()
    run_id = await jobs.submit("queued")
    status, doc = await jobs.call("POST", f"/v1/runs/{run_id}/cancel")
    assert (status, doc["action"], doc["state"]) == (200, "canceled", "canceled")
    await jobs.wait_status(run_id, "Canceled")
    agent = await jobs.agent()
    assert (await jobs.poll(agent))["runs"] == []
    status, doc = await jobs.call("POST", f"/v1/runs/{run_id}/cancel")
    assert doc["action"] == "none"
    status, _ = await jobs.call("POST", "/v1/runs/never_1_00000000/cancel")
    assert status in (404, 409)


async def test_expired_leases_fail_the_run_or_requeue_its_next_attempt(jobs: Jobs) -> None:
    await jobs.upload()
    lost = await jobs.submit("lost")
    retried = await jobs.submit("retried", max_retries=1)
    dead = await jobs.agent(slots=2)
    assert len((await jobs.poll(dead, free=2))["runs"]) == 2  # then it never polls again

    error = await jobs.wait_status(lost, "Failed")
    assert error is not None
    assert "agent lost" in error
    assert dead in error
    await jobs.wait_status(retried, "Queued")  # attempt 1 starts its statuses afresh
    _status, doc = await jobs.call("GET", f"/v1/submissions/{retried}")
    assert (doc["state"], doc["attempt"]) == ("queued", 1)

    alive = await jobs.agent()
    answer = await jobs.poll(alive)
    assert [(r["run_id"], r["attempt"]) for r in answer["runs"]] == [(retried, 1)]
    assert (await jobs.poll(dead, free=0, running=[lost, retried]))["lost"] == sorted(
        [lost, retried])  # the old agent learns it holds neither: it must not run them
    error = await jobs.wait_status(retried, "Failed")  # attempt 1 lost too: no retry left
    assert error is not None
    assert "attempt 2 of 2" in error


async def test_an_agent_token_acts_only_for_its_compute_target(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """``RUNSTREAM_AGENT_TOKENS``: an agent of target gpu needs no admin token. It
    registers and polls for gpu only, reads the snapshot and details of gpu's runs (and
    the script it runs logs and reads with the same token), uploads output blobs, and
    sees nothing else; a workspace token is no agent token."""
    from ingest.api.app import create_app
    from ingest.api.blobstore import BlobStore
    from ingest.server import HttpServer
    from ingest.settings import Secret

    async with AsyncExitStack() as exits:
        app = create_app(blob_store=BlobStore(root=tmp_path / "blobs"),
                         registry=CollectorRegistry(), token=Secret("admin-token"),
                         workspace_tokens={"default": (Secret("ws-token"),)},
                         agent_tokens={"gpu": (Secret("gpu-agent-token"),)},
                         db_dsn=Secret(pipeline.dsn))
        server = await exits.enter_async_context(HttpServer(app, host="127.0.0.1", port=0))
        sessions = {}
        for who, token in (("ws", "ws-token"), ("agent", "gpu-agent-token")):
            sessions[who] = await exits.enter_async_context(aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {token}"}))
        folder = tmp_path / "src"
        folder.mkdir()
        user = Jobs(server.url, sessions["ws"], pipeline, folder)
        agent = Jobs(server.url, sessions["agent"], pipeline, folder)
        await user.upload()
        run_id = await user.submit("for gpu")

        status, text = await user.call("POST", "/v1/agents", {
            "agent_id": "a1", "target": "gpu", "slots": 1})
        assert status == 403
        assert "agent token" in text
        status, _ = await agent.call("POST", "/v1/agents", {
            "agent_id": "a2", "target": "cpu", "slots": 1})
        assert status == 403
        agent_id = await agent.agent()
        answer = await agent.poll(agent_id)
        assert [r["run_id"] for r in answer["runs"]] == [run_id]
        status, zipped = await agent.call("GET", f"/v1/runs/{run_id}/snapshot")
        assert status == 200
        assert isinstance(zipped, bytes)
        status, _ = await agent.call("GET", f"/v1/runs/{run_id}")
        assert status in (200, 404)  # found once the worker stored its Queued event
        status, _ = await agent.call("GET", f"/v1/submissions/{run_id}")
        assert status == 200
        data = b"outputs of the run"
        digest = hashlib.sha256(data).hexdigest()
        async with sessions["agent"].put(f"{server.url}/v1/blobs/{digest}", data=data,
                                         headers={"X-Runstream-Workspace": "default"}) as r:
            assert r.status in (200, 201)
        status, doc = await agent.call("GET", "/v1/runs")
        assert (status, doc["runs"]) == (200, [])  # lists nothing
        status, _ = await user.call("POST", f"/v1/agents/{agent_id}/poll", {"free": 0})
        assert status == 403  # the user's token is not this agent's
        status, doc = await agent.call("POST", f"/v1/agents/{agent_id}/runs/{run_id}/finish",
                                       {"outcome": "Completed", "exit_code": 0})
        assert (status, doc["state"]) == (200, "finished")
