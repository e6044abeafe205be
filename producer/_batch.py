"""Turn buffered series into ``MetricBatch`` records that each fit in one message.

Columns are the schema's packed little-endian int64 and float64: a slice of the
buffer's arrays copied out as bytes (``column_bytes``; byte-swapped on a big-endian
host), so a batch costs the sender no Python work per point; times arrive in
microseconds already (``Run.log`` divides). A batch is closed when its estimated encoded size
would pass ``max_bytes``; the estimate is an upper bound (every varint counted at its
widest), so the codec's own size check never fires for metric batches. A series longer
than one batch is split across consecutive batches, in order.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterator
from typing import Any

from ._buffer import SeriesPoints, Stream
from ._validate import KIND_STR

#: Fixed cost of one Series record: 5 length prefixes, union index, array block counts.
SERIES_OVERHEAD_BYTES = 64
#: steps + values + times (8 bytes each) + one kind byte.
POINT_BYTES = 25
#: Length prefix of one text item.
TEXT_OVERHEAD_BYTES = 5


def envelope_bytes(stream: Stream) -> int:
    """Upper bound of an event's envelope: strings, uuid, varints, union index, header."""
    strings = (stream.run_id, stream.experiment, stream.workspace, stream.producer_id)
    return sum(len(s.encode()) + 5 for s in strings) + 37 + 10 + 5 + 10 + 16


def max_text_bytes(stream: Stream, batch_max_bytes: int) -> int:
    """Largest string point that still fits, alone, in one metric batch of ``stream``."""
    worst_name = 4 * 255  # utf-8 bytes of the longest allowed name
    fixed = envelope_bytes(stream) + SERIES_OVERHEAD_BYTES + worst_name
    return batch_max_bytes - fixed - POINT_BYTES - TEXT_OVERHEAD_BYTES


def event_dict(
    stream: Stream, *, seq: int, event_id: str, ts_us: int, kind: str, record: dict[str, Any]
) -> dict[str, Any]:
    """The codec's input for one event of ``stream``."""
    return {
        "event_id": event_id,
        "run_id": stream.run_id,
        "experiment": stream.experiment,
        "workspace": stream.workspace,
        "producer_id": stream.producer_id,
        "seq": seq,
        "rank": stream.rank,
        "ts": ts_us,
        "payload": (kind, record),
    }


_LITTLE_ENDIAN = sys.byteorder == "little"


def column_bytes(column: array[int] | array[float], start: int, stop: int) -> bytes:
    """Slots ``start:stop`` of an int64 or float64 array, little-endian."""
    if _LITTLE_ENDIAN:
        with memoryview(column) as view:  # released at once: the array may grow later
            return view[start:stop].tobytes()
    part = column[start:stop]
    part.byteswap()
    return part.tobytes()


def _series_record(
    name: str, pts: SeriesPoints, start: int, stop: int, text_start: int, text_stop: int
) -> dict[str, Any]:
    kinds = pts.kinds
    if kinds is not None and kinds.count(b"f") == len(kinds):
        kinds = None
    return {
        "name": name,
        "steps": column_bytes(pts.steps, start, stop),
        "values": column_bytes(pts.values, start, stop),
        "times": column_bytes(pts.times, start, stop),
        "kinds": None if kinds is None else bytes(kinds[start:stop]),
        "texts": pts.texts[text_start:text_stop],
    }


def _fit(pts: SeriesPoints, start: int, text_start: int, room: int) -> tuple[int, int, int]:
    """How far from ``start`` fits in ``room`` bytes: (stop, text_stop, bytes used)."""
    n = pts.n
    if not pts.texts:
        stop = min(n, start + max(room, 0) // POINT_BYTES)
        return stop, text_start, (stop - start) * POINT_BYTES
    kinds = pts.kinds or b""  # texts imply kinds: a series with a str point has them
    used = 0
    i, t = start, text_start
    while i < n:
        is_text = kinds[i] == KIND_STR
        cost = POINT_BYTES
        if is_text:
            cost += len(pts.texts[t].encode()) + TEXT_OVERHEAD_BYTES
        if used + cost > room:
            break
        used += cost
        i += 1
        t += is_text
    return i, t, used


def metric_batches(series: list[SeriesPoints], *, max_bytes: int) -> Iterator[dict[str, Any]]:
    """Yield ``MetricBatch`` records whose payload stays under ``max_bytes``."""
    batch: list[dict[str, Any]] = []
    size = 0
    for pts in series:
        overhead = SERIES_OVERHEAD_BYTES + len(pts.name.encode())
        start = text_start = 0
        while start < pts.n:
            stop, text_stop, used = _fit(pts, start, text_start, max_bytes - size - overhead)
            if stop == start:
                if not batch:
                    raise ValueError(f"one point of {pts.name!r} does not fit in {max_bytes} bytes")
                yield {"series": batch}
                batch, size = [], 0
                continue
            batch.append(_series_record(pts.name, pts, start, stop, text_start, text_stop))
            size += overhead + used
            start, text_start = stop, text_stop
    if batch:
        yield {"series": batch}
