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

It also stores the summaries of runs' series (count, last, min, max: migration 0012),
which the run lists read instead of the points — sorting 10,000 runs by a metric, say.
A run is summarised once it has gone quiet (no point noted for ``quiet_s``) and, since a
run's last events are often not points (its Completed status), every ``scan_interval_s``
one query finds the runs whose producers stored events since their summary (or that
have none) and those are summarised too. A summary records how many events of the run
it reflects; the read path uses it only while that count is current and computes the
others, so a late summary costs speed, never a wrong answer.

A failure (the database restarting, say) is logged and the series stay pending for the
next round; nothing here can block or fail a batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Sequence
from typing import Final

from ingest.worker.store import Store, WriteResult

__all__ = ["SUMMARY_QUIET_S", "TILE_AFTER_POINTS", "SeriesTiler"]

logger = logging.getLogger(__name__)

#: Tile a series once this many of its points are untiled (as the read path does).
TILE_AFTER_POINTS: Final = 10_000
TILE_INTERVAL_S: Final = 1.0
#: A run is summarised once no point of it was noted for this long.
SUMMARY_QUIET_S: Final = 5.0
#: How often to look for runs whose summaries are missing or outdated.
SUMMARY_SCAN_INTERVAL_S: Final = 30.0
#: Runs summarised per statement, and found per scan.
SUMMARY_BATCH_RUNS: Final = 100
SUMMARY_SCAN_RUNS: Final = 2000

SQL_SUMMARIZE_RUNS: Final = "SELECT runstream_data.summarize_metric_runs($1::text[])"
#: Runs whose producers stored events since their summaries were computed (or that have
#: none); one scan of the producers and the summaries.
SQL_RUNS_TO_SUMMARIZE: Final = """
SELECT p.run_id FROM runstream_data.producers p
LEFT JOIN runstream_data.metric_summary_runs r ON r.run_id = p.run_id
GROUP BY p.run_id, r.events
HAVING r.events IS DISTINCT FROM sum(p.events)
LIMIT $1
"""


class SeriesTiler:
    def __init__(self, store: Store, *, threshold: int = TILE_AFTER_POINTS,
                 interval_s: float = TILE_INTERVAL_S, quiet_s: float = SUMMARY_QUIET_S,
                 scan_interval_s: float = SUMMARY_SCAN_INTERVAL_S) -> None:
        self._store = store
        self._threshold = threshold
        self._interval_s = interval_s
        self._quiet_s = quiet_s
        self._scan_interval_s = scan_interval_s
        self._untiled: Counter[tuple[str, str]] = Counter()
        #: run id → when it was last noted (time.monotonic()); summarised once quiet.
        self._unsummarized: dict[str, float] = {}
        self._next_scan = 0.0
        self.tiled_series = 0
        self.summarized_runs = 0

    def __repr__(self) -> str:
        return (f"SeriesTiler(pending={len(self._untiled)}, threshold={self._threshold}, "
                f"unsummarized={len(self._unsummarized)})")

    def note(self, result: WriteResult) -> None:
        """Count what a committed batch added (call after its COMMIT)."""
        now = time.monotonic()
        for run_id, name, points in result.series_points:
            self._untiled[(run_id, name)] += points
            self._unsummarized[run_id] = now

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

    async def summarize(self, run_ids: Sequence[str]) -> int:
        """Store the summaries of these runs' series (``SUMMARY_BATCH_RUNS`` a statement)."""
        ids = sorted(set(run_ids))
        for i in range(0, len(ids), SUMMARY_BATCH_RUNS):
            await self._store.pool.fetchval(SQL_SUMMARIZE_RUNS, ids[i : i + SUMMARY_BATCH_RUNS])
        self.summarized_runs += len(ids)
        return len(ids)

    async def summarize_due(self, *, settle: bool = False) -> int:
        """Summarise the noted runs that have gone quiet (``settle``: all of them) and,
        every ``scan_interval_s`` (``settle``: now), the runs found outdated; how many."""
        now = time.monotonic()
        quiet = [r for r, at in self._unsummarized.items()
                 if settle or now - at >= self._quiet_s]
        if settle or now >= self._next_scan:
            self._next_scan = now + self._scan_interval_s
            found = await self._store.pool.fetch(SQL_RUNS_TO_SUMMARIZE, SUMMARY_SCAN_RUNS)
            # Not a run still being noted: it is summarised once quiet.
            quiet += [r["run_id"] for r in found
                      if settle or r["run_id"] not in self._unsummarized]
        if not quiet:
            return 0
        done = await self.summarize(quiet)
        for run_id in quiet:  # unless noted again meanwhile
            if self._unsummarized.get(run_id, now + 1) <= now:
                del self._unsummarized[run_id]
        return done

    async def settle(self) -> None:
        """What the running loop does once the runs have gone quiet: tile what is due and
        summarise every run noted or found outdated (benchmarks and tests, after writing)."""
        await self.tile_due()
        await self.summarize_due(settle=True)

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``: tile what is due, summarise the runs gone quiet (and look for
        outdated ones every ``scan_interval_s``), then wait ``interval_s``."""
        while not stop.is_set():
            try:
                await self.tile_due()
            except Exception:
                logger.exception("tiling series failed; trying again in %.0f s",
                                 self._interval_s)
            try:
                await self.summarize_due()
            except Exception:
                logger.exception("summarising runs failed; trying again in %.0f s",
                                 self._interval_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval_s)
