"""Submitted runs and the agents that run them: ``/v1/submissions``, ``/v1/agents``,
``/v1/runs/{run_id}/snapshot`` and ``/v1/runs/{run_id}/cancel``.

How a submitted run travels (``ingest/db/jobs.py`` keeps the queue)::

    SDK  experiment.submit ─ PUT /v1/blobs/{sha} (the snapshot zip) ─ POST /v1/submissions
         (durable: committed before the answer) ─ then its NotStarted/Queued events
    agent POST /v1/agents ─ POST /v1/agents/{id}/poll (long poll, also the heartbeat) ─
         GET /v1/runs/{id}/snapshot ─ runs the script, reporting statuses as events ─
         POST /v1/agents/{id}/runs/{run_id}/finish

An agent keeps one poll outstanding. It answers at once when the agent has something to
do — runs leased to it (new ones, or ones an earlier answer carried that the agent did not
acknowledge by listing them as running), runs to cancel, runs it lost — and otherwise
waits for a change notice on its compute target (a new submission, a cancel, a requeue:
PostgreSQL NOTIFY, so work arrives by push) for at most ``poll_max_s``, which keeps the
heartbeat well inside the lease. Each poll renews the leases of the runs it lists.

``JobReaper`` runs in the API: every ``reap_interval_s`` it takes leases that expired
(``lease_s`` after their last renewal) and puts each run back in the queue with its next
attempt while ``max_retries`` allows, else ends it Failed ("agent lost"), sending the
status event through the ``StatusEmitter`` before the decision commits. Agents stop a run
they could not renew for two thirds of ``lease_s``, so by then it is no longer running.

Cancel (``POST /v1/runs/{id}/cancel``): a queued run is Canceled at once (the API sends
the event); a running one gets CancelRequested and its agent, told in its next poll
answer (woken by the notice), stops the process group (SIGTERM, grace, SIGKILL) and
reports Canceled. With auth on, agent routes need the admin token or an agent token of
the agent's compute target (``RUNSTREAM_AGENT_TOKENS``; ``auth.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Final

import asyncpg
from aiohttp import web

from ingest.api.auth import forbidden_workspace, grant_of
from ingest.api.blobstore import BlobStore, is_valid_digest
from ingest.api.emitter import StatusEmitter
from ingest.api.http import RouteSpec
from ingest.api.params import UNAVAILABLE, bad_request, json_body, json_ok, not_found, path_param
from ingest.api.routes.runs import RUN_ID_PARAMETER, serve_artifact
from ingest.db.jobs import JobStore, Reaped, SubmissionConflictError
from ingest.db.notices import ChangeListener
from ingest.db.values import iso

__all__ = ["LEASE_S", "POLL_MAX_S", "JobReaper", "JobRoutes", "JobTiming"]

logger = logging.getLogger(__name__)

#: How long a lease lasts after its last renewal.
LEASE_S: Final = 30.0
#: The longest a poll waits before answering (a heartbeat at least this often).
POLL_MAX_S: Final = 10.0
#: An agent not heard from for this long is shown as not alive.
AGENT_ALIVE_S: Final = 2 * LEASE_S
MAX_SPEC_BYTES: Final = 256 * 1024
_NAME: Final = re.compile(r"[^\x00-\x1f\x7f/]{1,255}")
_AGENT_ID: Final = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_OUTCOMES: Final = ("Completed", "Failed", "Canceled")



@dataclass(frozen=True)
class JobTiming:
    """Lease length, longest poll wait, and how often expired leases are looked for."""

    lease_s: float = LEASE_S
    poll_max_s: float = POLL_MAX_S
    reap_interval_s: float = 2.0


_OBJECT: Final = {"type": "object"}
_SUBMISSION_BODY: Final = {
    "type": "object",
    "required": ["run_id", "experiment", "workspace", "target", "spec", "snapshot"],
    "properties": {
        "run_id": {"type": "string"}, "experiment": {"type": "string"},
        "workspace": {"type": "string"}, "target": {"type": "string"},
        "spec": {"type": "object", "description": "ScriptRunConfig.to_submission()."},
        "snapshot": {"type": "object", "required": ["sha256", "size_bytes"], "properties": {
            "sha256": {"type": "string"}, "size_bytes": {"type": "integer", "minimum": 0}}},
        "priority": {"type": "integer", "description": "Higher first (default 0)."},
        "max_retries": {"type": "integer", "minimum": 0, "maximum": 100},
        "display_name": {"type": ["string", "null"]},
    },
}
_AGENT_BODY: Final = {
    "type": "object",
    "required": ["agent_id", "target", "slots"],
    "properties": {
        "agent_id": {"type": "string"}, "target": {"type": "string"},
        "slots": {"type": "integer", "minimum": 1}, "hostname": {"type": "string"},
        "pid": {"type": "integer"},
    },
}
_POLL_BODY: Final = {
    "type": "object",
    "properties": {
        "free": {"type": "integer", "minimum": 0},
        "running": {"type": "array", "items": {"type": "string"}},
        "wait_s": {"type": "number", "minimum": 0},
    },
}
_FINISH_BODY: Final = {
    "type": "object",
    "required": ["outcome"],
    "properties": {
        "outcome": {"type": "string", "enum": list(_OUTCOMES)},
        "exit_code": {"type": ["integer", "null"]},
        "error": {"type": ["string", "null"]},
    },
}
_AGENT_PARAMETER: Final = {
    "name": "agent_id", "in": "path", "required": True, "description": "The agent's id.",
    "schema": {"type": "string", "minLength": 1},
}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True,
                            "content": {"application/json": {"schema": schema}}}}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


class JobRoutes:
    def __init__(self, *, jobs: JobStore, blob_store: BlobStore, listener: ChangeListener,
                 emitter: StatusEmitter | None, timing: JobTiming | None = None) -> None:
        timing = timing or JobTiming()
        self._jobs = jobs
        self._blobs = blob_store
        self._listener = listener
        self._emitter = emitter
        self._lease_s = timing.lease_s
        self._poll_max_s = timing.poll_max_s

    def specs(self) -> list[RouteSpec]:
        run = [RUN_ID_PARAMETER]
        agent = [_AGENT_PARAMETER]
        return [
            RouteSpec(
                method="POST", path="/v1/submissions", handler=self.submit,
                operation_id="submitRun",
                summary="Queue a run on a compute target (durable when answered).",
                responses={**UNAVAILABLE, 201: "Queued.", 200: "The same submission, again.",
                           400: "A bad field.", 403: "Workspace not granted.",
                           409: "Another submission under that run id, or the snapshot's "
                           "bytes are not stored."},
                response_content={201: _json(_OBJECT), 200: _json(_OBJECT)},
                extra=_body(_SUBMISSION_BODY),
            ),
            RouteSpec(
                method="GET", path="/v1/submissions/{run_id}", handler=self.submission,
                operation_id="getSubmission",
                summary="A submitted run's queue entry: state, attempt, lease, spec.",
                responses={**UNAVAILABLE, 200: "The submission.", 404: "Not submitted."},
                response_content={200: _json(_OBJECT)},
                extra={"parameters": run},
            ),
            RouteSpec(
                method="GET", path="/v1/runs/{run_id}/snapshot", handler=self.snapshot,
                operation_id="downloadRunSnapshot",
                summary="The zip of the folder a run was submitted with.",
                responses={**UNAVAILABLE, 200: "The zip.", 404: "Not submitted."},
                response_content={200: {"application/zip": {"schema": {
                    "type": "string", "format": "binary"}}}},
                extra={"parameters": run},
            ),
            RouteSpec(
                method="POST", path="/v1/runs/{run_id}/cancel", handler=self.cancel,
                operation_id="cancelRun",
                summary="Cancel a submitted run: a queued one at once, a running one by "
                "its agent (SIGTERM, grace, SIGKILL).",
                responses={**UNAVAILABLE, 200: "What was done.",
                           404: "No such run.", 409: "The run was not submitted."},
                response_content={200: _json(_OBJECT)},
                extra={"parameters": run},
            ),
            RouteSpec(
                method="POST", path="/v1/agents", handler=self.register,
                operation_id="registerAgent", summary="An agent starts serving a target.",
                responses={**UNAVAILABLE, 201: "Registered.", 400: "A bad field.",
                           403: "Needs the admin token or an agent token of the target."},
                response_content={201: _json(_OBJECT)},
                extra=_body(_AGENT_BODY),
            ),
            RouteSpec(
                method="POST", path="/v1/agents/{agent_id}/poll", handler=self.poll,
                operation_id="pollAgent",
                summary="An agent's heartbeat and long poll: renews its leases, hands it "
                "runs to start, runs to cancel and runs it lost.",
                responses={**UNAVAILABLE, 200: "What to do.", 400: "A bad field.",
                           403: "Needs the admin token or an agent token of the target.",
                           404: "Unknown or stopped agent: register again.",
                           408: "The agent closed the poll before its answer."},
                response_content={200: _json(_OBJECT)},
                extra={"parameters": agent, **_body(_POLL_BODY)},
            ),
            RouteSpec(
                method="POST", path="/v1/agents/{agent_id}/runs/{run_id}/finish",
                handler=self.finish, operation_id="finishAgentRun",
                summary="An agent releases a run it ran to its end.",
                responses={**UNAVAILABLE, 200: "Released.", 400: "A bad field.",
                           403: "Needs the admin token or an agent token of the target.",
                           404: "No such agent or run.",
                           409: "The agent does not hold this run."},
                response_content={200: _json(_OBJECT)},
                extra={"parameters": [*agent, *run], **_body(_FINISH_BODY)},
            ),
            RouteSpec(
                method="DELETE", path="/v1/agents/{agent_id}", handler=self.deregister,
                operation_id="deregisterAgent", summary="An agent stops.",
                responses={**UNAVAILABLE, 204: "Stopped.", 404: "Unknown agent.",
                           403: "Needs the admin token or an agent token of the target."},
                extra={"parameters": agent},
            ),
        ]

    # -- submissions ----------------------------------------------------------------------

    async def submit(self, request: web.Request) -> web.StreamResponse:
        body = await json_body(request)
        run_id = _name(body, "run_id")
        workspace = _name(body, "workspace")
        if not grant_of(request).allows(workspace):
            raise forbidden_workspace(workspace)
        spec = body.get("spec")
        if not isinstance(spec, dict):
            raise bad_request("field 'spec' must be an object (ScriptRunConfig.to_submission())")
        if len(_dumps(spec)) > MAX_SPEC_BYTES:
            raise bad_request(f"field 'spec' is over {MAX_SPEC_BYTES} bytes")
        snapshot = body.get("snapshot")
        if not isinstance(snapshot, dict):
            raise bad_request("field 'snapshot' must be {sha256, size_bytes}")
        sha256 = snapshot.get("sha256")
        if not isinstance(sha256, str) or not is_valid_digest(sha256):
            raise bad_request("field 'snapshot.sha256' must be 64 lowercase hex digits")
        info = await asyncio.to_thread(self._blobs.stat, sha256)
        if info is None:
            raise web.HTTPConflict(text=f"snapshot blob {sha256} is not stored: "
                                   f"PUT /v1/blobs/{sha256} first")
        if snapshot.get("size_bytes") != info.size_bytes:
            raise bad_request(f"field 'snapshot.size_bytes' is {snapshot.get('size_bytes')!r}, "
                              f"but blob {sha256} has {info.size_bytes} bytes")
        try:
            row, created = await self._jobs.submit(
                run_id=run_id, workspace=workspace, experiment=_name(body, "experiment"),
                target=_name(body, "target"), priority=_int(body, "priority", 0, -1000, 1000),
                max_retries=_int(body, "max_retries", 0, 0, 100),
                display_name=_optional_name(body, "display_name"), spec=spec,
                snapshot_sha256=sha256, snapshot_bytes=info.size_bytes,
            )
        except SubmissionConflictError as exc:
            raise web.HTTPConflict(text=str(exc)) from None
        document = {**_submission(row), "position": await self._jobs.position(run_id)}
        return web.json_response(document, status=201 if created else 200, dumps=_dumps)

    async def submission(self, request: web.Request) -> web.StreamResponse:
        row = await self._submitted(request)
        return json_ok({**_submission(row), "position": await self._jobs.position(row["run_id"])})

    async def snapshot(self, request: web.Request) -> web.StreamResponse:
        row = await self._submitted(request)
        response = await serve_artifact(request, self._blobs, name=f"{row['run_id']}.zip",
                                        digest=row["snapshot_sha256"],
                                        content_type="application/zip")
        return response

    async def cancel(self, request: web.Request) -> web.StreamResponse:
        run_id = path_param(request, "run_id", "run")
        lease = await self._jobs.cancel(run_id, self._emit_cancel)
        if lease is None:
            raise web.HTTPConflict(text=f"run {run_id!r} was not submitted to a compute "
                                   "target: a run started with start_logging ends when its "
                                   "own process calls run.cancel()")
        return json_ok({"run_id": run_id, "action": lease.action,
                        "state": lease.submission["state"]})

    async def _emit_cancel(self, row: asyncpg.Record, action: str) -> None:
        if self._emitter is not None:
            await self._emitter.send(workspace=row["workspace"], experiment=row["experiment"],
                                     run_id=row["run_id"], attempt=row["attempt"], action=action)

    async def _submitted(self, request: web.Request) -> asyncpg.Record:
        run_id = path_param(request, "run_id", "run")
        row = await self._jobs.submission(run_id)
        grant = grant_of(request)
        if row is None or not (grant.allows(row["workspace"]) or row["target"] in grant.targets):
            raise not_found(f"run {run_id!r} was not submitted")
        return row

    # -- agents ---------------------------------------------------------------------------

    async def register(self, request: web.Request) -> web.StreamResponse:
        body = await json_body(request)
        agent_id = _agent_id(body.get("agent_id"))
        target = _name(body, "target")
        _serves(request, target)
        await self._jobs.register(
            agent_id=agent_id, target=target,
            slots=_int(body, "slots", None, 1, 10_000),
            hostname=_optional_name(body, "hostname") or "?",
            pid=_int(body, "pid", 0, 0, 2**31 - 1))
        return web.json_response({"agent_id": agent_id, "lease_s": self._lease_s,
                                  "poll_max_s": self._poll_max_s}, status=201)

    async def poll(self, request: web.Request) -> web.StreamResponse:
        agent_id = await self._agent(request)
        body = await json_body(request)
        free = _int(body, "free", 0, 0, 10_000)
        running = body.get("running", [])
        if not isinstance(running, list) or len(running) > 10_000 or not all(
                isinstance(r, str) and _NAME.fullmatch(r) for r in running):
            raise bad_request("field 'running' must be a list of run ids")
        wait_s = body.get("wait_s", self._poll_max_s)
        if isinstance(wait_s, bool) or not isinstance(wait_s, int | float) or wait_s < 0:
            raise bad_request("field 'wait_s' must be a number of seconds >= 0")
        deadline = time.monotonic() + min(float(wait_s), self._poll_max_s)
        target = None
        while True:
            if request.transport is None or request.transport.is_closing():
                # The agent hung up (it polls anew when a slot frees): lease nothing more
                # to a request whose answer nobody reads.
                raise web.HTTPRequestTimeout(text="the agent closed the poll")
            answer = await self._jobs.poll(agent_id=agent_id, free=free, running=running,
                                           lease_s=self._lease_s)
            if answer is None:
                raise not_found(f"no agent {agent_id!r}: register with POST /v1/agents")
            left = deadline - time.monotonic()
            if answer.anything or left <= 0:
                break
            if target is None:
                target = await self._jobs.agent_target(agent_id) or ""
            with self._listener.subscribe(runs=running, targets=[target]) as sub:
                # Poll again when woken, or when notices cannot arrive (disconnected).
                await sub.wait(left if self._listener.connected else min(left, 1.0))
        return json_ok({
            "runs": [_lease(r) for r in answer.runs],
            "cancel": list(answer.cancel),
            "lost": list(answer.lost),
            "lease_s": self._lease_s,
        })

    async def finish(self, request: web.Request) -> web.StreamResponse:
        agent_id = await self._agent(request)
        run_id = path_param(request, "run_id", "run")
        body = await json_body(request)
        outcome = body.get("outcome")
        if outcome not in _OUTCOMES:
            raise bad_request(f"field 'outcome' must be one of {', '.join(_OUTCOMES)}")
        exit_code = body.get("exit_code")
        if exit_code is not None and (isinstance(exit_code, bool) or not isinstance(
                exit_code, int) or not -(2**31) <= exit_code < 2**31):
            raise bad_request("field 'exit_code' must be an integer or null")
        error = body.get("error")
        if error is not None and (not isinstance(error, str) or "\x00" in error):
            raise bad_request("field 'error' must be text or null")
        state = await self._jobs.finish(agent_id=agent_id, run_id=run_id, outcome=outcome,
                                        exit_code=exit_code, error=error and error[-65536:])
        if state is None:
            raise web.HTTPConflict(text=f"agent {agent_id!r} does not hold run {run_id!r}")
        return json_ok({"run_id": run_id, "state": state})

    async def deregister(self, request: web.Request) -> web.StreamResponse:
        agent_id = await self._agent(request)
        if not await self._jobs.deregister(agent_id):
            raise not_found(f"no agent {agent_id!r}")
        return web.Response(status=204)

    async def _agent(self, request: web.Request) -> str:
        """The path's agent id, once the token is known to serve its target."""
        agent_id = _path_agent_id(request)
        if not grant_of(request).admin:
            target = await self._jobs.agent_target(agent_id)
            if target is None:
                raise not_found(f"no agent {agent_id!r}: register with POST /v1/agents")
            _serves(request, target)
        return agent_id


