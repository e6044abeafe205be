"""A run's status is never what gets dropped: Lifecycle events the spool cannot take.

Kafka is down and the spool refuses every write (its directory is a regular file, like
a full disk: every append raises ``SpoolError``). Metric events are dropped and counted;
Lifecycle events are held in memory by the sender and delivered once Kafka is back, or
settled at close. ``MemoryKafka`` (tests/unit/test_producer_run.py) stands in for the
transport only; buffer, codec, sequencing, spool and sender are the real ones.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from producer import Experiment, KafkaUnavailableError, ProducerTimeoutError, Run, Workspace
from producer._spool import list_segments, parse
from schemas.codec import Codec
from tests.unit.producer_fakes import (
    UNREACHABLE_API,
    MemoryKafka,
    MemoryWorkspace,
    options,
    wait_until,
)

CODEC = Codec()
#: start_logging emits NotStarted and Running; complete emits Finalizing and Completed.
STATUSES = ["NotStarted", "Running", "Finalizing", "Completed"]


class FailingKafka(MemoryKafka):
    """``fail_held()`` fails the held sends like requests that timed out."""

    def fail_held(self) -> None:
        with self._lock:
            self.hold = False
            held, self._held = self._held, []
        for loop, fut, _, _ in held:
            error = KafkaUnavailableError("request timed out", retriable=True)
            loop.call_soon_threadsafe(fut.set_exception, error)


@pytest.fixture
def kafka() -> FailingKafka:
    return FailingKafka()


@pytest.fixture
def blocked_home(tmp_path: Path) -> Path:
    """A home whose spool directory is a regular file: every spool write fails."""
    home = tmp_path / "home"
    (home / "spool").mkdir(parents=True)
    (home / "spool" / "events").write_text("not a directory: the spool cannot be written")
    return home


@pytest.fixture
def ws(blocked_home: Path, kafka: FailingKafka) -> Iterator[MemoryWorkspace]:
    ws = MemoryWorkspace(kafka, home=blocked_home, api_url=UNREACHABLE_API, options=options())
    yield ws
    ws.close(5.0)


def unblock_spool(ws: Workspace) -> None:
    ws.spool_dir.unlink()


def producer_events(kafka: MemoryKafka, run: Run) -> list[dict[str, Any]]:
    return [e for e in kafka.events() if e["producer_id"] == run.producer_id]


def statuses(events: list[dict[str, Any]]) -> list[str]:
    return [e["payload"][1]["status"] for e in events if e["payload"][0] == "Lifecycle"]


def offline_run_ended(ws: Workspace, kafka: MemoryKafka, chunks: int = 3) -> Run:
    """With Kafka down, a run logs ``chunks`` metric batches (each drained before the
    next) and completes; returns once its status events are held."""
    kafka.down = True
    run = Experiment(ws, "exp").start_logging()
    for chunk in range(chunks):
        for i in range(1000):
            run.log("x", float(chunk * 1000 + i))
        wait_until(lambda: ws.stats().buffered_bytes == 0)
    run.complete()
    wait_until(lambda: ws.stats().events_held == len(STATUSES))
    return run


def test_status_events_the_spool_refuses_are_held_then_delivered_once_in_order(
    ws: MemoryWorkspace, kafka: FailingKafka
) -> None:
    run = offline_run_ended(ws, kafka)

    held = ws.stats()
    assert run.dropped_events >= 3  # a metric batch per drain at least: every one dropped
    assert held.events_dropped == run.dropped_events
    assert (held.events_sent, held.events_spooled, held.mode) == (0, 0, "offline")
    assert kafka.delivered == []
    with pytest.raises(ProducerTimeoutError) as raised:
        ws.flush(0.3)  # flush waits for held events like for spooled ones
    assert raised.value.pending_events == len(STATUSES)

    kafka.down = False
    ws.flush(15.0)  # reconnects (backoff), then sends the held events

    events = producer_events(kafka, run)
    assert statuses(events) == STATUSES  # each exactly once, in seq order
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    assert len({e["event_id"] for e in events}) == len(events)
    assert not [e for e in events if e["payload"][0] == "MetricBatch"]
    # The run ended during the outage: one Heartbeat after its status carries the drops.
    (report,) = [e for e in events if e["payload"][0] == "Heartbeat"]
    assert report["payload"][1] == {"dropped_events": run.dropped_events}
    assert report["seq"] == max(e["seq"] for e in events)
    # Every sequence gap is a counted drop; the held events left none.
    seqs = {e["seq"] for e in events}
    assert len(set(range(max(seqs) + 1)) - seqs) == run.dropped_events
    after = ws.stats()
    assert (after.events_held, after.events_sent, after.events_spooled) == (0, 5, 0)
    assert after.events_dropped == run.dropped_events
    assert after.mode == "online"


def test_status_events_whose_send_fails_in_flight_are_held_too_and_sent_in_seq_order(
    blocked_home: Path, kafka: FailingKafka
) -> None:
    # One unacknowledged byte is enough to spool (SPOOLING): NotStarted stays in flight,
    # everything after it meets the refusing spool.
    ws = MemoryWorkspace(
        kafka, home=blocked_home, api_url=UNREACHABLE_API, options=options(max_inflight_bytes=1)
    )
    try:
        kafka.hold = True  # a broker that stops answering
        run = Experiment(ws, "exp").start_logging()
        wait_until(lambda: ws.stats().events_held == 1)  # Running
        assert ws.stats().events_in_flight == 1  # NotStarted
        run.log("x", 1.0)
        run.complete()
        wait_until(lambda: ws.stats().events_held == 3)  # and Finalizing, Completed
        kafka.down = True
        kafka.fail_held()  # NotStarted's request times out; the spool refuses it too
        wait_until(lambda: ws.stats().events_held == 4)  # held after the newer ones
        assert run.dropped_events == 1  # the metric batch

        kafka.down = False
        ws.flush(15.0)

        events = producer_events(kafka, run)
        assert statuses(events) == STATUSES
        assert [e["seq"] for e in events] == [0, 1, 3, 4, 5]  # seq 2 was the dropped batch
        assert events[-1]["payload"] == ("Heartbeat", {"dropped_events": 1})
    finally:
        ws.close(5.0)


def test_close_spools_held_events_once_the_spool_has_room(
    ws: MemoryWorkspace, kafka: FailingKafka
) -> None:
    run = offline_run_ended(ws, kafka)
    dropped = run.dropped_events
    unblock_spool(ws)

    ws.close(2.0)

    segments = list_segments(ws.spool_dir)
    spooled = [CODEC.decode(v) for p in segments for _, v in parse(p.read_bytes())[0]]
    assert statuses(spooled) == STATUSES
    stats = ws.stats()
    assert (stats.events_held, stats.events_spooled, stats.events_dropped) == (0, 4, dropped)
    assert kafka.delivered == []


def test_close_counts_and_logs_held_events_it_can_neither_spool_nor_send(
    ws: MemoryWorkspace, kafka: FailingKafka, caplog: pytest.LogCaptureFixture
) -> None:
    run = offline_run_ended(ws, kafka)
    dropped = run.dropped_events

    with caplog.at_level(logging.WARNING, logger="producer"):
        ws.close(2.0)

    assert run.dropped_events == dropped + len(STATUSES)
    assert ws.stats().events_dropped == run.dropped_events
    assert ws.stats().events_held == 0
    assert any("4 runstream run status events" in r.getMessage() for r in caplog.records)
    assert kafka.delivered == []
