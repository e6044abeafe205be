"""`runstream bench --json` runs end to end (tiny durations) and accounts for every point.

Speed is not asserted here (benchmarks measure it), and neither is "no drops": producers
logging as fast as they can outrun the pipeline on some machines, and then the SDK drops
and counts points (a full buffer refuses ``log`` calls, one counted drop each). What is
asserted holds on any machine: the report is complete, and every point logged is either
committed exactly once or counted as dropped.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.helpers import StackInfo

COMPONENTS = {"producer", "broker", "worker", "postgres", "postgres_bench_db"}


def run_bench(*args: str) -> dict[str, Any]:
    """``runstream bench ARGS`` as a user runs it; its JSON report (it must exit 0)."""
    result = subprocess.run(
        [sys.executable, "-m", "ingest.cli", "bench", *args],
        capture_output=True, text=True, check=False, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def assert_stalls_attributed(loop: dict[str, Any]) -> None:
    """Every call over 5 ms is in exactly one class; the listed ones are the worst."""
    classes = (loop["stalls_ours"], loop["stalls_os"], loop["stalls_unattributed"])
    assert all(isinstance(n, int) and n >= 0 for n in classes), loop
    assert sum(classes) == loop["calls_over_5ms"], loop
    assert 0 <= loop["stalls_os_blocked"] <= loop["stalls_os"]
    assert len(loop["stalls"]) <= loop["calls_over_5ms"]
    for stall in loop["stalls"]:
        # Over 5 ms in nanoseconds; shown in ms to 3 decimals, so 5,000,400 ns reads 5.0.
        assert stall["call_ms"] >= 5, stall
        assert stall["cause"] in ("ours", "os", "unattributed"), stall
    for key in ("calls_over_5ms", "stalls_ours", "stalls_os"):
        assert loop[f"{key}_per_10m_calls"] >= 0


def assert_drain_reported(run: dict[str, Any]) -> None:
    """What the bench waited for is reported, and never points known to be dropped."""
    waited = run["waited_for"]
    assert waited["points_known_dropped_not_waited_for"] == run["producer_dropped_events"]
    assert waited["producer_close_s_max"] >= 0
    assert sum(waited["topic_end_offsets"].values()) > 0
    after = run["after_logging"]
    assert 0 <= after["points_committed"] <= run["points_committed"]
    assert after["seconds"] > 0
    assert set(run["producer_counters"]) >= {"events_sent", "events_spooled", "events_dropped"}


def test_bench_json_reports_every_figure_and_loses_nothing(stack: StackInfo) -> None:
    report = run_bench(
        "all", "--json", "--quick-read", "--duration-s", "6", "--latency-duration-s", "3",
        "--log-call-duration-s", "1", "--latency-rate", "5000", "--workers", "1,2",
    )  # fmt: skip
    for section in ("log_call", "log_call_noise_floor", "log_call_kafka_down", "log_call_shared"):
        assert report[section]["calls"] > 0
        assert (
            0 < report[section]["p50_us"] <= report[section]["p99_us"] <= report[section]["max_us"]
        )
    for section in ("log_call", "log_call_kafka_down", "log_call_shared"):
        for loop in (report[section], report[section]["noop"]):
            assert_stalls_attributed(loop)
        assert set(report[section]["meets_targets"]) == {"stalls_ours", "p999", "p50"}
    assert report["log_call_noise_floor"] == report["log_call"]["noop"]
    # The control beside each scenario: a call as long as the log call's p50, no SDK.
    assert report["log_call_control_ns"] > 0
    for section in ("log_call", "log_call_kafka_down", "log_call_shared"):
        control, versus = report[section]["noop"], report[section]["vs_control"]
        assert 0 <= control["spin_ns"] <= report["log_call_control_ns"]
        # No thread of ours in it: a stall of its own classed ours can only be one its
        # main thread was charged for, on the CPU (a pause of the machine, not steal).
        assert all(st["main_cpu_in_call_ms"] >= st["off_cpu_ms"]
                   for st in control["stalls"] if st["cause"] == "ours"), control["stalls"]
        loop = report[section]
        assert 0 <= loop["stalls_paused_with_control"] <= loop["stalls_os"]
        for st in loop["stalls"] + control["stalls"]:
            assert st["start_ns"] > 0
            assert min(st["main_page_faults"], st["main_voluntary_switches"],
                       st["main_involuntary_switches"]) >= 0
        assert versus["slow_calls_per_10m_calls"] >= versus[
            "slow_calls_our_threads_per_10m_calls"] >= 0
        assert versus["control_slow_calls_per_10m_calls"] >= 0
        assert min(versus["stalls_on_cpu_quiet_per_10m_calls"],
                   versus["control_stalls_on_cpu_quiet_per_10m_calls"]) >= 0
    for section in ("log_call", "log_call_kafka_down", "log_call_shared"):
        assert "dropped_events" in report[section]  # reported, not judged
        assert set(report[section]["producer_counters"]) >= {"events_spooled", "events_dropped"}
    shared = report["log_call_shared"]
    assert (shared["ranks"], shared["workers"]) == (3, 1)
    assert len(shared["cores"]) >= 1
    for section in ("e2e", "latency"):
        run = report[section]
        assert run["points_logged"] > 0
        assert run["points_committed"] > 0
        # With the broker up, a drop is a refused log call: one point each.
        assert run["points_committed"] + run["producer_dropped_events"] == run["points_logged"]
        assert run["points_doubled"] == 0
        assert run["points"] == run["points_committed"]  # every point has a commit time
        assert 0 <= run["log_to_commit_p50_s"] <= run["log_to_commit_p99_s"]
        assert run["worker_peak_rss_bytes"] > 0
        assert_drain_reported(run)
        assert set(run["cpu_s_per_million_points"]) == COMPONENTS
        assert all(v >= 0 for v in run["cpu_s"].values())
    assert [c["workers"] for c in report["capacity"]] == [1, 2]
    assert report["e2e"]["workers"] == 1
    for entry in report["capacity"]:
        assert entry["points_committed"] > 0
        assert entry["sustained_points_per_s"] >= 0
        assert set(entry["cpu_s_per_million_points"]) == COMPONENTS
    assert report["copy_baseline"]["points"] == report["e2e"]["points_committed"]
    assert report["ratios"]["e2e_sustained_vs_copy"] > 0
    # The e2e starts settled, and says what autovacuum did in its sustained window.
    assert report["settle_s"] >= 0
    seen = report["e2e"]["autovacuum"]
    assert 0 <= seen["active"] <= seen["samples"]
    assert bool(seen["tables"]) == (seen["active"] > 0)
    read = report["read"]
    assert read["downsample"]["buckets"] <= read["downsample"]["max_points"]
    assert 0 < read["downsample"]["p50_ms"] <= read["downsample"]["p99_ms"]
    assert read["metrics"]["http_p50_ms"] > 0
    assert read["run_details"]["requests"] > 0
    assert read["run_details"]["errors"] == 0
    # Studio scale (issue 12): reported against their targets, not judged here.
    runs_list = read["runs_list"]
    assert runs_list["requests"] >= 10
    assert 0 < runs_list["rows_returned"] <= runs_list["requests"] * runs_list["runs_per_page"]
    assert runs_list["metric_columns"] == 20
    assert 0 < runs_list["p50_ms"] <= runs_list["p99_ms"] <= runs_list["max_ms"]
    assert runs_list["vs_target"] == round(runs_list["p99_ms"] / runs_list["target_ms"], 3)
    assert set(runs_list["by_listing_p50_ms"]) == {
        "newest_first", "by_metric_desc", "by_metric_asc", "metric_filter"}
    many = read["many_series"]
    assert 0 < many["buckets_per_run"] <= many["max_points"]
    assert many["first_ms"] > 0
    assert 0 < many["p50_ms"] <= many["p99_ms"]
    assert {"target_ms", "vs_target", "first_vs_target"} <= set(many)
    first_views = read["first_view"]
    assert len(first_views) == 2
    for view in first_views.values():
        assert view["first_ms"] > 0
        assert 0 < view["p50_ms"] <= view["p99_ms"]
    assert "first_vs_target" in first_views["1000000_points"]


def test_bench_overload_reports_the_backlog_and_loses_nothing(stack: StackInfo) -> None:
    overload = run_bench("overload", "--json", "--capacity-duration-s", "4",
                         "--overload-duration-s", "4")["overload"]
    assert overload["capacity_points_per_s"] > 0
    assert overload["target_points_per_s"] > 0
    for run in (overload["run"], overload["capacity_run"]):
        assert run["points_committed"] + run["producer_dropped_events"] == run["points_logged"]
        assert run["points_doubled"] == 0
        assert_drain_reported(run)
    assert overload["points_logged"] == overload["run"]["points_logged"] > 0
    assert overload["drain_points_per_s"] >= 0
    assert overload["backlog_at_logging_end_s"] >= 0
    # The pipeline held to half a CPU where cgroups are writable (root), or says why not;
    # either way it is back in its own cgroup afterwards (no bench cgroup left).
    quota = overload["placement"]["pipeline_cpu_quota"]
    if quota["share"] is None:
        assert quota["reason"]
    else:
        assert quota["share"] == 0.5
        assert quota["processes"] >= 3  # the broker, the postmaster and the worker at least
        assert 0 <= quota["throttled_periods"] <= quota["periods"]
    assert not list(Path("/sys/fs/cgroup").glob("*/runstream-bench-*"))
    assert not list(Path("/sys/fs/cgroup").glob("runstream-bench-*"))


def test_bench_dedup_compares_a_loaded_store_with_an_empty_one_and_cleans_up(
    stack: StackInfo,
) -> None:
    dedup = run_bench("dedup", "--json", "--quick-read", "--dedup-keys", "150000")["dedup"]
    assert dedup["keys"] == 150_000
    load = dedup["load"]
    assert load["days"] >= 14
    assert load["keys_per_day"] * load["days"] <= 150_000
    assert load["keys_per_day"] * (load["days"] + 1) > 150_000
    for figure in (dedup["empty"], dedup["loaded"], dedup["old_layout"]["empty"],
                   dedup["old_layout"]["loaded"], dedup["after_upgrade"]["loaded"]):
        assert figure["events_per_s"] > 0
        assert len(figure["rounds_events_per_s"]) == dedup["rounds"]
        assert figure["events_per_s"] in figure["rounds_events_per_s"]  # the median round
    for ratio in (dedup["ratio"], dedup["old_layout"]["ratio"], dedup["after_upgrade"]["ratio"]):
        assert ratio > 0
    assert dedup["meets_target"] == (dedup["ratio"] >= dedup["target_ratio"])

    async def scratch_left() -> list[str]:
        conn = await asyncpg.connect(stack.db_dsn)
        try:
            rows = await conn.fetch(
                "SELECT datname FROM pg_database WHERE datname LIKE 'runstream_bench_dedup%'")
        finally:
            await conn.close()
        return [r["datname"] for r in rows]

    assert asyncio.run(scratch_left()) == []


def test_bench_maintenance_measures_ingest_during_a_compression_pass(stack: StackInfo) -> None:
    m = run_bench("maintenance", "--json", "--quick-read",
                  "--maintenance-points", "300000")["maintenance"]
    if "skipped" in m:
        assert m == {"skipped": "TimescaleDB is not available on this PostgreSQL"}
        pytest.skip("TimescaleDB is not available on this PostgreSQL (the suite said so)")
    assert m["storage"].startswith("timescaledb ")
    assert m["old_points"] == 300_000
    assert "error" not in m["compression"], m["compression"]
    assert 1 <= m["chunks_compressed"] <= m["chunks"]
    # Every chunk compressed by the batch that created it (migration 0017): the pass
    # found none to compress for the first time, only partial ones to recompress.
    assert m["compress_at_birth"] is True
    assert m["chunks_at_pass"]["uncompressed"] == 0
    assert m["chunks_after_pass"]["uncompressed"] == 0
    for phase in ("before", "during", "after"):
        assert m[phase]["batches"] >= 20
        assert m[phase]["points_per_s"] > 0
        assert m[phase]["late"]["batches"] >= 10
        assert m[phase]["current"]["batches"] >= 10
    assert m["during_vs_before"] > 0
    assert m["late"]["during_vs_before"] > 0
    assert m["late"]["during_slowest_batch_s"] > 0
    assert len(m["load_average"]["start"]) == 3
    assert m["points_stored"] == m["points_expected"]
