"""``run.get_metric_history``: one series with its steps, times and ranks, against canned
API answers (``FakeApi``). ``SeriesRoute`` answers as ``GET /v1/runs/{id}/metrics/{name}
?format=columns`` does — the points when at most ``max_points`` match, else at most that
many buckets by step range — so the paging of a full read is exercised here; the real
route, worker and database are in tests/integration/test_metric_history.py.
"""

from __future__ import annotations

import itertools
import math
import sys
import types
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from producer import Experiment, MetricHistory, NotFoundError, ProducerError, Run, _history
from tests.unit.producer_fakes import Answer, FakeApi, FakeWorkspace, ok, run_details

RUN_ID = "exp_1700000000_0a1b2c3d"
RUN_PATH = f"/v1/runs/{RUN_ID}"
T0 = 1_700_000_000_000_000  # µs since the epoch


class SeriesRoute:
    """The series route over ``points`` [(step, rank, time_us, value)], kept sorted; records
    every request's (step_min, step_max, max_points) and how many entries it answered."""

    def __init__(self, points: list[tuple[int, int, int, Any]]) -> None:
        self.points = sorted(points, key=lambda p: (p[0], p[1], p[2]))
        self.asked: list[tuple[int, int, int]] = []
        self.answered: list[int] = []
        #: The step ranges answered with points (not buckets).
        self.exact: list[tuple[int, int]] = []
        #: Called before each answer (points arriving while a read goes on).
        self.before: Callable[[int], None] = lambda n: None

    def __call__(self, params: list[tuple[str, str]]) -> Answer:
        q = dict(params)
        assert q["format"] == "columns"
        lo, hi = int(q.get("step_min", -(2**63))), int(q.get("step_max", 2**63 - 1))
        max_points = int(q["max_points"])
        self.before(len(self.asked))
        self.asked.append((lo, hi, max_points))
        rank = int(q["rank"]) if "rank" in q else None
        chosen = [p for p in self.points
                  if lo <= p[0] <= hi and (rank is None or p[1] == rank)]
        head = {"name": "loss", "run_id": RUN_ID}
        if len(chosen) <= max_points:
            self.answered.append(len(chosen))
            self.exact.append((lo, hi))
            return 200, {**head, "total_points": len(chosen), "downsampled": False,
                         "columns": {"step": [p[0] for p in chosen],
                                     "value": [p[3] for p in chosen],
                                     "rank": [p[1] for p in chosen],
                                     "time_us": [p[2] for p in chosen]}}
        first, last = chosen[0][0], chosen[-1][0]
        width = -(-(last - first + 1) // max_points)
        buckets: dict[int, list[tuple[int, int, int, Any]]] = {}
        for p in chosen:
            buckets.setdefault((p[0] - first) // width, []).append(p)
        rows = [buckets[k] for k in sorted(buckets)]
        self.answered.append(len(rows))
        return 200, {**head, "total_points": len(chosen), "downsampled": True, "columns": {
            "step_min": [b[0][0] for b in rows], "step_max": [b[-1][0] for b in rows],
            "count": [len(b) for b in rows],
            "min": [min(p[3] for p in b) for b in rows],
            "max": [max(p[3] for p in b) for b in rows],
            "last": [b[-1][3] for b in rows],
            "first_time_us": [min(p[2] for p in b) for b in rows],
            "last_time_us": [max(p[2] for p in b) for b in rows]}}


def attached(make_ws: Callable[..., FakeWorkspace], series: SeriesRoute,
             name: str = "loss") -> Run:
    fake = FakeApi({RUN_PATH: ok(run_details(RUN_ID)), f"{RUN_PATH}/metrics/{name}": series})
    return make_ws(fake).get_run(RUN_ID)


def when(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


def test_history_has_steps_values_times_and_ranks_in_step_order(
    make_ws: Callable[..., FakeWorkspace],
) -> None:
    series = SeriesRoute([(200, 0, T0 + 3, 0.0049), (0, 0, T0, 1.0), (100, 1, T0 + 2, "NaN"),
                          (100, 0, T0 + 1, 0.0099)])
    run = attached(make_ws, series)

    history = run.get_metric_history("loss")

    assert isinstance(history, MetricHistory)
    assert (history.run_id, history.name, history.downsampled) == (RUN_ID, "loss", False)
    assert history.step == [0, 100, 100, 200]
    assert history.rank == [0, 0, 1, 0]
    assert history.value[:2] == [1.0, 0.0099]
    assert math.isnan(history.value[2])
    assert history.time == [when(T0), when(T0 + 1), when(T0 + 2), when(T0 + 3)]
    assert history.time[0].tzinfo is UTC
    assert history.time[1].microsecond == 1
    assert len(history) == history.total_points == 4
    assert next(iter(history)) == (0, 1.0, when(T0), 0)
    columns = history.to_dict()
    assert list(columns) == ["step", "value", "time", "rank"]
    assert columns["step"] is history.step
    assert len({len(c) for c in columns.values()}) == 1
    assert series.asked == [(-(2**62), 2**62, _history.PAGE_POINTS)]  # one request


def test_max_points_downsamples_as_the_route_does(
    make_ws: Callable[..., FakeWorkspace],
) -> None:
    series = SeriesRoute([(s, 0, T0 + s, float(s)) for s in range(100)])
    run = attached(make_ws, series)

    history = run.get_metric_history("loss", max_points=10, step_min=0, step_max=99)

    assert series.asked == [(0, 99, 10)]
    assert history.downsampled
    assert history.total_points == 100
    assert len(history) == 10
    assert history.step == [9, 19, 29, 39, 49, 59, 69, 79, 89, 99]  # each bucket's last step
    assert history.value == [9.0, 19.0, 29.0, 39.0, 49.0, 59.0, 69.0, 79.0, 89.0, 99.0]
    assert history.time[0] == when(T0 + 9)
    assert history.rank == [None] * 10
    assert history.step_min == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90]
    assert history.count == [10] * 10
    assert (history.min[1], history.max[1]) == (10.0, 19.0)
    assert list(history.to_dict()) == ["step", "value", "time", "rank", "step_min", "count",
                                       "min", "max"]

    small = run.get_metric_history("loss", max_points=1000)
    assert not small.downsampled
    assert small.step == list(range(100))
    assert small.step_min == small.count == small.min == small.max == []


def test_a_long_series_is_read_in_windows_of_at_most_a_page(
    make_ws: Callable[..., FakeWorkspace], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_history, "PAGE_POINTS", 40)
    # 500 steps, two ranks on the even ones: 750 points.
    points = [(s, r, T0 + 10 * s + r, float(s)) for s in range(500) for r in range(2)
              if r == 0 or s % 2 == 0]
    series = SeriesRoute(points)
    run = attached(make_ws, series)

    history = run.get_metric_history("loss")

    expected = sorted(points, key=lambda p: (p[0], p[1], p[2]))
    assert history.step == [p[0] for p in expected]
    assert history.rank == [p[1] for p in expected]
    assert history.time == [when(p[2]) for p in expected]
    assert history.total_points == 750
    assert not history.downsampled
    assert max(series.answered) <= 40  # no answer bigger than a page
    # The windows answered with points cover every step once, in order.
    assert series.exact[0][0] == -(2**62)
    assert series.exact[-1][1] == 2**62
    assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(series.exact))
    assert len(series.asked) <= 2 * 750 // 40  # one bucketed look, then a page per window


def test_points_logged_during_a_paged_read_past_the_last_bucket_are_read(
    make_ws: Callable[..., FakeWorkspace], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_history, "PAGE_POINTS", 10)
    series = SeriesRoute([(s, 0, T0 + s, float(s)) for s in range(30)])

    def arrive(request_number: int) -> None:
        if request_number == 1:  # after the first (bucketed) answer
            series.points.append((30, 0, T0 + 30, 30.0))

    series.before = arrive
    run = attached(make_ws, series)

    assert run.get_metric_history("loss").step == list(range(31))


def test_one_rank_and_more_than_a_page_at_one_step(
    make_ws: Callable[..., FakeWorkspace], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_history, "PAGE_POINTS", 5)
    points = [(0, r, T0 + r, 1.0) for r in range(8)] + [(1, 0, T0 + 9, 2.0)]
    run = attached(make_ws, SeriesRoute(points))

    with pytest.raises(ProducerError, match=r"8 points at step 0, more than the 5 one answer"):
        run.get_metric_history("loss")
    assert run.get_metric_history("loss", rank=3).to_dict()["value"] == [1.0]
    assert run.get_metric_history("loss", max_points=2).downsampled


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"max_points": 0}, ValueError), ({"max_points": 100_001}, ValueError),
    ({"max_points": True}, ValueError), ({"max_points": 1.5}, ValueError),
    ({"rank": -1}, ValueError), ({"step_min": 5, "step_max": 4}, ValueError),
    ({"step_min": 2**62 + 1}, ValueError), ({"step_max": "3"}, TypeError),
])
def test_bad_arguments_raise_at_the_call(
    make_ws: Callable[..., FakeWorkspace], kwargs: dict[str, Any], error: type[Exception],
) -> None:
    series = SeriesRoute([(0, 0, T0, 1.0)])
    run = attached(make_ws, series)
    with pytest.raises(error):
        run.get_metric_history("loss", **kwargs)
    with pytest.raises(ValueError, match="metric name"):
        run.get_metric_history("")
    assert series.asked == []


