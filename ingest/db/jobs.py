"""The queue of submitted runs and the agents that lease them (migration 0010).

``experiment.submit`` commits a row to ``runstream_data.submissions`` (state ``queued``)
before it returns, so a submission is durable. Agents serving a compute target take the
target's queued runs in order — priority first, then submission order — under a lease
(``FOR UPDATE SKIP LOCKED``: two agents never get the same run), renew it with every poll
while the run lives, and release it when the run ends. A lease not renewed for
``lease_s`` expires; ``reap`` (the API's background task) then puts the run back in the
queue with ``attempt + 1`` while retries remain (``max_retries``), else finishes it as
Failed — and the agent, which stops its process once it could not renew for two thirds
of ``lease_s``, has stopped it by then, so a run never executes twice at the same time.

Run statuses are not kept here: they travel as events like any run's (the SDK, the agent
and the API's ``StatusEmitter`` send them). This table only decides who runs what.
Every state change that an agent waits for (a new submission, a cancel, a requeue) is
announced with a change notice on the run's compute target (``db/notices.py``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import asyncpg

from ingest.db.notices import CHANNEL, change_payloads
from ingest.db.pool import Pool

__all__ = [
    "JobStore",
    "Lease",
    "PollAnswer",
    "Reaped",
    "SubmissionConflictError",
]

#: Columns of a submission document (``GET /v1/submissions/{run_id}``).
SUBMISSION_COLUMNS: Final = (
    "run_id, workspace, experiment, target, priority, max_retries, attempt, display_name, "
    "spec, snapshot_sha256, snapshot_bytes, submitted_at, queue_seq, state, agent_id, "
    "leased_at, lease_expires_at, cancel_requested, outcome, exit_code, error, ended_at"
)

SQL_INSERT: Final = f"""
INSERT INTO runstream_data.submissions (
    run_id, workspace, experiment, target, priority, max_retries, display_name, spec,
    snapshot_sha256, snapshot_bytes)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10)
ON CONFLICT (run_id) DO NOTHING
RETURNING {SUBMISSION_COLUMNS}
"""  # noqa: S608 - built from constants only
SQL_GET: Final = f"""
SELECT {SUBMISSION_COLUMNS} FROM runstream_data.submissions WHERE run_id = $1
"""  # noqa: S608
SQL_POSITION: Final = """
SELECT count(*) FROM runstream_data.submissions q, runstream_data.submissions s
WHERE s.run_id = $1 AND q.target = s.target AND q.state = 'queued'
  AND (q.priority > s.priority OR (q.priority = s.priority AND q.queue_seq <= s.queue_seq))
"""
SQL_AGENT_UPSERT: Final = """
INSERT INTO runstream_data.agents (agent_id, target, slots, hostname, pid)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (agent_id) DO UPDATE SET
    target = excluded.target, slots = excluded.slots, hostname = excluded.hostname,
    pid = excluded.pid, last_heartbeat_at = now(), stopped_at = NULL
