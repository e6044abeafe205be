"""One ledger training process: ``python -m ingest.bench.ledger_job '<json workload>'``.

It logs exactly the points ``ingest.bench.ledger.Workload`` predicts, through the real SDK
(``Workspace.from_env``), timing every ``log`` call, and ends every run the way the
workload says. Progress goes to stdout as JSON lines, each flushed at once so a test
that kills this process still knows how far it got:

- ``{"kind": "started", "runs": {key: run_id}}`` once every run is open;
- ``{"kind": "tick", "tick": n, "checkpoint": bool, ...}`` after tick ``n`` (every tick
  with ``report_every_tick``, else at checkpoints). A checkpoint first calls
  ``flush(checkpoint_timeout_s)``: when it returns, the ticks before are acknowledged by
  Kafka; when it times out (Kafka unreachable), they are at least in the fsynced spool;
- ``{"kind": "held", "tick": n, "mode": ..., "dropped": ..., "in_flight": ...,
  "held": ...}`` every 0.5 s while it waits for the file of its hold before tick ``n``
  (nothing is logged meanwhile; the test breaks or heals something, watching the sender's
  mode, drop count, unacknowledged sends and status events held in memory). ``n`` may be
  the number of ticks: then the hold comes after the last tick, before the runs end;
- with ``until_file``, ticks go on past ``ticks`` until that file exists;
- ``{"kind": "ended", "mode": ..., ...}`` the same way, every 0.5 s after the runs ended
  while it waits for ``end_hold_file`` (their last events are on their way meanwhile);
- ``{"kind": "done", ...}`` after the runs ended and a final bounded flush: the ticks and
  points it logged, slowest log call, the sender's counters.
"""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import suppress
from typing import Any

from producer import Experiment, ProducerOptions, ProducerTimeoutError, Run, Workspace


def say(**fields: Any) -> None:
    # One write per line: stderr (warnings, aiokafka's logs from the sender thread) shares
    # the output file, and print()'s separate write of the newline could let a log line
    # land inside ours (seen: a "started" line the test could not parse, 1 run in ~8).
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def open_runs(exp: Experiment, runs: list[dict[str, Any]]) -> dict[str, Run]:
    opened: dict[str, Run] = {}
    for plan in runs:
        parent = plan.get("parent")
        if parent is None:
            opened[plan["key"]] = exp.start_logging(display_name=plan["key"], outputs_dir=None)
        else:
            opened[plan["key"]] = opened[parent].child_run(plan["key"])
    return opened


def end_run(run: Run, end: str) -> None:
    if end == "complete":
        run.complete()
    elif end == "fail":
        run.fail("ledger: planned failure")
    elif end == "cancel":
        run.cancel()
    # "none": left open, like a process that dies (the workload expects it Running)


def wait_for_file(path: str, ws: Workspace, runs: dict[str, Run], **fields: Any) -> None:
    """Report the sender's state every 0.5 s until ``path`` exists."""
    while not os.path.exists(path):
        stats = ws.stats()
        say(**fields, mode=stats.mode, dropped=sum(run.dropped_events for run in runs.values()),
            in_flight=stats.events_in_flight, held=stats.events_held)
        time.sleep(0.5)


def main(spec_json: str) -> int:
    spec: dict[str, Any] = json.loads(spec_json)
    ws = Workspace.from_env(options=ProducerOptions(**spec.get("options", {})))
    runs = open_runs(Experiment(ws, spec["experiment"]), spec["runs"])
    say(kind="started", runs={key: run.id for key, run in runs.items()}, pid=os.getpid())
    series: list[str] = spec["series"]
    per_tick: int = spec["points_per_tick"]
    holds = {int(h["tick"]): str(h["file"]) for h in spec.get("holds", [])}
    until_file: str | None = spec.get("until_file")
    every = int(spec.get("checkpoint_every", 0))
    clock = time.perf_counter
    slowest_s = 0.0
    points = 0
    ordered = list(runs.values())
    tick = 0
    while tick < int(spec["ticks"]) or (until_file is not None
                                        and not os.path.exists(until_file)):
        if tick in holds:
            wait_for_file(holds[tick], ws, runs, kind="held", tick=tick)
        for j in range(per_tick):
            i = tick * per_tick + j
            for r, run in enumerate(ordered):
                for s, name in enumerate(series):
                    value = r * 1_000_000.0 + s * 1_000.0 + i * 0.25
                    t0 = clock()
                    if s == 0:
                        run.log(name, value)  # the SDK's own step counter: 0, 1, 2…
                    else:
                        run.log(name, value, step=2 * i)
                    slowest_s = max(slowest_s, clock() - t0)
            points += len(ordered) * len(series)
        checkpoint = every > 0 and (tick + 1) % every == 0
        if checkpoint:
            with suppress(ProducerTimeoutError):
                ws.flush(float(spec.get("checkpoint_timeout_s", 1.0)))
        if checkpoint or spec.get("report_every_tick", False):
            say(kind="tick", tick=tick, points=points, checkpoint=checkpoint,
                slowest_log_ms=slowest_s * 1e3, mode=ws.stats().mode,
                dropped=sum(run.dropped_events for run in ordered))
        time.sleep(float(spec.get("pace_s", 0.0)))
        tick += 1
    if until_file is None and tick in holds:  # after the last tick, before the runs end
        wait_for_file(holds[tick], ws, runs, kind="held", tick=tick)
    ended_at = clock()
    for plan in reversed(spec["runs"]):
        end_run(runs[plan["key"]], plan["end"])
    if spec.get("end_hold_file") is not None:
        wait_for_file(spec["end_hold_file"], ws, runs, kind="ended")
        ended_at = clock()  # flush_s is the final flush's time, not the hold's
    delivered = True
    try:
        ws.flush(float(spec.get("final_flush_s", 90.0)))
    except ProducerTimeoutError:
        delivered = False
    stats = ws.stats()
    say(kind="done", ticks=tick, points=points, slowest_log_ms=slowest_s * 1e3,
        flush_s=round(clock() - ended_at, 3), delivered=delivered,
        dropped={key: run.dropped_events for key, run in runs.items()},
        sent=stats.events_sent, spooled=stats.events_spooled,
        replayed=stats.events_replayed, events_dropped=stats.events_dropped)
    ws.close(10.0)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
