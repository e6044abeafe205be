"""``runstream bench``: measure the write path on this machine, in one run.

Everything runs for real on the local stack, in a database and topic of its own (dropped
afterwards; with TimescaleDB when the stack's database has it):

1. ``log_call`` — one training process calls ``run.log`` in a loop, each call timed; and
   ``log_call_noise_floor``, the same loop calling a no-op: what this machine's scheduler
   and timer alone cost (a VM's stalls show up in its max).
2. ``log_call_kafka_down`` — the same with Kafka unreachable (a closed port): events go
   to the spool, and no call may stall the loop.
3. ``e2e`` — ``producers`` training processes (ranks of one run) log as fast as they can
   for ``duration_s`` into a topic with ``partitions`` partitions; ``workers`` ingest
   workers (``runstream ingest`` processes) persist them. Sustained throughput is the
   committed points per second over the logging window (after a warm-up), sampled from
   the database; worker and producer peak RSS are sampled too. Producers that outrun
   the pipeline drop points (a full buffer refuses ``log`` calls, each counted in
   ``producer_dropped_events``); the drain after logging waits until the workers stored
   everything that reached the topic (their stored offsets reach its end offsets), never
   for points known to be dropped. ``points_doubled`` counts points stored twice.
4. ``latency`` — the same pipeline paced at ``latency_rate`` points/s in total; the
   log-call→committed latency of every point is read from the database (each metric
   chunk row records when its transaction wrote it; each point its log-call time).
5. ``copy_baseline`` — one asyncpg COPY of as many points as ``e2e`` stored, one row per
   point, into an unindexed table (``baseline.py``).

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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from ingest.bench.baseline import copy_baseline
from ingest.bench.faults import run_fault_bench
from ingest.bench.read import run_read_bench
from ingest.bench.scratch import scratch_database, scratch_topic, timescaledb_version
from ingest.settings import Settings
from ingest.stack.kafka import topic_ends

__all__ = ["BenchConfig", "run_bench"]

MLFLOW_LOG_BATCH_POINTS_PER_S = 2_500.0
MLFLOW_LOG_METRIC_S = 0.064
WARMUP_S = 5.0

SQL_COMMITTED = "SELECT coalesce(sum(n), 0) FROM runstream_data.metric_chunks WHERE run_id = $1"
SQL_DOUBLED = """
SELECT (SELECT coalesce(sum(n), 0) FROM runstream_data.metric_chunks WHERE run_id = $1)
     - (SELECT count(*) FROM (
            SELECT DISTINCT c.rank, c.name, s.step
            FROM runstream_data.metric_chunks c, unnest(c.steps) AS s(step)
            WHERE c.run_id = $1) points)
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
    WHERE c.run_id = $1
) points
"""

Progress = Callable[[str], None]


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    duration_s: float = 60.0
    producers: int = 2
    workers: int = 1
    partitions: int = 6
    series: int = 10
    latency_rate: float = 50_000.0
    latency_duration_s: float = 20.0
    log_call_duration_s: float = 5.0
    #: The read suite at a tenth of its sizes (smoke tests, not figures).
    quick_read: bool = False
    #: The jobs suite: submitted jobs the agents drain, and how many agents (1 slot each).
    jobs: int = 1000
    agents: int = 2


@contextlib.contextmanager
def _closed_port() -> Iterator[int]:
    """A local port bound but not listening while in use: connections are refused, and no
    other process can start listening on it meanwhile."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


def _calls(report: dict[str, Any]) -> dict[str, Any]:
    return {
        "calls": report["timed_calls"],
        "calls_over_5ms": report["calls_over_5ms"],
        **{f"{k}_us": round(v / 1000, 3) for k, v in report["call_ns"].items()},
    }


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
            stderr=open(env.home / f"worker-{i}.log", "w"),  # noqa: SIM115 - lives with the proc
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


async def _committed(conn: asyncpg.Connection, run_id: str) -> int:
    return int(await conn.fetchval(SQL_COMMITTED, run_id))


async def _stored_everything(conn: asyncpg.Connection, env: _Env, ends: dict[int, int]) -> bool:
    """Whether the workers' stored offsets reach ``ends`` (the topic's end offsets)."""
    stored = {r["partition"]: r["next_offset"]
              for r in await conn.fetch(SQL_STORED_OFFSETS, env.group, env.topic)}
    return all(stored.get(p, 0) >= end for p, end in ends.items())


