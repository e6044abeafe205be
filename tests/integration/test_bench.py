"""`runstream bench --json` runs end to end (tiny durations) and accounts for every point.

Speed is not asserted here (benchmarks measure it); what is asserted is that the report
is complete and that every point the producers logged was committed exactly once.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import StackInfo


def test_bench_json_reports_every_figure_and_loses_nothing(stack: StackInfo) -> None:
    result = subprocess.run(
        [
            sys.executable, "-m", "ingest.cli", "bench", "all", "--json", "--quick-read",
            "--duration-s", "6", "--latency-duration-s", "3", "--log-call-duration-s", "1",
            "--latency-rate", "5000",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    for section in ("log_call", "log_call_noise_floor", "log_call_kafka_down"):
        assert report[section]["calls"] > 0
        assert (
            0 < report[section]["p50_us"] <= report[section]["p99_us"] <= report[section]["max_us"]
        )
    assert report["log_call_kafka_down"]["dropped_events"] == 0
    for section in ("e2e", "latency"):
        run = report[section]
        assert run["points_logged"] > 0
        assert run["points_committed"] == run["points_logged"]
        assert run["points"] == run["points_logged"]  # every point has a commit time
        assert 0 <= run["log_to_commit_p50_s"] <= run["log_to_commit_p99_s"]
        assert run["worker_peak_rss_bytes"] > 0
    assert report["copy_baseline"]["points"] == report["e2e"]["points_committed"]
    assert report["ratios"]["e2e_sustained_vs_copy"] > 0
    read = report["read"]
    assert read["downsample"]["buckets"] <= read["downsample"]["max_points"]
    assert 0 < read["downsample"]["p50_ms"] <= read["downsample"]["p99_ms"]
    assert read["metrics"]["http_p50_ms"] > 0
    assert read["run_details"]["requests"] > 0
    assert read["run_details"]["errors"] == 0
