"""The fault ledger: a workload known in advance and a checker that counts what the
database lost or doubled.

A ``Workload`` fixes every point before anything runs: which runs (parent and children,
keyed by display name inside a unique experiment), which series, how many ticks of how
many points, each point's step and value (``value(run, series, i)``), and how each run
ends. ``LedgerJob`` runs it in a real training process (``ingest.bench.ledger_job``, the real
SDK) and follows its progress lines; tests break things meanwhile.

A fault must overlap the workload by construction, never by timing (a faster or slower
machine changes how long a job takes): ``holds`` make the job wait before chosen ticks
until the test creates a file (it breaks something, then lets the job go on, so those
ticks are logged under the fault), ``end_hold_file`` keeps it alive after its runs ended,
and ``until_file`` makes ``ticks`` a minimum: the job goes on logging until the test says
the faults are over. The job's ``done`` report says how many ticks it logged;
``expected(ticks=...)`` predicts those.

``check`` then reads the public views (``runstream.runs``, ``runstream.metric_points``,
``runstream.producers``) and compares, series by series, as multisets of (step, value):

- ``lost``: expected points not stored; ``doubled``: extra copies of expected points;
  ``unexpected``: stored points the workload never logged (a wrong step or value);
- ``order_violations``: a series read in its documented order (step, rank, time) must
  also be in logging order (``time`` never goes back) and in the workload's order;
- ``status_mismatches``: runs whose final status is not one the workload allows;
- ``missing_events`` (seq gaps per producer) and ``dropped_events`` (what the SDK
  reported through heartbeats) are counted, not judged: a test decides what it expects.

When a fault may legitimately lose points (a process killed with points still in
memory), the test passes ``expected`` explicitly: what was durable (spool + topic).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

__all__ = [
    "LedgerJob",
    "LedgerResult",
    "RunPlan",
    "Workload",
    "check",
    "compare",
    "job_env",
    "series_points",
]

Point = tuple[int, float]
SeriesKey = tuple[str, str]  # (run key = display name, metric name)

TERMINAL = {"complete": "Completed", "fail": "Failed", "cancel": "Canceled"}

SQL_RUNS = """
SELECT run_id, display_name, status, dropped_events FROM runstream.runs
WHERE experiment = $1
"""
SQL_POINTS = """
SELECT run_id, name, step, value, time FROM runstream.metric_points
WHERE experiment = $1 ORDER BY run_id, name, step, rank, time
"""
SQL_PRODUCERS = """
SELECT coalesce(sum(events), 0)::bigint AS events,
       coalesce(sum(missing_events), 0)::bigint AS missing
