"""``./outputs`` capture through the real pipeline (issue 15, item 9): a script run in a
folder whose ``./outputs`` holds an earlier script's leftovers uploads them when its run
completes; with ``RUNSTREAM_CAPTURE_OUTPUTS=0`` it uploads only what it uploads itself."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from producer import Experiment, Run
from tests.integration.pipelines import ReadPipeline, call

pytestmark = pytest.mark.integration

SCRIPT = textwrap.dedent("""
    from producer import Experiment, Workspace

    ws = Workspace.from_env()
    with Experiment(ws, "outputs-capture").start_logging() as run:
        run.upload_file("notes.txt", "notes.txt")
    ws.close(30.0)
    print(run.id)
""")


async def test_outputs_are_captured_unless_turned_off(
    read_pipeline: ReadPipeline, tmp_path: Path
) -> None:
    folder = tmp_path / "project"
    (folder / "outputs" / "old").mkdir(parents=True)
    (folder / "outputs" / "old" / "checkpoint.pt").write_bytes(b"an earlier script's")
    (folder / "notes.txt").write_text("uploaded on purpose")

    def script(**env: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT], cwd=folder, capture_output=True, text=True,
            env={**read_pipeline.env("script"), **env}, timeout=120, check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().splitlines()[-1]

    captured = await call(script)
    not_captured = await call(script, RUNSTREAM_CAPTURE_OUTPUTS="0")
    await read_pipeline.drained()

    experiment = Experiment(read_pipeline.workspace(), "outputs-capture")

    def file_names(run_id: str) -> list[str]:
        return sorted(Run(experiment, run_id).get_file_names())

    names = {run_id: await call(file_names, run_id) for run_id in (captured, not_captured)}
    assert names == {captured: ["notes.txt", "outputs/old/checkpoint.pt"],
                     not_captured: ["notes.txt"]}
