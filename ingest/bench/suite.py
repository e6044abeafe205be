"""``runstream bench``: measure the write path on this machine, in one run.

Everything runs for real on the local stack, in a database and topic of its own (dropped
afterwards; with TimescaleDB when the stack's database has it):

1. ``log_call`` — one training process calls ``run.log`` in a loop, each call timed, while a
   second process runs the same loop around a no-op (``noop``; no SDK in it) at the same
   time, its call a busy wait as long as the log call's p50 (measured first by a short loop
   alone, ``CONTROL_CALLS`` calls): a control of the same length, which interrupts, the
   hypervisor and preemption hit as often as they hit the log call (``vs_control`` compares
   the two; ``--control python`` makes it interpreter work of that length instead, array
   stores and a dict lookup, which the caches and memory traffic of the other processes slow
   as they slow the log call). Every call over 5 ms is attributed (``producer_job.py``): to
   Runstream (``stalls_ours``: the call's time went to our own code or threads — GIL, our
   locks) or to the OS (``stalls_os``: the process was descheduled and something else ran;
   of those, ``stalls_os_blocked`` slept rather than waited for a CPU — on the GIL or a lock
   whose holder, one of our threads, was descheduled, or on I/O). The no-op's stalls are all
   the machine's. A stall classed ours because the main thread was charged the CPU time is
   the machine's after all when the control was charged CPU time for the same moment without
   getting on (``_paused_with_control``: the virtual machine paused, and the hypervisor did
   not report it as steal time); it counts in ``stalls_os`` and
   ``stalls_paused_with_control``. ``log_call_noise_floor`` is that no-op's figures (as
   before). Each loop runs ``log_call_duration_s``, or ``log_calls`` calls.
2. ``log_call_kafka_down`` — the same with Kafka unreachable (a closed port): events go
   to the spool, and no call may stall the loop.
3. ``log_call_shared`` — ``shared_ranks`` ranks of one run log flat out, timed, beside
   the no-op loop and the ingest workers that store what they log (pinned to two cores
   when the machine has more): the training job and the pipeline on the same cores.
4. ``e2e`` — ``producers`` training processes (each its own run, the runs on distinct
   partitions: a run's events share one) log as fast as they can for ``duration_s`` into
   a topic with ``partitions`` partitions; ``workers`` ingest
   workers (``runstream ingest`` processes) persist them. Sustained throughput is the
   committed points per second over the logging window (after a warm-up), sampled from
   the database; worker and producer peak RSS are sampled too, and the CPU time of each
   component (producers, the Kafka broker, the workers, every PostgreSQL server process)
   from spawning the producers until everything was stored, per million points
   committed. Producers that outrun the pipeline spool (or drop and count) events; the
   drain after logging waits for the producers' close (which may replay a spool) and
   then until the workers stored everything that reached the topic (their stored offsets
   reach its end offsets), never for points known to be dropped. ``points_doubled``
   counts points stored twice. With several worker counts (``capacity_workers``) the
   e2e runs once per count (with at least as many producers as workers) and ``capacity``
   lists each.
5. ``latency`` — the same pipeline paced at ``latency_rate`` points/s in total; the
   log-call→committed latency of every point is read from the database (each metric
   chunk row records when its transaction wrote it; each point its log-call time).
6. ``copy_baseline`` — one asyncpg COPY of as many points as ``e2e`` stored, one row per
   point, into an unindexed table (``baseline.py``).

The ``overload`` suite (its own, it takes minutes): a flat-out e2e of
``capacity_duration_s`` measures the pipeline's capacity, then the producers log at
``overload_factor`` x that (flat out if they cannot) for ``overload_duration_s``; it
reports what was logged, spooled, dropped, committed and doubled, and the drain after
logging ended against the capacity.

Figures are reported with ratios against the baselines the issue names: the COPY above,
and MLflow 3.17.2's tracking server measured on this machine class (about 2,500 points/s
through ``log_batch``; ``log_metric`` about 64 ms per call).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import psutil
from aiokafka.partitioner import murmur2

from ingest.bench.baseline import copy_baseline
from ingest.bench.cpuquota import cpu_quota
from ingest.bench.faults import run_fault_bench
from ingest.bench.producer_job import SLOW_CAUSES, percentile_from_counts, worst_and_ours
from ingest.bench.read import run_read_bench, settle
from ingest.bench.scratch import scratch_database, scratch_topic, timescaledb_version
from ingest.settings import Settings
from ingest.stack.kafka import topic_ends

__all__ = ["BenchConfig", "run_bench"]

MLFLOW_LOG_BATCH_POINTS_PER_S = 2_500.0
MLFLOW_LOG_METRIC_S = 0.064
WARMUP_S = 5.0
#: Issue 12's log-call targets, per scenario.
TARGET_STALLS_OURS_PER_10M = 0
TARGET_P999_US = 5.0
TARGET_P50_US = 1.0
#: Timed calls of the short loop alone whose p50 sets the control's length.
CONTROL_CALLS = 300_000
#: The worst stalls a log-call section lists one by one.
STALL_DETAILS = 10

SQL_COMMITTED = """
SELECT coalesce(sum(n), 0) FROM runstream_data.metric_chunks WHERE run_id = ANY($1::text[])
"""
SQL_DOUBLED = """
SELECT (SELECT coalesce(sum(n), 0) FROM runstream_data.metric_chunks
        WHERE run_id = ANY($1::text[]))
     - (SELECT count(*) FROM (
            SELECT DISTINCT c.run_id, c.rank, c.name, s.step
            FROM runstream_data.metric_chunks c, unnest(c.steps) AS s(step)
            WHERE c.run_id = ANY($1::text[])) points)
"""
SQL_STORED_OFFSETS = """
SELECT partition, next_offset FROM runstream_data.consumer_offsets
WHERE group_id = $1 AND topic = $2
"""
DRAIN_TIMEOUT_S = 300.0
SQL_LATENCY = """
SELECT percentile_cont(ARRAY[0.5, 0.99, 0.999]) WITHIN GROUP (ORDER BY lat),
       max(lat), count(*)
FROM (
    SELECT extract(epoch FROM c.ingested_at) - t / 1e6 AS lat
    FROM runstream_data.metric_chunks c, unnest(c.times) AS t
    WHERE c.run_id = ANY($1::text[])
) points
"""
#: The ProducerStats counters summed over a pipeline's producers.
PRODUCER_COUNTERS = ("events_sent", "events_spooled", "events_replayed", "events_dropped",
                     "events_held")

Progress = Callable[[str], None]


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    duration_s: float = 60.0
    producers: int = 2
    workers: int = 1
    #: Worker counts the e2e runs with, one after the other (``capacity``); empty: ``workers``.
    capacity_workers: tuple[int, ...] = ()
    partitions: int = 6
    series: int = 10
    latency_rate: float = 50_000.0
    latency_duration_s: float = 20.0
    log_call_duration_s: float = 5.0
    #: Each timed log-call loop makes this many calls instead (0: ``log_call_duration_s``).
    log_calls: int = 0
    #: Calls between two CPU-time samples of the timed loops (0: no stall attribution).
    sample_every: int = 64
    #: Ranks of the shared-cores log-call scenario.
    shared_ranks: int = 3
    #: The control beside each log-call loop: "spin" (a busy wait on the clock) or
    #: "python" (interpreter work: array stores and a dict lookup), as long as the log call.
    control: str = "spin"
    #: The overload suite: capacity run, then producers at ``overload_factor`` x capacity.
    capacity_duration_s: float = 20.0
    overload_duration_s: float = 60.0
    overload_factor: float = 1.5
    #: The overload suite with every process on every core (else the pipeline on one half
    #: of the CPUs, the producers on the other).
    overload_shared_cores: bool = False
    #: The overload suite holds the pipeline to this share of one CPU (a cgroup quota; 0:
    #: none), so that producers on the other CPU can log faster than it stores.
    overload_pipeline_cpu: float = 0.5
    #: How long a producer's close may take (it may replay a spooled backlog).
    close_timeout_s: float = 600.0
    #: The read suite at a tenth of its sizes (smoke tests, not figures).
    quick_read: bool = False
    #: The jobs suite: submitted jobs the agents drain, and how many agents (1 slot each).
    jobs: int = 1000
    agents: int = 2
    #: The dedup suite: keys stored before ingest is measured (``quick_read``: at most 1 M).
    dedup_keys: int = 100_000_000
    #: The maintenance suite: old points to compress while ingest is measured.
    maintenance_points: int = 50_000_000

    @property
    def worker_counts(self) -> tuple[int, ...]:
        return self.capacity_workers or (self.workers,)


@contextlib.contextmanager
def _closed_port() -> Iterator[int]:
    """A local port bound but not listening while in use: connections are refused, and no
    other process can start listening on it meanwhile."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


