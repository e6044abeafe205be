"""The log-call bench's classification of slow calls (``ingest/bench/producer_job.py``):
by synthetic windows, and on this process's own main thread with calls that spin on the
CPU. (Not with calls that sleep: on this project's VMs a 50 µs ``time.sleep`` sometimes
returns after ~1 ms without the thread ever leaving the CPU, its CPU clock running.)"""

from __future__ import annotations

import gc
import threading
import time
from typing import Any

import pytest

from ingest.bench.producer_job import (
    SLOW_CAUSES,
    _Collections,
    _spinner,
    _timed_loop,
    _Timing,
    worst_and_ours,
)

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


def test_collections_are_recorded_with_their_thread_and_found_inside_a_call() -> None:
    # Real collections, one in the main thread and one in another: the stall lookup finds
    # each by time, with its generation and the thread that ran it.
    seen = _Collections()
    gc.callbacks.append(seen)
    try:
        t0 = time.perf_counter_ns()
        gc.collect(2)
        t1 = time.perf_counter_ns()
        other = threading.Thread(target=gc.collect, args=(1,))
        other.start()
        other.join()
        t2 = time.perf_counter_ns()
    finally:
        gc.callbacks.remove(seen)
    assert seen.count[2] >= 1
    assert seen.main_count[2] >= 1
    assert seen.count[1] >= 1
    assert seen.main_count[1] < seen.count[1]
    in_main = seen.inside(t0, t1)
    assert in_main["gc_generation"] == 2
    assert in_main["gc_in_main_thread"] is True
    assert in_main["gc_ms"] > 0
    elsewhere = seen.inside(t1, t2)
    assert elsewhere["gc_generation"] == 1
    assert elsewhere["gc_in_main_thread"] is False
    assert seen.inside(t2 + 1, t2 + 2) == {
        "gc_ms": 0.0, "gc_generation": None, "gc_in_main_thread": None}


def test_the_control_call_waits_its_length_less_what_a_bare_call_costs() -> None:
    spin, wait_ns = _spinner(200_000)
    assert 0 < wait_ns <= 200_000  # the bare call's measured cost taken off, never more
    took = []
    for _ in range(50):
        t0 = time.perf_counter_ns()
        spin("loss", 0.5, step=1)
        took.append(time.perf_counter_ns() - t0)
    assert min(took) >= wait_ns  # a busy wait on a monotonic clock ends no earlier
    assert _spinner(0)[1] == 0
