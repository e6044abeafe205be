"""The user-facing commands on the real stack: `runstream demo` and `runstream sync`."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import asyncpg

from producer import Experiment, Workspace
from tests.helpers import StackInfo, TopicFactory
from tests.integration.helpers import runstream


async def test_demo_runs_the_product_example_and_everything_lands(stack: StackInfo) -> None:
    result = runstream("demo")
    assert result.returncode == 0, result.stdout + result.stderr
    parent = re.search(r"parent run (\S+)", result.stdout)
    assert parent is not None, result.stdout
    assert "stored: 9 runs (9 Completed), 18 metric points" in result.stdout
    conn = await asyncpg.connect(stack.db_dsn)
    try:
        children = await conn.fetch(
            "SELECT run_id, display_name, status FROM runstream.runs WHERE parent_run_id = $1",
            parent.group(1),
        )
        alphas = await conn.fetch(
            "SELECT value FROM runstream.metric_points p JOIN runstream.runs r USING (run_id) "
            "WHERE r.parent_run_id = $1 AND p.name = 'alpha' ORDER BY value",
            parent.group(1),
        )
        table = await conn.fetch(
            "SELECT column_name, count(*) AS n FROM runstream.table_cells "
            "WHERE run_id = $1 AND name = 'mse vs alpha' GROUP BY column_name ORDER BY 1",
            parent.group(1),
        )
        files = await conn.fetch(
            "SELECT a.name, a.kind FROM runstream.artifacts a JOIN runstream.runs r USING (run_id) "
            "WHERE r.parent_run_id = $1 OR r.run_id = $1",
            parent.group(1),
        )
        tags = await conn.fetchval(
            "SELECT tags FROM runstream.runs WHERE run_id = $1", parent.group(1)
        )
    finally:
        await conn.close()
    assert len(children) == 8
    assert {c["status"] for c in children} == {"Completed"}
    assert [r["value"] for r in alphas] == [0.0, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert [(r["column_name"], r["n"]) for r in table] == [("alpha", 8), ("mse", 8)]
    assert sorted((f["name"], f["kind"]) for f in files) == sorted(
        [("outputs/model.pkl", "FILE")] * 8 + [("mse vs alpha/step_0.png", "IMAGE")]
    )
    assert '"best_alpha"' in tags


async def test_sync_delivers_what_an_offline_run_spooled(
    stack: StackInfo, topic_factory: TopicFactory, tmp_path: Path
) -> None:
    topic = await topic_factory(partitions=2)
    offline = Workspace(kafka_bootstrap="127.0.0.1:1", home=tmp_path, topic=topic)
    with Experiment(offline, "offline").start_logging(outputs_dir=None) as run:
        for i in range(5000):
            run.log("loss", 1.0 / (i + 1))
    await asyncio.to_thread(offline.close, timeout_s=2)
    assert list((tmp_path / "spool" / "events").iterdir())

    env = {**os.environ, "RUNSTREAM_HOME": str(tmp_path), "RUNSTREAM_TOPIC": topic}
    env["RUNSTREAM_KAFKA"] = stack.kafka_bootstrap
    first = runstream("sync", env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    sent = re.search(r"sent (\d+) events", first.stdout)
    assert sent is not None
    assert int(sent.group(1)) > 0
    assert "left: 0 events, 0 artifacts" in first.stdout
    assert "sync [" in first.stderr  # the progress bar
    again = runstream("sync", env=env)
    assert again.returncode == 0
    assert "sent 0 events" in again.stdout