def _per_10m(count: int, calls: int) -> float:
    return round(count * 1e7 / calls, 2) if calls else 0.0


def _merged_percentiles(reports: Sequence[dict[str, Any]]) -> dict[str, float]:
    """p50/p99/p999/max (ns) of several loops: exact for one, from their histograms else."""
    if len(reports) == 1:
        return dict(reports[0]["call_ns"])
    counts: dict[int, int] = {}
    for r in reports:
        for value, n in r.get("hist", []):
            counts[value] = counts.get(value, 0) + n
    total = sum(counts.values())
    return {
        "p50": percentile_from_counts(counts, total, 0.50),
        "p99": percentile_from_counts(counts, total, 0.99),
        "p999": percentile_from_counts(counts, total, 0.999),
        "max": max(float(r["call_ns"]["max"]) for r in reports),
    }


def _calls(reports: dict[str, Any] | Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One log-call section from one timed loop's report or several (ranks) together."""
    many = [reports] if isinstance(reports, dict) else list(reports)
    calls = sum(r["timed_calls"] for r in many)
    over = sum(r["calls_over_5ms"] for r in many)
    ours = sum(r.get("stalls_ours", 0) for r in many)
    os_ = sum(r.get("stalls_os", 0) for r in many)
    all_stalls = [s for r in many for s in r.get("stalls", [])]
    stalls = sorted(all_stalls, key=lambda s: -s["call_ms"])
    slow = {k: sum(r.get("slow_calls", {}).get(k, 0) for r in many) for k in SLOW_CAUSES}
    in_call_s = sum(v * n for r in many for v, n in r.get("hist", [])) / 1e9
    return {
        "calls": calls,
        "calls_over_5ms": over,
        **{f"{k}_us": round(v / 1000, 3) for k, v in _merged_percentiles(many).items()},
        "stalls_ours": ours,
        "stalls_os": os_,
        "stalls_unattributed": sum(r.get("stalls_unattributed", 0) for r in many),
        "stalls_os_blocked": sum(r.get("stalls_os_blocked", 0) for r in many),
        "stalls_paused_with_control": sum(r.get("stalls_paused_with_control", 0) for r in many),
        # Stalls the main thread was charged for, on the CPU without a page fault or a
        # sleep (whatever their class): what a pause of the machine looks like from inside.
        "stalls_on_cpu_quiet": sum(
            bool(span[4:5] and span[4]) for r in many for span in r.get("stall_spans", [])),
        # Calls of 5 µs to 5 ms (what decides the p99.9), by what their window says, and
        # the on-CPU ones per second spent inside calls: the rate at which something the
        # thread cannot see (interrupts, the hypervisor) slows whatever runs — compare
        # with the no-op loop's.
        "slow_calls": slow,
        "in_call_s": round(in_call_s, 3),
        "slow_on_cpu_per_in_call_s": round(slow["on_cpu"] / in_call_s, 1) if in_call_s else None,
        "calls_over_5ms_per_10m_calls": _per_10m(over, calls),
        "stalls_ours_per_10m_calls": _per_10m(ours, calls),
        "stalls_os_per_10m_calls": _per_10m(os_, calls),
        # Stalls classed ours that a garbage collection took most of (in the main thread,
        # or in another of ours holding the GIL), and the collections in the loops.
        "stalls_ours_in_gc": sum(
            s["cause"] == "ours" and s.get("gc_ms", 0) * 2 >= s["call_ms"] for s in all_stalls),
        "collections": _collections(many),
        "stalls": worst_and_ours(stalls, STALL_DETAILS),
    }


def _collections(reports: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Garbage collections in the timed loops by generation: counts, how many the main
    thread ran, the longest (ms)."""
    each = [r["collections"] for r in reports if r.get("collections")]
    if not each:
        return None
    return {
        "count": [sum(c["count"][g] for c in each) for g in range(3)],
        "in_main_thread": [sum(c["in_main_thread"][g] for c in each) for g in range(3)],
        "max_ms": [max(c["max_ms"][g] for c in each) for g in range(3)],
    }


def _paused_with_control(logs: Sequence[dict[str, Any]], noop: dict[str, Any]) -> int:
    """Reclass, in the loops' reports, each stall classed ours because the main thread was
    on the CPU for most of it, when the control beside it had a stall of its own on the
    CPU covering at least half of it: the control runs no code of ours and was charged
    the CPU time of that moment too, so neither thread ran — the virtual machine was
    paused (a pause the hypervisor does not report as steal time is charged to whichever
    thread was on the CPU). Such a stall becomes ``os`` with ``paused_with_control``;
    returns how many were."""
    control = [(span[0], span[1]) for span in noop.get("stall_spans", []) if span[3]]
    moved = 0
    for report in logs:
        paused: set[int] = set()
        for span in report.get("stall_spans", []):
            start, end, cause, ran = span[:4]
            if cause != "ours" or not ran:
                continue
            overlap = max((min(end, b) - max(start, a) for a, b in control), default=0)
            if overlap * 2 >= end - start:
                paused.add(start)
                span[2] = "os"
        if not paused:
            continue
        report["stalls_ours"] -= len(paused)
        report["stalls_os"] += len(paused)
        report["stalls_paused_with_control"] = len(paused)
        for stall in report.get("stalls", []):
            if stall.get("start_ns") in paused:
                stall["cause"] = "os"
                stall["paused_with_control"] = True
        moved += len(paused)
    return moved


def _log_section(logs: Sequence[dict[str, Any]], noop: dict[str, Any]) -> dict[str, Any]:
    """A log-call scenario: the logging loop(s), their targets, the no-op run beside them."""
    _paused_with_control(logs, noop)
    section = _calls(logs)
    section["meets_targets"] = {
        "stalls_ours": section["stalls_ours_per_10m_calls"] <= TARGET_STALLS_OURS_PER_10M,
        "p999": section["p999_us"] <= TARGET_P999_US,
        "p50": section["p50_us"] <= TARGET_P50_US,
    }
    section["dropped_events"] = sum(r["dropped_events"] for r in logs)
    # where the events went (the spool, or dropped: refused by a full buffer or spool)
    section["producer_counters"] = _producer_counters(logs)
    control = section["noop"] = _calls(noop)
    control["spin_ns"] = noop.get("spin_ns", 0)
    control["kind"] = noop.get("control", "spin")
    control["steps"] = noop.get("control_steps", 0)
    slow, calls = section["slow_calls"], section["calls"]
    # The same length of call, the same machine, the same moment, no code of ours: what
    # is left between the two is ours. Slow calls (5 µs-5 ms) set the p99.9.
    section["vs_control"] = {
        "p999_ratio": (round(section["p999_us"] / control["p999_us"], 2)
                       if control["p999_us"] else None),
        "slow_calls_per_10m_calls": _per_10m(sum(slow.values()), calls),
        "control_slow_calls_per_10m_calls": _per_10m(
            sum(control["slow_calls"].values()), control["calls"]),
        # slowed while our other threads ran, or asleep on the GIL or a lock
        "slow_calls_our_threads_per_10m_calls": _per_10m(
            slow["our_threads"] + slow["blocked"], calls),
        # Stalls on the CPU without a fault or a sleep: the control's are the machine's
        # (pauses of the virtual machine charged as CPU time); compare the log loops' rate
        # of them, matched with the control's or not, with the control's.
        "stalls_on_cpu_quiet_per_10m_calls": _per_10m(section["stalls_on_cpu_quiet"], calls),
        "control_stalls_on_cpu_quiet_per_10m_calls": _per_10m(
            control["stalls_on_cpu_quiet"], control["calls"]),
    }
    section["machine_steal_s"] = noop.get("machine_steal_s")
    return section


@dataclass
class _Env:
    settings: Settings
    dsn: str
    topic: str
    home: Path
    group: str = field(default_factory=lambda: f"bench-{uuid.uuid4().hex[:8]}")

    def producer_env(self, run_id: str, rank: int, world: int, **over: str) -> dict[str, str]:
        env = {
            **os.environ,
            "RUNSTREAM_KAFKA": self.settings.kafka_bootstrap,
            "RUNSTREAM_API": self.settings.api_url,
            "RUNSTREAM_HOME": str(self.home / f"producer-{run_id}-{rank}"),
            "RUNSTREAM_TOPIC": self.topic,
            "RUNSTREAM_RUN_ID": run_id,
            "RUNSTREAM_RANK": str(rank),
            "RUNSTREAM_WORLD_SIZE": str(world),
        }
        env.update(over)
        return env


def _producer(env: dict[str, str], spec: dict[str, Any]) -> subprocess.Popen[str]:
    home = Path(env["RUNSTREAM_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "producer.log", "ab") as log:  # the SDK's warnings, e.g. Kafka down
        return subprocess.Popen(  # noqa: S603 - our own module
            [sys.executable, "-m", "ingest.bench.producer_job", json.dumps(spec)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )


def _report(proc: subprocess.Popen[str], timeout_s: float) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=timeout_s)
    if proc.returncode != 0:
        raise RuntimeError(f"bench producer exited with {proc.returncode}")
    report: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return report


def _run_id() -> str:
    return f"bench_{int(time.time())}_{uuid.uuid4().hex[:8]}"


def _partition(run_id: str, partitions: int) -> int:
    """The partition the SDK's events of ``run_id`` go to (keyed by run id; Kafka's default
    murmur2 partitioner, as the producer uses)."""
    return int(murmur2(run_id.encode()) & 0x7FFFFFFF) % partitions


def _spread_run_ids(count: int, partitions: int) -> list[str]:
    """``count`` fresh run ids on as many distinct partitions as there are (a run's events
    share one partition, so one run keeps one worker busy however many there are)."""
    ids: list[str] = []
    for i in range(count):
        while _partition(run_id := _run_id(), partitions) != i % partitions:
            pass
        ids.append(run_id)
    return ids


def _two_cores() -> list[int] | None:
    """Two CPUs to pin the shared-cores scenario's processes to (None: the machine has two)."""
    cpus = sorted(os.sched_getaffinity(0))
    return cpus[:2] if len(cpus) > 2 else None


def _pin(pids: Sequence[int], cpus: list[int] | None) -> None:
    """Pin every thread of each process (an affinity set on a process id binds only its
    main thread: the broker's JVM threads and any thread already started would not
    follow); threads started later inherit it from the thread that starts them."""
    if cpus is None:
        return
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            for thread in psutil.Process(pid).threads():
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(thread.id, cpus)


def _split_cpus() -> tuple[list[int], list[int]] | None:
    """The machine's CPUs in two halves: (the pipeline's, the producers'); None with one."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    half = len(cpus) // 2
    return cpus[:half], cpus[half:]


@contextlib.contextmanager
def _confined(env: _Env, conn_pid: int, cpus: list[int] | None,
              workers: Sequence[psutil.Process], cpu_share: float = 0.0
              ) -> Iterator[dict[str, Any]]:
    """Pin the pipeline — the broker, the PostgreSQL server (the postmaster, so backends
    forked meanwhile too, and every child) and ``workers`` — to ``cpus`` for the block
    (None: leave them where they are), and hold it to ``cpu_share`` of one CPU if above 0
    (``cpu_quota``); give the broker and the server back the CPUs they had afterwards."""
    _, kafka_port = env.settings.kafka_bootstrap.split(",")[0].rsplit(":", 1)
    servers: list[psutil.Process] = []
    broker = _listener(int(kafka_port))
    if broker is not None:
        servers.append(broker)
    with contextlib.suppress(psutil.Error):
        postmaster = psutil.Process(conn_pid).parent()
        if postmaster is not None and postmaster.name().startswith("postgres"):
            servers.append(postmaster)
    before: dict[int, list[int]] = {}
    for p in servers:
        with contextlib.suppress(psutil.Error):
            before[p.pid] = p.cpu_affinity()
    def family() -> list[psutil.Process]:
        out = list(servers)
        for p in servers:
            with contextlib.suppress(psutil.Error):
                out += p.children(recursive=True)
        return out
    with cpu_quota(cpu_share, [p.pid for p in (*family(), *workers)]) as quota:
        if cpus is None:
            yield {"pipeline_cpus": None, "pipeline_cpu_quota": quota}
            return
        try:
            _pin([p.pid for p in (*family(), *workers)], cpus)
            yield {"pipeline_cpus": cpus, "pinned": sorted(p.name() for p in servers),
                   "pipeline_cpu_quota": quota}
        finally:
            for p in family():
                with contextlib.suppress(psutil.Error):
                    root = p if p.pid in before else p.parent()
                    while root is not None and root.pid not in before:
                        root = root.parent()
                    if root is not None:
                        _pin([p.pid], before[root.pid])


@contextlib.contextmanager
def _workers(env: _Env, count: int) -> Iterator[list[psutil.Process]]:
    worker_env = {
        **os.environ,
        "RUNSTREAM_KAFKA": env.settings.kafka_bootstrap,
        "RUNSTREAM_DB": env.dsn,
        "RUNSTREAM_TOPIC": env.topic,
        "RUNSTREAM_HOME": str(env.home / "worker"),
    }
    procs = [
        subprocess.Popen(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "ingest.cli", "ingest", "--group", env.group,
             "--metrics-port", "0"],
            env=worker_env,
            stdout=subprocess.DEVNULL,
            stderr=open(env.home / f"worker-{count}-{i}.log", "w"),  # noqa: SIM115 - lives with the proc
        )
        for i in range(count)
    ]
    try:
        yield [psutil.Process(p.pid) for p in procs]
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _rss(procs: Sequence[psutil.Process]) -> int:
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total = max(total, p.memory_info().rss)
    return total


def _listener(port: int) -> psutil.Process | None:
    """The process listening on local TCP ``port`` (the broker, the postmaster), if any."""
    with contextlib.suppress(psutil.Error):
        for c in psutil.net_connections(kind="tcp"):
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
                return psutil.Process(c.pid)
    return None


@dataclass
class _Cpu:
    """CPU seconds (user + system) of the pipeline's long-lived components, for deltas.

    ``postgres`` is the postmaster with every child: the postmaster's ``children_*`` times
    hold its children that exited (reaped), so a backend that ends mid-window is still
    counted, once. Kafka and PostgreSQL serve the whole machine: other load on them (other
    databases, other topics) counts too. ``postgres_bench_db`` is only the backends
    connected to the bench's database (the workers'; not the bench's own polling, the WAL
    writer, the checkpointer or other databases), sampled every second.
    """

    workers: Sequence[psutil.Process]
    broker: psutil.Process | None
    postmaster: psutil.Process | None
    #: The bench database's name: its backends (process title ``postgres: user db …``).
    database: str = ""
    #: CPU seconds of each backend of ``database`` when first and last seen.
    backends: dict[int, tuple[float, float]] = field(default_factory=dict)
    #: The bench's own connection (it polls what was committed): not counted.
    own_backend: int = 0

    @staticmethod
    def _own(p: psutil.Process) -> float:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            return t.user + t.system
        return 0.0

    def sample(self) -> dict[str, float]:
        pg = 0.0
        if self.postmaster is not None:
            with contextlib.suppress(psutil.Error):
                t = self.postmaster.cpu_times()
                pg = t.user + t.system + t.children_user + t.children_system
                for child in self.postmaster.children(recursive=True):
                    own = self._own(child)
                    pg += own
                    with contextlib.suppress(psutil.Error):
                        if (child.pid != self.own_backend
                                and f" {self.database} " in " ".join(child.cmdline()) + " "):
                            first, _ = self.backends.get(child.pid, (own, own))
                            self.backends[child.pid] = (first, own)
        return {
            "worker": sum(self._own(w) for w in self.workers),
            "broker": self._own(self.broker) if self.broker is not None else 0.0,
            "postgres": pg,
            "postgres_bench_db": sum(last for _, last in self.backends.values()),
        }

    def bench_db_since_first_seen(self) -> float:
        """CPU seconds the bench database's backends used since each was first seen (one
        that ended between two samples loses what it used after the last one)."""
        return sum(last - first for first, last in self.backends.values())


async def _cpu_probe(env: _Env, conn: asyncpg.Connection,
                     workers: Sequence[psutil.Process]) -> _Cpu:
    _, kafka_port = env.settings.kafka_bootstrap.split(",")[0].rsplit(":", 1)
    own = int(await conn.fetchval("SELECT pg_backend_pid()"))
    backend = psutil.Process(own)
    with contextlib.suppress(psutil.Error):
        backend = backend.parent() or backend
    database = str(await conn.fetchval("SELECT current_database()"))
    return _Cpu(workers=workers, broker=_listener(int(kafka_port)),
                postmaster=backend if backend.name().startswith("postgres") else None,
                database=database, own_backend=own)


async def _committed(conn: asyncpg.Connection, run_ids: list[str]) -> int:
    return int(await conn.fetchval(SQL_COMMITTED, run_ids))


# What autovacuum is doing in the bench database at this moment: one row a worker.
SQL_AUTOVACUUM = """
SELECT query FROM pg_stat_activity
WHERE backend_type = 'autovacuum worker' AND datname = current_database()
"""


async def _autovacuum(conn: asyncpg.Connection) -> list[str]:
    """The tables autovacuum is working on in the bench database now (``VACUUM`` /
    ``ANALYZE`` and the table, from ``pg_stat_activity``'s query text)."""
    return [str(r["query"]).removeprefix("autovacuum: ")
            for r in await conn.fetch(SQL_AUTOVACUUM)]


async def _stored_everything(conn: asyncpg.Connection, env: _Env, ends: dict[int, int]) -> bool:
    """Whether the workers' stored offsets reach ``ends`` (the topic's end offsets)."""
    stored = {r["partition"]: r["next_offset"]
              for r in await conn.fetch(SQL_STORED_OFFSETS, env.group, env.topic)}
    return all(stored.get(p, 0) >= end for p, end in ends.items())


async def _drain(env: _Env, conn: asyncpg.Connection, workers: Sequence[psutil.Process]
                 ) -> tuple[dict[int, int], float, int]:
    """Wait until the workers stored everything now on the topic (the producers closed:
    what they delivered is there, what they dropped never will be). Returns the end
    offsets waited for, the seconds it took and the workers' peak RSS meanwhile."""
    ends = await topic_ends(env.settings.kafka_bootstrap, env.topic,
                            security=env.settings.kafka_security)
    started = time.monotonic()
    deadline = started + DRAIN_TIMEOUT_S
    rss = 0
    while not await _stored_everything(conn, env, ends):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the workers did not store {ends} of {env.topic} within "
                               f"{DRAIN_TIMEOUT_S:.0f} s")
        await asyncio.sleep(0.5)
        rss = max(rss, _rss(workers))
    return ends, time.monotonic() - started, rss