class JobReaper:
    """Expires leases in the background (see the module docstring)."""

    def __init__(self, *, jobs: JobStore, emitter: StatusEmitter | None,
                 interval_s: float = 2.0) -> None:
        self._jobs = jobs
        self._emitter = emitter
        self._interval_s = interval_s

    async def _emit(self, reaped: Reaped) -> None:
        if self._emitter is None:
            return
        action = "requeued" if reaped.requeued else (
            "canceled" if reaped.outcome == "Canceled" else "failed")
        await self._emitter.send(workspace=reaped.workspace, experiment=reaped.experiment,
                                 run_id=reaped.run_id, attempt=reaped.attempt, action=action,
                                 error=reaped.error)

    async def run(self) -> None:
        while True:
            try:
                for reaped in await self._jobs.reap(self._emit):
                    logger.warning("run %s: lease expired; %s", reaped.run_id,
                                   f"queued again (attempt {reaped.attempt + 1})"
                                   if reaped.requeued else f"ended {reaped.outcome}")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                logger.warning("lease reaper: %s", exc)
            await asyncio.sleep(self._interval_s)

    def lifetime(self) -> Callable[[web.Application], AsyncIterator[None]]:
        async def context(app: web.Application) -> AsyncIterator[None]:
            task = asyncio.create_task(self.run(), name="lease-reaper")
            yield
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return context


