"""``run.get_metric_history`` through the real API, worker, broker and PostgreSQL (issue 15,
item 6): the steps, times and ranks ``get_metrics`` leaves out, read right after logging
(read-your-own-writes), downsampled like the series route, and a long series read in
pages of steps — no answer larger than a page.

Each test has its own topic, database, worker and API server (``read_pipeline``). The
SDK's calls block, so they run in worker threads (``call``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from producer import Experiment, NotFoundError, Run, _history
from tests.integration.pipelines import ReadPipeline, call

pytestmark = pytest.mark.integration


async def test_history_has_the_steps_times_and_ranks_that_get_metrics_leaves_out(
    read_pipeline: ReadPipeline,
) -> None:
    def logged_and_read() -> dict[str, Any]:
        ws = read_pipeline.workspace()
        exp = Experiment(ws, "history")
        before = datetime.now(UTC)
        run = exp.start_logging(outputs_dir=None)
        for step, value in ((0, 1.0), (100, 0.0099), (200, 0.0049)):
            run.log("val_loss", value, step=step)
        rank1 = Run.open(exp, run.id, rank=1, world_size=2)  # a producer of its own
        rank1.log("val_loss", 0.5, step=100)
        rank1.close()
        run.log_list("labels", ["a", "b"])
        # No wait, no retry: this process's own points are read back at once.
        seen = {
            "metrics": run.get_metrics(),
            "history": run.get_metric_history("val_loss"),
            "rank 1": run.get_metric_history("val_loss", rank=1),
            "from 50": run.get_metric_history("val_loss", step_min=50, step_max=150),
            "downsampled": run.get_metric_history("val_loss", max_points=2),
        }
        with pytest.raises(NotFoundError, match="no metric series"):
            run.get_metric_history("labels")  # a list, not a series
        with pytest.raises(NotFoundError, match="no metric series"):
            run.get_metric_history("never logged")
        run.complete()
        seen["fetched"] = Run(exp, run.id).get_metric_history("val_loss")
        seen["window"] = (before, datetime.now(UTC))
        ws.close(30.0)
        return seen

    seen = await call(logged_and_read)
    # get_metrics keeps Azure ML's shape: the values only, in (step, rank, time) order.
    assert seen["metrics"]["val_loss"] == [1.0, 0.0099, 0.5, 0.0049]
    for history in (seen["history"], seen["fetched"]):
        assert history.to_dict() == {
            "step": [0, 100, 100, 200], "value": [1.0, 0.0099, 0.5, 0.0049],
            "time": history.time, "rank": [0, 0, 1, 0]}
        assert (history.total_points, history.downsampled) == (4, False)
        before, after = seen["window"]
        assert all(before <= t <= after for t in history.time), (history.time, before, after)
        assert history.time[0] <= history.time[1] <= history.time[3]  # rank 0's, in order
    assert seen["rank 1"].to_dict() == {"step": [100], "value": [0.5],
                                        "time": seen["rank 1"].time, "rank": [1]}
    assert seen["from 50"].step == [100, 100]
    downsampled = seen["downsampled"]
    assert (downsampled.downsampled, downsampled.total_points) == (True, 4)
    assert 1 <= len(downsampled) <= 2
    assert sum(downsampled.count) == 4
    assert downsampled.step[-1] == 200
    assert downsampled.value[-1] == 0.0049  # the last value: the highest step's
    assert min(v for v in downsampled.min if v is not None) == 0.0049
    assert max(v for v in downsampled.max if v is not None) == 1.0


async def test_a_long_series_is_read_in_pages_of_steps(
    read_pipeline: ReadPipeline, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_history, "PAGE_POINTS", 1000)  # 100,000 by default
    points = 20_000

    def logged_and_read() -> tuple[Any, list[int]]:
        ws = read_pipeline.workspace()
        run = Experiment(ws, "history").start_logging(outputs_dir=None)
        for step in range(points):
            run.log("loss", step / points)
        run.complete()
        answered: list[int] = []
        api = ws._session.api
        get_json = api.get_json

        def recording(path: str, params: Any = ()) -> dict[str, Any]:
            document = get_json(path, params)
            columns = document.get("columns")
            if isinstance(columns, dict):  # a series answer: how many entries it held
                answered.append(max(len(c) for c in columns.values()))
            return document

        api.get_json = recording  # type: ignore[method-assign]
        history = run.get_metric_history("loss")
        ws.close(30.0)
        return history, answered

    history, answered = await call(logged_and_read)
    assert history.step == list(range(points))  # every point once, in order
    assert history.value == [step / points for step in range(points)]
    assert (history.total_points, history.downsampled) == (points, False)
    assert max(answered) <= 1000, answered  # never more than a page in one answer
    assert len(answered) >= points // 1000
