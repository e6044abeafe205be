"""Reliability figures recorded by the tests that prove a guarantee.

A fault test already counts what it checks (the ledger's lost/doubled, the kills it
injected, the slowest ``log`` call, ...). Through the function-scoped ``reliability``
fixture it also *reports* those counts, so RELIABILITY.md is regenerated from a run
instead of copied by hand::

    async def test_something_breaks_and_nothing_is_lost(reliability: Reliability, ...) -> None:
        ...
        result = await check(dsn, workload, job.run_ids())
        reliability.record(
            guarantee="a worker killed mid-transaction redoes its batch",
            faults=f"kill -9 of the worker x{kills}",
            events=result.events, points=result.points_expected,
            lost=result.lost, doubled=result.doubled,
            storage=await storage_backend(dsn),
            notes=f"slowest log call {report['slowest_log_ms']:.1f} ms",
            ledger=result.as_dict(), job=report,   # **extra: anything JSON-able, kept raw
        )
        assert result.ok, result.as_dict()           # the test still checks its own counts

Recording is reporting, not checking: ``record`` never raises and never changes a test's
outcome, and a test must still assert on its own counts. Record as soon as the numbers
are known (before the assertions), so a failing run still shows what it counted; the
row then says the test failed. A test may record several rows (one per guarantee).
``guarantee``, ``faults`` and ``notes`` are the row's wording; ``section`` picks the
RELIABILITY.md table (:data:`LOSS`, :data:`BAD_INPUT` or :data:`SECURITY`, or a new
heading).

Every test that uses the fixture gets the ``reliability`` marker (``pytest -m
reliability`` runs them all; ``make reliability`` does, then renders). Tests with the
marker that did not run to a record (skipped, deselected, failed first) are listed too,
with their outcome, so the rendered table says so instead of keeping stale numbers.

At session end, when ``RUNSTREAM_RELIABILITY_JSON`` names a file, everything goes there
as JSON (with the date, git commit, machine, the stack's storage mode from ``runstream
status --json`` and the run's duration); nothing is written otherwise. The terminal
summary prints one line per record either way, so a CI log shows the figures.
``python -m tests.reliability_render`` turns the JSON into RELIABILITY.md's tables.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

__all__ = ["BAD_INPUT", "ENV", "LOSS", "MARKER", "SECURITY", "Reliability", "reliability",
           "storage_backend"]

ENV = "RUNSTREAM_RELIABILITY_JSON"
MARKER = "reliability"
FORMAT = 1
LOSS = "Nothing lost, nothing doubled"
BAD_INPUT = "Bad input harms nothing else"
SECURITY = "Security"

SQL_STORAGE = "SELECT value FROM runstream_data.settings WHERE key = 'storage_backend'"


@dataclass
class _TestState:
    outcome: str = "not run"
    phase: str | None = None
    reason: str | None = None
    duration_s: float = 0.0
    records: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Session:
    out: Path | None
    started: float = field(default_factory=time.time)
    git: dict[str, Any] = field(default_factory=dict)
    tests: dict[str, _TestState] = field(default_factory=dict)
    deselected: list[str] = field(default_factory=list)


_STATE = pytest.StashKey[_Session]()


class Reliability:
    """What one test reports; see the module docstring."""

    def __init__(self, nodeid: str, state: _TestState) -> None:
        self.nodeid = nodeid
        self._state = state

    def record(self, *, guarantee: str, faults: str, events: int | None = None,
               points: int | None = None, lost: int | None = None, doubled: int | None = None,
               storage: str | None = None, notes: str = "", section: str = LOSS,
               **extra: Any) -> None:
        """One row: the guarantee, the faults injected and what was counted. ``None``
        means "not counted by this test". ``extra`` is kept as raw JSON (``str`` of
        anything JSON cannot hold)."""
        self._state.records.append({
            "guarantee": guarantee, "faults": faults, "events": events, "points": points,
            "lost": lost, "doubled": doubled, "storage": storage, "notes": notes,
            "section": section, "recorded_at": time.time(), "extra": extra,
        })


@pytest.fixture
def reliability(request: pytest.FixtureRequest) -> Reliability:
    """``reliability.record(guarantee=..., faults=..., events=..., points=..., lost=...,
    doubled=..., **extra)``: this test's figures for RELIABILITY.md (tests/reliability.py)."""
    session = request.config.stash[_STATE]
    nodeid = request.node.nodeid
    return Reliability(nodeid, session.tests.setdefault(nodeid, _TestState()))


