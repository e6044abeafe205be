"""The ``reliability`` fixture and its session hooks, in an inner pytest run: records
land in the JSON with each test's outcome, recording changes no outcome, tests that
did not run are listed, and nothing is written unless ``RUNSTREAM_RELIABILITY_JSON``
is set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.reliability import ENV

pytest_plugins = ["pytester"]

TESTS = """
import pytest


class Odd:
    def __repr__(self) -> str:
        return "Odd()"


def test_records(reliability):
    reliability.record(guarantee="g", faults="kill -9 x3", events=3, points=30, lost=0,
                       doubled=0, storage="partitioned", notes="n", ledger={"lost": 0},
                       odd={(1, 2): Odd()})


def test_records_then_fails(reliability):
    reliability.record(guarantee="g2", faults="f2", lost=1, section="Bad input")
    assert 1 == 2


def test_skipped(reliability):
    pytest.skip("no iproute2")


@pytest.mark.reliability
def test_marked_without_the_fixture():
    pass


def test_unrelated():
    pass
"""


@pytest.fixture
def inner(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini("[pytest]\naddopts = -p tests.reliability -p no:cacheprovider\n"
                     "asyncio_default_fixture_loop_scope = function\n"
                     "markers =\n    reliability: r\n")
    pytester.makepyfile(test_inner=TESTS)
    return pytester


def test_records_land_in_the_json_with_outcomes(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    out = tmp_path / "deep" / "run.json"
    monkeypatch.setenv(ENV, str(out))
    result = inner.runpytest_inprocess("-m", "reliability")
    result.assert_outcomes(passed=2, failed=1, skipped=1, deselected=1)
    result.stdout.fnmatch_lines(["*reliability figures*",
                                 "test_inner.py::test_records [[]passed[]]: kill -9 x3; "
                                 "events 3, points 30, lost 0, doubled 0"])
    run = json.loads(out.read_text())
    tests = {t["nodeid"].rsplit("::", 1)[1]: t for t in run["tests"]}
    assert set(tests) == {"test_records", "test_records_then_fails", "test_skipped",
                          "test_marked_without_the_fixture"}
    (rec,) = tests["test_records"]["records"]
    assert tests["test_records"]["outcome"] == "passed"
    assert {k: rec[k] for k in ("guarantee", "faults", "events", "points", "lost", "doubled",
                                "storage", "notes", "section")} == {
        "guarantee": "g", "faults": "kill -9 x3", "events": 3, "points": 30, "lost": 0,
        "doubled": 0, "storage": "partitioned", "notes": "n",
        "section": "Nothing lost, nothing doubled"}
    assert rec["extra"] == {"ledger": {"lost": 0}, "odd": {"(1, 2)": "Odd()"}}
    failed = tests["test_records_then_fails"]
    assert (failed["outcome"], failed["phase"]) == ("failed", "call")
    assert failed["records"][0]["section"] == "Bad input"
    skipped = tests["test_skipped"]
    assert (skipped["outcome"], skipped["reason"], skipped["records"]) == (
        "skipped", "no iproute2", [])
    assert tests["test_marked_without_the_fixture"]["records"] == []
    assert run["duration_s"] >= 0
    assert run["machine"]["cores"] >= 1
    assert set(run["git"]) == {"commit", "dirty"}


def test_deselected_reliability_tests_are_listed_as_such(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    out = tmp_path / "run.json"
    monkeypatch.setenv(ENV, str(out))
    inner.runpytest_inprocess("-k", "test_records and not fails").assert_outcomes(
        passed=1, deselected=4)
    outcomes = {t["nodeid"].rsplit("::", 1)[1]: t["outcome"]
                for t in json.loads(out.read_text())["tests"]}
    assert outcomes == {"test_records": "passed", "test_records_then_fails": "deselected",
                        "test_skipped": "deselected",
                        "test_marked_without_the_fixture": "deselected"}


def test_nothing_is_written_without_the_variable(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV, raising=False)
    result = inner.runpytest_inprocess()
    result.assert_outcomes(passed=3, failed=1, skipped=1)
    result.stdout.fnmatch_lines(["*reliability figures*"])
    assert "written to" not in result.stdout.str()
    assert list(inner.path.rglob("*.json")) == []
