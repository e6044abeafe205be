"""Run status merge, last-write-wins rules: how a batch's events fold into run rows.

Status is kept as a merge of *first-seen timestamps per status* (``queued_at`` = earliest
Queued event, …), a join-semilattice: merging is ``least()`` per column, so the result
is the same whatever order events arrive in, whichever worker writes them, and however
often a batch is replayed. The status is derived from those timestamps by rank (the
generated ``status`` column in ``migrations/0001_core.sql``; ``derive_status`` in
``ingest/db/runstatus.py`` is the same rule in Python):

    NotStarted < Queued < Preparing < Running < Finalizing < CancelRequested < terminal

the highest rank reached wins; among terminal states the earliest one sticks (ties:
Completed, then Failed, then Canceled). ``NotResponding`` is not stored: the
``runstream.runs`` view shows it for a Running run whose newest event (heartbeats
included) is older than the ``not_responding_after`` setting.

Metadata of a run (display name, compute target, parent, properties) comes from its
earliest Lifecycle event that carries any; the error text from its earliest Failed or
Canceled event — a failure's traceback, or why it was canceled ("terminated by SIGTERM") —
(none if that event has none; among such events with the same earliest time, a text over
none, then the greatest text), so it does not depend on arrival order or batching either.

Retries of a submitted run (schema v2 ``Lifecycle.attempt``): the merge is per attempt
— the pair (attempt, first-seen timestamps) is still a semilattice, ordered by attempt
first: a higher attempt replaces the status columns and error, an equal one merges them
as above, a lower one changes nothing (``runs.attempt``, ``store.SQL_MERGE_RUNS``).

Tags (and their removals), artifact references, edited display names and descriptions:
the newest write wins — within one producer by ``seq`` (gap-free, so this is the order the
user made the calls), across producers by event time, then producer id (``newer_write``;
the SQL upserts apply the same rule). Properties added after the start keep the first
write by the same order reversed (``store.SQL_MERGE_EDITS``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from ingest.worker.decode import Event, Heartbeat, Lifecycle, Scalar, scalar_json

__all__ = [
    "ProducerDelta",
    "RunDelta",
    "WriteStamp",
    "newer_write",
    "reduce_producers",
    "reduce_runs",
]

#: The statuses whose event carries the run's error text (a traceback, a cancel's reason).
ENDS_WITH_ERROR = ("Failed", "Canceled")


def _tied_error(a: str | None, b: str | None) -> str | None:
    """The error kept from two earliest Failed/Canceled events of one time, whichever came
    first: a text over none, then the greater in code-point order — what ``greatest()``
    under the "C" collation keeps in ``store.SQL_MERGE_RUNS``."""
    if a is None or b is None:
        return b if a is None else a
    return max(a, b)


@dataclass(frozen=True, slots=True, order=True)
class WriteStamp:
    """Identifies one write for last-write-wins."""

    ts_us: int
    producer_id: str
    seq: int


def newer_write(a: WriteStamp, b: WriteStamp) -> bool:
    """True if ``a`` should replace ``b``."""
    if a.producer_id == b.producer_id:
        return a.seq > b.seq
    return (a.ts_us, a.producer_id) > (b.ts_us, b.producer_id)


@dataclass(slots=True)
class RunDelta:
    """What one batch contributes to one run; merged into the stored row by SQL."""

    run_id: str
    experiment: str
    workspace: str
    created_us: int
    last_event_us: int
    last_heartbeat_us: int | None = None
    first_seen_us: dict[str, int] = field(default_factory=dict)
    meta_us: int | None = None
    parent_run_id: str | None = None
    display_name: str | None = None
    compute_target: str | None = None
    #: Text, or a number or boolean (schema v3): ``runs.properties`` keeps the type.
    properties: dict[str, Scalar] = field(default_factory=dict)
    error: str | None = None
    #: When the event ``error`` came from happened (its earliest Failed or Canceled).
    error_us: int | None = None
    #: The highest attempt among the batch's Lifecycle events; ``first_seen_us`` and
    #: ``error`` hold only that attempt's statuses (a retry starts them afresh).
    attempt: int = 0

    def properties_json(self) -> str:
        """The properties as a JSON object whose numbers read back as the type they were
        given as (``scalar_json``)."""
        items = sorted(self.properties.items())
        return "{" + ", ".join(f"{json.dumps(k)}: {scalar_json(v)}" for k, v in items) + "}"

    def add(self, event: Event) -> None:
        ts = event.ts_us
        self.created_us = min(self.created_us, ts)
        self.last_event_us = max(self.last_event_us, ts)
        payload = event.payload
        if isinstance(payload, Heartbeat):
            self.last_heartbeat_us = max(self.last_heartbeat_us or ts, ts)
        elif isinstance(payload, Lifecycle):
            self._lifecycle(ts, payload)

    def _lifecycle(self, ts: int, lc: Lifecycle) -> None:
        if lc.attempt > self.attempt:
            self.attempt = lc.attempt
            self.first_seen_us = {}
            self.error = None
            self.error_us = None
        prev = self.first_seen_us.get(lc.status)
        if lc.attempt < self.attempt:
            pass  # a status of an earlier try: superseded
        else:
            if prev is None or ts < prev:
                self.first_seen_us[lc.status] = ts
            if lc.status in ENDS_WITH_ERROR:
                if self.error_us is None or ts < self.error_us:
                    self.error_us = ts
                    self.error = lc.error
                elif ts == self.error_us:
                    self.error = _tied_error(self.error, lc.error)
        has_meta = (
            lc.display_name is not None
            or lc.compute_target is not None
            or lc.parent_run_id is not None
            or bool(lc.properties)
        )
        if has_meta and (self.meta_us is None or ts < self.meta_us):
            self.meta_us = ts
            self.parent_run_id = lc.parent_run_id or self.parent_run_id
            self.display_name = lc.display_name or self.display_name
            self.compute_target = lc.compute_target or self.compute_target
            self.properties = {**self.properties, **lc.properties}
        elif has_meta:
            self.parent_run_id = self.parent_run_id or lc.parent_run_id
            self.display_name = self.display_name or lc.display_name
            self.compute_target = self.compute_target or lc.compute_target
            self.properties = {**lc.properties, **self.properties}


def reduce_runs(events: Iterable[Event]) -> list[RunDelta]:
    """One delta per run, sorted by run id (a fixed lock order across workers)."""
    runs: dict[str, RunDelta] = {}
    for event in events:
        delta = runs.get(event.run_id)
        if delta is None:
            delta = runs[event.run_id] = RunDelta(
                event.run_id, event.experiment, event.workspace, event.ts_us, event.ts_us
            )
        delta.add(event)
    return [runs[k] for k in sorted(runs)]


@dataclass(slots=True)
class ProducerDelta:
    run_id: str
    producer_id: str
    rank: int
    events: int
    max_seq: int
    dropped_events: int
    first_seen_us: int
    last_seen_us: int


def reduce_producers(events: Iterable[Event]) -> list[ProducerDelta]:
    out: dict[tuple[str, str], ProducerDelta] = {}
    for e in events:
        dropped = e.payload.dropped_events if isinstance(e.payload, Heartbeat) else 0
        d = out.get((e.run_id, e.producer_id))
        if d is None:
            out[(e.run_id, e.producer_id)] = ProducerDelta(
                e.run_id, e.producer_id, e.rank, 1, e.seq, dropped, e.ts_us, e.ts_us
            )
        else:
            d.events += 1
            d.max_seq = max(d.max_seq, e.seq)
            d.dropped_events = max(d.dropped_events, dropped)
            d.first_seen_us = min(d.first_seen_us, e.ts_us)
            d.last_seen_us = max(d.last_seen_us, e.ts_us)
    return [out[k] for k in sorted(out)]
