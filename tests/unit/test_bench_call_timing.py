"""The log-call bench's classification of slow calls (``ingest/bench/producer_job.py``):
by synthetic windows, and on this process's own main thread with calls that spin on the
CPU and calls that sleep."""

from __future__ import annotations

import time

import pytest

from ingest.bench.producer_job import SLOW_CAUSES, _timed_loop, _Timing

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


def test_calls_that_spin_count_as_on_the_cpu_and_calls_that_sleep_as_off_it() -> None:
    spins = sleeps = 0

    def log(name: str, value: float, step: int | None = None) -> None:
        nonlocal spins, sleeps
        if step is not None and step % 50 == 7:
            if name == "a":
                spins += 1
                until = time.perf_counter_ns() + 20 * US
                while time.perf_counter_ns() < until:
                    pass
            else:
                sleeps += 1
                time.sleep(50e-6)

    timing = _Timing()
    _timed_loop(log, names=["a", "b"], duration_s=0, calls=20_000, sample_every=64,
                timing=timing)
    report = timing.report()
    stalls = report["calls_over_5ms"]
    slow = report["slow_calls"]
    assert spins
    assert sleeps
    # The machine adds slow calls of its own to any class, so these are lower bounds.
    # A spinning thread leaves the CPU only when the OS takes it (then it waits runnable);
    # a sleeping one always leaves it, for most of the call.
    assert sum(slow.values()) + stalls >= spins + sleeps
    assert slow["on_cpu"] + slow["on_cpu_after_switch"] + slow["preempted"] + stalls >= spins
    off_cpu = slow["on_cpu_after_switch"] + slow["our_threads"] + slow["preempted"] \
        + slow["blocked"]
    assert off_cpu + stalls >= sleeps
