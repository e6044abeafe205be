"""Every run ends (issue 15 item 2): a training script's process ends — it exits, raises,
is sent SIGTERM or SIGINT (Ctrl-C), or is killed with SIGKILL — and its run ends with it,
with the reason, never left running on its compute target.

Each script is a real Python process logging through the real SDK into the test's own
topic, worker and database; the signals are real signals. What a test reads is the
``runstream.runs`` view as the worker stored it (and ``runstream.compute_targets``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import unique
from tests.integration.helpers import wait_for
from tests.integration.pipelines import Pipeline

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

#: One script, many endings (argv[1]); it prints "run <id>" once its run is stored-bound
#: (flushed to Kafka), then does what the mode says (the loops print "ticking" once
#: 1,000 ticks were logged).
SCRIPT = textwrap.dedent("""
    import os
    import signal
    import sys
    import time

    from producer import Experiment, Workspace

    mode, target = sys.argv[1], sys.argv[2]
    ws = Workspace.from_env()
    exp = Experiment(ws, "ends")

    if mode.startswith("chained"):
        def own_handler(signum, frame):
            with open("handler-ran", "w") as f:
                f.write(str(signum))
            sys.exit(7)
        signal.signal(signal.SIGTERM, own_handler)

    def started(run):
        run.log("loss", 1.0)
        run.flush(30.0)
        print("run", run.id, flush=True)

    def log_until_stopped(run):
        step = 0
        while True:  # a tight loop: a signal lands in the middle of log calls
            run.log("tick", float(step))
            step += 1
            if step % 1000 == 0:
                if step == 1000:
                    print("ticking", flush=True)  # some ticks were logged before any signal
                time.sleep(0.001)

    if mode.endswith("_with"):
        with exp.start_logging(compute_target=target, outputs_dir=None) as run:
            child = run.child_run("fold-1")
            started(run)
            log_until_stopped(run)
    run = exp.start_logging(compute_target=target, outputs_dir=None)
    child = run.child_run("fold-1")
    child.log("mse", 3.0)
    started(run)
    if mode == "exit":
        sys.exit(0)
    if mode == "raise":
        raise ValueError("diverged at step 3")
    if mode == "fork":
        children = []
        for i in range(2):
            pid = os.fork()
            if pid == 0:
                for step in range(100):
                    run.log("forked", float(step), step=i * 1000 + step)
                run.flush(30.0)
                if i == 1:
                    time.sleep(60)  # the parent terminates this one with SIGTERM
                sys.exit(0)  # a normal exit: the child's atexit runs
            children.append(pid)
        statuses = []
        for i, pid in enumerate(children):
            if i == 1:
                time.sleep(1.0)
                os.kill(pid, signal.SIGTERM)
            _, status = os.waitpid(pid, 0)
            statuses.append(os.waitstatus_to_exitcode(status))
        print("children", *statuses, flush=True)
        child.complete()
        run.complete()
        sys.exit(0)
    log_until_stopped(run)