FROM runstream.producers WHERE run_id = ANY($1::text[])
"""


@dataclass(frozen=True)
class RunPlan:
    """One run of the workload: ``key`` is its display name; ``end`` is complete, fail,
    cancel or none (left open: it stays Running)."""

    key: str
    parent: str | None = None
    end: str = "complete"

    @property
    def final_statuses(self) -> frozenset[str]:
        if self.end == "none":
            return frozenset({"Running", "NotResponding"})
        return frozenset({TERMINAL[self.end]})


def _default_runs() -> tuple[RunPlan, ...]:
    return (RunPlan("parent"), RunPlan("child", parent="parent", end="fail"))


@dataclass(frozen=True, kw_only=True)
class Workload:
    """Every point of a training job, fixed in advance (see the module docstring)."""

    experiment: str = field(default_factory=lambda: f"ledger_{uuid.uuid4().hex[:10]}")
    runs: tuple[RunPlan, ...] = field(default_factory=_default_runs)
    #: The first series uses the SDK's step counter, the others explicit steps 2*i.
    series: tuple[str, ...] = ("loss", "acc")
    ticks: int = 100
    points_per_tick: int = 50
    #: Sleep after each tick (the job's pace: ticks * pace_s is its minimum length).
    pace_s: float = 0.02
    #: flush(checkpoint_timeout_s) and report every this many ticks (0: never).
    checkpoint_every: int = 0
    checkpoint_timeout_s: float = 1.0
    report_every_tick: bool = True
    final_flush_s: float = 90.0
    #: ``{tick: file}``: before that tick, wait until the file exists (nothing is logged
    #: meanwhile); tick ``ticks``: after the last tick, before the runs end.
    holds: Mapping[int, str] = field(default_factory=dict)
    #: After the runs ended, wait until this file exists before the final flush.
    end_hold_file: str | None = None
    #: With it, ``ticks`` is a minimum: the job logs tick after tick until this file
    #: exists (its ``done`` report says how many).
    until_file: str | None = None
    #: ``ProducerOptions`` fields, e.g. {"heartbeat_interval_s": 1.0}.
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if any(not 0 <= tick <= self.ticks for tick in self.holds):
            raise ValueError(f"hold ticks must be within 0..{self.ticks}: {sorted(self.holds)}")
        if self.until_file is not None and self.ticks in self.holds:
            raise ValueError("a hold after the last tick needs a fixed number of ticks")

    @property
    def points(self) -> int:
        """Points of ``ticks`` ticks (with ``until_file``: the least the job logs)."""
        return self.ticks * self.points_per_tick * len(self.runs) * len(self.series)

    @staticmethod
    def value(run_index: int, series_index: int, i: int) -> float:
        return run_index * 1_000_000.0 + series_index * 1_000.0 + i * 0.25

    def expected(self, ticks: int | None = None) -> dict[SeriesKey, list[Point]]:
        """Each series' points of the first ``ticks`` ticks (all by default), in order."""
        n = (self.ticks if ticks is None else ticks) * self.points_per_tick
        out: dict[SeriesKey, list[Point]] = {}
        for r, run in enumerate(self.runs):
            for s, name in enumerate(self.series):
                step = 1 if s == 0 else 2
                out[(run.key, name)] = [(step * i, self.value(r, s, i)) for i in range(n)]
        return out

    def spec(self) -> dict[str, Any]:
        """The JSON the job process takes."""
        spec: dict[str, Any] = {
            "experiment": self.experiment,
            "runs": [asdict(r) for r in self.runs],
            "series": list(self.series),
            "ticks": self.ticks,
            "points_per_tick": self.points_per_tick,
            "pace_s": self.pace_s,
            "checkpoint_every": self.checkpoint_every,
            "checkpoint_timeout_s": self.checkpoint_timeout_s,
            "report_every_tick": self.report_every_tick,
            "final_flush_s": self.final_flush_s,
            "options": dict(self.options),
        }
        if self.holds:
            spec["holds"] = [{"tick": t, "file": f} for t, f in sorted(self.holds.items())]
        if self.end_hold_file is not None:
            spec["end_hold_file"] = self.end_hold_file
        if self.until_file is not None:
            spec["until_file"] = self.until_file
        return spec


