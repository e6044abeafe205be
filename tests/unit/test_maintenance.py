"""TimescaleDB maintenance decisions (ingest/db/maintenance.py), the status lines that show
them, and the alert rules over the API's gauges — no database."""

from __future__ import annotations

import math
import re
from dataclasses import replace
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]
from prometheus_client import CollectorRegistry

from ingest.api.maintenance import MaintenanceHealth
from ingest.cli.main import _maintenance_lines, _storage_line
from ingest.db.maintenance import MaintenanceJob, Storage

ROOT = Path(__file__).resolve().parents[2]
HOUR = 3600.0

HEALTHY = MaintenanceJob(
    job_id=1000, kind="compression", target="runstream_data.metric_chunks",
    schedule_s=12 * HOUR, scheduled=True, scheduler_last_status="Success",
    scheduler_success_age_s=HOUR, scheduler_failures=0, overdue_s=-11 * HOUR, error=None,
    runstream_success_age_s=None, runstream_attempt_age_s=None, runstream_failures=0,
    runstream_runs=0, runstream_error=None)
FAILING = replace(HEALTHY, scheduler_last_status="Failed", scheduler_success_age_s=None,
                  scheduler_failures=5,
                  error="24000 cannot drop portal \"\" while it is being set up")


def test_a_job_the_scheduler_runs_is_left_to_it() -> None:
    assert HEALTHY.state() == "ok"
    assert not HEALTHY.scheduler_fails()
    assert HEALTHY.last_success_age_s == HOUR
    assert Storage("2.22.1", "hypertable", "timescaledb", (HEALTHY,)).degraded() == []


def test_a_job_failing_in_the_scheduler_is_run_by_runstream_on_its_schedule() -> None:
    once = replace(FAILING, scheduler_failures=1)
    assert once.state() == "failing"                  # reported at the first failure
    assert not once.scheduler_fails(min_failures=2)   # run by Runstream from the second
    assert FAILING.scheduler_fails()
    assert FAILING.due()
    assert FAILING.state() == "failing"
    assert FAILING.last_success_age_s is None
    ran = replace(FAILING, runstream_success_age_s=60.0, runstream_attempt_age_s=60.0,
                  runstream_runs=1)
    assert ran.state() == "runstream"
    assert not ran.due()
    assert ran.last_success_age_s == 60.0
    assert replace(ran, runstream_attempt_age_s=12 * HOUR).due()
    stale = replace(ran, runstream_success_age_s=3 * 12 * HOUR)
    assert stale.state() == "failing"
    broken = replace(ran, runstream_failures=1, runstream_attempt_age_s=601.0,
                     runstream_error="55P03 lock timeout")
    assert broken.state() == "failing"
    assert broken.due()
    storage = Storage("2.22.1", "hypertable", "timescaledb", (ran, broken))
    assert storage.degraded() == [
        "compression: the TimescaleDB scheduler fails it; Runstream runs it",
        "compression: failing"]


def test_a_job_the_scheduler_never_starts_is_overdue() -> None:
    late = replace(HEALTHY, overdue_s=13 * HOUR, scheduler_success_age_s=25 * HOUR)
    assert late.scheduler_overdue
    assert late.scheduler_fails()
    assert not replace(late, scheduled=False).scheduler_fails()   # paused by an operator


def test_status_says_what_the_tables_are_and_how_to_convert() -> None:
    plain = Storage("2.22.1", "partitions", "partitioned").as_json()
    assert plain["mode"] == "postgresql"
    assert "installed but NOT used" in _storage_line(plain)
    (note,) = _maintenance_lines(plain)
    assert "runstream migrate --to-timescaledb" in note
    assert "nothing was switched" in note
    assert Storage(None, "partitions", "partitioned").mismatch is None
    ts = Storage("2.22.1", "hypertable", "timescaledb", (FAILING,)).as_json()
    assert ts["mode"] == "timescaledb"
    (line,) = _maintenance_lines(ts)
    assert line.startswith("compression (job 1000): FAILING: 5 scheduler failures (24000")
    assert line.endswith("last success never")


def test_the_gauges_per_kind() -> None:
    registry = CollectorRegistry()
    health = MaintenanceHealth(reads=None, registry=registry)  # type: ignore[arg-type]
    ran = replace(FAILING, runstream_success_age_s=60.0, runstream_attempt_age_s=60.0)
    refresh = replace(HEALTHY, job_id=1001, kind="aggregate_refresh", schedule_s=900.0)
    health._set(Storage("2.22.1", "hypertable", "timescaledb", (ran, refresh)))
    value = registry.get_sample_value
    assert value("runstream_maintenance_last_success_age_seconds", {"kind": "compression"}) == 60
    assert value("runstream_maintenance_failures",
                 {"kind": "compression", "runner": "scheduler"}) == 5
    assert value("runstream_maintenance_run_by_runstream", {"kind": "compression"}) == 1
    assert value("runstream_maintenance_run_by_runstream", {"kind": "aggregate_refresh"}) == 0
    assert value("runstream_maintenance_schedule_seconds", {"kind": "aggregate_refresh"}) == 900
    health._set(Storage("2.22.1", "hypertable", "timescaledb", (FAILING,)))
    assert value("runstream_maintenance_last_success_age_seconds",
                 {"kind": "compression"}) == math.inf
    assert value("runstream_maintenance_schedule_seconds", {"kind": "aggregate_refresh"}) is None


@pytest.fixture
def exported() -> set[str]:
    registry = CollectorRegistry()
    MaintenanceHealth(reads=None, registry=registry)  # type: ignore[arg-type]
    return {m.name for m in registry.collect()}


def test_the_alert_rules_use_only_metrics_the_api_exports(exported: set[str]) -> None:
    rules = yaml.safe_load((ROOT / "deploy/prometheus/runstream-alerts.yml").read_text())
    alerts = [r for g in rules["groups"] for r in g["rules"]]
    assert {a["alert"] for a in alerts} == {"RunstreamMaintenanceNotRunning",
                                            "RunstreamTimescaleSchedulerFailing",
                                            "RunstreamMaintenanceRunsFailing"}
    for alert in alerts:
        used = set(re.findall(r"runstream_[a-z_]+", alert["expr"]))
        assert used, alert["alert"]
        assert used <= exported, (alert["alert"], used - exported)
        assert alert["labels"]["severity"] in ("warning", "critical")
