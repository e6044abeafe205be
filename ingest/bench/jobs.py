"""``runstream bench jobs``: the scheduler of submitted runs, measured on the local stack.

Everything is real: jobs are submitted with the SDK (``experiment.submit`` of a
``ScriptRunConfig`` whose script prints one line), ``runstream agent`` processes run them,
and the figures come from the database afterwards (the submission's commit time, the
agent's lease, and the run's status times as its events recorded them) — nothing is
timed by polling from outside. Each part uses a compute target of its own.

1. ``latency`` — one idle agent (1 slot); ``latency_jobs`` submissions one after another,
   each waiting until its run ended: submit → Running (the agent's Running event) p50/p95,
   and submit → leased (the agent holds it: the push part alone).
2. ``throughput`` — ``jobs`` submissions queued first, then ``agents`` agents (1 slot
   each) drain them: jobs/s from the first lease to the last end, and the scheduler's
   overhead per job: slot time not spent running a script's process ((wall * slots -
   sum of process times) / jobs; the process time is Running → its end).
3. The comparison with agents that poll every 5 s / 10 s instead of being pushed to
   (ClearML, W&B Launch): their expected idle submit → start delay is half the interval
   on average (2.5 s / 5 s) and the full interval at worst; at saturation a poller that
   takes one job per poll caps each slot at 1/interval jobs/s.
"""

from __future__ import annotations

import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg

from ingest.settings import Settings
from producer import Experiment, Run, ScriptRunConfig, Workspace

__all__ = ["run_jobs_bench"]

Progress = Callable[[str], None]
TERMINAL = ("Completed", "Failed", "Canceled")

SQL_TIMES = """
SELECT s.run_id, s.submitted_at, s.leased_at, r.started_at AS running_at, r.ended_at, r.status
FROM runstream_data.submissions s
JOIN runstream.runs r ON r.run_id = s.run_id
WHERE s.target = $1
"""
SQL_ENDED = """
SELECT count(*) FROM runstream_data.submissions s JOIN runstream.runs r USING (run_id)
WHERE s.target = $1 AND r.status = ANY($2::text[])
"""


def run_jobs_bench(settings: Settings, *, dsn: str, progress: Progress, jobs: int = 1000,
                   agents: int = 2, latency_jobs: int = 20) -> dict[str, Any]:
    """Both parts; one JSON-able dict (seconds, jobs/s)."""
    logging.getLogger("producer").setLevel(logging.WARNING)  # not a line per submission
    with tempfile.TemporaryDirectory(prefix="runstream-bench-jobs-") as tmp:
        root = Path(tmp)
        folder = root / "job"
        folder.mkdir()
        (folder / "job.py").write_text("print('done')\n")
        ws = Workspace.from_env()
        experiment = Experiment(ws, "bench-jobs")
        try:
            latency = _latency(settings, dsn, experiment, folder, root, latency_jobs, progress)
            throughput = _throughput(settings, dsn, experiment, folder, root, jobs, agents,
                                     progress)
        finally:
            ws.close(30.0)
    return {
        "latency": latency,
        "throughput": throughput,
        "polling_agents_for_comparison": {
            f"every_{interval}s": {
                "idle_submit_to_start_mean_s": interval / 2,
                "idle_submit_to_start_worst_s": float(interval),
                "max_jobs_per_s_per_slot": round(1 / interval, 3),
            }
            for interval in (5, 10)
        },
    }


def _config(folder: Path, target: str) -> ScriptRunConfig:
    return ScriptRunConfig(source_directory=str(folder), script="job.py", compute_target=target)


def _latency(settings: Settings, dsn: str, experiment: Experiment, folder: Path, root: Path,
             count: int, progress: Progress) -> dict[str, Any]:
    target = f"bench-latency-{uuid.uuid4().hex[:8]}"
    progress(f"jobs: submit → Running with an idle agent, {count} jobs one after another…")
    with _agents(settings, target, 1, root / "latency") as _:
        _wait_for_agents(dsn, target, 1)
        for _i in range(count):
            run = experiment.submit(_config(folder, target))
            _wait_ended(run)
    rows = _times(dsn, target)
    to_running = [(r["running_at"] - r["submitted_at"]).total_seconds() for r in rows
                  if r["running_at"] is not None]
    to_lease = [(r["leased_at"] - r["submitted_at"]).total_seconds() for r in rows
                if r["leased_at"] is not None]
    return {
        "jobs": len(rows),
        "completed": sum(r["status"] == "Completed" for r in rows),
        "submit_to_running_p50_s": _pct(to_running, 50),
        "submit_to_running_p95_s": _pct(to_running, 95),
        "submit_to_running_max_s": round(max(to_running), 3) if to_running else None,
        "submit_to_lease_p50_s": _pct(to_lease, 50),
        "submit_to_lease_p95_s": _pct(to_lease, 95),
    }