""")


def start(pipeline: Pipeline, home: Path, mode: str, target: str) -> subprocess.Popen[str]:
    env = {**os.environ, "RUNSTREAM_KAFKA": pipeline.bootstrap, "RUNSTREAM_TOPIC": pipeline.topic,
           "RUNSTREAM_API": pipeline.api_url, "RUNSTREAM_HOME": str(home)}
    env.pop("RUNSTREAM_RUN_ID", None)
    home.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([sys.executable, "-c", SCRIPT, mode, target], cwd=home, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


async def started_run(proc: subprocess.Popen[str]) -> str:
    line = await asyncio.to_thread(proc.stdout.readline)  # type: ignore[union-attr]
    if not line.startswith("run "):
        proc.kill()
        _, err = proc.communicate(timeout=30)
        pytest.fail(f"the script did not start its run: {line!r}\n{err}")
    return str(line.split()[1])


async def finished(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        out, err = await asyncio.to_thread(proc.communicate, timeout=90)
    except subprocess.TimeoutExpired:
        # A script that did not end: kill it (it would go on logging after the test) and
        # show what it printed, which says where the signal went.
        proc.kill()
        out, err = proc.communicate(timeout=30)
        pytest.fail(f"the script did not end within 90 s of the signal\n{out}\n{err[-4000:]}")
    return proc.returncode, out, err


async def run_rows(pipeline: Pipeline, *run_ids: str) -> dict[str, dict[str, Any]]:
    rows = await pipeline.rows(
        "SELECT run_id, parent_run_id, status, error, compute_target FROM runstream.runs "
        "WHERE run_id = ANY($1::text[]) OR parent_run_id = ANY($1::text[])", list(run_ids))
    return {r["run_id"]: r for r in rows}


async def ended(pipeline: Pipeline, run_id: str) -> dict[str, dict[str, Any]]:
    """The run and its children once all of them ended (as stored by the worker)."""
    async def done() -> bool:
        rows = await run_rows(pipeline, run_id)
        return len(rows) == 2 and all(
            r["status"] in ("Completed", "Failed", "Canceled") for r in rows.values())

    await wait_for(done, timeout_s=60, what=f"run {run_id} and its child to end")
    return await run_rows(pipeline, run_id)


def statuses(rows: dict[str, dict[str, Any]], run_id: str) -> tuple[tuple[str, str | None], ...]:
    """(status, error) of the run, then of its child."""
    child = next(r for r in rows.values() if r["parent_run_id"] == run_id)
    return ((rows[run_id]["status"], rows[run_id]["error"]), (child["status"], child["error"]))


async def test_exiting_without_complete_fails_the_run_and_its_child(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    proc = start(pipeline, tmp_path / "exit", "exit", unique("t-"))
    rid = await started_run(proc)
    code, _, err = await finished(proc)
    assert code == 0, err
    rows = await ended(pipeline, rid)
    assert statuses(rows, rid) == (("Failed", "process exited without complete()"),
                                   ("Failed", "process exited without complete()"))


async def test_an_uncaught_exception_fails_the_run_with_its_traceback(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    proc = start(pipeline, tmp_path / "raise", "raise", unique("t-"))
    rid = await started_run(proc)
    code, _, err = await finished(proc)
    assert code == 1, err
    assert "ValueError: diverged at step 3" in err
    rows = await ended(pipeline, rid)
    (status, error), (child_status, _) = statuses(rows, rid)
    assert (status, child_status) == ("Failed", "Failed")
    assert error is not None
    assert error.startswith("process exited without complete(); it raised:\nTraceback")
    assert error.rstrip().endswith("ValueError: diverged at step 3")


@pytest.mark.parametrize("mode", ["loop", "loop_with"])
async def test_sigterm_cancels_the_runs_and_still_terminates_the_process(
    pipeline: Pipeline, tmp_path: Path, mode: str
) -> None:
    target = unique("t-")
    proc = start(pipeline, tmp_path / mode, mode, target)
    rid = await started_run(proc)
    # Not before it logged: the signal must find ticks to keep (it printed "run" and may
    # not have logged one yet).
    assert (await asyncio.to_thread(proc.stdout.readline)).strip() == "ticking"  # type: ignore[union-attr]
    proc.send_signal(signal.SIGTERM)
    code, _, err = await finished(proc)
    assert code == -signal.SIGTERM, (code, err)  # terminated by the signal, as without us
    rows = await ended(pipeline, rid)
    assert statuses(rows, rid) == (("Canceled", "terminated by SIGTERM"),
                                   ("Canceled", "terminated by SIGTERM"))
    queue = await pipeline.rows(
        "SELECT running, not_responding, canceled_1h FROM runstream.compute_targets "
        "WHERE compute_target = $1", target)
    assert queue == [{"running": 0, "not_responding": 0, "canceled_1h": 2}]
    ticks = await pipeline.rows(
        "SELECT count(*) AS n FROM runstream.metric_points WHERE run_id = $1 AND name = 'tick'",
        rid)
    assert ticks[0]["n"] > 0  # what it logged before the signal is there


@pytest.mark.parametrize("mode", ["chained", "chained_with"])
async def test_sigterm_chains_to_the_programs_own_handler(
    pipeline: Pipeline, tmp_path: Path, mode: str
) -> None:
    home = tmp_path / mode
    proc = start(pipeline, home, mode, unique("t-"))
    rid = await started_run(proc)
    proc.send_signal(signal.SIGTERM)
    code, _, err = await finished(proc)
    assert code == 7, (code, err)  # the program's handler decided: sys.exit(7)
    assert (home / "handler-ran").read_text() == str(int(signal.SIGTERM))
    rows = await ended(pipeline, rid)
    assert statuses(rows, rid) == (("Canceled", "terminated by SIGTERM"),
                                   ("Canceled", "terminated by SIGTERM"))


@pytest.fixture
def ctrl_c_reaches_the_scripts() -> Iterator[None]:
    """A script started from a terminal gets Ctrl-C as KeyboardInterrupt. One started under
    a shell's background job (``cmd &`` without job control, as a CI runner may start the
    whole suite) inherits SIGINT *ignored*, and Python then installs no KeyboardInterrupt
    handler: the signal would do nothing. A script inherits this process's disposition at
    exec (a handler becomes the default there), so an ignored SIGINT is undone here."""
    previous = signal.getsignal(signal.SIGINT)
    if previous == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("ctrl_c_reaches_the_scripts")
@pytest.mark.parametrize("mode", ["loop", "loop_with"])
async def test_ctrl_c_cancels_the_runs_inside_or_outside_with(
    pipeline: Pipeline, tmp_path: Path, mode: str
) -> None:
    proc = start(pipeline, tmp_path / mode, mode, unique("t-"))
    rid = await started_run(proc)
    proc.send_signal(signal.SIGINT)
    code, _, err = await finished(proc)
    assert code == -signal.SIGINT, (code, err)
    assert "KeyboardInterrupt" in err
    rows = await ended(pipeline, rid)
    assert statuses(rows, rid) == (("Canceled", "KeyboardInterrupt (Ctrl-C)"),
                                   ("Canceled", "KeyboardInterrupt (Ctrl-C)"))


async def test_forked_children_exiting_or_terminated_leave_the_parents_runs_open(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    proc = start(pipeline, tmp_path / "fork", "fork", unique("t-"))
    rid = await started_run(proc)
    code, out, err = await finished(proc)
    assert code == 0, err
    # One child exited normally (atexit ran in it), the other died of its SIGTERM.
    assert out.split() == ["children", "0", str(-signal.SIGTERM)], (out, err)
    rows = await ended(pipeline, rid)
    assert statuses(rows, rid) == (("Completed", None), ("Completed", None))
    forked = await pipeline.rows(
        "SELECT count(*) AS n FROM runstream.metric_points WHERE run_id = $1 AND name = 'forked'",
        rid)
    assert forked[0]["n"] == 200


async def test_a_killed_process_goes_not_responding_then_failed_and_leaves_its_queue(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    await pipeline.rows(
        "UPDATE runstream_data.settings SET value = $2 WHERE key = $1 RETURNING key",
        "not_responding_after", "1 second")
    await pipeline.rows(
        "UPDATE runstream_data.settings SET value = $2 WHERE key = $1 RETURNING key",
        "fail_after_no_heartbeat", "8 seconds")
    target = unique("t-")
    proc = start(pipeline, tmp_path / "kill", "loop", target)
    rid = await started_run(proc)
    proc.send_signal(signal.SIGKILL)
    code, _, _ = await finished(proc)
    assert code == -signal.SIGKILL

    seen: list[str] = []

    async def failed() -> bool:
        rows = await run_rows(pipeline, rid)
        status = rows[rid]["status"] if rid in rows else "missing"
        if not seen or seen[-1] != status:
            seen.append(status)
        if status == "NotResponding":
            queue = await pipeline.rows(
                "SELECT running, not_responding FROM runstream.compute_targets "
                "WHERE compute_target = $1", target)
            # still counted on its target: as running, and apart as not responding
            assert queue[0]["running"] == queue[0]["not_responding"] >= 1, queue
        return status == "Failed" and all(r["status"] == "Failed" for r in rows.values())

    await wait_for(failed, timeout_s=90, what=f"run {rid} to end Failed")
    assert "NotResponding" in seen, seen
    rows = await run_rows(pipeline, rid)
    for row in rows.values():
        assert row["error"].startswith("no heartbeat for 8 s: its last event was at "), row
    queue = await pipeline.rows(
        "SELECT running, not_responding, failed_1h FROM runstream.compute_targets "
        "WHERE compute_target = $1", target)
    assert queue == [{"running": 0, "not_responding": 0, "failed_1h": 2}]
