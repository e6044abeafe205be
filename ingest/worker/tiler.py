"""Series tiles kept current by the worker, off the commit path.

The read path draws a big series from its *tiles* (migration 0006: per-level summaries of
step ranges) and summarises the chunks not yet in them before answering. A series that
nobody looked at while it was logged therefore had all of it summarised by its first
reader: 9 s for 10M points on our 2-core machine, where the studio promises a chart in a
second. So the worker summarises as the points arrive: ``note`` counts the points each
committed batch added to each series (``WriteResult.series_points``), and ``run`` tiles,
one series at a time on one pooled connection, every series with at least
``threshold`` untiled points, checking every ``interval_s``. The read path still tiles
what is left (fewer than ``threshold`` points per series, or a backlog), so nothing
depends on this for correctness: tiling is idempotent and one tiler per series runs at a
time (an advisory lock in ``tile_metric_series``), whoever calls it.

A failure (the database restarting, say) is logged and the series stay pending for the
next round; nothing here can block or fail a batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from typing import Final

from ingest.worker.store import Store, WriteResult

__all__ = ["TILE_AFTER_POINTS", "SeriesTiler"]

logger = logging.getLogger(__name__)

#: Tile a series once this many of its points are untiled (as the read path does).
TILE_AFTER_POINTS: Final = 10_000
TILE_INTERVAL_S: Final = 1.0


class SeriesTiler:
    def __init__(self, store: Store, *, threshold: int = TILE_AFTER_POINTS,
                 interval_s: float = TILE_INTERVAL_S) -> None:
        self._store = store
        self._threshold = threshold
        self._interval_s = interval_s
        self._untiled: Counter[tuple[str, str]] = Counter()
        self.tiled_series = 0

    def __repr__(self) -> str:
        return f"SeriesTiler(pending={len(self._untiled)}, threshold={self._threshold})"

    def note(self, result: WriteResult) -> None:
        """Count what a committed batch added (call after its COMMIT)."""
        for run_id, name, points in result.series_points:
            self._untiled[(run_id, name)] += points

    def due(self) -> list[tuple[str, str]]:
        """Series with at least ``threshold`` untiled points, most points first."""
        return [key for key, n in self._untiled.most_common() if n >= self._threshold]

    async def tile_due(self) -> int:
        """Tile every due series once; how many were tiled."""
        done = 0
        for key in self.due():
            pending = self._untiled[key]
            await self._store.tile_series(*key)
            # Points noted meanwhile stay counted for the next round.
            left = self._untiled[key] - pending
            if left > 0:
                self._untiled[key] = left
            else:
                del self._untiled[key]
            done += 1
            self.tiled_series += 1
        return done

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``: tile what is due, then wait ``interval_s``."""
        while not stop.is_set():
            try:
                await self.tile_due()
            except Exception:
                logger.exception("tiling series failed; trying again in %.0f s",
                                 self._interval_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval_s)
