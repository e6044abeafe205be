"""``runstream up`` starts an agent for the compute target ``local``, ``status`` shows it,
a script submitted to ``local`` runs, and ``down`` stops the agent (cancelling what it
runs) with nothing of it left behind — on a throwaway stack of its own."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest.stack.postgres import LocalPostgres
from tests.integration.helpers import port_clash, private_env, runstream

pytestmark = pytest.mark.integration

SUBMIT = r'''
import json, sys
from producer import Environment, Experiment, ScriptRunConfig, Workspace
folder, script, wait = sys.argv[1], sys.argv[2], sys.argv[3] == "wait"
env = Environment("local-python")
env.python.user_managed_dependencies = True
ws = Workspace.from_env()
run = Experiment(ws, "stack-agent").submit(
    ScriptRunConfig(folder, script=script, arguments=["a b", "$(c)"], environment=env))
if wait:
    run.wait_for_completion(show_output=False, raise_on_error=False)
print(json.dumps({"run_id": run.id, "status": run.get_status()}))
ws.close()
'''

SCRIPT = r'''
import sys, time
from producer import Run
run = Run.get_context()
run.log("args", " | ".join(sys.argv[1:]))
print("hello from local", flush=True)
if "--forever" in sys.argv:
    open("started", "w").close()
    time.sleep(600)
'''


@pytest.fixture
def private_stack(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment of a throwaway stack, up (retried on fresh ports when a probed port
    was taken meanwhile); downed and removed afterwards."""
    tried: list[dict[str, str]] = []
    result = None
    for attempt in range(3):
        home = tmp_path / f"home{attempt}"
        env = private_env(home)
        tried.append(env)
        result = runstream("up", "--json", env=env)
        if result.returncode == 0 or not port_clash(result, home):
            break
        runstream("down", env=env)
    try:
        assert result is not None
        assert result.returncode == 0, result.stderr
        yield tried[-1]
    finally:
        for env in tried:
            runstream("down", env=env)
            pg = LocalPostgres(home=Path(env["RUNSTREAM_HOME"]),
                               port=int(env["RUNSTREAM_PG_PORT"]))
            if pg.dir.is_relative_to("/var/lib/runstream"):
                shutil.rmtree(pg.dir, ignore_errors=True)


def submit(env: dict[str, str], folder: Path, script: str, *, wait: bool) -> dict[str, str]:
    done = subprocess.run([sys.executable, "-c", SUBMIT, str(folder), script,
                           "wait" if wait else "no"], env=env, capture_output=True, text=True,
                          check=False, timeout=300)
    assert done.returncode == 0, done.stderr
    answer: dict[str, str] = json.loads(done.stdout.splitlines()[-1])
    return answer


def our_processes(marker: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = str((proc / "cwd").resolve())
        except OSError:
            continue
        if marker in cmdline or cwd.startswith(marker):
            found.append(f"{proc.name}: {cmdline}")
    return found


def test_up_runs_an_agent_for_local_and_down_stops_it(
    private_stack: dict[str, str], tmp_path: Path
) -> None:
    env = private_stack
    home = Path(env["RUNSTREAM_HOME"])
    status = json.loads(runstream("status", "--json", env=env).stdout)
    assert status["agent"] == {"ok": True, "managed": True, "target": "local", "slots": 1,
                               "url": f"{env['RUNSTREAM_API']}/v1/compute/local"}
    assert "agent" in runstream("status", env=env).stdout
    again = runstream("up", env=env)
    assert again.returncode == 0, again.stderr
    assert "agent already running" in again.stderr

    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "train.py").write_text(SCRIPT)
    done = submit(env, folder, "train.py", wait=True)
    assert done["status"] == "Completed"
    work = home / "agent" / "local"
    assert (work / f"{done['run_id']}.0.agent" / "std_log.txt").read_text() == \
        "hello from local\n"

    # A run still going when the stack stops: the agent takes no more, then cancels it.
    (folder / "forever.py").write_text(SCRIPT.replace('"--forever" in sys.argv', "True"))
    running = submit(env, folder, "forever.py", wait=False)
    started = work / f"{running['run_id']}.0" / "started"
    deadline = time.monotonic() + 120
    while not started.exists():
        assert time.monotonic() < deadline, (home / "stack" / "agent.log").read_text()
        time.sleep(0.1)
    down = runstream("down", env=env)
    assert down.returncode == 0, down.stderr
    assert down.stdout.startswith("stopped: agent, api, ingest")
    log = (home / "stack" / "agent.log").read_text()
    assert f"run {running['run_id']}: Canceled" in log
    assert "unregistered" in log
    assert our_processes(str(home)) == []
