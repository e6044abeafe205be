"""The bounded hand-off between training threads and the sender thread.

Training threads add under one lock and return; the sender thread swaps the
contents out under the same lock every ``linger_ms`` (or earlier, once the buffer passes
a high-water mark) and does all the expensive work — batching, encoding, sending,
spooling — outside it.

Metric points are stored columnar from the start: one ``Series`` per (run handle, name)
keeps typed arrays (``array.array``: int64 steps, float64 values, int64 times), so the
sender turns a run of points into the schema's packed little-endian columns with one
copy per column (``_batch.column_bytes``) and no Python work per point. ``kinds`` stays
``None`` while a series only ever saw floats (the common case and the fast path); the
first non-float back-fills it.

The arrays hold machine numbers, not Python objects, which is what keeps the sender off
the training loop's back (measured in ``runstream bench write``, README, Performance):

- packing a pass took ~75 ns of the sender's GIL time per point from lists (``struct``
  over every item); from arrays it is a ``memcpy``;
- a collection has no items of theirs to walk (it visits an array's type only), where a young
  collection that the sender's allocations triggered walked lists grown to millions of
  items while it held the GIL (4-15 ms);
- a buffered point keeps no object alive, so a pass's points are not freed at once (which
  emptied whole allocator arenas, and the next pass faulted fresh pages in).

A call writes slot ``n`` of each array and counts it; a series alternates between sets
of arrays, the one its calls fill and those the sender is packing, which it hands back
afterwards (``SeriesPoints.recycle``), so a steady series allocates nothing. A set grows
by doubling up to ``SET_SLOTS`` slots, then is retired whole and the calls fill the next:
no call copies a large array (which faulted in fresh pages for milliseconds).

The bound is an estimate of the memory held (``POINT_COST_BYTES`` per point,
``len(text)`` for strings, the encoded size for other events). A full buffer never
blocks: the call drops the item, counts it on its stream and warns once. Lifecycle
events are exempt so a run's final status is never the thing that gets dropped.
"""

from __future__ import annotations

import logging
import threading
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._errors import RunClosedError
from ._validate import KIND_FLOAT

logger = logging.getLogger(__name__)

#: Memory per buffered point: its step, value and time in the arrays of one set.
POINT_COST_BYTES = 24
#: Slots a series' arrays start with, and the least they grow by: small, so a program
#: logging thousands of names once in a while keeps ~3 KB per name (two sets of three).
MIN_CAPACITY = 64
#: A set's arrays double up to this many slots (128 KiB each); a call that finds a set this
#: full hands it over whole (``Series.retire``) and fills the next, so no call ever copies a
#: larger array. Growing by ``realloc`` past it moved the arrays to fresh memory: a single
#: call faulted in 1,000+ pages (2.5-10 ms on a guest) when the sender had fallen behind.
SET_SLOTS = 1 << 14
#: Handed-back sets a series keeps for its next takes: a pass of several full sets (a
#: sender behind its loop) reuses them instead of allocating.
SPARE_SETS = 4

Columns = tuple["array[int]", "array[float]", "array[int]"]  # steps, values, times


_ZEROS = memoryview(bytes(8 * SET_SLOTS))


def new_columns() -> Columns:
    """One set of ``MIN_CAPACITY`` zeroed arrays: steps, values, times."""
    zeros = _ZEROS[: 8 * MIN_CAPACITY]
    return array("q", zeros), array("d", zeros), array("q", zeros)


@dataclass(slots=True)
class SeriesPoints:
    """Points of one series taken out of the buffer: the first ``n`` slots of each
    array (slots past ``n`` are left over from earlier passes); owned by the taker."""

    name: str
    steps: array[int]  # "q"
    values: array[float]  # "d"
    #: Microseconds since the epoch of each call.
    times: array[int]  # "q"
    kinds: bytearray | None
    texts: list[str]
    n: int
    #: The series these arrays came from: ``recycle`` hands them back to it.
    owner: Series | None = None

    def recycle(self) -> None:
        """Give the arrays back to their series for a next set, once the sender has packed
        them (only the sender thread calls this), so a steady series allocates nothing; a
        series keeps ``SPARE_SETS`` at most. (``list.append`` and the taker's ``pop`` are
        each atomic: no lock needed.)"""
        owner = self.owner
        if owner is None:
            return
        self.owner = None
        if len(owner.spares) < SPARE_SETS:
            owner.spares.append((self.steps, self.values, self.times))


