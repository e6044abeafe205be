"""One benchmark training process: ``python -m ingest.bench.producer_job '<json spec>'``.

It opens the run named by ``RUNSTREAM_RUN_ID`` as rank ``RUNSTREAM_RANK`` (exactly like a
launched script), then calls ``run.log`` in a training-loop shape — ``series`` metric names
per step — either as fast as it can or paced to ``rate`` points per second, for
``duration_s``. With ``time_calls`` every call is timed with ``perf_counter_ns`` (the
timer's own cost, about 0.1 µs, is included); with ``noop`` a do-nothing function stands
in for ``run.log``, which measures what the loop and the machine alone cost. It closes the
run's producer (bounded) and prints one JSON line of what it did: points logged, call
latency percentiles, peak RSS.
"""

from __future__ import annotations

import bisect
import json
import resource
import sys
import time
from array import array
from typing import Any

from producer import Run

CHUNK = 1000


def percentile(sorted_values: array[int], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, round(q * (len(sorted_values) - 1)))
    return float(sorted_values[index])


def _noop(name: str, value: float, step: int | None = None) -> None:
    """Stands in for run.log to measure the loop and timer alone (the machine's noise)."""


def _loop(
    run: Run, *, names: list[str], duration_s: float, rate: float, time_calls: bool, noop: bool
) -> tuple[int, array[int]]:
    log = _noop if noop else run.log
    series = len(names)
    latencies: array[int] = array("q")
    clock = time.perf_counter_ns
    started = time.perf_counter()
    end = started + duration_s
    points = 0
    step = 0
    value = 0.5
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        if rate > 0:
            due = started + points / rate
            if due > now:
                time.sleep(due - now)
        for _ in range(CHUNK // series):
            if time_calls:
                for name in names:
                    t0 = clock()
                    log(name, value, step=step)
                    latencies.append(clock() - t0)
            else:
                for name in names:
                    log(name, value, step=step)
            step += 1
            value = value * 0.999 + 0.001
        points += (CHUNK // series) * series
    return points, latencies


def main(spec_json: str) -> int:
    spec: dict[str, Any] = json.loads(spec_json)
    run = Run.get_context()
    names = [f"metric_{i}" for i in range(int(spec.get("series", 10)))]
    points, latencies = _loop(
        run,
        names=names,
        duration_s=float(spec["duration_s"]),
        rate=float(spec.get("rate", 0)),
        time_calls=bool(spec.get("time_calls", False)),
        noop=bool(spec.get("noop", False)),
    )
    logged_at = time.time()
    close_started = time.perf_counter()
    run.experiment.workspace.close(timeout_s=float(spec.get("close_timeout_s", 120)))
    close_s = time.perf_counter() - close_started
    latencies = array("q", sorted(latencies))
    report = {
        "points": points,
        "logged_until": logged_at,
        "close_s": close_s,
        "dropped_events": run.dropped_events,
        "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "timed_calls": len(latencies),
        "calls_over_5ms": len(latencies) - bisect.bisect_right(latencies, 5_000_000),
        "call_ns": {
            "p50": percentile(latencies, 0.50),
            "p99": percentile(latencies, 0.99),
            "p999": percentile(latencies, 0.999),
            "max": float(latencies[-1]) if latencies else 0.0,
        },
    }
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
