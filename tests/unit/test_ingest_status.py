"""status: the run state is the same whatever order its events arrive in."""

from __future__ import annotations

import itertools

import pytest

from ingest.bench.events import EventFactory
from ingest.db.runstatus import derive_status
from ingest.worker.decode import decode_event
from ingest.worker.status import (
    WriteStamp,
    newer_write,
    reduce_producers,
    reduce_runs,
)
from schemas.codec import Codec

CODEC = Codec()


@pytest.mark.parametrize(
    ("seen", "status"),
    [
        ({}, "NotStarted"),
        ({"Queued": 5, "NotStarted": 1}, "Queued"),
        ({"Running": 3, "Queued": 9}, "Running"),  # rank wins over arrival time
        ({"Running": 3, "Finalizing": 4, "CancelRequested": 5}, "CancelRequested"),
        ({"Completed": 10, "Failed": 12}, "Completed"),  # the earliest terminal sticks
        ({"Completed": 12, "Failed": 10}, "Failed"),
        ({"Canceled": 7, "Running": 8}, "Canceled"),
        ({"Completed": 7, "Failed": 7, "Canceled": 7}, "Completed"),
    ],
)
def test_derive_status(seen: dict[str, int], status: str) -> None:
    assert derive_status(seen) == status


def test_run_delta_is_independent_of_arrival_order() -> None:
    f = EventFactory("exp_1_aaaaaaaa")
    events = [decode_event(CODEC, CODEC.encode(e)) for e in (
        f.lifecycle("Queued", display_name="first", compute_target="gpu", ts_us=10),
        f.lifecycle("Running", display_name="later", ts_us=20),
        f.heartbeat(ts_us=25),
        f.lifecycle("Failed", error="boom", ts_us=30),
        f.lifecycle("Failed", error="again", ts_us=40),
    )]
    outcomes = set()
    for order in itertools.permutations(events):
        (d,) = reduce_runs(order)
        outcomes.add((d.display_name, d.compute_target, d.error, d.created_us,
                      d.last_event_us, d.last_heartbeat_us, tuple(sorted(d.first_seen_us.items())),
                      derive_status(d.first_seen_us)))
    assert outcomes == {("first", "gpu", "boom", 10, 40, 25,
                         (("Failed", 30), ("Queued", 10), ("Running", 20)), "Failed")}


def test_reduce_runs_sorts_by_run_id_for_a_fixed_lock_order() -> None:
    events = [decode_event(CODEC, CODEC.encode(EventFactory(r).heartbeat()))
              for r in ("c_1_x", "a_1_x", "b_1_x")]
    assert [d.run_id for d in reduce_runs(events)] == ["a_1_x", "b_1_x", "c_1_x"]


def test_producers_count_events_and_drops() -> None:
    f = EventFactory("r_1_x", rank=3)
    events = [decode_event(CODEC, CODEC.encode(e))
              for e in (f.heartbeat(1), f.tag("a"), f.heartbeat(4))]
    (p,) = reduce_producers(events)
    assert (p.rank, p.events, p.max_seq, p.dropped_events) == (3, 3, 2, 4)


def test_newer_write_uses_seq_within_a_producer_and_time_across() -> None:
    assert newer_write(WriteStamp(1, "p", 5), WriteStamp(9, "p", 4))  # seq beats clock
    assert not newer_write(WriteStamp(9, "p", 3), WriteStamp(1, "p", 4))
    assert newer_write(WriteStamp(9, "q", 0), WriteStamp(1, "p", 7))
    assert not newer_write(WriteStamp(1, "q", 9), WriteStamp(2, "p", 0))
