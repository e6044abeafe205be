"""Any order of a run's lifecycle events gives the same row in ``runstream.runs``.

Each lifecycle sequence below (hand-written ones with their expected outcome, and seeded
random ones checked against the rule as written in ``ingest/worker/status.py``) is written many
times into the real PostgreSQL through the real batch write (``Store.write_batch``), each
time as a separate run: the events in a random order, cut into 1..4 transactions that
also carry other runs' events, with some events sent twice (same ``event_id``, in the same
or a later transaction) and finally the whole sequence replayed. Every copy's final row —
status, every per-state time, error, metadata, created/last-event/heartbeat times — must
be identical, and equal to the expected one.

Within one transaction the store orders a run's events by (producer, seq), so what
arrival order can change is which events are merged in Python (``status.reduce_runs``)
and which in SQL (``SQL_MERGE_RUNS``) and in what sequence; the cuts cover both.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ingest.bench.events import EventFactory
from ingest.db.runstatus import STATUS_COLUMNS, STATUS_RANK, TERMINAL
from ingest.worker.decode import DeadLetter, decode_event
from ingest.worker.store import Batch, Store
from schemas.codec import Codec
from tests.integration.helpers import NewDb, fetch
from tests.reliability import BAD_INPUT, Reliability, storage_backend

pytestmark = pytest.mark.integration

CODEC = Codec()
S = 1_000_000  # µs per second
ORDERS = 20  # copies (orders and cuts) per sequence
META: dict[str, Any] = {
    "display_name": "ridge",
    "compute_target": "gpu-a",
    "properties": {"lr": "0.1"},
}


@dataclass(frozen=True)
class Step:
    """One lifecycle event (or heartbeat) of a sequence: who sends it and when."""

    status: str  # a RunStatus, or "heartbeat"
    at_s: int
    rank: int = 0
    error: str | None = None
    meta: bool = False


@dataclass
class History:
    name: str
    steps: list[Step]
    status: str
    #: the run's error column: the text of its earliest Failed or Canceled event (the
    #: view shows it only while the status is Failed or Canceled)
    error: str | None = None
    #: status → seconds after t0 of its first event; derived from steps when empty.
    times: dict[str, int] = field(default_factory=dict)


HAND_WRITTEN = [
    History(
        "completed",
        [
            Step("NotStarted", 0, meta=True),
            Step("Queued", 1),
            Step("Preparing", 2),
            Step("Running", 3),
            Step("heartbeat", 4),
            Step("Finalizing", 5),
            Step("Completed", 6),
        ],
        "Completed",
        times={
            "NotStarted": 0,
            "Queued": 1,
            "Preparing": 2,
            "Running": 3,
            "Finalizing": 5,
            "Completed": 6,
        },
    ),
    History(
        "failed",
        [
            Step("NotStarted", 0, meta=True),
            Step("Running", 0, meta=True),
            Step("heartbeat", 2),
            Step("Failed", 4, error="Traceback …\nValueError: boom ✗"),
        ],
        "Failed",
        "Traceback …\nValueError: boom ✗",
        {"NotStarted": 0, "Running": 0, "Failed": 4},
    ),
    History(
        "canceled, then a late Running from another rank",
        [
            Step("Queued", 0, meta=True),
            Step("CancelRequested", 2),
            Step("Canceled", 3),
            Step("Running", 5, rank=1, meta=True),
        ],
        "Canceled",
        times={"Queued": 0, "CancelRequested": 2, "Canceled": 3, "Running": 5},
    ),
    History(
        "three ranks fail at the same microsecond",
        [
            Step("Running", 1, rank=0, meta=True),
            Step("Running", 1, rank=1, meta=True),
            Step("Running", 2, rank=2, meta=True),
            Step("Failed", 6, rank=1),
            Step("Failed", 6, rank=0, error="boom"),
            Step("Failed", 6, rank=2, error="oom"),
            Step("Completed", 7, rank=0),
            Step("heartbeat", 8, rank=2),
            Step("heartbeat", 5, rank=1),
        ],
        "Failed",
        "oom",
        {"Running": 1, "Failed": 6, "Completed": 7},
    ),
    History(
        "the earliest Failed carries no error",
        [
            Step("Running", 0, meta=True),
            Step("Failed", 5, rank=1),
            Step("Failed", 8, rank=0, error="late traceback"),
        ],
        "Failed",
        None,
        {"Running": 0, "Failed": 5},
    ),
    History(
        "Completed and Failed at the same time",
        [
            Step("Running", 0, meta=True),
            Step("Completed", 5),
            Step("Failed", 5, rank=1, error="x"),
        ],
        "Completed",
        "x",
        {"Running": 0, "Completed": 5, "Failed": 5},
    ),
    History(
        "canceled by SIGTERM before a late Failed of another rank",
        [
            Step("Running", 0, meta=True),
            Step("Canceled", 4, error="terminated by SIGTERM"),
            Step("Failed", 6, rank=1, error="no heartbeat for 30 min"),
        ],
        "Canceled",
        "terminated by SIGTERM",
        {"Running": 0, "Canceled": 4, "Failed": 6},
    ),
    History(
        "failed, then canceled with a reason",
        [
            Step("Running", 0, meta=True),
            Step("Failed", 3, rank=1, error="boom"),
            Step("Canceled", 5, error="KeyboardInterrupt (Ctrl-C)"),
        ],
        "Failed",
        "boom",
        {"Running": 0, "Failed": 3, "Canceled": 5},
    ),
    History(
        "still running",
        [
            Step("NotStarted", 0, meta=True),
            Step("Running", 1, meta=True),
            Step("heartbeat", 9),
            Step("heartbeat", 3, rank=1),
        ],
        "Running",
        times={"NotStarted": 0, "Running": 1},
    ),
]


def expected_by_the_rule(steps: Sequence[Step]) -> tuple[str, str | None, dict[str, int]]:
    """(status, error, first-seen times) as ``ingest/worker/status.py`` states the rule."""
    first: dict[str, int] = {}
    for s in steps:
        if s.status != "heartbeat":
            first[s.status] = min(first.get(s.status, s.at_s), s.at_s)
    ended = [(first[t], i, t) for i, t in enumerate(TERMINAL) if t in first]
    status = min(ended)[2] if ended else max(first, key=STATUS_RANK.__getitem__)
    with_error = [first[t] for t in ("Failed", "Canceled") if t in first]
    errors = [s.error for s in steps
              if s.status in ("Failed", "Canceled") and s.at_s == min(with_error)]
    texts = [e for e in errors if e is not None]
    return status, max(texts) if texts else None, first


def random_sequences(rng: random.Random, n: int) -> list[History]:
    out = []
    for i in range(n):
        ranks = rng.randint(1, 3)
        steps = [
            Step(
                rng.choice(list(STATUS_COLUMNS)),
                rng.randint(0, 5),
                rng.randrange(ranks),
                rng.choice([None, "a", "b", "Traceback"]),
                meta=True,
            )
            for _ in range(rng.randint(2, 8))
        ]
        steps = [
            s if s.status in ("Failed", "Canceled") else Step(s.status, s.at_s, s.rank, None,
                                                              s.meta)
            for s in steps
        ]
        steps.append(Step("heartbeat", rng.randint(0, 9), rng.randrange(ranks)))
        status, error, times = expected_by_the_rule(steps)
        out.append(History(f"random #{i}", steps, status, error, times))
    return out


def build(seq: History, run_id: str, t0_us: int) -> list[dict[str, Any]]:
    """The sequence's events for one run, one producer per rank (seq in send order)."""
    producers: dict[int, EventFactory] = {}
    events = []
    for s in sorted(seq.steps, key=lambda s: s.at_s):  # each producer sends in time order
        f = producers.setdefault(s.rank, EventFactory(run_id, experiment="order", rank=s.rank))
        ts = t0_us + s.at_s * S
        if s.status == "heartbeat":
            events.append(f.heartbeat(ts_us=ts))
        else:
            events.append(
                f.lifecycle(s.status, error=s.error, ts_us=ts, **(META if s.meta else {}))
            )
    return events


