"""After-the-fact edits of a run (issue 14): tags, tag removal, properties, display name
and description of an ended run, set from another process that fetched it by id, read back
through the SDK, the API (details, filters) and the analytics views — and metrics of the
ended run stay read-only."""

from __future__ import annotations

import asyncpg
import pytest

from producer import Experiment, ReadOnlyRunError, Run, RunEndedError
from tests.integration.pipelines import ReadPipeline, call

pytestmark = pytest.mark.integration


async def test_edits_of_an_ended_run_from_another_process_read_back_everywhere(
    read_pipeline: ReadPipeline,
) -> None:
    def first_process() -> str:
        ws = read_pipeline.workspace("trainer")
        run = Experiment(ws, "edits").start_logging(
            display_name="ridge", properties={"dataset": "diabetes"}, outputs_dir=None)
        run.log("loss", 0.5)
        run.tag("keep", "yes")
        run.tag("drop")
        run.complete()
        with pytest.raises(RunEndedError, match=r"has ended \(Completed\)"):
            run.log("loss", 0.25)
        run.close()
        return run.id

    run_id = await call(first_process)
    await read_pipeline.drained()  # another process: it finds the run once it is stored

    def second_process() -> dict[str, object]:
        ws = read_pipeline.workspace("reviewer")  # its own session: nothing shared
        fetched = Run(Experiment(ws, "edits"), run_id)
        assert fetched.get_status() == "Completed"
        fetched.tag("reviewed", "by ann")
        fetched.remove_tags(["drop", "never-there"])
        fetched.add_properties({"score": "0.91"})
        with pytest.raises(ValueError, match="cannot change once set"):
            fetched.add_properties({"dataset": "other"})
        fetched.display_name = "ridge (final)"
        fetched.description = "alpha sweep, best of 20"
        with pytest.raises(ReadOnlyRunError, match="accepts no metrics"):
            fetched.log("loss", 0.1)
        details = fetched.get_details()  # reads its own edits: waits until stored
        metrics = fetched.get_metrics()
        ws.close(10.0)
        return {"details": details, "metrics": metrics}

    seen = await call(second_process)
    details = seen["details"]
    assert isinstance(details, dict)
    assert details["tags"] == {"keep": "yes", "reviewed": "by ann"}
    assert details["properties"] == {"dataset": "diabetes", "score": "0.91"}
    assert details["display_name"] == "ridge (final)"
    assert details["description"] == "alpha sweep, best of 20"
    assert details["status"] == "Completed"
    assert seen["metrics"] == {"loss": 0.5}

    def third_process() -> tuple[list[str], list[str], dict[str, object]]:
        ws = read_pipeline.workspace("reader")
        exp = Experiment(ws, "edits")
        with_reviewed = [r.id for r in exp.get_runs(tags="reviewed")]
        with_drop = [r.id for r in exp.get_runs(tags="drop")]
        (listed,) = exp.get_runs(properties={"score": "0.91"})
        return with_reviewed, with_drop, {"display_name": listed.display_name,
                                          "description": listed.description}

    with_reviewed, with_drop, listed = await call(third_process)
    assert with_reviewed == [run_id]
    assert with_drop == []  # a removed tag no longer matches
    assert listed == {"display_name": "ridge (final)", "description": "alpha sweep, best of 20"}

    conn = await asyncpg.connect(read_pipeline.dsn)
    try:
        row = await conn.fetchrow(
            "SELECT display_name, description, tags, properties, status FROM runstream.runs "
            "WHERE run_id = $1", run_id)
        tag_keys = await conn.fetch(
            "SELECT key FROM runstream.tags WHERE run_id = $1 ORDER BY key", run_id)
    finally:
        await conn.close()
    assert row is not None
    assert row["display_name"] == "ridge (final)"
    assert row["description"] == "alpha sweep, best of 20"
    assert [r["key"] for r in tag_keys] == ["keep", "reviewed"]
    assert row["status"] == "Completed"
