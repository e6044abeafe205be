"""The skeleton every fault test shares, handed out by the ``fault_run`` fixture
(tests/integration/conftest.py)::

    run = await fault_run(partitions=4)       # a topic, database and group of its own
    worker = run.start_worker()                # `runstream ingest`, as an operator runs it
    go = run.gate("go")                        # a file the job waits for
    job = run.start_job(Workload(..., holds={20: str(go)}))   # ingest.bench.ledger's job
    await asyncio.to_thread(job.wait_held, 20)
    ... break something ...; go.touch()        # the job logs the rest under the fault
    report = await run.finish()                # the job's `done` report
    result = await run.check()                 # the worker stored everything; the ledger
    await run.record(result, guarantee=..., faults=..., notes=..., **figures)
    assert worker.stop() == 0, worker.output()
    assert result.ok, result.as_dict()         # and the test's own assertions

A fault overlaps the workload by construction: the job waits at a hold until the fault
is in place, or logs until the test says the faults are over (``Workload.until_file``),
never "long enough, we hope". ``record`` reports the ledger's counts (events, points,
lost, doubled, the storage backend) through the ``reliability`` fixture, with the whole
ledger and the job's report as extra figures (``ledger``, ``job``) next to the test's own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.bench.ledger import LedgerJob, LedgerResult, Point, SeriesKey, Workload, check, job_env
from ingest.stack.kafka import topic_ends
from tests.integration.helpers import WorkerFactory, WorkerProcess, stored_offsets_reach, wait_for
from tests.reliability import Reliability, storage_backend

__all__ = ["BLOCKED_LOG_CALL_MS", "FaultRun", "FaultRunFactory"]


#: A ``log`` call slower than this has waited on something: the network or the disk,
#: whose waits the SDK bounds by its timeouts (connect 5 s, request 10 s). Scheduling alone
#: costs milliseconds (up to ~100 ms on a 2-core machine also running Kafka, PostgreSQL,
#: workers and other tests). The bound says what blocking is, not how fast this machine
#: is; the measured value is reported.
BLOCKED_LOG_CALL_MS = 1000.0

@dataclass
class FaultRun:
    """One fault test's slice of the stack and its ledger job (see the module docstring)."""

    bootstrap: str
    topic: str
    dsn: str
    group: str
    home: Path
    workers: WorkerFactory
    reliability: Reliability
    job: LedgerJob | None = None
    report: dict[str, Any] | None = None
    _jobs: list[LedgerJob] = field(default_factory=list)

    def gate(self, name: str) -> Path:
        """A file for a hold of the job (``Workload.holds``, ``end_hold_file``,
        ``until_file``): the job waits there until the test creates it (``touch()``)."""
        self.home.mkdir(parents=True, exist_ok=True)
        return self.home / f"{name}.gate"

    def start_worker(self) -> WorkerProcess:
        return self.workers.start(bootstrap=self.bootstrap, topic=self.topic, dsn=self.dsn,
                                  group=self.group)

    def start_job(self, workload: Workload, *, kafka: str | None = None,
                  home: Path | None = None, prefix: Sequence[str] = ()) -> LedgerJob:
        """The workload in a training process of its own, logging into this run's topic
        (through ``kafka`` when given, e.g. an unreachable port); ``prefix`` wraps the
        command (``ip netns exec …``)."""
        env = job_env(kafka=kafka or self.bootstrap, topic=self.topic,
                      home=home or self.home / "sdk")
        self.job = LedgerJob(workload, env=env, out=self.home / f"job{len(self._jobs)}.out",
                             prefix=prefix)
        self._jobs.append(self.job)
        return self.job

    async def finish(self, timeout_s: float = 180.0) -> dict[str, Any]:
        """Wait for the job to end by itself; its ``done`` report."""
        assert self.job is not None, "no job started"
        self.report = await asyncio.to_thread(self.job.finish, timeout_s)
        return self.report

    async def drained(self, *, timeout_s: float = 60.0) -> None:
        """Wait until the worker(s) stored every message now on the topic (their stored
        offsets, committed with the rows, reach the topic's end offsets)."""
        ends = await topic_ends(self.bootstrap, self.topic)
        await wait_for(stored_offsets_reach(self.dsn, self.topic, self.group, ends),
                       timeout_s=timeout_s, what=f"the worker to store everything ({ends})")

    async def check(self, *, expected: Mapping[SeriesKey, Sequence[Point]] | None = None,
                    timeout_s: float = 60.0) -> LedgerResult:
        """Drained, then the ledger's counts: the database against the points the job
        logged (every tick it reported ``done`` for), or against ``expected``."""
        assert self.job is not None, "no job started"
        await self.drained(timeout_s=timeout_s)
        workload = self.job.workload
        if expected is None and self.report is not None:
            expected = workload.expected(ticks=int(self.report["ticks"]))
        return await check(self.dsn, workload, self.job.run_ids(), expected=expected)

    async def record(self, result: LedgerResult, *, guarantee: str, faults: str,
                     notes: str = "", **figures: Any) -> None:
        """One RELIABILITY.md row from the ledger's counts (see tests/reliability.py)."""
        extra: dict[str, Any] = {**figures, "ledger": result.as_dict()}
        if self.report is not None:
            extra.setdefault("job", self.report)
        self.reliability.record(
            guarantee=guarantee, faults=faults, events=result.events,
            points=result.points_expected, lost=result.lost, doubled=result.doubled,
            storage=await storage_backend(self.dsn), notes=notes, **extra)

    def stop(self) -> None:
        """Kill whatever job still runs (the fixture's cleanup)."""
        for job in self._jobs:
            job.stop()


#: ``await fault_run(partitions=4, bootstrap=None, topic=None, dsn=None)`` → a ``FaultRun``.
FaultRunFactory = Callable[..., Awaitable[FaultRun]]