def _throughput(settings: Settings, dsn: str, experiment: Experiment, folder: Path,
                root: Path, count: int, agents: int, progress: Progress) -> dict[str, Any]:
    target = f"bench-throughput-{uuid.uuid4().hex[:8]}"
    progress(f"jobs: submitting {count:,} jobs to a target without agents…")
    started = time.monotonic()
    for i in range(count):
        experiment.submit(_config(folder, target))
        if (i + 1) % 100 == 0:
            progress(f"jobs: {i + 1:,}/{count:,} submitted")
    submit_s = time.monotonic() - started
    progress(f"jobs: {agents} agents drain the queue…")
    with _agents(settings, target, agents, root / "throughput") as _:
        deadline = time.monotonic() + max(600.0, count * 2.0)
        while time.monotonic() < deadline:
            done = _ended_count(dsn, target)
            if done >= count:
                break
            progress(f"jobs: {done:,}/{count:,} ended")
            time.sleep(2.0)
    rows = _times(dsn, target)
    leased = [r["leased_at"] for r in rows if r["leased_at"] is not None]
    ended = [r["ended_at"] for r in rows if r["ended_at"] is not None]
    wall_s = (max(ended) - min(leased)).total_seconds() if leased and ended else None
    busy_s = sum((r["ended_at"] - r["running_at"]).total_seconds() for r in rows
                 if r["ended_at"] is not None and r["running_at"] is not None)
    per_job = None
    if wall_s is not None and rows:
        per_job = round((wall_s * agents - busy_s) / len(rows), 3)
    return {
        "jobs": len(rows),
        "agents": agents,
        "slots_per_agent": 1,
        "completed": sum(r["status"] == "Completed" for r in rows),
        "not_completed": sum(r["status"] != "Completed" for r in rows),
        "submit_s": round(submit_s, 1),
        "submits_per_s": round(count / submit_s, 1) if submit_s else None,
        "drain_wall_s": round(wall_s, 1) if wall_s is not None else None,
        "jobs_per_s": round(len(ended) / wall_s, 2) if wall_s else None,
        "scheduler_overhead_per_job_s": per_job,
        "process_time_per_job_s": round(busy_s / len(rows), 3) if rows else None,
    }


class _agents:
    """``n`` ``runstream agent`` processes serving ``target`` (stopped on exit)."""

    def __init__(self, settings: Settings, target: str, n: int, work: Path) -> None:
        self._argv = [sys.executable, "-m", "ingest.cli.main", "agent", "--target", target,
                      "--slots", "1"]
        self._n = n
        self._work = work
        self._procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> _agents:
        self._work.mkdir(parents=True, exist_ok=True)
        for i in range(self._n):
            with (self._work / f"agent-{i}.log").open("wb") as log:
                self._procs.append(subprocess.Popen(  # noqa: S603 - our own argv
                    [*self._argv, "--work-dir", str(self._work / f"agent-{i}")],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    env={**os.environ}))
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self._procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_for_agents(dsn: str, target: str, n: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _fetchval(dsn, "SELECT count(*) FROM runstream_data.agents WHERE target = $1 "
                     "AND stopped_at IS NULL", target) >= n:
            return
        time.sleep(0.1)
    raise RuntimeError(f"{n} agents for {target} did not register within {timeout_s:g} s")


def _wait_ended(run: Run, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if run.get_status() in TERMINAL:
            return
        time.sleep(0.05)
    raise RuntimeError(f"run {run.id} did not end within {timeout_s:g} s")


def _times(dsn: str, target: str) -> list[dict[str, Any]]:
    return _fetch(dsn, SQL_TIMES, target)


def _ended_count(dsn: str, target: str) -> int:
    return int(_fetchval(dsn, SQL_ENDED, target, list(TERMINAL)))


def _fetch(dsn: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    import asyncio

    async def go() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(dsn)
        try:
            return [dict(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    return asyncio.run(go())


def _fetchval(dsn: str, sql: str, *args: Any) -> Any:
    rows = _fetch(dsn, sql, *args)
    return next(iter(rows[0].values())) if rows else None


def _pct(values: list[float], q: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 3)
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1], 3)