async def _pipeline(
    env: _Env,
    conn: asyncpg.Connection,
    workers: Sequence[psutil.Process],
    *,
    producers: int,
    duration_s: float,
    rate: float,
    series: int,
    progress: Progress,
) -> dict[str, Any]:
    run_id = _run_id()
    spec = {"duration_s": duration_s, "rate": rate / producers if rate else 0, "series": series}
    procs = [_producer(env.producer_env(run_id, r, producers), spec) for r in range(producers)]
    ps = [psutil.Process(p.pid) for p in procs]
    started = time.monotonic()
    samples: list[tuple[float, int]] = []
    worker_rss = producer_rss = 0
    while any(p.poll() is None for p in procs):
        await asyncio.sleep(1.0)
        samples.append((time.monotonic() - started, await _committed(conn, run_id)))
        worker_rss = max(worker_rss, _rss(workers))
        producer_rss = max(producer_rss, _rss(ps))
        progress(f"  t={samples[-1][0]:5.1f}s committed {samples[-1][1]:>12,} points")
    reports = [_report(p, 60) for p in procs]
    logged = sum(r["points"] for r in reports)
    dropped = sum(r["dropped_events"] for r in reports)
    # The producers have closed: what they delivered is on the topic (what they dropped
    # never will be). Drained = the workers stored up to the topic's end offsets.
    ends = await topic_ends(env.settings.kafka_bootstrap, env.topic,
                            security=env.settings.kafka_security)
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while not await _stored_everything(conn, env, ends):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the workers did not store {ends} of {env.topic} within "
                               f"{DRAIN_TIMEOUT_S:.0f} s")
        await asyncio.sleep(0.5)
        worker_rss = max(worker_rss, _rss(workers))
    committed = await _committed(conn, run_id)
    drained_s = time.monotonic() - started
    warmup_s = min(WARMUP_S, duration_s / 3)
    window = [(t, n) for t, n in samples if warmup_s <= t <= duration_s]
    sustained = (
        (window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0]) if len(window) > 1 else 0.0
    )
    return {
        "run_id": run_id,
        "points_logged": logged,
        "points_committed": committed,
        "logged_points_per_s": round(logged / duration_s),
        "sustained_points_per_s": round(sustained),
        "overall_points_per_s": round(committed / drained_s),
        "drain_s": round(drained_s - duration_s, 2),
        "worker_peak_rss_bytes": worker_rss,
        "producer_peak_rss_bytes": max(producer_rss, *(r["max_rss_bytes"] for r in reports)),
        "producer_dropped_events": dropped,
        "points_doubled": int(await conn.fetchval(SQL_DOUBLED, run_id)),
    }


async def _latency(conn: asyncpg.Connection, run_id: str) -> dict[str, Any]:
    row = await conn.fetchrow(SQL_LATENCY, run_id)
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


async def _bench(
    settings: Settings, dsn: str, config: BenchConfig, progress: Progress
) -> dict[str, Any]:
    async with (
        scratch_database(dsn) as bench_dsn,
        scratch_topic(settings.kafka_bootstrap, partitions=config.partitions) as topic,
    ):
        return await _write_bench(settings, bench_dsn, topic, config, progress)


async def _write_bench(
    settings: Settings, bench_dsn: str, topic: str, config: BenchConfig, progress: Progress
) -> dict[str, Any]:
    result: dict[str, Any] = {"config": asdict(config)}
    conn = await asyncpg.connect(bench_dsn)
    mode = await timescaledb_version(bench_dsn)
    result["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "storage": f"timescaledb {mode}" if mode else "postgresql (native partitioning)",
    }
    with tempfile.TemporaryDirectory(prefix="runstream-bench-") as tmp:
        env = _Env(settings=settings, dsn=bench_dsn, topic=topic, home=Path(tmp))
        progress(f"log call latency ({config.log_call_duration_s:g}s, Kafka up)…")
        spec = {
            "duration_s": config.log_call_duration_s,
            "time_calls": True,
            "series": config.series,
        }
        up = _report(_producer(env.producer_env(_run_id(), 0, 1), spec), 300)
        result["log_call"] = _calls(up)
        progress("the same loop calling a no-op instead (this machine's noise floor)…")
        floor = _report(_producer(env.producer_env(_run_id(), 0, 1), {**spec, "noop": True}), 300)
        result["log_call_noise_floor"] = _calls(floor)
        progress(f"log call latency ({config.log_call_duration_s:g}s, Kafka unreachable)…")
        with _closed_port() as port:
            down_env = env.producer_env(_run_id(), 0, 1, RUNSTREAM_KAFKA=f"127.0.0.1:{port}")
            down = _report(_producer(down_env, {**spec, "close_timeout_s": 5}), 300)
        result["log_call_kafka_down"] = {
            **_calls(down),
            "dropped_events": down["dropped_events"],
        }
        with _workers(env, config.workers) as workers:
            await asyncio.sleep(3.0)  # group join and partition assignment
            progress(
                f"end to end: {config.producers} producers x {config.duration_s:g}s at full "
                f"speed, {config.workers} worker(s), {config.partitions} partitions…"
            )
            e2e = await _pipeline(
                env,
                conn,
                workers,
                producers=config.producers,
                duration_s=config.duration_s,
                rate=0,
                series=config.series,
                progress=progress,
            )
            e2e.update(await _latency(conn, e2e["run_id"]))
            result["e2e"] = e2e
            rate, secs = config.latency_rate, config.latency_duration_s
            progress(f"latency at {rate:,.0f} points/s for {secs:g}s…")
            paced = await _pipeline(
                env,
                conn,
                workers,
                producers=config.producers,
                duration_s=config.latency_duration_s,
                rate=config.latency_rate,
                series=config.series,
                progress=progress,
            )
            paced.update(await _latency(conn, paced["run_id"]))
            result["latency"] = {"rate_points_per_s": config.latency_rate, **paced}
    await conn.close()
    progress(f"COPY baseline: {e2e['points_committed']:,} points, one row each…")
    baseline = await copy_baseline(bench_dsn, points=e2e["points_committed"])
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


