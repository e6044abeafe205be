"""The ledger's comparison counts each kind of damage (no I/O)."""

from __future__ import annotations

import pytest

from ingest.bench.ledger import RunPlan, Workload, compare

EXPECTED = {("run", "loss"): [(0, 0.5), (1, 1.5), (2, 2.5), (3, 3.5)]}


def stored(*points: tuple[int, float]) -> dict[tuple[str, str], list[tuple[int, float, int]]]:
    """Stored rows in (step, rank, time) order; time = position logged (value order)."""
    rows = sorted((step, value, int(value)) for step, value in points)
    return {("run", "loss"): rows}


def test_a_faithful_copy_balances() -> None:
    result = compare(EXPECTED, stored(*EXPECTED[("run", "loss")]))
    assert result.ok
    assert (result.points_expected, result.points_stored) == (4, 4)


def test_loss_doubles_strangers_and_disorder_are_each_counted() -> None:
    assert compare(EXPECTED, stored((0, 0.5), (2, 2.5))).lost == 2
    doubled = compare(EXPECTED, stored((0, 0.5), (1, 1.5), (1, 1.5), (2, 2.5), (3, 3.5)))
    assert (doubled.doubled, doubled.lost, doubled.ok) == (1, 0, False)
    wrong = compare(EXPECTED, stored((0, 0.5), (1, 1.25), (2, 2.5), (3, 3.5)))
    assert (wrong.unexpected, wrong.lost, wrong.ok) == (1, 1, False)
    # logged later but stored under an earlier step: time goes back along the series
    swapped = compare(EXPECTED, {("run", "loss"): [(0, 0.5, 0), (1, 1.5, 9), (2, 2.5, 2),
                                                   (3, 3.5, 3)]})
    assert swapped.order_violations == 1
    assert not swapped.ok
    stray = compare(EXPECTED, {**stored(*EXPECTED[("run", "loss")]),
                               ("run", "other"): [(0, 1.0, 0)]})
    assert stray.unexpected == 1


def test_workload_predicts_every_point_and_status() -> None:
    w = Workload(ticks=3, points_per_tick=2, series=("loss", "acc"),
                 runs=(RunPlan("p"), RunPlan("c", parent="p", end="none")))
    points = w.expected()
    assert w.points == sum(len(v) for v in points.values()) == 3 * 2 * 2 * 2
    assert points[("p", "loss")][:2] == [(0, 0.0), (1, 0.25)]
    assert points[("c", "acc")][:2] == [(0, 1_001_000.0), (2, 1_001_000.25)]
    assert w.expected(ticks=1)[("p", "acc")] == [(0, 1000.0), (2, 1000.25)]
    assert w.runs[1].final_statuses == {"Running", "NotResponding"}
    assert w.spec()["ticks"] == 3


def test_holds_end_hold_and_until_file_reach_the_job_spec() -> None:
    held = Workload(ticks=5, holds={5: "gates/b", 0: "gates/a"}, end_hold_file="gates/c")
    spec = held.spec()
    assert spec["holds"] == [{"tick": 0, "file": "gates/a"}, {"tick": 5, "file": "gates/b"}]
    assert spec["end_hold_file"] == "gates/c"
    assert "until_file" not in spec
    open_ended = Workload(ticks=3, holds={1: "gates/h"}, until_file="gates/stop")
    assert open_ended.spec()["until_file"] == "gates/stop"
    assert open_ended.points == 3 * 50 * 2 * 2  # the least it logs
    assert "holds" not in Workload().spec()


def test_holds_outside_the_ticks_are_refused() -> None:
    with pytest.raises(ValueError, match=r"within 0\.\.3"):
        Workload(ticks=3, holds={4: "gates/x"})
    # After the last tick of a job that logs until told: there is no last tick.
    with pytest.raises(ValueError, match="fixed number of ticks"):
        Workload(ticks=3, holds={3: "gates/x"}, until_file="gates/stop")
