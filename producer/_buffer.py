"""The bounded hand-off between training threads and the sender thread.

Training threads append under one lock and return; the sender thread swaps the
contents out under the same lock every ``linger_ms`` (or earlier, once the buffer passes
a high-water mark) and does all the expensive work — batching, encoding, sending,
spooling — outside it.

Metric points are stored columnar from the start: one ``Series`` per (run handle, name)
keeps plain lists of steps, values and times, so the sender turns a whole series into
packed arrays with a single C call per column instead of a Python loop per point.
``kinds`` stays ``None`` while a series only ever saw floats (the common case and the
fast path); the first non-float back-fills it.

Those lists are reused, not replaced: a series alternates between two sets of column
lists, the one its calls fill and the one the sender is emptying (``SeriesPoints.recycle``
clears it in slices of ``RECYCLE_ITEMS`` and hands it back). Both sets are moved to the
garbage collector's oldest generation when the series is made (``age_new_series``), so
the frequent young collections (which the sender's own allocations trigger) never walk
the buffered items, and freeing a pass's points never holds the GIL for longer than one
slice. With new lists per pass, a young collection walked lists that had grown to
millions of items while the sender waited (up to 15 ms with the GIL held, seen from a
``gc.callbacks`` hook in the log-call bench), and those were most of the log calls over
5 ms spent while our own threads ran.

The bound is an estimate of the Python memory held (``POINT_COST_BYTES`` per point,
``len(text)`` for strings, the encoded size for other events). A full buffer never
blocks: the call drops the item, counts it on its stream and warns once. Lifecycle
events are exempt so a run's final status is never the thing that gets dropped.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._errors import RunClosedError

logger = logging.getLogger(__name__)

#: Python memory per buffered point: a float object, two ints and three list slots.
POINT_COST_BYTES = 112
#: Items a recycled column frees per step (``del`` of a slice, one C call holding the
#: GIL): about half a millisecond here; between steps the interpreter may switch threads.
RECYCLE_ITEMS = 1 << 16


@dataclass(slots=True)
class SeriesPoints:
    """Points of one series taken out of the buffer; lists are owned by the taker."""

    name: str
    steps: list[int]
    values: list[float]
    #: Microseconds since the epoch of each call.
    times: list[int]
    kinds: bytearray | None
    texts: list[str]
    #: The series these columns came from: ``recycle`` hands them back to it.
    owner: Series | None = None

    def recycle(self) -> None:
        """Empty the three columns (``RECYCLE_ITEMS`` at a time) and give them back to
        the series as its next set, once the sender has packed them. Only the sender
        thread calls this, after the pass that took them; ``take`` is its only reader."""
        owner = self.owner
        if owner is None:
            return
        self.owner = None
        columns = (self.steps, self.values, self.times)
        for column in columns:
            while column:
                del column[-RECYCLE_ITEMS:]
        owner.spare = columns


class Series:
    """Columns of one metric name being filled by ``Run.log``."""

    __slots__ = ("kinds", "name", "next_step", "spare", "steps", "texts", "times", "values")

    def __init__(self, name: str) -> None:
        self.name = name
        self.next_step = 0
        self.steps: list[int] = []
        self.values: list[float] = []
        self.times: list[int] = []
        self.kinds: bytearray | None = None
        self.texts: list[str] = []
        #: Emptied columns (steps, values, times) for the next take; the sender gives the
        #: taken ones back (``SeriesPoints.recycle``), so after this set no new lists.
        self.spare: tuple[list[int], list[float], list[int]] | None = ([], [], [])

    def add_other(self, kind: int, number: float, text: str | None) -> None:
        """Append a value that is not a plain float (caller holds the lock, steps/times done)."""
        kinds = self.kinds
        if kinds is None:
            kinds = self.kinds = bytearray(b"f") * len(self.values)
        kinds.append(kind)
        self.values.append(number)
        if text is not None:
            self.texts.append(text)

    def take(self) -> SeriesPoints | None:
        if not self.steps:
            return None
        taken = SeriesPoints(
            self.name, self.steps, self.values, self.times, self.kinds, self.texts, self
        )
        spare, self.spare = self.spare, None
        self.steps, self.values, self.times = spare if spare is not None else ([], [], [])
        self.kinds, self.texts = None, []
        _whole_points(taken)
        return taken if taken.steps else None


def age_new_series() -> None:
    """Move the column lists of series just made (both sets, still empty) to the garbage
    collector's oldest generation: one collection of the young generations (well under a
    millisecond unless the program holds big young containers of its own; once per
    metric name) spares the sender's young collections the millions of items these lists
    may hold before they would have aged. Call it without the buffer's lock: a
    collection may run finalizers, and a finalizer may log. Nothing when the program
    turned the collector off."""
    if gc.isenabled():
        gc.collect(1)


def _whole_points(points: SeriesPoints) -> None:
    """Drop the last point if a ``log`` call was interrupted between its appends (Ctrl-C's
    KeyboardInterrupt, or a signal handler's exception, lands between any two bytecodes):
    the columns must stay aligned, and that call never returned."""
    kinds = points.kinds
    n = min(len(points.steps), len(points.times), len(points.values),
            len(kinds) if kinds is not None else len(points.values))
    if kinds is not None:
        while n and kinds[:n].count(ord("s")) > len(points.texts):
            n -= 1
        del kinds[n:]
        del points.texts[kinds.count(ord("s")):]
    del points.steps[n:], points.times[n:], points.values[n:]


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
        #: beside a no-op loop on 2 cores (``runstream bench write``) dropped 6.0-6.6 M of
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
                points = [p for s in stream.series.values() if (p := s.take()) is not None]
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