class Series:
    """Arrays of one metric name being filled by ``Run.log``.

    A call writes slot ``n`` of each array, then counts the point (``n += 1``): a call
    cut short (Ctrl-C's KeyboardInterrupt lands between any two bytecodes) left slots
    that were never counted and that the next call overwrites, so the arrays stay
    aligned without a check. ``grow`` (every array to the same length, before any write)
    keeps ``cap`` slots free in each; once a set holds ``SET_SLOTS`` it is retired whole
    to ``full`` instead, and the next take hands the sender ``full`` and the set being
    filled, in order."""

    __slots__ = ("cap", "full", "kinds", "n", "name", "next_step", "spares", "steps", "texts",
                 "times", "values")

    def __init__(self, name: str) -> None:
        self.name = name
        self.next_step = 0
        self.n = 0
        self.steps, self.values, self.times = new_columns()
        #: Slots of each array (their common length): ``n < cap`` before a write.
        self.cap = MIN_CAPACITY
        self.kinds: bytearray | None = None
        self.texts: list[str] = []
        #: Sets retired full since the last take, oldest first.
        self.full: list[SeriesPoints] = []
        #: Sets for the next takes; the sender gives the taken ones back
        #: (``SeriesPoints.recycle``), so a steady series allocates no new arrays.
        self.spares: list[Columns] = [new_columns()]

    def grow(self) -> None:
        """Room for the next point (caller holds the lock; ``n == cap``; ``n`` may be 0
        after): every array doubled, below ``SET_SLOTS``; at it, the set retired."""
        if self.cap >= SET_SLOTS:
            self.retire()
            return
        target = self.cap + max(self.cap, MIN_CAPACITY)
        for column in (self.steps, self.values, self.times):
            if len(column) < target:
                column.frombytes(_ZEROS[: 8 * (target - len(column))])
        self.cap = target

    def retire(self) -> None:
        """Move the set being filled to ``full`` and start the next (caller holds the lock).
        Everything that can be interrupted (a call) comes before the first change, which
        are plain stores: a KeyboardInterrupt leaves the series as it was or retired."""
        taken = self._taken()
        if taken is None:
            return
        columns = self._next_columns()
        cap = min(len(column) for column in columns)
        self.steps, self.values, self.times = columns
        self.cap = cap
        self.n = 0
        self.kinds, self.texts = None, []
        self.full = [*self.full, taken]

    def write(self, step: int, t_us: int, kind: int, number: float, text: str | None) -> None:
        """Add one point (caller holds the lock). ``RunHandle.log`` inlines this for its
        float fast path; keep the two the same."""
        n = self.n
        if n >= self.cap:
            self.grow()
            n = self.n
        self.steps[n] = step
        self.times[n] = t_us
        if kind == KIND_FLOAT and self.kinds is None:
            self.values[n] = number
        else:
            self.add_other(n, kind, number, text)
        self.n = n + 1

    def add_other(self, n: int, kind: int, number: float, text: str | None) -> None:
        """Write slot ``n`` of a value that is not a plain float (caller holds the lock;
        steps and times written, ``n`` counted after)."""
        kinds = self.kinds
        if kinds is None:
            kinds = self.kinds = bytearray(b"f") * n
        elif len(kinds) > n:  # a call cut short after its kind (and maybe its text)
            del kinds[n:]
            del self.texts[kinds.count(ord("s")):]
        kinds.append(kind)
        self.values[n] = number
        if text is not None:
            self.texts.append(text)

    def take(self) -> list[SeriesPoints]:
        """Everything buffered, oldest first: the retired sets and the one being filled,
        retired here (caller holds the lock; the sender's pass)."""
        self.retire()
        out, self.full = self.full, []
        return out

    def _taken(self) -> SeriesPoints | None:
        """The set being filled as ``SeriesPoints`` (its texts trimmed to its points),
        changing nothing else; None when it holds no point."""
        n = self.n
        if not n:
            return None
        taken = SeriesPoints(
            self.name, self.steps, self.values, self.times, self.kinds, self.texts, n, self
        )
        _whole_texts(taken)
        return taken

    def _next_columns(self) -> Columns:
        spares = self.spares
        return spares.pop() if spares else new_columns()