# --- documents and parsing ----------------------------------------------------------------


def _submission(row: asyncpg.Record) -> dict[str, Any]:
    spec = row["spec"]
    return {
        "run_id": row["run_id"], "workspace": row["workspace"],
        "experiment": row["experiment"], "target": row["target"], "state": row["state"],
        "priority": row["priority"], "max_retries": row["max_retries"],
        "attempt": row["attempt"], "display_name": row["display_name"],
        "submitted_at": iso(row["submitted_at"]), "agent_id": row["agent_id"],
        "leased_at": iso(row["leased_at"]), "lease_expires_at": iso(row["lease_expires_at"]),
        "cancel_requested": row["cancel_requested"], "outcome": row["outcome"],
        "exit_code": row["exit_code"], "error": row["error"], "ended_at": iso(row["ended_at"]),
        "spec": _loads(spec),
        "snapshot": {"sha256": row["snapshot_sha256"], "size_bytes": row["snapshot_bytes"]},
    }


def _lease(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "run_id": row["run_id"], "experiment": row["experiment"],
        "workspace": row["workspace"], "target": row["target"], "attempt": row["attempt"],
        "spec": _loads(row["spec"]), "display_name": row["display_name"],
        "snapshot": {"sha256": row["snapshot_sha256"], "size_bytes": row["snapshot_bytes"]},
        "lease_expires_at": iso(row["lease_expires_at"]),
    }


