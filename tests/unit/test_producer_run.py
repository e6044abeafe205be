"""The SDK end to end against an in-memory stand-in for the Kafka transport (no network).

``MemoryKafka`` replaces only the transport class behind the background sender; the
buffer, batching, codec, sequencing, spool (on tmp_path) and replay are the real ones.
Integration tests (tests/integration/test_producer_*.py) cover the real broker.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import io
import logging
import math
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from producer import (
    ConfigError,
    Experiment,
    ProducerTimeoutError,
    Run,
    RunClosedError,
    RunEndedError,
    SyncProgress,
    Workspace,
    sync,
)
from producer import _run as run_module
from producer._buffer import POINT_COST_BYTES, Stream
from producer._client import ApiClient
from producer._sender import Sender
from producer._spool import list_segments, parse
from tests.helpers import run_points
from tests.unit.producer_fakes import (
    CODEC,
    UNREACHABLE_API,
    MemoryKafka,
    MemoryWorkspace,
    of_kind,
    options,
    wait_until,
)


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return type(a) is type(b) and a == b


# ---- what lands on the topic --------------------------------------------------------


def test_logged_points_arrive_exactly_as_logged(ws: MemoryWorkspace, kafka: MemoryKafka) -> None:
    logged: list[tuple[int, Any]] = []
    values: list[float | int | bool | str] = [0.5, math.nan, math.inf, -math.inf, 3, True, "hi"]
    with Experiment(ws, "exp").start_logging(display_name="r") as run:
        for i, value in enumerate(values):
            run.log("mixed", value)
            logged.append((i, value))
        run.log("loss", 0.31, step=120)
        run.log("loss", 0.30)  # continues after the explicit step
        run.log("loss", 0.29, step=5)
        for i in range(5000):
            run.log("many", i / 7)
    run.flush(10.0)

    got = run_points(kafka.events(), run.id)
    assert len(got["mixed"]) == len(logged)
    assert all(g[0] == w[0] and same(g[1], w[1]) for g, w in zip(got["mixed"], logged, strict=True))
    assert got["loss"] == [(120, 0.31), (121, 0.30), (5, 0.29)]
    assert got["many"] == [(i, i / 7) for i in range(5000)]


def test_every_call_becomes_its_event(ws: MemoryWorkspace, kafka: MemoryKafka) -> None:
    run = Experiment(ws, "exp").start_logging()
    run.log_list("accuracies", [0.6, 0.7, 0.87])
    run.log_row("Y over X", x=1, y=0.4)
    run.log_table("Sine", {"angle": [0.0, 1.5], "sine": [0.0, 0.997]})
    run.tag("selected", "yes")
    run.tag("baseline")
    run.tag("epochs", 10)
    run.tag("lr", 0.1)
    run.tag("amp", True)
    run.flush(10.0)

    events = kafka.events()
    assert of_kind(events, "ListValue") == [{"name": "accuracies", "values": [0.6, 0.7, 0.87]}]
    assert of_kind(events, "Row") == [
        {"name": "Y over X", "cells": [{"column": "x", "value": 1}, {"column": "y", "value": 0.4}]}
    ]
    assert of_kind(events, "Table") == [
        {
            "name": "Sine",
            "columns": [
                {"name": "angle", "values": [0.0, 1.5]},
                {"name": "sine", "values": [0.0, 0.997]},
            ],
        }
    ]
    assert of_kind(events, "Tag") == [
        {"key": "selected", "value": "yes", "target": "tag", "value_type": "str"},
        {"key": "baseline", "value": None, "target": "tag", "value_type": "str"},
        {"key": "epochs", "value": "10", "target": "tag", "value_type": "int"},
        {"key": "lr", "value": "0.1", "target": "tag", "value_type": "float"},
        {"key": "amp", "value": "True", "target": "tag", "value_type": "bool"},
    ]
    assert {e["experiment"] for e in events} == {"exp"}
    assert {e["workspace"] for e in events} == {"default"}
    assert {e["run_id"] for e in events} == {run.id}


def test_with_block_lifecycle_carries_metadata_first(
    ws: MemoryWorkspace, kafka: MemoryKafka
) -> None:
    exp = Experiment(ws, "diabetes")
    with exp.start_logging(display_name="ridge", properties={"owner": "me"}) as run:
        run.log("alpha", 0.5)
    run.flush(10.0)

    lifecycle = of_kind(kafka.events(), "Lifecycle")
    assert [e["status"] for e in lifecycle] == ["NotStarted", "Running", "Finalizing", "Completed"]
    first = lifecycle[0]
    assert (first["display_name"], first["compute_target"], first["parent_run_id"]) == (
        "ridge",
        "local",
        None,
    )
    assert first["properties"] == {"owner": "me"}
    assert run.id.startswith("diabetes_")


def test_an_exception_fails_the_run_with_its_traceback(
    ws: MemoryWorkspace, kafka: MemoryKafka
) -> None:
    def train() -> None:
        raise ArithmeticError("loss exploded")

    with pytest.raises(ArithmeticError), Experiment(ws, "exp").start_logging() as run:
        train()
    with pytest.raises(RunEndedError, match=r"^complete\(\): .* has ended \(Failed\)"):
        run.complete()  # ended is ended: a late complete() changes nothing
    run.flush(10.0)

    lifecycle = of_kind(kafka.events(), "Lifecycle")
    assert [e["status"] for e in lifecycle] == ["NotStarted", "Running", "Failed"]
    assert "ArithmeticError: loss exploded" in lifecycle[-1]["error"]
    assert "in train" in lifecycle[-1]["error"]


def test_keyboard_interrupt_cancels(ws: MemoryWorkspace, kafka: MemoryKafka) -> None:
    with pytest.raises(KeyboardInterrupt), Experiment(ws, "exp").start_logging() as run:
        raise KeyboardInterrupt
    run.flush(10.0)
    last = of_kind(kafka.events(), "Lifecycle")[-1]
    assert (last["status"], last["error"]) == ("Canceled", "KeyboardInterrupt (Ctrl-C)")


def test_child_runs_are_their_own_producers(ws: MemoryWorkspace, kafka: MemoryKafka) -> None:
    with Experiment(ws, "exp").start_logging() as run:
        child = run.child_run("fold-1")
        child.log("mse", 3.1)
        assert child.parent is run
        child.parent.log("best", 3.1)
        child.complete()
    run.flush(10.0)

    events = kafka.events()
    child_events = [e for e in events if e["run_id"] == child.id]
    first = of_kind(child_events, "Lifecycle")[0]
    assert (first["parent_run_id"], first["display_name"]) == (run.id, "fold-1")
    assert {e["producer_id"] for e in child_events} == {child.producer_id}
    assert child.producer_id != run.producer_id
    assert run_points(events, child.id) == {"mse": [(0, 3.1)]}
    assert run_points(events, run.id) == {"best": [(0, 3.1)]}


def test_seq_is_gap_free_per_producer_and_event_ids_unique(
    ws: MemoryWorkspace, kafka: MemoryKafka
) -> None:
    exp = Experiment(ws, "exp")
    runs = [exp.start_logging() for _ in range(3)]
    for i in range(300):
        for r in runs:
            r.log("x", float(i))
            if i % 7 == 0:
                r.tag(f"t{i}")
        if i % 50 == 0:
            time.sleep(0.01)  # several sender passes, several batches
    for r in runs:
        r.complete()
    ws.flush(10.0)

    events = kafka.events()
    seqs: dict[str, list[int]] = defaultdict(list)
    for e in events:
        seqs[e["producer_id"]].append(e["seq"])
    assert set(seqs) == {r.producer_id for r in runs}
    for producer_seqs in seqs.values():
        assert producer_seqs == list(range(len(producer_seqs)))  # delivered in order too
    assert len({e["event_id"] for e in events}) == len(events)


# ---- bad calls ----------------------------------------------------------------------


def test_bad_calls_raise_at_the_call_site_and_change_nothing(
    ws: MemoryWorkspace, kafka: MemoryKafka, tmp_path: Path
) -> None:
    run = Experiment(ws, "exp").start_logging()
    run.log("ok", 1.0)
    bad: list[tuple[type[Exception], Callable[[], object]]] = [
        (ValueError, lambda: run.log("", 1.0)),
        (ValueError, lambda: run.log("n" * 256, 1.0)),
        (TypeError, lambda: run.log("ok", None)),  # type: ignore[arg-type]
        (TypeError, lambda: run.log("ok", [1.0])),  # type: ignore[arg-type]
        (TypeError, lambda: run.log("ok", 1.0, step=1.5)),  # type: ignore[arg-type]
        (ValueError, lambda: run.log_table("t", {"a": [1, 2], "b": [1]})),
        (TypeError, lambda: run.log_list("l", "abc")),
        (ValueError, lambda: run.upload_file("m.pkl", tmp_path / "missing.pkl")),
        (ValueError, lambda: run.upload_file("../escape", tmp_path)),
        (ValueError, lambda: run.upload_file("/abs", tmp_path)),
        (ValueError, lambda: run.upload_file("a\x00b", tmp_path)),
        (ValueError, lambda: run.log_image("img")),
        (TypeError, lambda: run.log_image("img", plot=object())),  # type: ignore[arg-type]
        (TypeError, lambda: run.tag("k", ["v"])),  # type: ignore[arg-type]
        (ValueError, lambda: run.log("text", "x" * (1 << 20))),
        (ValueError, lambda: run.log_table("huge", {"c": ["y" * 1000] * 2000})),
    ]
    for error, call in bad:
        with pytest.raises(error):
            call()
    run.log("ok", 2.0)
    run.flush(10.0)

    events = kafka.events()
    assert run_points(events, run.id) == {"ok": [(0, 1.0), (1, 2.0)]}
    assert {e["payload"][0] for e in events} == {"Lifecycle", "MetricBatch"}
    assert [e["seq"] for e in events] == list(range(len(events)))


def test_logging_after_close_raises_but_metadata_edits_still_travel(
    ws: MemoryWorkspace, kafka: MemoryKafka
) -> None:
    run = Experiment(ws, "exp").start_logging()
    run.close(5.0)
    with pytest.raises(RunClosedError, match="is closed"):
        run.log("x", 1.0)
    run.tag("x")  # through an edit stream: a producer of its own
    run.close(5.0)  # idempotent, and closes the edit stream
    tags = [e for e in kafka.events() if e["payload"][0] == "Tag"]
    assert [t["payload"][1] for t in tags] == [
        {"key": "x", "value": None, "target": "tag", "value_type": "str"}
    ]
    assert tags[0]["run_id"] == run.id
    assert tags[0]["producer_id"] != run.producer_id
    assert tags[0]["seq"] == 0


def test_a_handle_that_ended_its_run_takes_nothing_more_but_a_fetched_one_edits(
    ws: MemoryWorkspace, kafka: MemoryKafka
) -> None:
    run = Experiment(ws, "exp").start_logging()
    run.log("loss", 0.5)
    run.complete()
    run.complete()  # completing a completed run again: nothing
    calls: dict[str, Callable[[], object]] = {
        "logging": lambda: run.log("loss", 0.25),
        "logging ": lambda: run.log_list("l", [1]),
        "file 'a.txt'": lambda: run.upload_file("a.txt", io.BytesIO(b"x")),
        "child_run()": lambda: run.child_run(),
        "fail()": lambda: run.fail("late"),
        "tag 'best'": lambda: run.tag("best"),
        "tag 'draft'": lambda: run.remove_tags(["draft"]),
        "add_properties": lambda: run.add_properties({"dataset": "v2"}),
        "display_name 'display_name'": lambda: setattr(run, "display_name", "baseline"),
    }
    for what, call in calls.items():
        with pytest.raises(RunEndedError) as raised:
            call()
        assert str(raised.value).startswith(f"{what.strip()}: run {run.id!r} has ended "
                                            "(Completed)"), what
        assert f"Run(run.experiment, {run.id!r}).tag(...)" in str(raised.value)
        assert (raised.value.run_id, raised.value.status) == (run.id, "Completed")
    run.cancel()  # canceling an ended run: nothing, as the API's cancel answers "none"
    run.close(5.0)
    events = kafka.events()
    assert [e["payload"][0] for e in events if e["payload"][0] not in ("Lifecycle",)] == [
        "MetricBatch"]
    assert [e["payload"][1]["status"] for e in events if e["payload"][0] == "Lifecycle"] == [
        "NotStarted", "Running", "Finalizing", "Completed"]


def test_failing_or_canceling_ends_the_run_for_good(ws: MemoryWorkspace) -> None:
    failed = Experiment(ws, "exp").start_logging()
    failed.fail("boom")
    with pytest.raises(RunEndedError, match=r"^complete\(\): run .* has ended \(Failed\)"):
        failed.complete()
    with pytest.raises(RunEndedError, match=r"^fail\(\): run .* has ended \(Failed\)"):
        failed.fail("again")
    canceled = Experiment(ws, "exp").start_logging()
    canceled.cancel()
    with pytest.raises(RunEndedError, match=r"has ended \(Canceled\)"):
        canceled.log("x", 1.0)


def test_edits_of_an_ended_run_go_through_a_handle_fetched_by_id(
    ws: MemoryWorkspace, kafka: MemoryKafka
) -> None:
    run = Experiment(ws, "exp").start_logging()
    run.complete()
    fetched = Run._attached(ws, {"run_id": run.id, "experiment": "exp", "status": "Completed"})
    fetched.tag("best")
    fetched.remove_tags(["best"])
    fetched.add_properties({"dataset": "v2"})
    fetched.add_properties({"dataset": "v2"})  # the same value again: nothing sent
    with pytest.raises(ValueError, match="cannot change once set"):
        fetched.add_properties({"dataset": "v3"})
    fetched.display_name = "baseline"
    fetched.description = "ridge, all features"
    assert (fetched.display_name, fetched.description) == ("baseline", "ridge, all features")
    with pytest.raises(TypeError, match="list of keys"):
        fetched.remove_tags("best")
    fetched.close(5.0)
    run.close(5.0)
    events = kafka.events()
    edits = [e for e in events if e["payload"][0] == "Tag"]
    assert [e["payload"][1] for e in edits] == [
        {"key": "best", "value": None, "target": "tag", "value_type": "str"},
        {"key": "best", "value": None, "target": "untag", "value_type": "str"},
        {"key": "dataset", "value": "v2", "target": "property", "value_type": "str"},
        {"key": "display_name", "value": "baseline", "target": "display_name",
         "value_type": "str"},
        {"key": "description", "value": "ridge, all features", "target": "description",
         "value_type": "str"},
    ]
    completed = next(e for e in events if e["payload"][0] == "Lifecycle"
                     and e["payload"][1]["status"] == "Completed")
    assert {e["producer_id"] for e in edits} == {edits[0]["producer_id"]} != {run.producer_id}
    assert all(e["ts"] >= completed["ts"] for e in edits)


# ---- Kafka down, slow, and the spool ------------------------------------------------


def spooled_values(ws: Workspace) -> list[bytes]:
    """What the spool holds (read directly: the live writer keeps its lock)."""
    return [v for p in list_segments(ws.spool_dir) for _, v in parse(p.read_bytes())[0]]


def test_offline_events_spool_then_replay_unchanged(
    ws: MemoryWorkspace, kafka: MemoryKafka
) -> None:
    kafka.down = True
    run = Experiment(ws, "exp").start_logging()
    for i in range(1000):
        run.log("x", float(i))
    run.tag("offline")
    with pytest.raises(ProducerTimeoutError) as raised:
        run.flush(0.5)
    assert raised.value.pending_events > 0
    assert ws.stats().mode == "offline"
    spooled = spooled_values(ws)
    assert spooled
    assert kafka.delivered == []

    kafka.down = False
    run.flush(15.0)  # reconnects (backoff), replays the spool in order

    delivered = [v for _, v in kafka.delivered]
    assert delivered[: len(spooled)] == spooled  # same bytes: same event_id and seq
    events = kafka.events()
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert run_points(events, run.id)["x"] == [(i, float(i)) for i in range(1000)]
    assert list_segments(ws.spool_dir) == []
    assert ws.stats().events_replayed == len(spooled)


def test_a_slow_broker_spills_to_the_spool_and_loses_nothing(
    make_workspace: Callable[..., MemoryWorkspace], kafka: MemoryKafka
) -> None:
    ws = make_workspace(max_inflight_bytes=2048, batch_max_bytes=4096)
    kafka.hold = True
    run = Experiment(ws, "exp").start_logging()
    for i in range(20_000):
        run.log("x", float(i))
        if i % 2000 == 0:
            time.sleep(0.02)
    wait_until(lambda: ws.stats().events_spooled > 0)
    assert ws.stats().mode == "spooling"

    kafka.release()
    run.flush(15.0)

    events = kafka.events()
    seqs = sorted({e["seq"] for e in events if e["producer_id"] == run.producer_id})
    assert seqs == list(range(len(seqs)))
    points = run_points(list({e["event_id"]: e for e in events}.values()), run.id)["x"]
    assert sorted(points) == [(i, float(i)) for i in range(20_000)]
    assert ws.stats().events_dropped == 0


class CongestedKafka(MemoryKafka):
    """Up, acknowledging at once, but every send waits ``wait_s`` for room in its queue
    while ``congested`` (as aiokafka's send does when its accumulator is full)."""

    def __init__(self, wait_s: float) -> None:
        super().__init__()
        self.wait_s = wait_s
        self.congested = True

    async def send(self, key: bytes, value: bytes) -> Any:
        if self.congested:
            await asyncio.sleep(self.wait_s)
        return await super().send(key, value)


def test_logging_faster_than_kafka_takes_spills_to_disk_and_drops_nothing(
    tmp_path: Path,
) -> None:
    # Each send waits 0.1 s (under send_block_s, so the broker is not "down"): waiting
    # for each would let logging fill the 8 MiB buffer and drop; spilling does not.
    kafka = CongestedKafka(wait_s=0.1)
    ws = MemoryWorkspace(
        kafka,
        home=tmp_path / "home",
        api_url=UNREACHABLE_API,
        options=options(buffer_max_bytes=8 << 20, batch_max_bytes=16 << 10, send_block_s=1.0),
    )
    try:
        run = Experiment(ws, "exp").start_logging()
        n = 100_000
        for i in range(n):
            run.log("x", float(i))
            if i % 1000 == 999:
                time.sleep(0.001)  # a training step's pause; still ~10x what Kafka takes
        wait_until(lambda: ws.stats().events_spooled > 0)
        assert run.dropped_events == 0
        kafka.congested = False
        run.flush(30.0)
        assert ws.stats().events_dropped == 0
        events = kafka.events()
        points = run_points(list({e["event_id"]: e for e in events}.values()), run.id)["x"]
        assert sorted(points) == [(i, float(i)) for i in range(n)]
        seqs = sorted({e["seq"] for e in events if e["producer_id"] == run.producer_id})
        assert seqs == list(range(len(seqs)))
        assert list_segments(ws.spool_dir) == []
    finally:
        ws.close(5.0)


def test_a_log_call_yields_to_a_sender_behind_instead_of_dropping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The sender does not drain (stalled): past an eighth of the buffer's bound every log
    # call yields once (the CPU and the GIL) so a sender starved of them gets to run;
    # below it none does, and nothing is dropped until the bound itself.
    async def stalled(self: Sender) -> None:
        return None

    kafka = MemoryKafka()
    bound = 1 << 20
    ws = MemoryWorkspace(
        kafka, home=tmp_path / "home", api_url=UNREACHABLE_API,
        options=options(buffer_max_bytes=bound),
    )
    try:
        run = Experiment(ws, "exp").start_logging()
        run.flush(10.0)
        buffer = run._buffer
        yields: list[int] = []
        monkeypatch.setattr(run_module, "sched_yield", lambda: yields.append(buffer.nbytes))
        monkeypatch.setattr(Sender, "_pump", stalled)
        n = bound // POINT_COST_BYTES
        for i in range(n):
            run.log("x", float(i))
        assert run.dropped_events == 0
        assert yields, "no log call yielded"
        assert buffer.yield_bytes == bound // 8
        assert min(yields) > bound // 8
        assert len(yields) == n - (bound // 8) // POINT_COST_BYTES
        monkeypatch.undo()
        run.flush(10.0)
        points = run_points(kafka.events(), run.id)["x"]
        assert points == [(i, float(i)) for i in range(n)]
    finally:
        ws.close(5.0)


def test_a_spool_past_its_budget_drops_and_counts(
    make_workspace: Callable[..., MemoryWorkspace], kafka: MemoryKafka
) -> None:
    ws = make_workspace(spool_max_bytes=64 << 10, batch_max_bytes=4096)
    kafka.down = True
    run = Experiment(ws, "exp").start_logging()
    for i in range(50_000):
        run.log("x", float(i))
    wait_until(lambda: run.dropped_events > 0)
    spooled = sum(p.stat().st_size for p in list_segments(ws.spool_dir))
    assert spooled <= 64 << 10
    assert "budget" in (ws.stats().last_error or "")


def test_unwritable_spool_counts_drops_warns_once_and_reports_them(
    make_workspace: Callable[..., MemoryWorkspace],
    kafka: MemoryKafka,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("the spool cannot be created under a regular file")
    ws = make_workspace(home=blocker, heartbeat_interval_s=0.05)
    kafka.down = True
    run = Experiment(ws, "exp").start_logging()
    for i in range(10):
        run.tag(f"t{i}")
    wait_until(lambda: run.dropped_events >= 10)  # 10 tags; the 2 lifecycle events are held
    assert ws.stats().events_held == 2

    assert ws.stats().events_dropped == run.dropped_events
    drop_warnings = [r for r in caplog.records if "dropping events" in r.getMessage()]
    assert len(drop_warnings) == 1

    kafka.down = False
    run.flush(15.0)
    wait_until(lambda: bool(of_kind(kafka.events(), "Heartbeat")))
    events = [e for e in kafka.events() if e["producer_id"] == run.producer_id]
    heartbeat = of_kind(events, "Heartbeat")[-1]
    assert heartbeat["dropped_events"] == run.dropped_events
    seqs = {e["seq"] for e in events}
    missing = set(range(max(seqs) + 1)) - seqs
    assert len(missing) == run.dropped_events  # every gap is a counted drop


def test_a_full_buffer_drops_and_counts_without_blocking(
    ws: MemoryWorkspace, kafka: MemoryKafka, tmp_path: Path
) -> None:
    # A sender that is never started: nothing drains, so the bound is what stops growth.
    sender = Sender(
        sender_id="never-started",
        options=options(buffer_max_bytes=64 * 1024),
        codec=CODEC,
        transport=kafka,
        spool_dir=tmp_path / "spool",
        blob_dir=tmp_path / "blobs",
        api=ApiClient(api_url=UNREACHABLE_API, token="", timeout_s=1.0),
    )
    stream = Stream(
        run_id="exp_1_0a0b0c0d", experiment="exp", workspace="default", producer_id="p", rank=0
    )
    sender.buffer.register(stream)
    run = Run._new(
        experiment=Experiment(ws, "exp"),
        session=ws._session,
        stream=stream,
        sender=sender,
        parent=None,
        world_size=1,
        display_name=None,
        compute_target=None,
        properties={},
        outputs_dir=None,
    )
    slowest = 0.0
    for i in range(10_000):
        started = time.perf_counter()
        run.log("x", float(i))
        slowest = max(slowest, time.perf_counter() - started)

    kept = stream.series["x"].n
    assert 0 < kept < 10_000
    assert run.dropped_events == 10_000 - kept
    assert sender.buffer.nbytes <= 64 * 1024 + 1024
    assert slowest < 0.05


def test_flush_times_out_and_close_is_quick_when_offline(
    ws: MemoryWorkspace, kafka: MemoryKafka
) -> None:
    kafka.down = True
    run = Experiment(ws, "exp").start_logging()
    run.log("x", 1.0)
    with pytest.raises(ProducerTimeoutError):
        run.flush(0.3)
    started = time.monotonic()
    run.close(10.0)
    assert time.monotonic() - started < 2.0
    assert len(spooled_values(ws)) == 3  # NotStarted, Running, one batch


def test_sync_delivers_what_a_closed_producer_left(
    make_workspace: Callable[..., MemoryWorkspace], kafka: MemoryKafka
) -> None:
    ws = make_workspace()
    kafka.down = True
    with Experiment(ws, "exp").start_logging() as run:
        for i in range(100):
            run.log("x", float(i))
    ws.close(5.0)
    spooled = spooled_values(ws)
    assert spooled

    kafka.down = False
    progress: list[SyncProgress] = []
    result = sync(ws, progress=progress.append)

    assert result.complete
    assert result.events_sent == len(spooled)
    assert [v for _, v in kafka.delivered] == spooled
    assert list_segments(ws.spool_dir) == []
    assert progress[-1].events_done == progress[-1].events_total == len(spooled)
    assert [p.events_done for p in progress] == sorted(p.events_done for p in progress)


def test_sync_reports_an_unreachable_broker(
    make_workspace: Callable[..., MemoryWorkspace], kafka: MemoryKafka
) -> None:
    ws = make_workspace()
    kafka.down = True
    Experiment(ws, "exp").start_logging().close(2.0)

    result = sync(ws)

    assert not result.complete
    assert result.events_sent == 0
    assert result.events_remaining == len(spooled_values(ws)) == 2
    assert "down" in result.errors[0]


# ---- runs launched by a job ---------------------------------------------------------


def test_get_context_opens_the_same_run_per_rank_as_separate_producers(
    ws: MemoryWorkspace, kafka: MemoryKafka
) -> None:
    env = {"RUNSTREAM_RUN_ID": "mnist_1700000000_0a1b2c3d", "RUNSTREAM_WORLD_SIZE": "2"}
    rank0 = Run.get_context(workspace=ws, env={**env, "RUNSTREAM_RANK": "0"})
    rank1 = Run.get_context(workspace=ws, env={**env, "RUNSTREAM_RANK": "1"})
    rank0.log("loss", 1.0)
    rank1.log("loss", 2.0)
    ws.flush(10.0)

    assert rank0.id == rank1.id == env["RUNSTREAM_RUN_ID"]
    assert rank0.experiment.name == "mnist"
    assert (rank0.rank, rank1.rank, rank1.world_size) == (0, 1, 2)
    events = kafka.events()
    by_producer = Counter((e["producer_id"], e["rank"]) for e in events)
    assert set(by_producer) == {(rank0.producer_id, 0), (rank1.producer_id, 1)}
    running = of_kind(events, "Lifecycle")
    assert [e["status"] for e in running] == ["Running", "Running"]
    assert running[0]["properties"] == {"world_size": "2"}


@pytest.mark.parametrize(
    "env",
    [
        {"RUNSTREAM_RUN_ID": "r_1_0a1b2c3d", "RUNSTREAM_RANK": "x"},
        {"RUNSTREAM_RUN_ID": "r_1_0a1b2c3d", "RUNSTREAM_RANK": "2", "RUNSTREAM_WORLD_SIZE": "2"},
        {"RUNSTREAM_RUN_ID": "not-azure-style"},
    ],
)
def test_get_context_rejects_a_bad_environment(ws: MemoryWorkspace, env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        Run.get_context(workspace=ws, env=env)


def test_get_context_without_a_run_id_starts_a_run(ws: MemoryWorkspace) -> None:
    run = Run.get_context(workspace=ws, env={"RUNSTREAM_EXPERIMENT": "local"})
    assert run.experiment.name == "local"
    assert run.id.startswith("local_")


# ---- files, images, outputs, captured output, heartbeats ---------------------------


def test_files_images_and_outputs_are_staged_and_referenced(
    ws: MemoryWorkspace, kafka: MemoryKafka, tmp_path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outputs = tmp_path / "outputs"
    (outputs / "sub").mkdir(parents=True)
    (outputs / "model.pkl").write_bytes(b"model")
    (outputs / "sub" / "notes.txt").write_bytes(b"notes")
    png = tmp_path / "roc.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n fake")

    with Experiment(ws, "exp").start_logging(outputs_dir=outputs) as run:
        with (outputs / "model.pkl").open("rb") as stream:
            run.upload_file("extra/data.bin", stream)
        run.upload_file("outputs/model.pkl", outputs / "model.pkl")  # captured once, not twice
        run.log_image("ROC", path=png)
        plt.plot([0, 1], [0, 1])
        run.log_image("curve", plot=plt)
        plt.close("all")
    wait_until(
        lambda: any(s["status"] == "Completed" for s in of_kind(kafka.events(), "Lifecycle"))
    )

    artifacts = {a["name"]: a for a in of_kind(kafka.events(), "Artifact")}
    assert sorted(artifacts) == [
        "ROC/step_0.png",
        "curve/step_0.png",
        "extra/data.bin",
        "outputs/model.pkl",
        "outputs/sub/notes.txt",
    ]
    assert artifacts["outputs/model.pkl"]["sha256"] == hashlib.sha256(b"model").hexdigest()
    assert artifacts["outputs/sub/notes.txt"]["size_bytes"] == 5
    roc = artifacts["ROC/step_0.png"]
    assert (roc["kind"], roc["content_type"]) == ("IMAGE", "image/png")
    assert artifacts["curve/step_0.png"]["kind"] == "IMAGE"
    assert artifacts["extra/data.bin"]["kind"] == "FILE"
    staged = {p.name for p in ws.blob_dir.iterdir()}
    assert {a["sha256"] for a in artifacts.values()} <= staged  # the API is unreachable
    curve = (ws.blob_dir / artifacts["curve/step_0.png"]["sha256"]).read_bytes()
    assert curve.startswith(b"\x89PNG")
    statuses = [e["status"] for e in of_kind(kafka.events(), "Lifecycle")]
    assert statuses == ["NotStarted", "Running", "Finalizing", "Completed"]


def test_captured_output_becomes_log_lines(ws: MemoryWorkspace, kafka: MemoryKafka) -> None:
    original = sys.stdout
    with Experiment(ws, "exp").start_logging(capture_output=True) as run:
        print("epoch 1")
        print("epoch 2", end="")
    assert sys.stdout is original
    run.flush(10.0)

    lines = [line for e in of_kind(kafka.events(), "LogLines") for line in e["lines"]]
    assert lines == ["epoch 1", "epoch 2"]


def test_heartbeats_while_open_only(
    make_workspace: Callable[..., MemoryWorkspace], kafka: MemoryKafka
) -> None:
    ws = make_workspace(heartbeat_interval_s=0.05)
    run = Experiment(ws, "exp").start_logging()
    wait_until(lambda: len(of_kind(kafka.events(), "Heartbeat")) >= 2)
    run.complete()
    run.flush(10.0)
    time.sleep(0.2)
    events = kafka.events()
    completed_at = next(
        e["seq"]
        for e in events
        if e["payload"][0] == "Lifecycle" and e["payload"][1]["status"] == "Completed"
    )
    assert all(e["seq"] < completed_at for e in events if e["payload"][0] == "Heartbeat")
    assert of_kind(events, "Heartbeat")[0] == {"dropped_events": 0}


def test_workspace_from_env_reads_the_documented_variables(tmp_path: Path) -> None:
    ws = Workspace.from_env(
        {
            "RUNSTREAM_KAFKA": "k:1",
            "RUNSTREAM_API": "http://api:2/",
            "RUNSTREAM_HOME": str(tmp_path),
            "RUNSTREAM_TOPIC": "t",
            "RUNSTREAM_TOKEN": "sekrit",
            "RUNSTREAM_WORKSPACE": "team",
        }
    )
    assert (ws.kafka_bootstrap, ws.api_url, ws.home, ws.topic, ws.name) == (
        "k:1",
        "http://api:2",
        tmp_path,
        "t",
        "team",
    )
    assert "sekrit" not in repr(ws)
    with pytest.raises(ConfigError):
        Workspace(api_url="file:///etc")


def test_nothing_is_logged_by_the_sdk_at_info_on_a_healthy_run(
    ws: MemoryWorkspace, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="producer")
    with Experiment(ws, "exp").start_logging() as run:
        run.log("x", 1.0)
    run.flush(10.0)
    assert [r for r in caplog.records if r.name.startswith("producer")] == []


def test_numpy_scalars_are_plain_values_on_the_wire(
    ws: MemoryWorkspace, kafka: MemoryKafka
) -> None:
    import numpy as np

    run = Experiment(ws, "exp").start_logging()
    run.log("f64", np.float64(0.25))  # a float subclass: the fast path
    run.log("f32", np.float32(0.5))
    run.log("i64", np.int64(7))
    run.log("flag", np.bool_(True))
    run.log_list("arr", list(np.arange(3)))
    run.flush(10.0)

    events = kafka.events()
    assert run_points(events, run.id) == {
        "f64": [(0, 0.25)],
        "f32": [(0, 0.5)],
        "i64": [(0, 7)],
        "flag": [(0, True)],
    }
    assert of_kind(events, "ListValue") == [{"name": "arr", "values": [0, 1, 2]}]


def test_new_metric_names_start_no_collection(
    ws: MemoryWorkspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A collection runs finalizers and weakref callbacks in the thread that makes it: in
    # a training thread, a signal handler's exception raised inside one is ignored (a
    # SIGTERM or Ctrl-C would not stop the program), and a finalizer that logs would wait
    # on a lock its own thread holds. The buffer's arrays have nothing for a collection to
    # walk, so the SDK never starts one (the lists it used before had the sender age them).
    run = Experiment(ws, "exp").start_logging()
    collections: list[str] = []

    def collect(generation: int = 2) -> int:
        collections.append(threading.current_thread().name)
        return 0

    monkeypatch.setattr(gc, "collect", collect)
    run.log("a", 1.0)
    run.log_metrics({"b": 1.0, "c": 2.0})
    run.flush(10.0)
    assert collections == []
