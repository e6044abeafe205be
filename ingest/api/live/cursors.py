"""Stream positions and event ids of a run's live stream.

Cursor. A run's batches commit one after another (one run → one partition → one writer,
which writes batch after batch; a worker losing the partition finishes its in-flight
write before the next owner starts), and rows carry their transaction's time
(``ingested_at``, the transaction start). So per run, ingest time orders commits, and
"everything after (time, position in that transaction)" is exact. Points are read from
``runstream_data.metric_chunks`` in (ingested_at, producer_id, seq, series_idx, point)
order, log lines from ``runstream_data.log_lines`` in (ingested_at, producer_id, seq,
line) order: within one producer, the order it logged in. A stream starts after what is
already committed (new data only) unless it resumes from an event id.

Event ids and resuming. Every point and log event carries ``id: <points>_<logs>``, each
part ``<µs>`` (all of that transaction delivered) or ``<µs>+<n>`` (its first n items
delivered); "status" and "queue" events carry none (a reconnected stream starts with the
current state anyway). Reconnecting with ``Last-Event-ID`` (browsers do it by themselves; or the
``last_event_id`` query parameter) continues exactly after the last event received. The
id ``0_0`` means "from the beginning". Points logged more than ``LATE_POINTS_WINDOW`` (1 day)
before the cursor's transaction (a spool replayed days later) are not streamed: live
readers get live data, and the query never touches compressed history; the points are
in ``/v1/runs/{id}/metrics`` as usual.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

__all__ = ["StreamPosition", "parse_event_id"]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(slots=True)
class StreamPosition:
    """Where one table's stream stands: transaction ``t`` (ingested_at), ``done`` items of
    it delivered (None: all of it), and the last row fully read in it (for paging)."""

    t: datetime
    done: int | None = None
    #: (producer_id, seq, series_idx) of the last row of ``t`` fully read.
    row: tuple[str, int, int] | None = None
    #: Items still to skip at the start of ``t`` (resuming mid-transaction).
    skip: int = 0

    @classmethod
    def after(cls, t: datetime) -> StreamPosition:
        return cls(t=t)

    def token(self) -> str:
        us = (self.t - _EPOCH) // timedelta(microseconds=1)
        return str(us) if self.done is None else f"{us}+{self.done}"

    @classmethod
    def from_token(cls, token: str) -> StreamPosition:
        us, plus, done = token.partition("+")
        t = _EPOCH + timedelta(microseconds=_nonnegative(us))
        if not plus:
            return cls(t=t)
        n = _nonnegative(done)
        return cls(t=t, done=n, skip=n)

    def take(self, t: datetime, key: tuple[str, int, int], n_items: int) -> range:
        """Account for a row read at ``t``; the indexes of its items to deliver."""
        if t != self.t:
            self.t, self.done, self.skip = t, 0, 0
        start = min(self.skip, n_items)
        self.skip -= start
        self.row = key
        return range(start, n_items)

    def delivered(self) -> None:
        self.done = (self.done or 0) + 1

    def params(self) -> tuple[datetime, str | None, int | None, int | None, bool]:
        """Query parameters: t, last row (or NULLs), whether rows of ``t`` itself qualify."""
        whole_t_done = self.done is None and self.row is None and not self.skip
        producer, seq, idx = self.row if self.row is not None else (None, None, None)
        return self.t, producer, seq, idx, not whole_t_done


def _nonnegative(text: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        raise ValueError(text)
    return int(text)


def parse_event_id(event_id: str) -> tuple[StreamPosition, StreamPosition]:
    """The (points, logs) positions of an event id; ValueError when malformed."""
    points, sep, logs = event_id.strip().partition("_")
    try:
        if not sep:
            raise ValueError(event_id)
        return StreamPosition.from_token(points), StreamPosition.from_token(logs)
    except ValueError:
        raise ValueError(f"not an event id: {event_id[:64]!r}") from None
