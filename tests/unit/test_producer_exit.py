"""How a run ends with its process (``producer/_exit.py``), without a process: the exit hook
on an in-memory Kafka, what is owned and what is not, the columns of a ``log`` call cut
short by Ctrl-C, and the worker's text for a silent run. The real signals on real
processes are ``tests/integration/test_run_ends.py``."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import timedelta

import pytest

from ingest.worker.silence import silence_text
from producer import Experiment, Run
from producer._buffer import Series
from producer._exit import end_owned_runs_at_exit
from tests.unit.producer_fakes import MemoryKafka, MemoryWorkspace, of_kind


def ends(kafka: MemoryKafka, run_id: str) -> list[tuple[str, str | None]]:
    return [(e["payload"][1]["status"], e["payload"][1]["error"]) for e in kafka.events()
            if e["run_id"] == run_id and e["payload"][0] == "Lifecycle"
            and e["payload"][1]["status"] in ("Completed", "Failed", "Canceled")]


def test_runs_left_open_end_failed_at_exit_children_first(
    ws: MemoryWorkspace, kafka: MemoryKafka, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(sys, "last_value", raising=False)
    monkeypatch.delattr(sys, "last_exc", raising=False)
    run = Experiment(ws, "exp").start_logging(outputs_dir=None)
    child = run.child_run("fold")
    done = Experiment(ws, "exp").start_logging(outputs_dir=None)
    done.complete()
    opened = Run.open(Experiment(ws, "exp"), "exp_1700000000_0a1b2c3d")  # a launcher's
    end_owned_runs_at_exit()
    ws.flush(5.0)
    assert ends(kafka, child.id) == [("Failed", "process exited without complete()")]
    assert ends(kafka, run.id) == [("Failed", "process exited without complete()")]
    assert ends(kafka, done.id) == [("Completed", None)]
    assert ends(kafka, opened.id) == []  # not this process's to end
    failed_at = {e["run_id"]: e["ts"] for e in kafka.events() if e["payload"][0] == "Lifecycle"
                 and e["payload"][1]["status"] == "Failed"}
    assert failed_at[child.id] <= failed_at[run.id]  # children first


def test_an_uncaught_keyboard_interrupt_cancels_and_an_exception_is_quoted(
    ws: MemoryWorkspace, kafka: MemoryKafka, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(sys, "last_exc", raising=False)
    monkeypatch.setattr(sys, "last_value", KeyboardInterrupt(), raising=False)
    interrupted = Experiment(ws, "exp").start_logging(outputs_dir=None)
    end_owned_runs_at_exit()
    try:
        raise ValueError("diverged")
    except ValueError as exc:
        monkeypatch.setattr(sys, "last_value", exc, raising=False)
    raised = Experiment(ws, "exp").start_logging(outputs_dir=None)
    end_owned_runs_at_exit()
    ws.flush(5.0)
    assert ends(kafka, interrupted.id) == [("Canceled", "KeyboardInterrupt (Ctrl-C)")]
    ((status, error),) = ends(kafka, raised.id)
    assert status == "Failed"
    assert error is not None
    assert error.startswith("process exited without complete(); it raised:\nTraceback")
    assert error.rstrip().endswith("ValueError: diverged")


def test_a_closed_handle_is_left_to_its_other_producers(
    ws: MemoryWorkspace, kafka: MemoryKafka
) -> None:
    run = Experiment(ws, "exp").start_logging(outputs_dir=None)
    run.close(5.0)
    end_owned_runs_at_exit()
    assert ends(kafka, run.id) == []


def test_ctrl_c_inside_a_with_block_cancels_with_the_reason(
    ws: MemoryWorkspace, kafka: MemoryKafka
) -> None:
    started: list[Run] = []

    def train() -> None:
        with Experiment(ws, "exp").start_logging(outputs_dir=None) as run:
            started.append(run)
            run.log("x", 1.0)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train()
    (run,) = started
    ws.flush(5.0)
    assert ends(kafka, run.id) == [("Canceled", "KeyboardInterrupt (Ctrl-C)")]
    assert of_kind(kafka.events(), "MetricBatch")


@pytest.mark.parametrize("cut", range(7))
def test_a_log_call_cut_short_leaves_whole_points(cut: int) -> None:
    """Ctrl-C lands between the steps of one ``log`` call (``Series.write``): the point
    it was adding is left out until it is counted, every column stays aligned, and the
    next call takes its slots."""
    series = Series("x")
    for step, (kind, value, text) in enumerate([(ord("f"), 1.0, None), (ord("s"), 0.0, "a"),
                                                 (ord("f"), 2.0, None)]):
        series.write(step, step, kind, value, text)
    n = series.n

    def count() -> None:
        series.n = n + 1

    steps: list[Callable[[], None]] = [
        series.grow, lambda: series.steps.__setitem__(n, 9),
        lambda: series.times.__setitem__(n, 9),
        lambda: series.kinds.append(ord("s")),  # type: ignore[union-attr]
        lambda: series.values.__setitem__(n, 0.0), lambda: series.texts.append("cut"), count]
    for done in steps[:cut]:
        done()
    [taken] = series.take()
    assert taken.n == 3
    assert len(taken.steps) == len(taken.times) == len(taken.values)
    assert taken.kinds == bytearray(b"fsf")
    assert taken.texts == ["a"]
    taken.recycle()
    series.write(5, 5, ord("s"), 0.0, "b")  # a cut call's leftovers are gone from the next set
    [again] = series.take()
    assert (again.n, again.kinds, again.texts) == (1, bytearray(b"s"), ["b"])


def test_a_cut_call_is_overwritten_by_the_next_one() -> None:
    series = Series("x")
    series.write(0, 0, ord("f"), 1.0, None)
    # A text call cut after its kind and its text, before it counted:
    series.steps[1], series.times[1], series.values[1] = 99, 99, 0.0
    series.kinds = bytearray(b"fs")
    series.texts.append("stale")
    series.write(1, 1, ord("s"), 0.0, "kept")
    series.write(2, 2, ord("f"), 3.0, None)
    [taken] = series.take()
    assert taken.n == 3
    assert (taken.steps[:3].tolist(), taken.times[:3].tolist()) == ([0, 1, 2], [0, 1, 2])
    assert taken.kinds == bytearray(b"fsf")
    assert taken.texts == ["kept"]


def test_the_worker_says_how_long_a_run_was_silent() -> None:
    assert silence_text(timedelta(minutes=30)) == "no heartbeat for 30 min"
    assert silence_text(timedelta(hours=2)) == "no heartbeat for 120 min"
    assert silence_text(timedelta(seconds=8)) == "no heartbeat for 8 s"
    assert silence_text(timedelta(seconds=90)) == "no heartbeat for 90 s"
