"""Logging faster than Kafka takes spills to the spool and loses nothing (issue 12 item 2).

A training process logs flat out through the real broker with a small in-flight window
(64 KiB, a quarter of one metric batch), so on any machine the sender has more in flight
than the window almost at once and sends the rest to the on-disk spool, while its
supervisor replays the spool to Kafka behind it. The process then exits normally:
``close`` waits for the backlog. Every point is stored exactly once, none is dropped, and
nothing is left in the spool.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.integration.helpers import run_id
from tests.integration.pipelines import Pipeline
from tests.reliability import Reliability, storage_backend

pytestmark = pytest.mark.integration

POINTS = 1_000_000
SERIES = 10

SCRIPT = textwrap.dedent(f"""
    import json

    from producer import ProducerOptions, Run, Workspace

    options = ProducerOptions(max_inflight_bytes=64 << 10, close_timeout_s=120.0)
    ws = Workspace.from_env(options=options)
    run = Run.get_context(workspace=ws)
    names = [f"m{{i}}" for i in range({SERIES})]
    log = run.log
    for step in range({POINTS} // {SERIES}):
        for name in names:
            log(name, step * 0.5, step=step)
    logged = ws.stats()
    run.complete()
    ws.close(120.0)
    done = ws.stats()
    print(json.dumps({{"spooled": done.events_spooled, "replayed": done.events_replayed,
                      "dropped": run.dropped_events, "mode_while_logging": logged.mode}}))
""")


async def test_logging_faster_than_kafka_spills_and_loses_nothing(
    pipeline: Pipeline, tmp_path: Path, reliability: Reliability
) -> None:
    rid = run_id("overload")
    done = await pipeline.run_script(SCRIPT, run_id=rid, cwd=tmp_path, timeout_s=300)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["dropped"] == 0
    assert report["spooled"] > 0
    assert report["replayed"] == report["spooled"]
    assert list((tmp_path / "home" / "spool" / "events").glob("*.seg")) == []
    await pipeline.drained()

    (counts,) = await pipeline.rows(
        "SELECT count(*) AS n, count(DISTINCT (name, step)) AS d FROM runstream.metric_points "
        "WHERE run_id = $1", rid)
    assert counts == {"n": POINTS, "d": POINTS}
    (bad,) = await pipeline.rows(
        "SELECT count(*) AS n FROM runstream.metric_points WHERE run_id = $1 "
        "AND value <> step * 0.5", rid)
    assert bad["n"] == 0
    (producer,) = await pipeline.rows(
        "SELECT events, missing_events, dropped_events FROM runstream.producers "
        "WHERE run_id = $1", rid)
    assert producer["missing_events"] == 0
    reliability.record(
        guarantee="logging faster than Kafka takes spills to the spool: nothing dropped, "
                  "every point stored once",
        faults=f"one process logging {POINTS:,} points flat out through a 64 KiB in-flight "
               f"window; {report['spooled']} of {producer['events']} events went through "
               "the spool",
        events=producer["events"], points=POINTS, lost=POINTS - counts["d"],
        doubled=counts["n"] - counts["d"], storage=await storage_backend(pipeline.dsn))
