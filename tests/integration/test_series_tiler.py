"""The worker keeps series tiles current as points arrive (ingest/worker/tiler.py), so
the first read of a big series need not summarise all of it: through the real SDK →
Kafka → worker process → PostgreSQL, with no API read in between."""

from __future__ import annotations

from pathlib import Path

import pytest

from producer import Experiment
from tests.integration.helpers import wait_for
from tests.integration.pipelines import Pipeline, call, workspace

pytestmark = pytest.mark.integration

POINTS = 60_000
SUMMARY_SQL = """
SELECT r.events = (SELECT sum(p.events) FROM runstream_data.producers p
                   WHERE p.run_id = r.run_id) AS current
FROM runstream_data.metric_summary_runs r WHERE r.run_id = $1
"""
TILED_SQL = """
SELECT coalesce(sum(n), 0) AS points FROM runstream_data.metric_tiled_chunks
WHERE run_id = $1 AND name = 'loss'
"""


async def test_the_worker_tiles_a_series_nobody_reads(pipeline: Pipeline,
                                                      tmp_path: Path) -> None:
    ws = workspace(pipeline, tmp_path / "sdk")

    def log() -> str:
        with Experiment(ws, "tiler").start_logging(outputs_dir=None) as run:
            for step in range(POINTS):
                run.log("loss", 1.0 / (step + 1), step=step)
        ws.close(30.0)
        return run.id

    run_id = await call(log)
    await pipeline.drained()

    async def tiled() -> bool:
        rows = await pipeline.rows(TILED_SQL, run_id)
        # Everything but at most one tiler threshold's worth (the read path tiles the tail).
        return int(rows[0]["points"]) >= POINTS - 10_000

    await wait_for(tiled, timeout_s=60, what="the worker to tile the series")
    tiles = await pipeline.rows(
        "SELECT count(*) AS n, max(level) AS top FROM runstream_data.metric_tiles "
        "WHERE run_id = $1 AND name = 'loss'", run_id)
    assert tiles[0]["n"] > 0
    stored = await pipeline.rows(
        "SELECT sum(n) AS n FROM runstream_data.metric_chunks WHERE run_id = $1", run_id)
    assert stored[0]["n"] == POINTS  # tiling added no point and lost none

    # Once the run has gone quiet its series' summaries are stored too (migration 0012),
    # reflecting every event the run stored, its Completed status included.
    async def summarised() -> bool:
        rows = await pipeline.rows(SUMMARY_SQL, run_id)
        return bool(rows) and rows[0]["current"]

    await wait_for(summarised, timeout_s=90, what="the worker to summarise the quiet run")
    summary = await pipeline.rows(
        "SELECT points, vmin, vmax, last_v FROM runstream_data.metric_series_summary "
        "WHERE run_id = $1 AND name = 'loss'", run_id)
    assert [dict(r) for r in summary] == [
        {"points": POINTS, "vmin": 1.0 / POINTS, "vmax": 1.0, "last_v": 1.0 / POINTS}]