def _committed_at(samples: Sequence[tuple[float, float, int]], wall: float) -> int:
    """Points committed at wall-clock time ``wall``, interpolated between 1 s samples."""
    before = [(w, n) for _, w, n in samples if w <= wall]
    after = [(w, n) for _, w, n in samples if w > wall]
    if not before:
        return 0
    if not after:
        return before[-1][1]
    (w0, n0), (w1, n1) = before[-1], after[0]
    return round(n0 + (n1 - n0) * (wall - w0) / (w1 - w0))


def _producer_counters(reports: Sequence[dict[str, Any]]) -> dict[str, int]:
    """The producers' ``Workspace.stats()`` counters, summed (events are Kafka messages)."""
    stats = [r["producer_stats"] for r in reports if r.get("producer_stats")]
    return {k: sum(int(s.get(k, 0)) for s in stats) for k in PRODUCER_COUNTERS}


async def _pipeline(
    env: _Env,
    conn: asyncpg.Connection,
    workers: Sequence[psutil.Process],
    *,
    producers: int,
    duration_s: float,
    rate: float,
    series: int,
    partitions: int,
    close_timeout_s: float,
    progress: Progress,
    producer_cpus: list[int] | None = None,
) -> dict[str, Any]:
    """``producers`` training processes, each logging into a run of its own (on distinct
    partitions while there are), at ``rate`` points/s in total (0: flat out); pinned to
    ``producer_cpus`` if given."""
    run_ids = _spread_run_ids(producers, partitions)
    spec = {"duration_s": duration_s, "rate": rate / producers if rate else 0, "series": series,
            "close_timeout_s": close_timeout_s}
    probe = await _cpu_probe(env, conn, workers)
    cpu_before = probe.sample()
    started = time.monotonic()
    procs = [_producer(env.producer_env(run_id, 0, 1), spec) for run_id in run_ids]
    _pin([p.pid for p in procs], producer_cpus)
    ps = [psutil.Process(p.pid) for p in procs]
    samples: list[tuple[float, float, int]] = []  # (since start, wall clock, committed)
    vacuuming: list[tuple[float, list[str]]] = []  # (since start, what autovacuum ran)
    worker_rss = producer_rss = 0
    while any(p.poll() is None for p in procs):
        await asyncio.sleep(1.0)
        samples.append((time.monotonic() - started, time.time(), await _committed(conn, run_ids)))
        vacuuming.append((samples[-1][0], await _autovacuum(conn)))
        worker_rss = max(worker_rss, _rss(workers))
        producer_rss = max(producer_rss, _rss(ps))
        probe.sample()  # notes the bench database's backends as they come
        progress(f"  t={samples[-1][0]:5.1f}s committed {samples[-1][2]:>12,} points")
    producers_closed_s = time.monotonic() - started
    reports = [_report(p, 60) for p in procs]
    logged = sum(r["points"] for r in reports)
    dropped = sum(r["dropped_events"] for r in reports)
    ends, stored_s, rss = await _drain(env, conn, workers)
    worker_rss = max(worker_rss, rss)
    committed = await _committed(conn, run_ids)
    drained_s = time.monotonic() - started
    drained_wall = time.time()
    cpu_after = probe.sample()
    warmup_s = min(WARMUP_S, duration_s / 3)
    window = [(t, n) for t, _, n in samples if warmup_s <= t <= duration_s]
    in_window = [what for t, what in vacuuming if warmup_s <= t <= duration_s]
    sustained = (
        (window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0]) if len(window) > 1 else 0.0
    )
    # The drain: from the moment the last producer stopped logging until everything was
    # stored — its close (a spooled backlog replayed) and the workers catching up.
    logging_ended = max(r["logged_until"] for r in reports)
    at_end = min(committed, _committed_at(samples, logging_ended))
    after_s = max(drained_wall - logging_ended, 1e-3)
    after = committed - at_end
    cpu = {k: cpu_after[k] - cpu_before[k] for k in cpu_after}
    cpu["postgres_bench_db"] = probe.bench_db_since_first_seen()
    cpu["producer"] = sum(r["cpu_s"] for r in reports)
    millions = committed / 1e6
    return {
        "run_id": run_ids[0],
        "run_ids": run_ids,
        "producers": producers,
        "partitions_used": len({_partition(r, partitions) for r in run_ids}),
        "points_logged": logged,
        "points_committed": committed,
        "logged_points_per_s": round(logged / duration_s),
        "sustained_points_per_s": round(sustained),
        "overall_points_per_s": round(committed / drained_s),
        "drain_s": round(drained_s - duration_s, 2),
        "worker_peak_rss_bytes": worker_rss,
        "producer_peak_rss_bytes": max(producer_rss, *(r["max_rss_bytes"] for r in reports)),
        "producer_dropped_events": dropped,
        "producer_counters": _producer_counters(reports),
        "points_doubled": int(await conn.fetchval(SQL_DOUBLED, run_ids)),
        "after_logging": {
            "points_committed": after,
            "seconds": round(after_s, 2),
            "points_per_s": round(after / after_s),
            "vs_sustained": round(after / after_s / sustained, 3) if sustained else None,
        },
        "waited_for": {
            "producers_closed_s": round(producers_closed_s, 2),
            "producer_close_s_max": round(max(r["close_s"] for r in reports), 2),
            "close_timeout_s": close_timeout_s,
            "topic_end_offsets": {str(p): n for p, n in sorted(ends.items())},
            "stored_offsets_reached_s": round(stored_s, 2),
            "points_known_dropped_not_waited_for": dropped,
        },
        "cpu_s": {k: round(v, 2) for k, v in cpu.items()},
        "cpu_s_per_million_points": {
            k: round(v / millions, 3) if millions else None for k, v in cpu.items()},
        # Once a second over the sustained window: in how many samples autovacuum was
        # working in the bench database, and on what (the COPY baseline never pays it).
        "autovacuum": {
            "samples": len(in_window),
            "active": sum(1 for what in in_window if what),
            "tables": sorted({each for what in in_window for each in what}),
        },
    }


