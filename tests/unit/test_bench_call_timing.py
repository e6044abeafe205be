"""The log-call bench's classification of slow calls (``ingest/bench/producer_job.py``):
by synthetic windows, and on this process's own main thread with calls that spin on the
CPU. (Not with calls that sleep: on this project's VMs a 50 µs ``time.sleep`` sometimes
returns after ~1 ms without the thread ever leaving the CPU, its CPU clock running.)"""

from __future__ import annotations

import time
from typing import Any

import pytest

from ingest.bench.producer_job import SLOW_CAUSES, _timed_loop, _Timing, worst_and_ours

US = 1000


@pytest.mark.parametrize(("window", "cause"), [
    # (call, wall, main, process, run-queue wait, slices) in ns
    ((8 * US, 70 * US, 70 * US, 70 * US, 0, 0), "on_cpu"),
    ((8 * US, 70 * US, 67 * US, 67 * US, 3 * US, 1), "on_cpu_after_switch"),
    ((8 * US, 70 * US, 62 * US, 70 * US, 0, 1), "our_threads"),
    ((8 * US, 70 * US, 62 * US, 63 * US, 7 * US, 1), "preempted"),
    ((8 * US, 70 * US, 62 * US, 63 * US, 1 * US, 2), "blocked"),
])
def test_a_slow_call_is_classified_by_its_window(window: tuple[int, ...], cause: str) -> None:
    timing = _Timing()
    timing.classify_slow(*window)
    assert timing.slow == {k: int(k == cause) for k in SLOW_CAUSES}


def test_every_slow_call_is_classified_and_spinning_ones_are_never_off_cpu_by_our_threads(
) -> None:
    spins = 0

    def log(name: str, value: float, step: int | None = None) -> None:
        nonlocal spins
        if step is not None and step % 50 == 7 and name == "a":
            spins += 1
            until = time.perf_counter_ns() + 20 * US
            while time.perf_counter_ns() < until:
                pass

    timing = _Timing()
    _timed_loop(log, names=["a", "b"], duration_s=0, calls=20_000, sample_every=64,
                timing=timing)
    report = timing.report()
    stalls = report["calls_over_5ms"]
    slow = report["slow_calls"]
    assert spins
    # The machine adds slow calls of its own to any class, so these are lower bounds. A
    # spinning thread leaves the CPU only when the OS takes it (it then waits runnable),
    # and this process has no other thread to wait for.
    assert sum(slow.values()) + stalls >= spins
    assert slow["on_cpu"] + slow["on_cpu_after_switch"] + slow["preempted"] + stalls >= spins


def test_the_report_lists_the_longest_stalls_and_those_classed_ours() -> None:
    stalls: list[dict[str, Any]] = [{"call_ms": 100.0 - i, "cause": "os"} for i in range(30)]
    stalls += [{"call_ms": 5.5, "cause": "ours"}, {"call_ms": 99.5, "cause": "ours"}]
    listed = worst_and_ours(stalls, 10)
    longest = sorted((float(s["call_ms"]) for s in stalls), reverse=True)[:10]
    assert [s["call_ms"] for s in listed[:10]] == longest
    assert [s for s in listed if s["cause"] == "ours"] == [
        {"call_ms": 99.5, "cause": "ours"}, {"call_ms": 5.5, "cause": "ours"}]
    assert len(listed) == 11
