"""The agent process: registration, the one long-poll, its runs, the lease rule, stopping.

``Agent.serve()`` registers (``POST /v1/agents``, retried until the API answers), then
keeps exactly one ``POST /v1/agents/{id}/poll`` outstanding. That request is the
heartbeat (it renews the leases of the runs it lists), brings new runs (up to the free
slots; the server picks them in order) and cancels; the server answers at once when it
has something, else after at most ``poll_wait_s``. When a slot frees, the outstanding
poll is cancelled and a new one sent at once, so the next queued run starts without
waiting (a poll answer lost that way is delivered again by the next: runs leased to the
agent but not in ``running`` are repeated).

A run stays in ``running`` until ``finish`` has been accepted, so its lease is renewed
while its last events are flushed. Runs the agent ended or lost are remembered by
(run id, attempt) and not started again when a poll repeats them.

Lease rule (``lease.py``): a task watches the send time of the last successful poll and
SIGKILLs every held run, reporting nothing, once 2/3 of ``lease_s`` passed without one.
A poll answered 404 (the API forgot the agent) loses every run too, then registers again.

Stopping (SIGTERM or SIGINT; ``request_stop``): the first signal stops taking work (polls
say ``free: 0`` but go on: they renew the leases) and waits for the running runs; a second
cancels them (SIGTERM, grace, SIGKILL, Canceled); a third kills them at once and reports
nothing. Then ``DELETE /v1/agents/{id}``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import re
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.agent.client import AgentApi, AgentApiError
from ingest.agent.envs import EnvironmentCache
from ingest.agent.lease import LeaseGuard
from ingest.agent.procs import Watchdog
from ingest.agent.runner import Lease, Outcome, Reporter, RunJob, RunReport
from producer import Experiment, Run, Workspace

__all__ = ["Agent", "AgentConfig", "SdkReporter", "default_work_dir", "run_agent"]

logger = logging.getLogger("ingest.agent")

DEFAULT_LEASE_S = 30.0
#: A poll answered this fast with nothing new is followed by the next one no sooner.
MIN_POLL_INTERVAL_S = 0.25
#: Runs ended or lost that a repeated delivery must not start again.
REMEMBERED_RUNS = 10_000


def default_work_dir(home: Path, target: str) -> Path:
    """``<RUNSTREAM_HOME>/agent/<target>`` (the target made safe as one path component)."""
    return home / "agent" / (re.sub(r"[^A-Za-z0-9._-]", "_", target).lstrip(".") or "_")


@dataclass(frozen=True)
class AgentConfig:
    target: str
    slots: int
    work_dir: Path
    #: Seconds between SIGTERM and SIGKILL when a run is stopped.
    grace_s: float = 10.0
    #: The environment every run's processes start from (the agent's own).
    base_env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    #: ``RUNSTREAM_API``, ``_TOKEN``, ``_KAFKA``, ``_TOPIC`` and the Kafka security
    #: variables the runs' SDK logs with (they win over the spec's variables).
    run_variables: Mapping[str, str] = field(default_factory=dict)
    hostname: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)

    def __post_init__(self) -> None:
        if self.slots < 1:
            raise ValueError(f"slots must be at least 1, not {self.slots}")
        if self.grace_s < 0:
            raise ValueError(f"grace_s must not be negative, not {self.grace_s}")


class SdkReporter:
    """Runs are opened with the SDK's ``Run.open``, through one ``Workspace`` per
    workspace name (``make_workspace``); ``close`` closes them all."""

    def __init__(self, make_workspace: Callable[[str], Workspace]) -> None:
        self._make = make_workspace
        self._workspaces: dict[str, Workspace] = {}
        self._lock = threading.Lock()

    def _workspace(self, name: str) -> Workspace:
        with self._lock:
            ws = self._workspaces.get(name)
            if ws is None:
                ws = self._workspaces[name] = self._make(name)
            return ws

    def open(self, lease: Lease, outputs_dir: Path) -> RunReport:
        experiment = Experiment(self._workspace(lease.workspace), lease.experiment)
        run: RunReport = Run.open(
            experiment,
            lease.run_id,
            status="Preparing",
            display_name=lease.display_name or None,
            compute_target=lease.target or None,
            attempt=lease.attempt,
            outputs_dir=outputs_dir,
        )
        return run

    def close(self) -> None:
        with self._lock:
            workspaces, self._workspaces = list(self._workspaces.values()), {}
        for ws in workspaces:
            try:
                ws.close()
            except Exception:
                logger.exception("closing workspace %s", ws.name)


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        *,
        api: AgentApi,
        reporter: Reporter,
        watchdog: Watchdog | None = None,
        envs: EnvironmentCache | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.api = api
        self.reporter = reporter
        self.watchdog = watchdog
        self.envs = envs or EnvironmentCache(
            config.work_dir / "envs", watchdog=watchdog, base_env=config.base_env
        )
        self.clock = clock
        self.agent_id = uuid.uuid4().hex
        self.guard = LeaseGuard(DEFAULT_LEASE_S, clock=clock)
        self.poll_max_s = DEFAULT_LEASE_S / 3
        self.jobs: dict[str, RunJob] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._ended: collections.OrderedDict[tuple[str, int], None] = collections.OrderedDict()
        self._wake = asyncio.Event()
        self._stop_level = 0
        self.registered = asyncio.Event()
        #: Counters an operator (and the tests) can read.
        self.stats: collections.Counter[str] = collections.Counter()

    # ---- stopping -----------------------------------------------------------------------

    @property
    def draining(self) -> bool:
        return self._stop_level > 0

    def request_stop(self) -> None:
        """A stop signal (see the module docstring: drain, then cancel, then kill)."""
        self._stop_level += 1
        held = [j for j in self.jobs.values() if not j.lost]
        if self._stop_level == 1:
            logger.info("stopping: no new runs; waiting for %d running run(s) to end (signal "
                        "again to cancel them)", len(held))
        elif self._stop_level == 2:
            logger.info("stopping: canceling %d run(s) (signal again to kill them at once)",
                        len(held))
            for job in held:
                job.request_stop("shutdown")
        else:
            logger.warning("stopping: killing %d run(s) at once, reporting nothing", len(held))
            for job in held:
                job.lose()
        self._wake.set()

    # ---- the main loop ------------------------------------------------------------------

    async def serve(self) -> None:
        """Register, run the poll loop until stopped and drained, unregister."""
        self.config.work_dir.mkdir(parents=True, exist_ok=True)
        await self._register()
        guard = asyncio.create_task(self._guard_loop())
        try:
            await self._poll_loop()
        finally:
            guard.cancel()
            for job in self.jobs.values():
                job.lose()
            if self._tasks:
                await asyncio.wait(self._tasks, timeout=10)
        if self.registered.is_set():
            try:
                await self.api.delete(self.agent_id)
                logger.info("agent %s unregistered", self.agent_id)
            except AgentApiError as exc:
                logger.warning("could not unregister: %s", exc)

    async def _register(self) -> None:
        delay, told = 0.5, 0.0
        config = self.config
        while True:
            if self.draining and not self.jobs:
                return
            try:
                answer = await self.api.register(
                    agent_id=self.agent_id, target=config.target, slots=config.slots,
                    hostname=config.hostname, pid=config.pid,
                )
                break
            except AgentApiError as exc:
                if exc.status == 409:  # the id is taken (a restarted agent's): a new one
                    self.agent_id = uuid.uuid4().hex
                    continue
                if exc.status is not None and 400 <= exc.status < 500 and exc.status != 429:
                    raise
                if self.clock() - told > 30:
                    logger.warning("cannot register with %s: %s; retrying", self.api.api_url, exc)
                    told = self.clock()
                await self._sleep(delay)
                delay = min(delay * 2, 5.0)
        self.guard.set_lease(float(answer.get("lease_s") or DEFAULT_LEASE_S))
        self.poll_max_s = float(answer.get("poll_max_s") or self.guard.lease_s / 3)
        self.guard.reset()
        self.registered.set()
        logger.info("agent %s registered for target %r with %d slot(s) at %s (lease %gs)",
                    self.agent_id, config.target, config.slots, self.api.api_url,
                    self.guard.lease_s)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, cut short by a wake-up (a slot freed, a stop signal)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)

    def _held(self) -> list[str]:
        return [run_id for run_id, job in self.jobs.items() if not job.lost]

    async def _poll_loop(self) -> None:
        delay = 0.5
        while True:
            if self.draining and not self.jobs:
                return
            self._wake.clear()
            free = 0 if self.draining else max(0, self.config.slots - len(self.jobs))
            wait_s = min(self.poll_max_s, self.guard.poll_wait_s)
            sent = self.clock()
            poll = asyncio.create_task(self.api.poll(
                self.agent_id, free=free, running=self._held(), wait_s=wait_s
            ))
            await self._until_answered(poll)
            if poll.cancelled():
                continue
            try:
                answer = poll.result()
            except AgentApiError as exc:
                self.stats["poll_errors"] += 1
                if exc.status == 404:
                    logger.warning("the API does not know agent %s any more: its runs are "
                                   "lost; registering again", self.agent_id)
                    self._lose_all()
                    self.registered.clear()
                    await self._register()
                    continue
                logger.warning("poll failed: %s; retrying in %gs", exc, delay)
                await self._sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.5
            self.stats["polls"] += 1
            self.guard.renewed(sent)
            with contextlib.suppress(TypeError, ValueError):
                self.guard.set_lease(float(answer.get("lease_s") or self.guard.lease_s))
            news = self._handle(answer)
            elapsed = self.clock() - sent
            if not news and elapsed < MIN_POLL_INTERVAL_S:
                await self._sleep(MIN_POLL_INTERVAL_S - elapsed)

    async def _until_answered(self, poll: asyncio.Task[dict[str, Any]]) -> None:
        """Wait for the poll; a wake-up cancels it (for a poll that says what changed)
        unless runs are held and the last success is old: then the lease rule needs this
        poll's answer (a cancelled poll proves nothing)."""
        woken = asyncio.create_task(self._wake.wait())
        try:
            done, _ = await asyncio.wait({poll, woken}, return_when=asyncio.FIRST_COMPLETED)
            if poll in done:
                return
            if not self._held() or self.guard.may_cancel_poll():
                poll.cancel()
                with contextlib.suppress(asyncio.CancelledError, AgentApiError):
                    await poll
                return
            await asyncio.wait({poll})
        finally:
            woken.cancel()

    def _handle(self, answer: Mapping[str, Any]) -> bool:
        """Act on a poll answer; whether it brought anything new."""
        news = False
        for run_id in answer.get("lost") or []:
            job = self.jobs.get(run_id)
            if job is not None and job.phase == "finishing":
                # Its processes are done; a poll that crossed its finish says "lost" (or
                # the lease did expire: finish then says so). Nothing to kill.
                continue
            if job is not None and not job.lost:
                logger.warning("run %s: the lease is lost (expired or canceled while it was "
                               "queued): killing it, reporting nothing", run_id)
                job.lose()
                self.stats["lost"] += 1
                news = True
        for run_id in answer.get("cancel") or []:
            job = self.jobs.get(run_id)
            if job is not None and job.stop_reason is None:
                logger.info("run %s: cancel requested", run_id)
                job.request_stop("cancel")
                news = True
        for item in answer.get("runs") or []:
            try:
                lease = Lease.from_answer(item)
            except (KeyError, TypeError, ValueError) as exc:
                logger.error("a poll answer's run is malformed (%s): %r", exc, item)
                continue
            if lease.key in self._ended:
                continue
            current = self.jobs.get(lease.run_id)
            if current is not None:
                if current.lease.attempt < lease.attempt and not current.lost:
                    logger.warning("run %s: attempt %d delivered while attempt %d runs here: "
                                   "killing the old one", lease.run_id, lease.attempt,
                                   current.lease.attempt)
                    current.lose()
                continue
            self._start(lease)
            news = True
        return news

    def _start(self, lease: Lease) -> None:
        if len(self.jobs) >= self.config.slots:
            logger.warning("run %s delivered with no free slot; running it anyway (it is "
                           "leased to this agent)", lease.run_id)
        config = self.config
        job = RunJob(
            lease,
            work_dir=config.work_dir,
            snapshots=self.api,
            reporter=self.reporter,
            envs=self.envs,
            base_env=config.base_env,
            run_variables=config.run_variables,
            grace_s=config.grace_s,
            watchdog=self.watchdog,
        )
        self.jobs[lease.run_id] = job
        self.stats["started"] += 1
        logger.info("run %s (experiment %s, attempt %d): Preparing", lease.run_id,
                    lease.experiment, lease.attempt)
        task = asyncio.create_task(self._run_job(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_job(self, job: RunJob) -> None:
        try:
            outcome = await job.run()
            if outcome is not None and not job.lost:
                logger.info("run %s: %s%s after %.1fs", job.run_id, outcome.status,
                            f" ({outcome.error.splitlines()[0]})" if outcome.error else "",
                            time.monotonic() - job.started_at)
                await self._finish(job, outcome)
            else:
                logger.info("run %s: lost; nothing reported", job.run_id)
        except Exception:
            logger.exception("run %s: agent error", job.run_id)
        finally:
            self.jobs.pop(job.run_id, None)
            self._ended[job.lease.key] = None
            while len(self._ended) > REMEMBERED_RUNS:
                self._ended.popitem(last=False)
            self.stats["runs_lost" if job.lost else "runs_ended"] += 1
            self._wake.set()

    async def _finish(self, job: RunJob, outcome: Outcome) -> None:
        """``finish``, retried while the API is unreachable (the run stays listed as
        running meanwhile, so its lease is renewed), until accepted or no longer ours."""
        delay = 0.5
        while not job.lost:
            try:
                await self.api.finish(self.agent_id, job.run_id, outcome=outcome.status,
                                      exit_code=outcome.exit_code, error=outcome.error)
                return
            except AgentApiError as exc:
                if exc.status is not None and 400 <= exc.status < 500 and exc.status != 429:
                    logger.warning("run %s: finish refused: %s", job.run_id, exc)
                    return
                logger.warning("run %s: finish failed: %s; retrying in %gs", job.run_id, exc,
                               delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _lose_all(self) -> None:
        for job in self.jobs.values():
            if not job.lost:
                job.lose()
                self.stats["lost"] += 1

    async def _guard_loop(self) -> None:
        while True:
            await asyncio.sleep(max(0.05, min(0.5, self.guard.deadline() - self.clock())))
            if self._held() and self.guard.expired():
                logger.error("no successful poll for %.1fs (2/3 of the %gs lease): killing "
                             "%d run(s), reporting nothing (the server retries or fails them)",
                             self.guard.age(), self.guard.lease_s, len(self._held()))
                self._lose_all()


async def run_agent(
    config: AgentConfig,
    *,
    api_url: str,
    token: str,
    make_workspace: Callable[[str], Workspace],
) -> int:
    """``runstream agent``: serve ``config.target`` until SIGTERM/SIGINT (see the module
    docstring for what a second and a third signal do)."""
    import aiohttp  # the server extra

    loop = asyncio.get_running_loop()
    reporter = SdkReporter(make_workspace)
    watchdog = Watchdog()
    watchdog.start()
    signals = (signal.SIGTERM, signal.SIGINT)
    try:
        async with aiohttp.ClientSession() as session:
            agent = Agent(config, api=AgentApi(session, api_url, token), reporter=reporter,
                          watchdog=watchdog)
            for sig in signals:
                loop.add_signal_handler(sig, agent.request_stop)
            try:
                await agent.serve()
            finally:
                for sig in signals:
                    loop.remove_signal_handler(sig)
    finally:
        watchdog.stop()
        await asyncio.to_thread(reporter.close)
    return 0