"""
#: A stopped agent (DELETE) stays stopped: its polls are answered 404 (register again).
SQL_AGENT_BEAT: Final = """
UPDATE runstream_data.agents SET last_heartbeat_at = now()
WHERE agent_id = $1 AND stopped_at IS NULL RETURNING target
"""
SQL_AGENT_STOP: Final = """
UPDATE runstream_data.agents SET stopped_at = now() WHERE agent_id = $1 RETURNING target
"""
SQL_RENEW: Final = """
UPDATE runstream_data.submissions SET lease_expires_at = now() + $3 * interval '1 second'
WHERE run_id = ANY($2::text[]) AND agent_id = $1 AND state = 'leased'
RETURNING run_id, cancel_requested
"""
SQL_HELD: Final = f"""
SELECT {SUBMISSION_COLUMNS} FROM runstream_data.submissions
WHERE agent_id = $1 AND state = 'leased' AND NOT run_id = ANY($2::text[])
ORDER BY priority DESC, queue_seq
"""  # noqa: S608
SQL_LEASE: Final = f"""
WITH next AS (
    SELECT run_id FROM runstream_data.submissions
    WHERE target = $2 AND state = 'queued'
    ORDER BY priority DESC, queue_seq
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
UPDATE runstream_data.submissions s
SET state = 'leased', agent_id = $1, leased_at = now(),
    lease_expires_at = now() + $4 * interval '1 second'
FROM next WHERE s.run_id = next.run_id
RETURNING {", ".join("s." + c.strip() for c in SUBMISSION_COLUMNS.split(","))}
"""  # noqa: S608
SQL_FINISH: Final = """
UPDATE runstream_data.submissions
SET state = 'finished', outcome = $3, exit_code = $4, error = $5, ended_at = now(),
    lease_expires_at = NULL
WHERE run_id = $2 AND agent_id = $1 AND state IN ('leased', 'finished')
RETURNING state
"""
SQL_CANCEL: Final = f"""
SELECT {SUBMISSION_COLUMNS} FROM runstream_data.submissions WHERE run_id = $1 FOR UPDATE
"""  # noqa: S608
SQL_CANCEL_QUEUED: Final = """
UPDATE runstream_data.submissions
SET state = 'canceled', outcome = 'Canceled', cancel_requested = true, ended_at = now()
WHERE run_id = $1
"""
SQL_CANCEL_LEASED: Final = """
UPDATE runstream_data.submissions SET cancel_requested = true WHERE run_id = $1
"""
SQL_EXPIRED: Final = f"""
SELECT {SUBMISSION_COLUMNS},
       (SELECT a.hostname FROM runstream_data.agents a WHERE a.agent_id = s.agent_id) AS host
FROM runstream_data.submissions s
WHERE state = 'leased' AND lease_expires_at < now()
ORDER BY lease_expires_at
LIMIT $1
FOR UPDATE OF s SKIP LOCKED
"""  # noqa: S608
SQL_REQUEUE: Final = """
UPDATE runstream_data.submissions
SET state = 'queued', attempt = attempt + 1, agent_id = NULL, leased_at = NULL,
    lease_expires_at = NULL
WHERE run_id = $1
"""
SQL_LOST: Final = """
UPDATE runstream_data.submissions
SET state = 'finished', outcome = $2, error = $3, ended_at = now(), lease_expires_at = NULL
WHERE run_id = $1
"""
SQL_QUEUE: Final = """
SELECT run_id, workspace, experiment, priority, submitted_at, attempt,
       extract(epoch FROM now() - submitted_at)::float8 AS age_s
FROM runstream_data.submissions
WHERE target = $1 AND state = 'queued'
  AND ($2::text[] IS NULL OR workspace = ANY($2::text[]))
ORDER BY priority DESC, queue_seq
LIMIT $3
"""
SQL_LEASED: Final = """
SELECT run_id, workspace, experiment, agent_id, attempt, leased_at, lease_expires_at,
       cancel_requested
FROM runstream_data.submissions
WHERE target = $1 AND state = 'leased'
  AND ($2::text[] IS NULL OR workspace = ANY($2::text[]))
ORDER BY leased_at, run_id
"""
SQL_AGENTS: Final = """
SELECT a.agent_id, a.hostname, a.pid, a.slots, a.started_at, a.last_heartbeat_at,
       a.stopped_at IS NULL AND a.last_heartbeat_at > now() - $2 * interval '1 second' AS alive,
       (SELECT count(*) FROM runstream_data.submissions s
        WHERE s.agent_id = a.agent_id AND s.state = 'leased') AS busy
FROM runstream_data.agents a
WHERE a.target = $1
  AND (a.stopped_at IS NULL OR a.stopped_at > now() - interval '1 hour')
  AND a.last_heartbeat_at > now() - interval '1 hour'
ORDER BY a.started_at, a.agent_id
"""
SQL_TARGETS: Final = """
SELECT DISTINCT target FROM runstream_data.submissions WHERE state IN ('queued', 'leased')
UNION SELECT DISTINCT target FROM runstream_data.agents
WHERE stopped_at IS NULL AND last_heartbeat_at > now() - interval '1 hour'
"""
SQL_AGENT_COUNTS: Final = """
SELECT a.target, count(*) AS alive, sum(a.slots)::bigint AS slots,
       (SELECT count(*) FROM runstream_data.submissions s
        WHERE s.target = a.target AND s.state = 'leased') AS busy
FROM runstream_data.agents a
WHERE a.stopped_at IS NULL AND a.last_heartbeat_at > now() - $1 * interval '1 second'
GROUP BY a.target
ORDER BY a.target
"""
SQL_NOTIFY: Final = "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p"


class SubmissionConflictError(ValueError):
    """The run id was already submitted with other content."""


@dataclass(frozen=True, slots=True)
class PollAnswer:
    """What an agent's poll gets: runs to start (newly leased, or leased before and not
    yet acknowledged), runs to cancel and runs it no longer holds."""

    runs: tuple[asyncpg.Record, ...]
    cancel: tuple[str, ...]
    lost: tuple[str, ...]

    @property
    def anything(self) -> bool:
        return bool(self.runs or self.cancel or self.lost)


@dataclass(frozen=True, slots=True)
class Lease:
    """The outcome of a cancel request."""

    action: str  # canceled | cancel_requested | none
    submission: asyncpg.Record


@dataclass(frozen=True, slots=True)
class Reaped:
    """A run whose lease expired: ``requeued`` (attempt is the new one) or failed."""

    run_id: str
    workspace: str
    experiment: str
    target: str
    attempt: int
    requeued: bool
    outcome: str | None
    error: str | None


class JobStore(Pool):
    """The submission queue and agent registry (see the module docstring)."""

    async def submit(
        self, *, run_id: str, workspace: str, experiment: str, target: str, priority: int,
        max_retries: int, display_name: str | None, spec: dict[str, Any],
        snapshot_sha256: str, snapshot_bytes: int,
    ) -> tuple[asyncpg.Record, bool]:
        """Store a submission (durable at return); ``(row, created)``. Submitting the same
        content again returns the stored row; other content under that id raises
        ``SubmissionConflictError``."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                SQL_INSERT, run_id, workspace, experiment, target, priority, max_retries,
                display_name, json.dumps(spec), snapshot_sha256, snapshot_bytes)
            if row is not None:
                await _notify(conn, [run_id], [target])
                return row, True
            stored = await conn.fetchrow(SQL_GET, run_id)
        if stored is None:  # pragma: no cover - a row with that key existed a moment ago
            raise SubmissionConflictError(f"run {run_id!r} vanished while being submitted")
        same = (stored["workspace"], stored["experiment"], stored["target"], stored["priority"],
                stored["max_retries"], stored["snapshot_sha256"]) == (
            workspace, experiment, target, priority, max_retries, snapshot_sha256)
        if not same or _json(stored["spec"]) != json.loads(json.dumps(spec)):
            raise SubmissionConflictError(
                f"run {run_id!r} was already submitted with other content; submit under a "
                "new run id")
        return stored, False

    async def submission(self, run_id: str) -> asyncpg.Record | None:
        return await self.pool.fetchrow(SQL_GET, run_id)

    async def position(self, run_id: str) -> int:
        """1 for the next run its target's agents take (0 when not queued)."""
        return int(await self.pool.fetchval(SQL_POSITION, run_id) or 0)

    async def register(self, *, agent_id: str, target: str, slots: int, hostname: str,
                       pid: int) -> None:
        await self.pool.execute(SQL_AGENT_UPSERT, agent_id, target, slots, hostname, pid)

    async def run_target(self, run_id: str) -> str | None:
        """The compute target ``run_id`` was submitted to (None: not submitted)."""
        value = await self.pool.fetchval(
            "SELECT target FROM runstream_data.submissions WHERE run_id = $1", run_id)
        return None if value is None else str(value)

    async def agent_target(self, agent_id: str) -> str | None:
        value = await self.pool.fetchval(
            "SELECT target FROM runstream_data.agents WHERE agent_id = $1", agent_id)
        return None if value is None else str(value)

    async def deregister(self, agent_id: str) -> bool:
        return await self.pool.fetchval(SQL_AGENT_STOP, agent_id) is not None

    async def poll(self, *, agent_id: str, free: int, running: Sequence[str],
                   lease_s: float) -> PollAnswer | None:
        """One poll of an agent (its heartbeat): renew its leases of ``running``, tell it
        which of those to cancel and which it lost, hand it runs to start — leased before
        and not acknowledged yet first, then up to ``free`` more from the queue. None for
        an unknown or stopped agent."""
        running = sorted(set(running))
        async with self.pool.acquire() as conn, conn.transaction():
            target = await conn.fetchval(SQL_AGENT_BEAT, agent_id)
            if target is None:
                return None
            renewed = await conn.fetch(SQL_RENEW, agent_id, running, lease_s)
            held = {r["run_id"] for r in renewed}
            cancel = tuple(sorted(r["run_id"] for r in renewed if r["cancel_requested"]))
            lost = tuple(r for r in running if r not in held)
            unacknowledged = list(await conn.fetch(SQL_HELD, agent_id, running))
            more = max(0, free - len(unacknowledged))
            fresh = list(await conn.fetch(SQL_LEASE, agent_id, target, more, lease_s)) \
                if more else []
            fresh.sort(key=lambda r: (-r["priority"], r["queue_seq"]))
        return PollAnswer(runs=tuple(unacknowledged + fresh), cancel=cancel, lost=lost)

    async def finish(self, *, agent_id: str, run_id: str, outcome: str, exit_code: int | None,
                     error: str | None) -> str | None:
        """Release a run the agent ran to its end; None if the agent does not hold it."""
        async with self.pool.acquire() as conn, conn.transaction():
            state = await conn.fetchval(SQL_FINISH, agent_id, run_id, outcome, exit_code, error)
            if state is not None:
                row = await conn.fetchrow(SQL_GET, run_id)
                await _notify(conn, [run_id], [row["target"]] if row else [])
        return None if state is None else str(state)

    async def cancel(self, run_id: str, emit: Any) -> Lease | None:
        """Cancel a submitted run: a queued one is Canceled at once, a leased one is marked
        for its agent (which stops it and reports Canceled). ``emit(row, action)`` sends the
        status event before the change commits (a crash in between repeats it harmlessly).
        None if the run was not submitted."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(SQL_CANCEL, run_id)
            if row is None:
                return None
            if row["state"] == "queued":
                await emit(row, "canceled")
                await conn.execute(SQL_CANCEL_QUEUED, run_id)
                action = "canceled"
            elif row["state"] == "leased" and not row["cancel_requested"]:
                await emit(row, "cancel_requested")
                await conn.execute(SQL_CANCEL_LEASED, run_id)
                action = "cancel_requested"
            elif row["state"] == "leased":
                action = "cancel_requested"
            else:
                action = "none"
            if action != "none":
                await _notify(conn, [run_id], [row["target"]])
            stored = await conn.fetchrow(SQL_GET, run_id)
        return Lease(action, row if stored is None else stored)

    async def reap(self, emit: Any, *, limit: int = 100) -> list[Reaped]:
        """Handle leases that expired: requeue (attempt + 1) while retries remain, else
        finish as Failed ("agent lost") — or Canceled when a cancel was asked for.
        ``emit(reaped)`` sends the status event inside the transaction, before commit."""
        out: list[Reaped] = []
        async with self.pool.acquire() as conn, conn.transaction():
            for row in await conn.fetch(SQL_EXPIRED, limit):
                retry = row["attempt"] < row["max_retries"] and not row["cancel_requested"]
                if retry:
                    reaped = Reaped(row["run_id"], row["workspace"], row["experiment"],
                                    row["target"], row["attempt"] + 1, True, None, None)
                elif row["cancel_requested"]:
                    reaped = Reaped(row["run_id"], row["workspace"], row["experiment"],
                                    row["target"], row["attempt"], False, "Canceled", None)
                else:
                    error = (f"agent lost: agent {row['agent_id']} on {row['host'] or '?'} "
                             f"stopped renewing its lease; it expired at "
                             f"{_iso(row['lease_expires_at'])} (attempt {row['attempt'] + 1} "
                             f"of {row['max_retries'] + 1})")
                    reaped = Reaped(row["run_id"], row["workspace"], row["experiment"],
                                    row["target"], row["attempt"], False, "Failed", error)
                await emit(reaped)
                if retry:
                    await conn.execute(SQL_REQUEUE, row["run_id"])
                else:
                    await conn.execute(SQL_LOST, row["run_id"], reaped.outcome, reaped.error)
                out.append(reaped)
            if out:
                await _notify(conn, [r.run_id for r in out], sorted({r.target for r in out}))
        return out

    async def queue(self, target: str, workspaces: Sequence[str] | None,
                    limit: int = 1000) -> list[asyncpg.Record]:
        return list(await self.pool.fetch(SQL_QUEUE, target, workspaces, limit))

    async def leased(self, target: str, workspaces: Sequence[str] | None) -> list[asyncpg.Record]:
        return list(await self.pool.fetch(SQL_LEASED, target, workspaces))

    async def agents(self, target: str, alive_s: float) -> list[asyncpg.Record]:
        return list(await self.pool.fetch(SQL_AGENTS, target, alive_s))

    async def agent_counts(self, alive_s: float) -> dict[str, dict[str, int]]:
        """Per target with live agents: ``{"alive", "slots", "busy"}`` (busy = runs leased)."""
        return {r["target"]: {"alive": int(r["alive"]), "slots": int(r["slots"]),
                              "busy": int(r["busy"])}
                for r in await self.pool.fetch(SQL_AGENT_COUNTS, alive_s)}

    async def targets(self) -> list[str]:
        """Targets with queued or leased runs or a live agent."""
        return [r["target"] for r in await self.pool.fetch(SQL_TARGETS)]


async def _notify(conn: Any, runs: Sequence[str], targets: Sequence[str]) -> None:
    await conn.execute(SQL_NOTIFY, CHANNEL, change_payloads(runs, targets))


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _iso(value: datetime | None) -> str:
    return value.isoformat() if value is not None else "?"