SUITES = ("write", "read", "faults", "jobs", "studio")


async def _suites(
    settings: Settings, dsn: str, config: BenchConfig, suites: Sequence[str], progress: Progress
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    if "write" in suites:
        result.update(await _bench(settings, dsn, config, progress))
    if "read" in suites:
        progress("read path: downsampling, metrics dict, run details under load…")
        async with scratch_database(dsn) as read_dsn:
            with tempfile.TemporaryDirectory(prefix="runstream-bench-read-") as tmp:
                result["read"] = await run_read_bench(
                    dsn=read_dsn, home=Path(tmp), quick=config.quick_read
                )
    if "faults" in suites:
        progress("faults: the ledger workload through worker kills and rebalances…")
        result["faults"] = await run_fault_bench(settings, dsn=dsn, progress=progress)
    if "jobs" in suites:
        from ingest.bench.jobs import run_jobs_bench

        result["jobs"] = await asyncio.to_thread(
            run_jobs_bench, settings, dsn=dsn, progress=progress, jobs=config.jobs,
            agents=config.agents)
    if "studio" in suites:
        from ingest.bench.studio import run_studio_bench

        async with scratch_database(dsn) as studio_dsn:
            with tempfile.TemporaryDirectory(prefix="runstream-bench-studio-") as tmp:
                quick = config.quick_read
                result["studio"] = await run_studio_bench(
                    dsn=studio_dsn, home=Path(tmp), progress=progress,
                    points=1_000_000 if quick else 10_000_000,
                    dashboard_runs=1000 if quick else 10_000,
                    dashboard_names=100 if quick else 1000)
    return result


def run_bench(
    settings: Settings,
    *,
    dsn: str,
    config: BenchConfig,
    progress: Progress,
    suites: Sequence[str] = ("write", "read"),
) -> dict[str, Any]:
    """Run the named suites (``write``, ``read``, ``faults``) and return one JSON-able dict."""
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


def _write_lines(result: dict[str, Any]) -> list[str]:
    call, down, e2e, lat = (
        result["log_call"],
        result["log_call_kafka_down"],
        result["e2e"],
        result["latency"],
    )
    floor = result["log_call_noise_floor"]
    mib = 1 << 20
    lines = [
        f"storage: {result['machine']['storage']}, {result['machine']['cpus']} CPUs",
        f"run.log (Kafka up):    p50 {call['p50_us']:.2f} µs  p99 {call['p99_us']:.2f} µs  "
        f"max {call['max_us'] / 1000:.1f} ms  "
        f"{call['calls_over_5ms']} of {call['calls']:,} calls over 5 ms",
        f"no-op in that loop:    p50 {floor['p50_us']:.2f} µs  p99 {floor['p99_us']:.2f} µs  "
        f"max {floor['max_us'] / 1000:.1f} ms  {floor['calls_over_5ms']} over 5 ms (machine noise)",
        f"run.log (Kafka down):  p50 {down['p50_us']:.2f} µs  p99 {down['p99_us']:.2f} µs  "
        f"max {down['max_us'] / 1000:.1f} ms  {down['calls_over_5ms']} over 5 ms, "
        f"dropped {down['dropped_events']}",
        f"end to end:            {e2e['sustained_points_per_s']:,} points/s sustained "
        f"({e2e['points_committed']:,} of {e2e['points_logged']:,} points committed), "
        f"log→commit p50 {e2e['log_to_commit_p50_s']:.3f}s p99 {e2e['log_to_commit_p99_s']:.3f}s",
        f"at {lat['rate_points_per_s']:,.0f} points/s:   log→commit p50 "
        f"{lat['log_to_commit_p50_s']:.3f}s  p99 {lat['log_to_commit_p99_s']:.3f}s",
        f"memory:                worker peak RSS {e2e['worker_peak_rss_bytes'] / mib:.0f} MiB, "
        f"producer peak RSS {e2e['producer_peak_rss_bytes'] / mib:.0f} MiB",
        f"COPY baseline:         {result['copy_baseline']['points_per_s']:,} points/s "
        f"→ e2e is {result['ratios']['e2e_sustained_vs_copy']:.2f}x it",
        f"vs MLflow:             {result['ratios']['e2e_sustained_vs_mlflow_log_batch']:,.0f}x "
        f"log_batch throughput; log_metric call is "
        f"{result['ratios']['mlflow_log_metric_vs_log_call_p50']:,}x slower than run.log",
    ]
    return lines