async def no_dlq(dead: Sequence[DeadLetter]) -> None:
    raise AssertionError(f"unexpected dead letters {dead}")


ROW_SQL = """
SELECT v.*, r.status AS stored_status, r.not_started_at, r.running_at, r.completed_at,
       r.failed_at, r.canceled_at, r.meta_at, r.error AS stored_error
FROM runstream.runs v JOIN runstream_data.runs r USING (run_id)
ORDER BY v.run_id
"""


async def test_any_order_and_batching_of_lifecycle_events_gives_one_final_row(
    new_db: NewDb, reliability: Reliability
) -> None:
    dsn = await new_db()
    rng = random.Random(20261128)
    for seq in HAND_WRITTEN:  # the hand-written expectations are the rule's too
        assert expected_by_the_rule(seq.steps) == (seq.status, seq.error, seq.times), seq.name
    sequences = HAND_WRITTEN + random_sequences(rng, 6)
    t0_us = (int(time.time()) - 30) * S
    copies: dict[str, History] = {}  # run id → the sequence it is a copy of
    transactions: list[list[dict[str, Any]]] = [[] for _ in range(5)]
    sent = 0
    for seq_no, seq in enumerate(sequences):
        for copy in range(ORDERS):
            run_id = f"order_{seq_no:02d}_{copy:02d}_{rng.getrandbits(32):08x}"
            copies[run_id] = seq
            events = build(seq, run_id, t0_us)
            if copy == 1:
                events.reverse()
            elif copy > 1:
                rng.shuffle(events)
            cuts = sorted(
                rng.sample(range(1, len(events)), min(rng.randint(0, 3), len(events) - 1))
            )
            bounds = [0, *cuts, len(events)]
            for k in range(len(bounds) - 1):
                transactions[k] += events[bounds[k] : bounds[k + 1]]
            for dup in rng.sample(events, rng.randint(0, len(events))):  # retries, replays
                transactions[rng.randrange(4)].append(dup)
            transactions[4] += events  # the whole sequence replayed at the end
            sent += len(events)
    new = duplicates = 0
    async with Store(dsn=dsn) as store:
        for tx in transactions:
            rng.shuffle(tx)
            result = await store.write_batch(
                Batch("t", "g", events=[decode_event(CODEC, CODEC.encode(e)) for e in tx]),
                send_dead_letters=no_dlq,
            )
            new += result.new_events
            duplicates += result.duplicates

    # The test is about order, not NotResponding: keep "still running" Running whatever
    # the machine's speed.
    await fetch(
        dsn, "UPDATE runstream_data.settings SET value = '1 day' WHERE key = 'not_responding_after'"
    )
    rows = await fetch(dsn, ROW_SQL)
    # every event stored once; every other copy of it counted as a duplicate
    assert (new, duplicates) == (sent, sum(map(len, transactions)) - sent)
    assert len(rows) == len(sequences) * ORDERS
    by_seq: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_seq.setdefault(copies[row.pop("run_id")].name, []).append(row)
    disagreeing = [s.name for s in sequences if any(r != by_seq[s.name][0] for r in by_seq[s.name])]
    wrong = [s.name for s in sequences if by_seq[s.name][0]["status"] != s.status]
    reliability.record(
        guarantee="any order and batching of lifecycle events gives one final run row "
        "(status, per-state times, error, metadata)",
        faults=f"{len(sequences)} lifecycle sequences x {ORDERS} orders each (reversed, "
        "shuffled), cut into 1-4 transactions, random duplicates, a full replay",
        events=sent,
        storage=await storage_backend(dsn),
        section=BAD_INPUT,
        notes=f"{new} events stored once, {duplicates} duplicates dropped; "
        f"{len(disagreeing)} of {len(sequences)} sequences with copies that disagree, "
        f"{len(wrong)} with a wrong final status",
    )
    for seq in sequences:
        copies_rows = by_seq[seq.name]
        first = copies_rows[0]
        different = [r for r in copies_rows if r != first]
        assert not different, (seq.name, first, different[0])
        times = {s: first[c] for s, c in _time_columns().items() if first[c] is not None}
        expected_times = {s: _at(t0_us, t) for s, t in seq.times.items()}
        assert (first["status"], first["stored_status"], times) == (
            seq.status,
            seq.status,
            expected_times,
        ), seq.name
        assert first["error"] == (seq.error if seq.status in ("Failed", "Canceled") else None), (
            seq.name)
        assert first["stored_error"] == seq.error, seq.name
        assert (first["display_name"], first["compute_target"], first["properties"]) == (
            "ridge",
            "gpu-a",
            '{"lr": "0.1"}',
        ), seq.name
        ats = [s.at_s for s in seq.steps]
        assert (first["created_at"], first["last_event_at"]) == (
            _at(t0_us, min(ats)),
            _at(t0_us, max(ats)),
        ), seq.name
        beats = [s.at_s for s in seq.steps if s.status == "heartbeat"]
        assert first["last_heartbeat_at"] == (_at(t0_us, max(beats)) if beats else None)
        assert first["ended_at"] == min((times[t] for t in TERMINAL if t in times), default=None), (
            seq.name
        )


def _time_columns() -> dict[str, str]:
    """Status → the column holding its first time in ROW_SQL's row."""
    view = {
        "Queued": "queued_at",
        "Running": "started_at",
        "Preparing": "preparing_at",
        "Finalizing": "finalizing_at",
        "CancelRequested": "cancel_requested_at",
    }
    return {s: view.get(s, c) for s, c in STATUS_COLUMNS.items()}


def _at(t0_us: int, at_s: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=t0_us + at_s * S)