class LedgerJob:
    """The workload running in its own process (``ingest.bench.ledger_job``); progress is read
    from its stdout file. ``prefix`` wraps the command (e.g. ``ip netns exec NAME``)."""

    def __init__(self, workload: Workload, *, env: Mapping[str, str], out: Path,
                 prefix: Sequence[str] = (), cwd: Path | None = None) -> None:
        self.workload = workload
        self.out = out
        out.parent.mkdir(parents=True, exist_ok=True)
        job = "ingest.bench.ledger_job"
        argv = [*prefix, sys.executable, "-m", job, json.dumps(workload.spec())]
        with out.open("wb") as sink:
            self.proc = subprocess.Popen(  # noqa: S603 - our own module
                argv, env=dict(env), stdout=sink, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=cwd,
            )

    def lines(self) -> list[dict[str, Any]]:
        """Every complete progress line so far (other output, e.g. warnings, skipped)."""
        found = []
        decoder = json.JSONDecoder()
        for line in self.out.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                # raw_decode: a stderr line may have landed right after ours (same file).
                try:
                    value, _ = decoder.raw_decode(line)
                except ValueError:
                    continue
                if isinstance(value, dict):
                    found.append(value)
        return found

    def last(self, kind: str) -> dict[str, Any] | None:
        matches = [x for x in self.lines() if x.get("kind") == kind]
        return matches[-1] if matches else None

    def run_ids(self) -> dict[str, str]:
        started = self.last("started")
        return dict(started["runs"]) if started else {}

    def ticks_done(self) -> int:
        """Ticks reported complete (with ``report_every_tick``)."""
        tick = self.last("tick")
        return int(tick["tick"]) + 1 if tick else 0

    def reached_hold(self, tick: int) -> bool:
        """Whether it got to its hold before ``tick`` (it reports every 0.5 s while there)."""
        return any(x.get("kind") == "held" and x.get("tick") == tick for x in self.lines())

    def ended(self) -> bool:
        """Whether its runs ended and it waits for ``end_hold_file``."""
        return self.last("ended") is not None

    def wait(self, predicate: Any, *, timeout_s: float, what: str) -> None:
        """Poll (this is a blocking call; use ``asyncio.to_thread`` from async code)."""
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if self.proc.poll() is not None and not predicate():
                raise AssertionError(f"the job exited ({self.proc.returncode}) before {what}:\n"
                                     f"{self.output_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
            time.sleep(0.05)

    def wait_ticks(self, ticks: int, timeout_s: float = 60.0) -> None:
        self.wait(lambda: self.ticks_done() >= ticks, timeout_s=timeout_s,
                  what=f"{ticks} ticks")

    def wait_held(self, tick: int, timeout_s: float = 60.0) -> None:
        self.wait(lambda: self.reached_hold(tick), timeout_s=timeout_s,
                  what=f"the job to hold before tick {tick}")

    def wait_ended(self, timeout_s: float = 120.0) -> None:
        self.wait(self.ended, timeout_s=timeout_s, what="the job to end its runs")

    def finish(self, timeout_s: float = 180.0) -> dict[str, Any]:
        """Wait for the job to end by itself; its ``done`` report."""
        code = self.proc.wait(timeout=timeout_s)
        done = self.last("done")
        if code != 0 or done is None:
            raise AssertionError(f"the job exited with {code}:\n{self.output_tail()}")
        return done

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        """Kill it if it still runs (cleanup)."""
        if self.proc.poll() is None:
            self.kill9()

    def output_tail(self, lines: int = 40) -> str:
        return "\n".join(self.out.read_text(errors="replace").splitlines()[-lines:])


def job_env(*, kafka: str, topic: str, home: Path, api_url: str = "http://127.0.0.1:9",
            base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a job process (the SDK reads it once, at the edge)."""
    env = dict(os.environ if base is None else base)
    env.update({"RUNSTREAM_KAFKA": kafka, "RUNSTREAM_TOPIC": topic, "RUNSTREAM_HOME": str(home),
                "RUNSTREAM_API": api_url})
    for name in ("RUNSTREAM_RUN_ID", "RUNSTREAM_RANK", "RUNSTREAM_WORLD_SIZE"):
        env.pop(name, None)
    return env


@dataclass
class LedgerResult:
    events: int = 0
    points_expected: int = 0
    points_stored: int = 0
    lost: int = 0
    doubled: int = 0
    unexpected: int = 0
    order_violations: int = 0
    missing_events: int = 0
    dropped_events: int = 0
    runs_found: int = 0
    status_mismatches: dict[str, str] = field(default_factory=dict)
    statuses: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Nothing lost, doubled, invented or reordered, and every run ended right."""
        return not (self.lost or self.doubled or self.unexpected or self.order_violations
                    or self.status_mismatches)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def _compare(expected: Sequence[Point], stored: Sequence[tuple[int, float, Any]],
             result: LedgerResult) -> None:
    want = Counter(expected)
    have = Counter((step, value) for step, value, _ in stored)
    for point, n in have.items():
        expected_n = want.get(point, 0)
        if expected_n == 0:
            result.unexpected += n
        elif n > expected_n:
            result.doubled += n - expected_n
    result.lost += sum(max(n - have.get(point, 0), 0) for point, n in want.items())
    times = [t for _, _, t in stored]
    result.order_violations += sum(1 for a, b in itertools.pairwise(times) if b < a)
    # In (step, rank, time) order the series must read exactly as logged (less any loss).
    kept = [(s, v) for s, v, _ in stored if (s, v) in want]
    in_order = [p for p in expected if p in have]
    if _dedup(kept) != in_order:
        result.order_violations += 1


def compare(expected: Mapping[SeriesKey, Sequence[Point]],
            stored: Mapping[SeriesKey, Sequence[tuple[int, float, Any]]],
            result: LedgerResult | None = None) -> LedgerResult:
    """Points counts of ``stored`` (per series, (step, value, time) in (step, rank, time)
    order) against ``expected`` (per series, (step, value) in logging order)."""
    result = LedgerResult() if result is None else result
    result.points_stored += sum(len(points) for points in stored.values())
    result.points_expected += sum(len(points) for points in expected.values())
    for key in expected.keys() | stored.keys():
        _compare(expected.get(key, ()), stored.get(key, []), result)
    return result


def _dedup(points: Iterable[Point]) -> list[Point]:
    out: list[Point] = []
    for p in points:
        if not out or out[-1] != p:
            out.append(p)
    return out


async def check(dsn: str, workload: Workload, run_ids: Mapping[str, str], *,
                expected: Mapping[SeriesKey, Sequence[Point]] | None = None) -> LedgerResult:
    """Compare the database with the workload (or with ``expected`` points)."""
    expected = workload.expected() if expected is None else expected
    by_id = {rid: key for key, rid in run_ids.items()}
    conn = await asyncpg.connect(dsn)
    try:
        runs = await conn.fetch(SQL_RUNS, workload.experiment)
        rows = await conn.fetch(SQL_POINTS, workload.experiment)
        (producers,) = await conn.fetch(SQL_PRODUCERS, list(run_ids.values()))
    finally:
        await conn.close()
    result = LedgerResult(events=int(producers["events"]),
                          missing_events=int(producers["missing"]))
    stored: dict[SeriesKey, list[tuple[int, float, Any]]] = {}
    for row in rows:
        key = (by_id.get(row["run_id"], row["run_id"]), row["name"])
        stored.setdefault(key, []).append((row["step"], row["value"], row["time"]))
    result = compare(expected, stored, result)
    result.runs_found = len(runs)
    found = {by_id.get(r["run_id"], r["run_id"]): r for r in runs}
    for plan in workload.runs:
        run = found.get(plan.key)
        status = run["status"] if run is not None else "missing"
        result.statuses[plan.key] = status
        if status not in plan.final_statuses:
            result.status_mismatches[plan.key] = status
        if run is not None:
            result.dropped_events += int(run["dropped_events"])
    return result


def series_points(batches: Iterable[dict[str, Any]],
                  run_keys: Mapping[str, str]) -> dict[SeriesKey, list[Point]]:
    """Points carried by decoded events (``schemas.codec.Codec.decode``), per series, in
    event order; for "what was durable" expectations built from the spool or a topic."""
    from array import array

    out: dict[SeriesKey, list[Point]] = {}
    for event in batches:
        kind, record = event["payload"]
        key = run_keys.get(event["run_id"])
        if kind != "MetricBatch" or key is None:
            continue
        for series in record["series"]:
            steps, values = array("q", series["steps"]), array("d", series["values"])
            if sys.byteorder != "little":
                steps.byteswap()
                values.byteswap()
            out.setdefault((key, series["name"]), []).extend(zip(steps, values, strict=True))
    for points in out.values():
        points.sort()
    return out
