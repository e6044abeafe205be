"""The RELIABILITY.md renderer: figures from a recorded run's JSON, only between the
markers, and tests that did not run say so instead of keeping their old numbers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.reliability_render import BEGIN, END, main, merge, previous_wording, render, update

KILL = "tests/integration/test_e2e_faults.py::test_worker_killed"
NET = "tests/integration/test_faults_network.py::test_cut"
POISON = "tests/integration/test_ingest_worker.py::test_poison"
REPLAY = "tests/integration/test_ingest_worker.py::test_replay[timescaledb]"
SLOW = "tests/integration/test_faults_slow_db.py::test_slow"

DOC = f"""# Reliability

Hand-written intro | with a pipe.

{BEGIN}
stale generated text
{END}

## The training loop never waits

Hand-written outro.
"""


def record(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"guarantee": "g", "faults": "f", "events": None, "points": None,
                            "lost": None, "doubled": None, "storage": None, "notes": "",
                            "section": "Nothing lost, nothing doubled", "extra": {}}
    return {**base, **fields}


@pytest.fixture
def run() -> dict[str, Any]:
    """A recorded run as tests/reliability.py writes it."""
    return {
        "format": 1,
        "started_at": "2026-11-28T14:02:05+00:00",
        "finished_at": "2026-11-28T14:09:17+00:00",
        "duration_s": 432.0,
        "git": {"commit": "161ecc1", "dirty": False},
        "machine": {"cores": 2, "ram_bytes": 8 * 2**30, "python": "3.11.9"},
        "stack": {"postgres_mode": "timescaledb", "timescaledb": "2.22.1"},
        "tests": [
            {"nodeid": KILL, "outcome": "passed", "phase": None, "reason": None,
             "duration_s": 52.4, "records": [record(
                 guarantee="a worker killed mid-transaction redoes its batch",
                 faults="kill -9 of the worker x3", events=1234, points=198600, lost=0,
                 doubled=0, storage="partitioned", notes="slowest log call 3.1 ms",
                 extra={"ledger": {"lost": 0}})]},
            {"nodeid": POISON, "outcome": "passed", "phase": None, "reason": None,
             "duration_s": 4.0, "records": [record(
                 guarantee="poison goes to the DLQ", faults="6 poison messages", events=12,
                 points=6, lost=0, doubled=0, section="Bad input harms nothing else",
                 notes="6 dead-lettered")]},
            {"nodeid": NET, "outcome": "skipped", "phase": "setup",
             "reason": "iproute2 missing", "duration_s": 0.0, "records": []},
            {"nodeid": SLOW, "outcome": "failed", "phase": "call", "reason": None,
             "duration_s": 30.0, "records": [record(
                 guarantee="a slow database pauses consumption", faults="locks for 10 s",
                 events=430, points=1_280_000, lost=7, doubled=0)]},
            {"nodeid": REPLAY, "outcome": "deselected", "phase": None, "reason": None,
             "duration_s": 0.0, "records": []},
        ],
    }


def table_row(text: str, test: str) -> str:
    (line,) = [x for x in text.splitlines() if f"| `{test}` |" in x]
    return line


def test_rows_carry_the_recorded_wording_and_figures(run: dict[str, Any]) -> None:
    text = render(run)
    assert table_row(text, "test_e2e_faults.py::test_worker_killed") == (
        "| a worker killed mid-transaction redoes its batch "
        "| `test_e2e_faults.py::test_worker_killed` | kill -9 of the worker x3 "
        "| 1,234 events / 198,600 points | 0 | 0 | partitioned | 52 s "
        "| slowest log call 3.1 ms |")


def test_sections_are_tables_in_a_fixed_order_then_of_first_appearance(
    run: dict[str, Any]
) -> None:
    run["tests"].reverse()
    run["tests"][0]["records"] = [record(section="Zeta"), record(section="Bad input harms "
                                                                          "nothing else")]
    text = render(run)
    loss, bad = text.index("### Nothing lost, nothing doubled"), text.index(
        "### Bad input harms nothing else")
    assert loss < bad < text.index("### Zeta")
    assert text.index("test_poison") > bad
    assert text.index("test_worker_killed") < bad


def test_header_names_date_commit_machine_storage_and_duration(run: dict[str, Any]) -> None:
    text = render(run)
    (line,) = [x for x in text.splitlines() if x.startswith("Last run:")]
    assert "2026-11-28 14:02 UTC" in line
    assert "commit `161ecc1`" in line
    assert "uncommitted" not in line
    assert line == (
        "Last run: **2026-11-28 14:02 UTC** · commit `161ecc1` · 2 cores, 8.0 GiB RAM · "
        "PostgreSQL server with TimescaleDB 2.22.1 · 5 tests: 1 deselected, 1 failed, "
        "2 passed, 1 skipped, in 7 min 12 s · in all 1,676 events, 1,478,606 points.")
    run["git"]["dirty"] = True
    assert "commit `161ecc1` (the working tree had uncommitted changes)" in render(run)


def test_a_skipped_test_says_so_and_keeps_only_its_wording(run: dict[str, Any]) -> None:
    earlier = render({**run, "tests": [{
        "nodeid": NET, "outcome": "passed", "duration_s": 60.0, "records": [record(
            guarantee="a 30 s network cut", faults="veth down 30 s", events=893,
            points=180000, lost=0, doubled=0, section="Network")]}]})
    assert "180,000 points" in earlier
    doc = update(f"{BEGIN}{earlier}{END}", run)
    row = table_row(doc, "test_faults_network.py::test_cut")
    assert row == ("| a 30 s network cut | `test_faults_network.py::test_cut` "
                   "| **not run** (skipped: iproute2 missing) | — | — | — | — | — | — |")
    assert "180,000" not in doc
    assert doc.index("### Network") < doc.index("test_faults_network.py::test_cut")


def test_a_test_that_never_rendered_gets_its_name_as_wording(run: dict[str, Any]) -> None:
    row = table_row(render(run), "test_ingest_worker.py::test_replay[timescaledb]")
    assert row.startswith("| replay | ")
    assert "**not run** (deselected)" in row


def test_a_failed_test_shows_its_counts_marked_as_no_proof(run: dict[str, Any]) -> None:
    row = table_row(render(run), "test_faults_slow_db.py::test_slow")
    assert "| 430 events / 1,280,000 points | 7 | 0 |" in row
    assert "**failed in call**: these are the figures it counted, not a proof" in row


def test_only_the_part_between_the_markers_changes(run: dict[str, Any]) -> None:
    doc = update(DOC, run)
    before, after = DOC.split(BEGIN)[0], DOC.split(END)[1]
    assert doc.startswith(before + BEGIN)
    assert doc.endswith(END + after)
    assert "stale generated text" not in doc
    assert update(doc, run) == doc  # idempotent


def test_pipes_and_newlines_in_wording_cannot_break_the_table(run: dict[str, Any]) -> None:
    run["tests"][0]["records"][0]["notes"] = "a | b\nc"
    row = table_row(render(run), "test_e2e_faults.py::test_worker_killed")
    assert "| a \\| b c |" in row
    assert previous_wording(render(run))["test_e2e_faults.py::test_worker_killed"] == (
        "Nothing lost, nothing doubled", "a worker killed mid-transaction redoes its batch")


@pytest.mark.parametrize("doc", ["no markers", f"{END}\n{BEGIN}", f"{BEGIN}{BEGIN}{END}"])
def test_a_document_without_one_pair_of_markers_is_refused(
    run: dict[str, Any], doc: str
) -> None:
    with pytest.raises(ValueError, match="figures:begin"):
        update(doc, run)


def test_main_rewrites_the_file(run: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text(json.dumps(run))
    (tmp_path / "R.md").write_text(DOC)
    assert main([str(tmp_path / "run.json"), str(tmp_path / "R.md")]) == 0
    assert (tmp_path / "R.md").read_text() == update(DOC, run)
    assert main([str(tmp_path / "run.json")]) == 2


@pytest.mark.parametrize(("outcome", "phase", "says"), [
    ("failed", "setup", "**failed** in setup before it recorded anything"),
    ("skipped", "call", "**not run** (skipped: iproute2 missing)"),
    ("not run", None, "**not run**"),
])
def test_a_test_without_records_says_why(
    run: dict[str, Any], outcome: str, phase: str | None, says: str
) -> None:
    run["tests"][2].update(outcome=outcome, phase=phase)
    row = table_row(render(run), "test_faults_network.py::test_cut")
    assert f"| `test_faults_network.py::test_cut` | {says} | — |" in row


def test_a_rerun_replaces_its_tests_rows_and_is_named_in_the_header(
    run: dict[str, Any], tmp_path: Path
) -> None:
    rerun = {**run, "started_at": "2026-11-28T15:00:00+00:00", "duration_s": 41.0,
             "git": {"commit": "abcdef1", "dirty": False}, "tests": [
                 {"nodeid": SLOW, "outcome": "passed", "duration_s": 40.0, "records": [record(
                     guarantee="a slow database pauses consumption", faults="locks for 10 s",
                     events=431, points=1_280_000, lost=0, doubled=0)]},
                 {"nodeid": KILL, "outcome": "deselected", "duration_s": 0.0, "records": []}]}
    (tmp_path / "run.json").write_text(json.dumps(run))
    (tmp_path / "rerun.json").write_text(json.dumps(rerun))
    (tmp_path / "R.md").write_text(DOC)
    assert main([str(tmp_path / "run.json"), str(tmp_path / "rerun.json"),
                 str(tmp_path / "R.md")]) == 0
    doc = (tmp_path / "R.md").read_text()
    assert doc == update(DOC, merge([run, rerun]))
    row = table_row(doc, "test_faults_slow_db.py::test_slow")
    assert "| 431 events / 1,280,000 points | 0 | 0 | — | 40 s (re-run) |" in row
    assert "failed" not in row
    assert "1,234 events / 198,600 points" in table_row(  # deselected in the re-run: kept
        doc, "test_e2e_faults.py::test_worker_killed")
    assert ("· re-run of 1 test(s): 2026-11-28 15:00 UTC, commit `abcdef1`, 41 s ·"
            in doc)
    assert "5 tests: 1 deselected, 3 passed, 1 skipped" in doc
