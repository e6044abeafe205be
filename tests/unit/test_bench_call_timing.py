"""The log-call bench's classification of slow calls (``ingest/bench/producer_job.py``):
by synthetic windows, and on this process's own main thread with calls that spin on the
CPU. (Not with calls that sleep: on this project's VMs a 50 µs ``time.sleep`` sometimes
returns after ~1 ms without the thread ever leaving the CPU, its CPU clock running.)"""

from __future__ import annotations

import gc
import json
import threading
import time
from typing import Any

import pytest

from ingest.bench.producer_job import (
    SLOW_CAUSES,
    _Collections,
    _python_work,
    _spinner,
    _timed_loop,
    _Timing,
    main,
    worst_and_ours,
)
from ingest.bench.suite import _calls, _paused_with_control

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


def test_a_stall_records_when_it_started_and_what_the_main_thread_did_in_it() -> None:
    touched = 0

    def log(name: str, value: float, step: int | None = None) -> None:
        nonlocal touched
        if step == 500 and name == "a":
            # fresh pages written (faults), then 6 ms on the CPU: one stall, ours
            touched = len(bytearray(32 << 20))
            until = time.perf_counter_ns() + 6_000 * US
            while time.perf_counter_ns() < until:
                pass

    timing = _Timing()
    before = time.perf_counter_ns()
    _timed_loop(log, names=["a", "b"], duration_s=0, calls=2_000, sample_every=64,
                timing=timing)
    after = time.perf_counter_ns()
    report = timing.report()
    assert touched
    mine = [s for s in report["stalls"] if s["main_cpu_in_call_ms"] >= 3.0]
    assert len(mine) == 1, report["stalls"]
    stall = mine[0]
    assert stall["cause"] == "ours"
    assert before < stall["start_ns"] < after
    assert stall["main_page_faults"] > 0
    assert stall["main_user_ms"] + stall["main_system_ms"] > 0
    assert stall["main_voluntary_switches"] >= 0
    assert stall["main_involuntary_switches"] >= 0
    # one span per stall, in the order they happened, the same as the details say
    spans = report["stall_spans"]
    assert len(spans) == len(timing.stalls)
    start, end, cause, ran, quiet = next(s for s in spans if s[0] == stall["start_ns"])
    assert (cause, ran, quiet) == ("ours", True, False)  # it faulted
    assert end - start == round(stall["call_ms"] * 1e6)


def _report(spans: list[list[Any]]) -> dict[str, Any]:
    stalls = [{"start_ns": a, "call_ms": (b - a) / 1e6, "cause": c} for a, b, c, *_ in spans]
    return {"timed_calls": 1_000_000, "calls_over_5ms": len(spans), "hist": [[900, 1_000_000]],
            "call_ns": {"max": 20e6},
            "stalls_ours": sum(c == "ours" for _, _, c, *_ in spans),
            "stalls_os": sum(c == "os" for _, _, c, *_ in spans),
            "stalls": stalls, "stall_spans": spans}


def test_a_stall_on_the_cpu_at_the_moment_the_control_was_too_is_the_machines() -> None:
    ms = 1_000_000
    control = {"stall_spans": [
        [100 * ms, 120 * ms, "ours", True],   # the control charged CPU time, no progress
        [200 * ms, 210 * ms, "os", False],    # the control preempted: not a pause
        [300 * ms, 302 * ms, "ours", True],
    ]}
    log = _report([
        [101 * ms, 119 * ms, "ours", True],   # inside the control's: paused, the machine's
        [201 * ms, 209 * ms, "ours", True],   # the control was off its CPU: stays ours
        [105 * ms, 115 * ms, "ours", False],  # our other threads ran: stays ours
        [299 * ms, 307 * ms, "ours", True],   # covered less than half: stays ours
        [400 * ms, 410 * ms, "os", False],
    ])
    rank = _report([[102 * ms, 110 * ms, "ours", True]])
    assert _paused_with_control([log, rank], control) == 2
    assert (log["stalls_ours"], log["stalls_os"], log["stalls_paused_with_control"]) == (3, 2, 1)
    assert rank["stalls_ours"] == 0
    assert rank["stalls_paused_with_control"] == 1
    paused = [s for s in log["stalls"] if s.get("paused_with_control")]
    assert [(s["start_ns"], s["cause"]) for s in paused] == [(101 * ms, "os")]
    assert [c for _, _, c, *_ in log["stall_spans"]] == ["os", "ours", "ours", "ours", "os"]
    section = _calls([log, rank])
    assert (section["stalls_ours"], section["stalls_paused_with_control"]) == (3, 2)
    assert section["stalls_on_cpu_quiet"] == 0  # these spans say nothing of faults
    quiet = _report([[1, 6_000_001, "ours", True, True], [9, 6_000_009, "os", False, False]])
    assert _calls([quiet])["stalls_on_cpu_quiet"] == 1
    # without the control's spans nothing moves
    fresh = _report([[101 * ms, 119 * ms, "ours", True]])
    assert _paused_with_control([fresh], {}) == 0
    assert fresh["stalls_ours"] == 1


def test_the_python_control_does_more_work_for_a_longer_call_and_runs_none_of_ours() -> None:
    short, short_steps = _python_work(1_000)
    long, long_steps = _python_work(8_000)
    assert 1 <= short_steps < long_steps
    took = []
    for n in range(200):
        t0 = time.perf_counter_ns()
        long("metric_3", 0.25, step=n)
        took.append(time.perf_counter_ns() - t0)
    took.sort()
    assert took[len(took) // 2] > 0
    short("metric_3", 0.25)  # without a step, as run.log may be called


def test_the_control_process_reports_its_kind(capsys: pytest.CaptureFixture[str]) -> None:
    for kind in ("spin", "python"):
        spec = {"duration_s": 0, "calls": 2_000, "noop": True, "spin_ns": 2_000,
                "control": kind, "time_calls": True, "series": 2}
        assert main(json.dumps(spec)) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["control"] == kind
        assert report["timed_calls"] == 2_000
        if kind == "python":
            assert report["control_steps"] >= 1
            assert report["spin_ns"] == 2_000  # the length it was asked for
        else:
            assert report["control_steps"] == 0
            assert 0 <= report["spin_ns"] <= 2_000  # the wait, less a bare call's cost