async def _latency(conn: asyncpg.Connection, run_ids: list[str]) -> dict[str, Any]:
    row = await conn.fetchrow(SQL_LATENCY, run_ids)
    if row is None:  # an aggregate always returns a row
        raise RuntimeError("latency query returned nothing")
    p50, p99, p999 = row[0] if row[0] else (0.0, 0.0, 0.0)
    return {
        "log_to_commit_p50_s": round(p50, 4),
        "log_to_commit_p99_s": round(p99, 4),
        "log_to_commit_p999_s": round(p999, 4),
        "log_to_commit_max_s": round(float(row[1] or 0), 4),
        "points": int(row[2]),
    }


def _machine(storage: str | None) -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "storage": f"timescaledb {storage}" if storage else "postgresql (native partitioning)",
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


@contextlib.asynccontextmanager
async def _scratch(settings: Settings, dsn: str, config: BenchConfig,
                   prefix: str) -> AsyncIterator[tuple[_Env, asyncpg.Connection, str | None]]:
    """A scratch database and topic, an env over them, a connection and the storage mode."""
    async with (
        scratch_database(dsn) as bench_dsn,
        scratch_topic(settings.kafka_bootstrap, partitions=config.partitions) as topic,
    ):
        conn = await asyncpg.connect(bench_dsn)
        try:
            with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
                env = _Env(settings=settings, dsn=bench_dsn, topic=topic, home=Path(tmp))
                yield env, conn, await timescaledb_version(bench_dsn)
        finally:
            await conn.close()