async def storage_backend(dsn: str) -> str:
    """The storage mode the migrations chose for this database: ``timescaledb`` or
    ``partitioned`` (plain PostgreSQL range partitioning)."""
    conn = await asyncpg.connect(dsn)
    try:
        mode: str | None = await conn.fetchval(SQL_STORAGE)
    finally:
        await conn.close()
    return mode or "partitioned"


# --- hooks -----------------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    out = os.environ.get(ENV)
    # The commit the run starts from (others may commit while it runs).
    git = _git(config.rootpath) if out else {}
    config.stash[_STATE] = _Session(out=Path(out) if out else None, git=git)


@pytest.hookimpl(tryfirst=True)  # before -m selects: the marker must already be there
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    session = config.stash[_STATE]
    for item in items:
        if MARKER in getattr(item, "fixturenames", ()):
            item.add_marker(MARKER)
        if item.get_closest_marker(MARKER) is not None:
            session.tests.setdefault(item.nodeid, _TestState())


def pytest_deselected(items: list[pytest.Item]) -> None:
    if not items:
        return
    session = items[0].config.stash[_STATE]
    for item in items:
        if item.nodeid in session.tests:
            session.tests[item.nodeid].outcome = "deselected"
            session.deselected.append(item.nodeid)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    state = item.config.stash[_STATE].tests.get(item.nodeid)
    if state is None or not isinstance(report, pytest.TestReport):
        return report
    state.duration_s += report.duration
    if report.failed:
        if state.outcome != "failed":
            state.outcome, state.phase = "failed", report.when
    elif report.skipped:
        state.outcome, state.phase = "skipped", report.when
        state.reason = _skip_reason(report)
    elif report.when == "call" and state.outcome not in ("failed", "skipped"):
        state.outcome = "passed"
    return report


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    session = config.stash.get(_STATE, None)
    if session is None or not any(s.records for s in session.tests.values()):
        return
    terminalreporter.section("reliability figures")
    for nodeid, state in session.tests.items():
        for rec in state.records:
            terminalreporter.write_line(
                f"{nodeid} [{state.outcome}]: {rec['faults']}; events {rec['events']}, "
                f"points {rec['points']}, lost {rec['lost']}, doubled {rec['doubled']}")
    if session.out is not None:
        terminalreporter.write_line(f"written to {session.out}")


def pytest_sessionfinish(session: pytest.Session) -> None:
    state = session.config.stash.get(_STATE, None)
    if state is None or state.out is None:
        return
    finished = time.time()
    root = session.config.rootpath
    report = {
        "format": FORMAT,
        "started_at": _iso(state.started),
        "finished_at": _iso(finished),
        "duration_s": round(finished - state.started, 1),
        "pytest_args": list(session.config.invocation_params.args),
        "git": state.git,
        "machine": _machine(),
        "stack": _stack(root) if state.tests else None,
        "tests": [
            {"nodeid": nodeid, "outcome": s.outcome, "phase": s.phase, "reason": s.reason,
             "duration_s": round(s.duration_s, 1), "records": s.records}
            for nodeid, s in state.tests.items()
        ],
    }
    state.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = state.out.with_name(state.out.name + ".tmp")
    tmp.write_text(json.dumps(_jsonable(report), indent=1) + "\n")
    tmp.replace(state.out)


# --- helpers ---------------------------------------------------------------------------


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _jsonable(value: Any) -> Any:
    """JSON-able as is, else as ``str`` (dict keys too): reporting never fails a run."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _run(argv: list[str], cwd: Path) -> str | None:
    try:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False,
                              timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _git(root: Path) -> dict[str, Any]:
    dirty = _run(["git", "status", "--porcelain", "--untracked-files=no"], root)
    return {"commit": _run(["git", "rev-parse", "--short", "HEAD"], root),
            "dirty": bool(dirty) if dirty is not None else None}


def _machine() -> dict[str, Any]:
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        ram = None
    return {"cores": os.cpu_count(), "ram_bytes": ram, "python": platform.python_version(),
            "platform": platform.platform()}


def _stack(root: Path) -> dict[str, Any] | None:
    """``runstream status --json``'s storage facts (no secrets: the DSN is left out)."""
    out = _run([sys.executable, "-m", "ingest.cli", "status", "--json"], root)
    if not out:
        return None
    try:
        status = json.loads(out.splitlines()[-1])
        postgres, kafka = status.get("postgres", {}), status.get("kafka", {})
    except (ValueError, AttributeError):
        return None
    return {"postgres_mode": postgres.get("mode"), "timescaledb": postgres.get("timescaledb"),
            "postgres_ok": postgres.get("ok"), "kafka_ok": kafka.get("ok")}