def test_no_such_series_is_not_found(make_ws: Callable[..., FakeWorkspace]) -> None:
    fake = FakeApi({RUN_PATH: ok(run_details(RUN_ID)), f"{RUN_PATH}/metrics/gone": lambda p: (
        404, {"error": {"status": 404, "message": f"run {RUN_ID!r} has no metric series"}})})
    run = make_ws(fake).get_run(RUN_ID)
    with pytest.raises(NotFoundError, match="has no metric series"):
        run.get_metric_history("gone")


def test_names_are_quoted_into_one_path_segment(make_ws: Callable[..., FakeWorkspace]) -> None:
    series = SeriesRoute([(0, 0, T0, 1.0)])
    run = attached(make_ws, series, name="train%2Floss%3F")
    assert run.get_metric_history("train/loss?").value == [1.0]


def test_reads_its_own_writes_first(make_ws: Callable[..., FakeWorkspace]) -> None:
    fake = FakeApi({})
    ws = make_ws(fake)
    run = Experiment(ws, "exp").start_logging(outputs_dir=None)
    path = f"/v1/runs/{run.id}"
    order: list[str] = []

    def details(params: list[tuple[str, str]]) -> Answer:
        order.append("details")
        asked = [value for key, value in params if key == "producer"]
        return 200, run_details(run.id, producers={
            p: {"events": 10**6, "max_seq": 10**6 - 1} for p in asked})

    def series(params: list[tuple[str, str]]) -> Answer:
        order.append(f"series after {len(ws.kafka.delivered)} batches")
        return 200, {"name": "loss", "run_id": run.id, "total_points": 1,
                     "downsampled": False, "columns": {"step": [7], "value": [0.5],
                                                       "rank": [0], "time_us": [T0]}}

    fake.routes.update({path: details, f"{path}/metrics/loss": series})
    run.log("loss", 0.5, step=7)

    assert run.get_metric_history("loss").step == [7]
    assert order == ["details", "series after 3 batches"]  # waited for the point, then read
    run.complete()


def test_to_dataframe_with_pandas(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[dict[str, list[Any]]] = []
    fake_pandas = types.ModuleType("pandas")

    class DataFrame:
        def __init__(self, data: dict[str, list[Any]]) -> None:
            made.append(data)

    fake_pandas.DataFrame = DataFrame  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pandas", fake_pandas)
    history = MetricHistory(run_id="r", name="loss", step=[0, 1], value=[1.0, 0.5],
                            time=[when(T0), when(T0 + 1)], rank=[0, 0], total_points=2)

    frame = history.to_dataframe()

    assert isinstance(frame, DataFrame)
    assert made == [{"step": [0, 1], "value": [1.0, 0.5], "time": [when(T0), when(T0 + 1)],
                     "rank": [0, 0]}]


def test_to_dataframe_without_pandas_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas → ImportError
    history = MetricHistory(run_id="r", name="loss", step=[], value=[], time=[], rank=[],
                            total_points=0)
    with pytest.raises(ImportError, match=r"needs pandas.*pip install pandas.*to_dict"):
        history.to_dataframe()
    assert history.to_dict() == {"step": [], "value": [], "time": [], "rank": []}