def _timed_spec(config: BenchConfig, **more: Any) -> dict[str, Any]:
    return {
        "duration_s": config.log_call_duration_s,
        "calls": config.log_calls,
        "time_calls": True,
        "series": config.series,
        "sample_every": config.sample_every,
        "close_timeout_s": config.close_timeout_s,
        "control": config.control,
        **more,
    }


def _steal_s() -> float:
    """CPU time the hypervisor gave to others while this machine's CPUs wanted it (the
    ``steal`` column of /proc/stat, all CPUs), in seconds; 0 where it is not reported."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _log_call_p50_ns(env: _Env, spec: dict[str, Any]) -> int:
    """The log call's p50 (ns) over ``CONTROL_CALLS`` timed calls of one process alone."""
    proc = _producer(env.producer_env(_run_id(), 0, 1),
                     {**spec, "calls": CONTROL_CALLS, "sample_every": 0})
    return int(_report(proc, float(spec["close_timeout_s"]) + 600)["call_ns"]["p50"])


def _side_by_side(env: _Env, spec: dict[str, Any], *, ranks: int = 1,
                  cpus: list[int] | None = None, control_ns: int = 0, **over: str
                  ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``ranks`` timed logging loops of one run and the no-op loop (its call a busy wait of
    ``control_ns``), started together; the no-op's report carries the machine's steal time
    over the whole scenario."""
    run_id = _run_id()
    steal = _steal_s()
    noop = _producer(env.producer_env(_run_id(), 0, 1),
                     {**spec, "noop": True, "spin_ns": control_ns})
    logs = [_producer(env.producer_env(run_id, r, ranks, **over), spec) for r in range(ranks)]
    _pin([p.pid for p in (noop, *logs)], cpus)
    timeout = float(spec["close_timeout_s"]) + 600
    reports = [_report(p, timeout) for p in logs]
    noop_report = _report(noop, timeout)
    noop_report["machine_steal_s"] = round(_steal_s() - steal, 3)
    return reports, noop_report


async def _log_call_scenarios(env: _Env, conn: asyncpg.Connection, config: BenchConfig,
                              progress: Progress) -> dict[str, Any]:
    result: dict[str, Any] = {}
    spec = _timed_spec(config)
    what = f"{config.log_calls:,} calls" if config.log_calls else f"{config.log_call_duration_s:g}s"
    progress(f"log call p50 alone ({CONTROL_CALLS:,} calls), for the control's length…")
    control_ns = await asyncio.to_thread(_log_call_p50_ns, env, spec)
    result["log_call_control_ns"] = control_ns
    progress(f"log call latency ({what}, Kafka up), a control loop beside it…")
    logs, noop = await asyncio.to_thread(_side_by_side, env, spec, control_ns=control_ns)
    result["log_call"] = _log_section(logs, noop)
    result["log_call_noise_floor"] = result["log_call"]["noop"]
    progress(f"log call latency ({what}, Kafka unreachable), a control loop beside it…")
    with _closed_port() as port:
        logs, noop = await asyncio.to_thread(
            _side_by_side, env, {**spec, "close_timeout_s": 5}, control_ns=control_ns,
            RUNSTREAM_KAFKA=f"127.0.0.1:{port}")
    result["log_call_kafka_down"] = {
        **_log_section(logs, noop),
        "logged_points_per_s": round(sum(r["points"] / r["logging_s"] for r in logs)),
        "last_errors": sorted({str(r["producer_stats"]["last_error"]) for r in logs
                               if r.get("producer_stats")}),
    }
    cpus = _two_cores()
    workers = config.worker_counts[0]
    progress(f"log call latency ({what}, {config.shared_ranks} ranks + {workers} worker(s) "
             f"and a control loop on {len(cpus) if cpus else os.cpu_count()} cores)…")
    with _workers(env, workers) as procs:
        _pin([p.pid for p in procs], cpus)
        await asyncio.sleep(3.0)  # group join and partition assignment
        logs, noop = await asyncio.to_thread(_side_by_side, env, spec,
                                             ranks=config.shared_ranks, cpus=cpus,
                                             control_ns=control_ns)
        _, drain_s, _ = await _drain(env, conn, procs)
    result["log_call_shared"] = {
        **_log_section(logs, noop),
        "ranks": config.shared_ranks,
        "workers": workers,
        "cores": cpus or sorted(os.sched_getaffinity(0)),
        "drain_s": round(drain_s, 2),
    }
    return result


def _capacity_entry(workers: int, e2e: dict[str, Any]) -> dict[str, Any]:
    return {
        "workers": workers,
        "producers": e2e["producers"],
        "partitions_used": e2e["partitions_used"],
        "sustained_points_per_s": e2e["sustained_points_per_s"],
        "points_committed": e2e["points_committed"],
        "cpu_s": e2e["cpu_s"],
        "cpu_s_per_million_points": e2e["cpu_s_per_million_points"],
    }


async def _write_bench(
    settings: Settings, dsn: str, config: BenchConfig, progress: Progress
) -> dict[str, Any]:
    result: dict[str, Any] = {"config": asdict(config)}
    async with _scratch(settings, dsn, config, "runstream-bench-") as (env, conn, storage):
        result["machine"] = _machine(storage)
        result.update(await _log_call_scenarios(env, conn, config, progress))
        # The log-call scenarios stored tens of millions of points just now; autovacuum
        # would work through them in the end-to-end's window, which then measures that race
        # (a full run's e2e came out 0.77-0.93x COPY, one alone 1.03-1.09x). The VACUUM
        # ANALYZE autovacuum would run after them, first — as the read suite settles its
        # loads; the e2e's own rows are still vacuumed as autovacuum sees fit (reported).
        progress("settling: VACUUM ANALYZE of what the log-call scenarios stored…")
        settle_started = time.monotonic()
        await settle(env.dsn)
        result["settle_s"] = round(time.monotonic() - settle_started, 2)
        capacity: list[dict[str, Any]] = []
        for count in config.worker_counts:
            # A worker with no partition that carries data would only idle: at least one
            # producer (one run, one partition) per worker.
            producers = max(config.producers, count)
            with _workers(env, count) as workers:
                await asyncio.sleep(3.0)  # group join and partition assignment
                progress(
                    f"end to end: {producers} producers x {config.duration_s:g}s at "
                    f"full speed, {count} worker(s), {config.partitions} partitions…"
                )
                e2e = await _pipeline(
                    env, conn, workers, producers=producers,
                    duration_s=config.duration_s, rate=0, series=config.series,
                    partitions=config.partitions, close_timeout_s=config.close_timeout_s,
                    progress=progress)
                e2e.update(await _latency(conn, e2e["run_ids"]))
                capacity.append(_capacity_entry(count, e2e))
                if count != config.worker_counts[0]:
                    continue
                result["e2e"] = {"workers": count, **e2e}
                rate, secs = config.latency_rate, config.latency_duration_s
                progress(f"latency at {rate:,.0f} points/s for {secs:g}s…")
                paced = await _pipeline(
                    env, conn, workers, producers=config.producers,
                    duration_s=config.latency_duration_s, rate=config.latency_rate,
                    series=config.series, partitions=config.partitions,
                    close_timeout_s=config.close_timeout_s, progress=progress)
                paced.update(await _latency(conn, paced["run_ids"]))
                result["latency"] = {"rate_points_per_s": config.latency_rate, **paced}
        result["capacity"] = capacity
        e2e = result["e2e"]
        progress(f"COPY baseline: {e2e['points_committed']:,} points, one row each…")
        baseline = await copy_baseline(env.dsn, points=e2e["points_committed"])
    result["copy_baseline"] = {
        "points": baseline.points,
        "points_per_s": round(baseline.points_per_s),
    }
    result["ratios"] = {
        "e2e_sustained_vs_copy": round(e2e["sustained_points_per_s"] / baseline.points_per_s, 3),
        "e2e_sustained_vs_mlflow_log_batch": round(
            e2e["sustained_points_per_s"] / MLFLOW_LOG_BATCH_POINTS_PER_S, 1
        ),
        "mlflow_log_metric_vs_log_call_p50": round(
            MLFLOW_LOG_METRIC_S / (result["log_call"]["p50_us"] / 1e6)
        ),
    }
    return result


async def _overload_bench(
    settings: Settings, dsn: str, config: BenchConfig, progress: Progress
) -> dict[str, Any]:
    """Capacity first (a flat-out e2e), then producers at ``overload_factor`` x it.

    Unless ``overload_shared_cores``, the pipeline (broker, PostgreSQL, workers) runs on
    one half of the CPUs and the producers on the other, as training processes run on
    machines of their own: sharing every core, producers take the CPU the pipeline would
    store with, and cannot log faster than it stores."""
    split = None if config.overload_shared_cores else _split_cpus()
    pipeline_cpus, producer_cpus = split if split else (None, None)
    async with _scratch(settings, dsn, config, "runstream-bench-overload-") as (env, conn, _):
        workers = config.worker_counts[0]
        own = int(await conn.fetchval("SELECT pg_backend_pid()"))
        with _workers(env, workers) as procs, _confined(
                env, own, pipeline_cpus, procs, config.overload_pipeline_cpu) as placement:
            await asyncio.sleep(3.0)  # group join and partition assignment
            progress(f"overload: capacity first, {config.producers} producers flat out for "
                     f"{config.capacity_duration_s:g}s, {workers} worker(s)"
                     + (f"; pipeline on CPUs {pipeline_cpus}, producers on {producer_cpus}"
                        if split else "") + "…")
            cap = await _pipeline(
                env, conn, procs, producers=config.producers,
                duration_s=config.capacity_duration_s, rate=0, series=config.series,
                partitions=config.partitions, close_timeout_s=config.close_timeout_s,
                progress=progress, producer_cpus=producer_cpus)
            capacity = cap["sustained_points_per_s"]
            target = capacity * config.overload_factor
            progress(f"overload: {target:,.0f} points/s ({config.overload_factor:g}x "
                     f"{capacity:,} points/s) for {config.overload_duration_s:g}s…")
            over = await _pipeline(
                env, conn, procs, producers=config.producers,
                duration_s=config.overload_duration_s, rate=target, series=config.series,
                partitions=config.partitions, close_timeout_s=config.close_timeout_s,
                progress=progress, producer_cpus=producer_cpus)
    after = over["after_logging"]
    return {
        "workers": workers,
        "producers": config.producers,
        "placement": {**placement, "producer_cpus": producer_cpus},
        "capacity_points_per_s": capacity,
        "capacity_run": cap,
        "target_points_per_s": round(target),
        # Below ``overload_factor`` when the producers cannot log that fast (flat out).
        "logged_vs_capacity": round(over["logged_points_per_s"] / capacity, 3)
        if capacity else None,
        "points_logged": over["points_logged"],
        "points_committed": over["points_committed"],
        "points_doubled": over["points_doubled"],
        "producer_dropped_events": over["producer_dropped_events"],
        "producer_counters": over["producer_counters"],
        # What was left to store when logging ended, in seconds of capacity: the drain
        # ratio below says something only when this is well above a second.
        "backlog_at_logging_end_s": round(after["points_committed"] / capacity, 2)
        if capacity else None,
        "drain_points_per_s": after["points_per_s"],
        "drain_vs_capacity": round(after["points_per_s"] / capacity, 3) if capacity else None,
        "run": over,
    }


SUITES = ("write", "read", "faults", "jobs", "studio", "overload", "dedup", "maintenance")


async def _read_suite(settings: Settings, dsn: str, config: BenchConfig,
                      progress: Progress) -> dict[str, Any]:
    progress("read path: downsampling, metrics dict, run details under load…")
    async with scratch_database(dsn) as read_dsn:
        with tempfile.TemporaryDirectory(prefix="runstream-bench-read-") as tmp:
            return await run_read_bench(dsn=read_dsn, home=Path(tmp), quick=config.quick_read)


async def _faults_suite(settings: Settings, dsn: str, config: BenchConfig,
                        progress: Progress) -> dict[str, Any]:
    progress("faults: the ledger workload through worker kills and rebalances…")
    return await run_fault_bench(settings, dsn=dsn, progress=progress)


async def _jobs_suite(settings: Settings, dsn: str, config: BenchConfig,
                      progress: Progress) -> dict[str, Any]:
    from ingest.bench.jobs import run_jobs_bench

    return await asyncio.to_thread(run_jobs_bench, settings, dsn=dsn, progress=progress,
                                   jobs=config.jobs, agents=config.agents)


async def _studio_suite(settings: Settings, dsn: str, config: BenchConfig,
                        progress: Progress) -> dict[str, Any]:
    from ingest.bench.studio import run_studio_bench

    async with scratch_database(dsn) as studio_dsn:
        with tempfile.TemporaryDirectory(prefix="runstream-bench-studio-") as tmp:
            quick = config.quick_read
            return await run_studio_bench(
                dsn=studio_dsn, home=Path(tmp), progress=progress,
                points=1_000_000 if quick else 10_000_000,
                dashboard_runs=1000 if quick else 10_000,
                dashboard_names=100 if quick else 1000)


async def _dedup_suite(settings: Settings, dsn: str, config: BenchConfig,
                       progress: Progress) -> dict[str, Any]:
    from ingest.bench.dedup import run_dedup_bench

    return await run_dedup_bench(settings, dsn, progress, keys=config.dedup_keys,
                                 quick=config.quick_read)


async def _maintenance_suite(settings: Settings, dsn: str, config: BenchConfig,
                             progress: Progress) -> dict[str, Any]:
    from ingest.bench.maintenance import run_maintenance_bench

    points = min(config.maintenance_points, 2_000_000) if config.quick_read else (
        config.maintenance_points)
    return await run_maintenance_bench(settings, dsn, progress, old_points=points,
                                       batches=20 if config.quick_read else 100)


Suite = Callable[[Settings, str, BenchConfig, Progress], Awaitable[dict[str, Any]]]
#: Each suite: its runner and where its result goes (None: merged at the top level).
_SUITE_RUNNERS: dict[str, tuple[Suite, str | None]] = {
    "write": (_write_bench, None),
    "read": (_read_suite, "read"),
    "faults": (_faults_suite, "faults"),
    "jobs": (_jobs_suite, "jobs"),
    "studio": (_studio_suite, "studio"),
    "overload": (_overload_bench, "overload"),
    "dedup": (_dedup_suite, "dedup"),
    "maintenance": (_maintenance_suite, "maintenance"),
}


async def _suites(
    settings: Settings, dsn: str, config: BenchConfig, suites: Sequence[str], progress: Progress
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name in SUITES:  # in this order, whatever the order asked
        if name not in suites:
            continue
        runner, key = _SUITE_RUNNERS[name]
        out = await runner(settings, dsn, config, progress)
        if key is None:
            result.update(out)
        else:
            result[key] = out
    return result


def run_bench(
    settings: Settings,
    *,
    dsn: str,
    config: BenchConfig,
    progress: Progress,
    suites: Sequence[str] = ("write", "read"),
) -> dict[str, Any]:
    """Run the named suites (``SUITES``) and return one JSON-able dict."""
    unknown = set(suites) - set(SUITES)
    if unknown:
        raise ValueError(f"unknown bench suites {sorted(unknown)}; choose from {SUITES}")
    return asyncio.run(_suites(settings, dsn, config, suites, progress))


def format_report(result: dict[str, Any]) -> str:
    """The human-readable summary ``runstream bench`` prints without ``--json``."""
    lines: list[str] = []
    if "e2e" in result:
        lines += _write_lines(result)
    if "read" in result:
        lines += _read_lines(result["read"])
    if "jobs" in result:
        lines += _jobs_lines(result["jobs"])
    if "studio" in result:
        lines += _studio_lines(result["studio"])
    if "overload" in result:
        lines += _overload_lines(result["overload"])
    if "dedup" in result:
        lines += _dedup_lines(result["dedup"])
    if "maintenance" in result:
        lines += _maintenance_lines(result["maintenance"])
    if "faults" in result:
        f = result["faults"]
        lines.append(
            "faults (ledger):       "
            + ", ".join(f"{k} {v}" for k, v in f.items() if not isinstance(v, dict | list))
        )
    return "\n".join(lines)


def _jobs_lines(jobs: dict[str, Any]) -> list[str]:
    lat, thr = jobs["latency"], jobs["throughput"]
    return [
        f"submit → Running:      p50 {lat['submit_to_running_p50_s']} s, p95 "
        f"{lat['submit_to_running_p95_s']} s over {lat['jobs']} jobs (idle agent; a 5 s / "
        "10 s polling agent: 2.5 s / 5 s on average)",
        f"queue drain:           {thr['jobs']:,} jobs through {thr['agents']} agents: "
        f"{thr['jobs_per_s']} jobs/s, scheduler overhead {thr['scheduler_overhead_per_job_s']} "
        f"s/job ({thr['not_completed']} not completed)",
    ]


def _studio_lines(studio: dict[str, Any]) -> list[str]:
    series, overlay, dash = studio["series"], studio["overlay"], studio["dashboard"]
    return [
        f"studio series chart:   {series['points']:,} points drawn "
        f"{series['first_request_to_drawn_ms']['p50']} ms after the first request (p50 of "
        f"{series['repeats']}; target {series['target_ms']:g} ms: x{series['vs_target']}), "
        f"{series['navigation_to_drawn_ms']['p50']} ms after navigation; cold "
        f"{series['cold']['first_request_to_drawn_ms']} ms",
        f"studio overlay chart:  {overlay['runs']} runs x {overlay['points_per_run']:,} points "
        f"drawn {overlay['first_request_to_drawn_ms']['p50']} ms after the first request "
        f"(target {overlay['target_ms']:g} ms: x{overlay['vs_target']}), "
        f"{overlay['navigation_to_drawn_ms']['p50']} ms after navigation, refined "
        f"{overlay['first_request_to_refined_ms']['p50']} ms after the first request",
        f"studio dashboard:      {dash['runs']:,} runs, {dash['metric_names']:,} metric names: "
        f"100 rows {dash['navigation_to_100_rows_ms']} ms after navigation, 3 metric columns "
        f"{dash['navigation_to_values_ms']['ms']} ms, sorted by a metric "
        f"{dash['navigation_to_sorted_by_metric_ms']} ms, 100 more rows "
        f"{dash['load_100_more_ms']} ms, names {dash['metric_names_request_ms']} ms",
    ]


def _read_lines(read: dict[str, Any]) -> list[str]:
    down, metrics, details = read["downsample"], read["metrics"], read["run_details"]
    return [
        f"downsample:            {down['points']:,} points → {down['buckets']} buckets: "
        f"p50 {down['p50_ms']} ms, p99 {down['p99_ms']} ms (first {down['first_ms']} ms)",
        f"get_metrics():         {metrics['metrics']} metrics x {metrics['points_per_metric']:,} "
        f"points: HTTP p50 {metrics['http_p50_ms']} ms, SDK p50 "
        f"{metrics['sdk_get_metrics_p50_ms']} ms",
        f"run details:           {details['achieved_per_s']} req/s for {details['duration_s']:g}s: "
        f"p50 {details['p50_ms']} ms, p99 {details['p99_ms']} ms, {details['errors']} errors",
    ]


def _call_line(label: str, c: dict[str, Any]) -> str:
    """One log-call loop: percentiles, then its stalls over 5 ms and their causes."""
    return (
        f"{label:<22} p50 {c['p50_us']:.2f} µs  p99 {c['p99_us']:.2f} µs  "
        f"p99.9 {c['p999_us']:.2f} µs  max {c['max_us'] / 1000:.1f} ms  "
        f"{c['calls_over_5ms']} of {c['calls']:,} calls over 5 ms (ours {c['stalls_ours']}"
        f"{_in_gc(c)}, "
        f"OS {c['stalls_os']} of which blocked {c['stalls_os_blocked']}"
        f"{_paused(c)}; "
        f"per 10M calls: {c['stalls_ours_per_10m_calls']:g} ours)"
    )


def _paused(c: dict[str, Any]) -> str:
    n = c.get("stalls_paused_with_control")
    return f", paused with the control {n}" if n else ""


def _in_gc(c: dict[str, Any]) -> str:
    n = c.get("stalls_ours_in_gc")
    return f" — {n} of them mostly a garbage collection" if n else ""


def _log_call_lines(result: dict[str, Any]) -> list[str]:
    lines = []
    for key, label in (("log_call", "run.log (Kafka up):"),
                       ("log_call_kafka_down", "run.log (Kafka down):"),
                       ("log_call_shared", "run.log (shared):")):
        if key not in result:
            continue
        section = result[key]
        if key == "log_call_shared":
            label = f"run.log ({section['ranks']} ranks):"
        lines.append(_call_line(label, section))
        noop = section["noop"]
        spin = noop.get("spin_ns")
        if noop.get("kind") == "python":
            name = f"  control (python, {noop.get('steps')} steps):"
        else:
            name = f"  control ({spin / 1000:.2f} µs):" if spin else "  no-op beside it:"
        lines.append(_call_line(name, noop))
        slow, versus = section.get("slow_calls"), section.get("vs_control")
        if slow:
            lines.append(
                "  calls of 5 µs-5 ms:  " + ", ".join(f"{k} {v:,}" for k, v in slow.items())
                + f"; on CPU {section['slow_on_cpu_per_in_call_s']} per second in calls "
                f"(control: {noop.get('slow_on_cpu_per_in_call_s')})")
        if versus:
            lines.append(
                f"  per 10 M calls:      {versus['slow_calls_per_10m_calls']:,} slow "
                f"({versus['slow_calls_our_threads_per_10m_calls']:,} while our threads ran "
                f"or held the GIL), the control {versus['control_slow_calls_per_10m_calls']:,}; "
                f"p99.9 {versus['p999_ratio']}x the control's; stalls on the CPU without a "
                f"fault or a sleep {versus['stalls_on_cpu_quiet_per_10m_calls']:g}, the "
                f"control {versus['control_stalls_on_cpu_quiet_per_10m_calls']:g}")
        if section.get("dropped_events"):
            counters = section.get("producer_counters", {})
            lines.append(f"  DROPPED:             {section['dropped_events']:,} points (the "
                         f"sender fell behind; {counters.get('events_spooled', 0):,} events "
                         "spooled)")
        missed = [k for k, ok in section["meets_targets"].items() if not ok]
        if missed:
            lines.append(f"  misses targets:      {', '.join(missed)} (0 stalls of ours per "
                         f"10M calls, p99.9 ≤ {TARGET_P999_US:g} µs, p50 ≤ {TARGET_P50_US:g} µs)")
    return lines


def _cpu_text(per_million: dict[str, float | None]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in per_million.items() if v is not None)


def _maintenance_lines(m: dict[str, Any]) -> list[str]:
    if "skipped" in m:
        return [f"maintenance:           skipped: {m['skipped']}"]
    b, d, a = m["before"], m["during"], m["after"]
    return [
        f"maintenance:           ingest {d['points_per_s']:,} points/s while a compression "
        f"pass ran ({m['compression'].get('seconds', m['compression'].get('error'))} s, "
        f"{m['chunks_compressed']} of {m['chunks']} chunks) vs {b['points_per_s']:,} before: "
        f"{m['during_vs_before']}x; after {a['points_per_s']:,}",
        f"                       slowest batch before/during/after {b['slowest_batch_s']}/"
        f"{d['slowest_batch_s']}/{a['slowest_batch_s']} s; a late point every "
        f"{m['late_every']} events; points stored {m['points_stored']:,} of "
        f"{m['points_expected']:,} ({m['storage']})",
    ] + ([] if not m.get("late") else [
        f"                       batches with late points during the pass: "
        f"{m['late']['during_vs_before']}x, slowest {m['late']['during_slowest_batch_s']} s "
        f"(before {m['late']['before_slowest_batch_s']} s); chunks at the pass: "
        f"{m['chunks_at_pass']['uncompressed']} never compressed, "
        f"{m['chunks_at_pass']['partial']} partial; load average "
        f"{m['load_average']['start'][0]}-{m['load_average']['end_of_pass'][0]}",
    ])


def _dedup_lines(d: dict[str, Any]) -> list[str]:
    lines = [
        f"dedup keys:            {d['loaded']['events_per_s']:,} events/s with {d['keys']:,} "
        f"keys stored vs {d['empty']['events_per_s']:,} on an empty store: {d['ratio']}x "
        f"(target {d['target_ratio']}x; median of {d['rounds']} rounds' ratios)"
    ]
    if "old_layout" in d:
        lines.append(
            f"                       before migration 0011 {d['old_layout']['ratio']}x; right "
            f"after upgrading (old keys still looked up) {d['after_upgrade']['ratio']}x"
        )
    return lines


def _overload_lines(o: dict[str, Any]) -> list[str]:
    run, counters = o["run"], o["producer_counters"]
    waited = run["waited_for"]
    placement = o.get("placement") or {}
    quota = placement.get("pipeline_cpu_quota") or {}
    where = (f"pipeline on CPUs {placement['pipeline_cpus']}, producers on "
             f"{placement['producer_cpus']}" if placement.get("pipeline_cpus")
             else "every process on every CPU")
    held = (f"held to {quota['share']:g} of a CPU (throttled in {quota.get('throttled_periods')}"
            f" of {quota.get('periods')} periods, {quota.get('throttled_s')} s)"
            if quota.get("share") else f"no CPU quota ({quota.get('reason', 'none asked')})")
    return [
        f"overload placement:    {where}; the pipeline {held}",
        f"overload:              capacity {o['capacity_points_per_s']:,} points/s; logged "
        f"{o['points_logged']:,} at {run['logged_points_per_s']:,}/s "
        f"({o['logged_vs_capacity']}x capacity), committed {o['points_committed']:,}, "
        f"dropped {o['producer_dropped_events']:,}, doubled {o['points_doubled']:,}, "
        f"{counters['events_spooled']:,} events spooled",
        f"  drain after logging:  {run['after_logging']['points_committed']:,} points "
        f"({o['backlog_at_logging_end_s']} s of capacity) in "
        f"{run['after_logging']['seconds']} s = {o['drain_points_per_s']:,}/s "
        f"({o['drain_vs_capacity']}x capacity); waited for the producers' close "
        f"(max {waited['producer_close_s_max']} s) and the topic's end offsets "
        f"({waited['stored_offsets_reached_s']} s more)",
    ]


def _autovacuum_text(e2e: dict[str, Any]) -> str:
    seen = e2e.get("autovacuum") or {"active": 0, "samples": 0, "tables": []}
    tables = ", ".join(seen["tables"][:3]) + (", …" if len(seen["tables"]) > 3 else "")
    return f"{seen['active']} of {seen['samples']}" + (f" ({tables})" if tables else "")


def _write_lines(result: dict[str, Any]) -> list[str]:
    e2e, lat = result["e2e"], result["latency"]
    mib = 1 << 20
    lines = [
        f"storage: {result['machine']['storage']}, {result['machine']['cpus']} CPUs",
        *_log_call_lines(result),
        f"end to end:            {e2e['sustained_points_per_s']:,} points/s sustained "
        f"({e2e['points_committed']:,} of {e2e['points_logged']:,} points committed, "
        f"{e2e['producer_dropped_events']:,} dropped), "
        f"log→commit p50 {e2e['log_to_commit_p50_s']:.3f}s p99 {e2e['log_to_commit_p99_s']:.3f}s",
        f"  autovacuum:          working in {_autovacuum_text(e2e)} of the sustained "
        f"window's one-second samples (after {result.get('settle_s', 0)} s of VACUUM ANALYZE "
        f"of the log-call scenarios' rows)",
        f"at {lat['rate_points_per_s']:,.0f} points/s:   log→commit p50 "
        f"{lat['log_to_commit_p50_s']:.3f}s  p99 {lat['log_to_commit_p99_s']:.3f}s",
        *(f"capacity, {c['workers']} worker(s):  {c['sustained_points_per_s']:,} points/s; CPU s "
          f"per M points: {_cpu_text(c['cpu_s_per_million_points'])}"
          for c in result.get("capacity", [])),
        f"memory:                worker peak RSS {e2e['worker_peak_rss_bytes'] / mib:.0f} MiB, "
        f"producer peak RSS {e2e['producer_peak_rss_bytes'] / mib:.0f} MiB",
        f"COPY baseline:         {result['copy_baseline']['points_per_s']:,} points/s "
        f"→ e2e is {result['ratios']['e2e_sustained_vs_copy']:.2f}x it",
        f"vs MLflow:             {result['ratios']['e2e_sustained_vs_mlflow_log_batch']:,.0f}x "
        f"log_batch throughput; log_metric call is "
        f"{result['ratios']['mlflow_log_metric_vs_log_call_p50']:,}x slower than run.log",
    ]
    return lines