def _whole_texts(points: SeriesPoints) -> None:
    """Kinds and texts of the ``n`` counted points only: a call cut short after its kind
    or its text (then never counted) left them behind."""
    kinds = points.kinds
    if kinds is None:
        return
    del kinds[points.n:]
    del points.texts[kinds.count(ord("s")):]


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """A non-metric event; ``event_id`` and ``ts_us`` are fixed when the call is made."""

    kind: str
    record: dict[str, Any]
    event_id: str
    ts_us: int


class Stream:
    """One producer identity: a run handle in this process (own ``producer_id`` and ``seq``).

    ``next_seq`` is touched only by the sender thread, which is the sole assigner of
    sequence numbers; everything else here is guarded by the buffer lock.
    """

    __slots__ = (
        "closed",
        "dropped",
        "events",
        "experiment",
        "heartbeat",
        "next_seq",
        "producer_id",
        "rank",
        "run_id",
        "series",
        "workspace",
    )

    def __init__(
        self, *, run_id: str, experiment: str, workspace: str, producer_id: str, rank: int
    ) -> None:
        self.run_id = run_id
        self.experiment = experiment
        self.workspace = workspace
        self.producer_id = producer_id
        self.rank = rank
        self.series: dict[str, Series] = {}
        self.events: deque[PendingEvent] = deque()
        self.next_seq = 0
        self.dropped = 0
        self.heartbeat = False
        self.closed = False


Drained = list[tuple[Stream, list[SeriesPoints], list[PendingEvent]]]


class Buffer:
    """Shared by every run handle of one sender; ``lock`` guards all of it."""

    def __init__(self, *, max_bytes: int, wake: Callable[[], None]) -> None:
        self.lock = threading.Lock()
        self.max_bytes = max_bytes
        self.nbytes = 0
        #: Past this many bytes the sender is woken early instead of waiting for linger.
        self.wake_bytes = max(max_bytes // 16, 1)
        #: Past this many bytes (the sender more than two passes behind) a logging call
        #: yields the CPU and the GIL once (``os.sched_yield``), so a sender starved of
        #: them drains before the buffer is full and points are dropped. A flat-out loop
        #: beside a no-op loop on 2 cores (``runstream bench write``) dropped 4.7-6.6 M of
        #: 10 M points with Kafka up without it; with it, none (README, Performance).
        self.yield_bytes = max(max_bytes // 8, 1)
        self.woken = False
        self.wake = wake
        self.streams: list[Stream] = []
        self.dropped = 0
        self._warned = False

    def register(self, stream: Stream) -> None:
        with self.lock:
            self.streams.append(stream)

    def count_drop(self, stream: Stream, n: int = 1) -> None:
        """Count ``n`` dropped events; warns once per buffer. Caller must NOT hold the lock."""
        with self.lock:
            stream.dropped += n
            self.dropped += n
            first = not self._warned
            self._warned = True
        if first:
            logger.warning(
                "runstream is dropping events (run %s): the buffer is full and the spool "
                "cannot take them; the count is reported in heartbeats and Workspace.stats()",
                stream.run_id,
            )

    def put_event(self, stream: Stream, event: PendingEvent, cost_bytes: int) -> bool:
        """Enqueue a non-metric event; returns False (and counts a drop) when full.

        Raises ``RunClosedError`` for a closed stream (checked under the lock, so nothing
        is appended after the sender took the stream's last items).
        """
        with self.lock:
            if stream.closed:
                raise RunClosedError(stream.run_id)
            if event.kind != "Lifecycle" and self.nbytes + cost_bytes > self.max_bytes:
                full = True
            else:
                full = False
                stream.events.append(event)
                self.nbytes += cost_bytes
                if self.nbytes > self.wake_bytes and not self.woken:
                    self.woken = True
                    self.wake()
        if full:
            self.count_drop(stream)
        return not full

    def drain(self) -> Drained:
        """Take everything buffered; called by the sender thread."""
        out: Drained = []
        with self.lock:
            for stream in self.streams:
                points = [p for s in stream.series.values() for p in s.take()]
                events = list(stream.events)
                stream.events.clear()
                if points or events:
                    out.append((stream, points, events))
            self.streams = [s for s in self.streams if not s.closed]
            self.nbytes = 0
            self.woken = False
        return out

    def is_empty(self) -> bool:
        with self.lock:
            return self.nbytes == 0
