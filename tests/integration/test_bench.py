"""`runstream bench --json` runs end to end (tiny durations) and accounts for every point.

Speed is not asserted here (benchmarks measure it), and neither is "no drops": producers
logging as fast as they can outrun the pipeline on some machines, and then the SDK drops
and counts points (a full buffer refuses ``log`` calls, one counted drop each). What is
asserted holds on any machine: the report is complete, and every point logged is either
committed exactly once or counted as dropped.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import StackInfo


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
    assert "dropped_events" in report["log_call_kafka_down"]  # reported, not judged
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
    assert report["copy_baseline"]["points"] == report["e2e"]["points_committed"]
    assert report["ratios"]["e2e_sustained_vs_copy"] > 0
    read = report["read"]
    assert read["downsample"]["buckets"] <= read["downsample"]["max_points"]
    assert 0 < read["downsample"]["p50_ms"] <= read["downsample"]["p99_ms"]
    assert read["metrics"]["http_p50_ms"] > 0
    assert read["run_details"]["requests"] > 0
    assert read["run_details"]["errors"] == 0