def _serves(request: web.Request, target: str) -> None:
    grant = grant_of(request)
    if not grant.admin and target not in grant.targets:
        raise web.HTTPForbidden(text=f"this token is not an agent token of compute target "
                                f"{target[:80]!r} (RUNSTREAM_AGENT_TOKENS) nor the admin token")


def _name(body: dict[str, Any], field: str) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise bad_request(f"field {field!r} must be a name of 1-255 characters (no '/' or "
                          "control characters)")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise bad_request(f"field {field!r} is not valid Unicode") from None
    return value


def _optional_name(body: dict[str, Any], field: str) -> str | None:
    return None if body.get(field) is None else _name(body, field)


def _int(body: dict[str, Any], field: str, default: int | None, low: int, high: int) -> int:
    value = body.get(field, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise bad_request(f"field {field!r} must be an integer in {low}..{high}")
    return value


def _agent_id(value: object) -> str:
    if not isinstance(value, str) or not _AGENT_ID.fullmatch(value):
        raise bad_request("agent_id must be 1-128 letters, digits, '_', '.' or '-'")
    return value


def _path_agent_id(request: web.Request) -> str:
    value = request.match_info["agent_id"]
    if not _AGENT_ID.fullmatch(value):
        raise not_found(f"no agent {value[:80]!r}")
    return value


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _loads(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value
