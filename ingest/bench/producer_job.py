"""One benchmark training process: ``python -m ingest.bench.producer_job '<json spec>'``.

It opens the run named by ``RUNSTREAM_RUN_ID`` as rank ``RUNSTREAM_RANK`` (exactly like a
launched script), then calls ``run.log`` in a training-loop shape — ``series`` metric names
per step — either as fast as it can or paced to ``rate`` points per second, for
``duration_s`` (or, with ``calls``, until that many calls were made). It closes the run's
producer (within ``close_timeout_s``: a spooled backlog is replayed then) and prints one
JSON line of what it did: points logged, CPU seconds, the producer's counters
(``Workspace.stats()``), peak RSS and, with ``time_calls``, the call latencies.

With ``time_calls`` every call is timed with ``perf_counter_ns`` (the timer's own cost,
about 0.1 µs, is included) into a histogram, and every call over 5 ms (a stall) is
attributed. Every ``sample_every`` calls (about; a whole step of ``series`` calls at a
time) the loop reads the main thread's CPU time, the process's CPU time and the main
thread's run-queue wait (``/proc/thread-self/schedstat``) and its page faults and context
switches (``getrusage(RUSAGE_THREAD)``) — outside the timed calls, so a window costs about
3 µs once, not per call — and right after a stalled call it reads them again. The
window from the last sample to the end of the stalled call holds that one stall and at
most ``sample_every`` ordinary calls (microseconds each), so over it:

- ``main`` = the main thread's CPU time inside the call (its CPU time over the window
  minus the window's time outside the call, all of which is counted as running: an upper
  bound on what the ordinary calls used), ``off`` = the call's time minus ``main``, and
  ``others`` = the process's CPU time minus the main thread's (our other threads: the
  SDK's sender and uploader);
- ``main`` at least ``off`` → **ours** (the main thread itself ran for most of the call:
  our code, our garbage);
- else ``others`` at least half of ``off`` → **ours** (while the main thread was not
  running, mostly our own threads were: it waited for the GIL or one of our locks);
- else → **os** (the main thread was descheduled and something else on the machine ran;
  the run-queue wait, recorded with each stall, shows how much of ``off`` it spent
  runnable but not running). An os stall whose ``off`` was mostly *not* run-queue wait
  is also counted in ``stalls_os_blocked``: the main thread slept — on the GIL or a lock
  held by one of our threads that the OS had descheduled, or on I/O — rather than
  waiting for a CPU: the OS's doing, but one that only a process with threads of ours
  can suffer (the no-op loop has none).

Each stall also records when it started (``start_ns``) and the main thread's page faults,
context switches and user and system CPU time over its window. "The main thread ran" is
what the kernel charged to it: on a virtual machine, a pause of the whole machine that
the hypervisor does not report as steal time is charged to whichever thread was on the
CPU (measured here: 5 to 33 ms "on the CPU", in user mode, with no fault or switch, in the
control loop as in the log loop). The bench matches such stalls with the control's
(``suite._paused_with_control``).

Every call of 5 µs (the p99.9 target) to 5 ms ends its window the same way and is
counted in ``slow_calls`` by what the window says (``_Timing.classify_slow``): whether
the main thread left the CPU in it (the schedstat's count of times it was put on one),
and if it was off for most of the call, whether our other threads, the run queue or a
sleep took that time. They are what sets the p99.9.

Garbage collections are recorded as they run (``gc.callbacks``: generation, the thread
that ran it, start and end): each stall carries the collection time inside it
(``gc_ms``, and whether the main thread ran it, triggered by an allocation of its own,
or another of our threads, holding the GIL), and the report counts collections by
generation, with the longest. A collection in the main thread inside a stalled call is
still classed ours (the main thread ran), one in another thread too (it held the GIL).
The loop's own structures (the histogram: a million counters) are moved to the oldest
generation by one collection before it starts, so no young collection walks them.

``sample_every`` 0 turns the sampling off (to check that it does not move the
percentiles); stalls are then counted as ``stalls_unattributed``.

With ``noop`` a do-nothing function stands in for ``run.log`` and no run is opened (no
SDK thread at all): the same loop and attribution measure what this machine alone does to
a loop like this one — run side by side with the logging process, its stalls are the
machine's (its ``stalls_ours`` should stay 0, a check of the method). With ``spin_ns``
as well, the stand-in busy-waits so that its call lasts about that long (``_spinner``):
the bench sets it to the log call's p50, making the no-op a control of the same length;
with ``control`` "python" the stand-in is ``_python_work`` instead, interpreter work of
that length (``control_steps`` steps a call).
"""

from __future__ import annotations

import array
import dataclasses
import gc
import json
import os
import resource
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

CHUNK = 1000
STALL_NS = 5_000_000
#: Calls at least this slow (the p99.9 target), and not stalls, are classified by what the
#: main thread did over their window (``_Timing.classify_slow``).
SLOW_NS = 5_000
#: Exact histogram up to this (ns); longer calls are kept one by one.
EXACT_NS = 1_000_000
#: Calls between two CPU-time samples (rounded to whole steps of ``series`` calls).
SAMPLE_EVERY = 64
#: Stalls described one by one in the report (the longest).
STALL_DETAILS = 20


def percentile_from_counts(counts: dict[int, int], total: int, q: float) -> float:
    """The ``q`` quantile (nearest rank, as ``round(q * (n - 1))``) of a value → count map."""
    if total <= 0:
        return 0.0
    index = min(total - 1, round(q * (total - 1)))
    seen = 0
    for value in sorted(counts):
        seen += counts[value]
        if seen > index:
            return float(value)
    return float(max(counts))


def compress(counts: dict[int, int]) -> list[list[int]]:
    """``[[ns, count], …]`` with 10 ns buckets below 10 µs and 1 µs buckets to 1 ms (lower
    bounds), exact above: small enough to print, fine enough to merge ranks' percentiles."""
    out: dict[int, int] = {}
    for value, n in counts.items():
        if value < 10_000:
            key = value - value % 10
        elif value < EXACT_NS:
            key = value - value % 1000
        else:
            key = value
        out[key] = out.get(key, 0) + n
    return [[k, out[k]] for k in sorted(out)]


def worst_and_ours(stalls: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """The ``n`` longest stalls and up to ``n`` more classed ours (the ones to explain),
    longest first."""
    ordered = sorted(stalls, key=lambda s: -s["call_ms"])
    return ordered[:n] + [s for s in ordered[n:] if s["cause"] == "ours"][:n]


def _noop(name: str, value: float, step: int | None = None) -> None:
    """Stands in for run.log to measure the loop and timer alone (the machine's noise)."""


#: Calls timed to learn what the control's own call and clock reads cost.
SPIN_PROBE_CALLS = 20_000


def _spinner(target_ns: int) -> tuple[Callable[..., None], int]:
    """A stand-in for ``run.log`` that runs no code of ours but lasts about ``target_ns``
    as the loop times it — a busy wait on the clock, less what a call of the bare wait
    costs here (its median over ``SPIN_PROBE_CALLS``) — and that wait (ns).

    Interrupts, the hypervisor and preemption land in a call in proportion to its length:
    beside a log call of 0.9 µs, a no-op of 0.1 µs shows a fraction of what the machine
    does to it, and a control as long as the log call shows all of it."""
    clock = time.perf_counter_ns

    def spin_for(ns: int) -> Callable[..., None]:
        def spin(name: str, value: float, step: int | None = None) -> None:
            end = clock() + ns
            while clock() < end:
                pass
        return spin

    probe, took = spin_for(0), []
    for _ in range(SPIN_PROBE_CALLS):
        t0 = clock()
        probe("x", 0.0, step=0)
        took.append(clock() - t0)
    took.sort()
    wait_ns = max(0, target_ns - took[len(took) // 2])
    return spin_for(wait_ns), wait_ns


#: The Python control's ring of slots (``_python_work``): a few pages, as the log call's
#: arrays between two passes of its sender.
WORK_SLOTS = 4096


def _python_work(target_ns: int) -> tuple[Callable[..., None], int]:
    """A stand-in for ``run.log`` that runs no code of ours but does the same kind of
    work — bytecodes, a dict lookup, stores into typed arrays — ``steps`` times a call,
    with ``steps`` the fewest whose median call (over ``SPIN_PROBE_CALLS``) lasts
    ``target_ns``; returns it and ``steps``.

    A busy wait on the clock touches almost no memory; an interpreter does, so what
    other processes do to the caches and the memory bus (the broker, PostgreSQL, our
    senders) slows this control as it slows the log call."""
    values = array.array("d", bytes(8 * WORK_SLOTS))
    steps_at = array.array("q", bytes(8 * WORK_SLOTS))
    names = {f"metric_{i}": i for i in range(16)}
    state = [0]
    mask = WORK_SLOTS - 1

    def work_for(steps: int) -> Callable[..., None]:
        def work(name: str, value: float, step: int | None = None) -> None:
            i = state[0]
            for _ in range(steps):
                j = i & mask
                values[j] = value
                steps_at[j] = step or 0
                names.get(name)
                i += 1
            state[0] = i
        return work

    clock = time.perf_counter_ns

    def median(fn: Callable[..., None]) -> int:
        took = []
        for n in range(SPIN_PROBE_CALLS):
            t0 = clock()
            fn("metric_1", 0.5, step=n)
            took.append(clock() - t0)
        took.sort()
        return took[len(took) // 2]

    low, high = 1, 1
    while median(work_for(high)) < target_ns and high < 1 << 20:
        low, high = high, high * 2
    while low < high:  # the fewest steps that last target_ns
        mid = (low + high) // 2
        if median(work_for(mid)) < target_ns:
            low = mid + 1
        else:
            high = mid
    return work_for(high), high


class _Schedstat:
    """The main thread's run-queue wait in ns and the number of times it was put on a CPU
    (``/proc/thread-self/schedstat``; zeros where /proc does not say)."""

    def __init__(self) -> None:
        try:
            self.fd: int | None = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        except OSError:
            self.fd = None

    def read(self) -> tuple[int, int]:
        if self.fd is None:
            return 0, 0
        try:
            fields = os.pread(self.fd, 64, 0).split()
            return int(fields[1]), int(fields[2])
        except (OSError, IndexError, ValueError):
            return 0, 0


def _thread_usage() -> tuple[int, int, int, int, int]:
    """The main thread's page faults (minor and major), voluntary and involuntary context
    switches, user and system CPU time (µs, sampled by the kernel's tick) so far
    (``getrusage(RUSAGE_THREAD)``; zeros where the OS has no such call)."""
    try:
        use = resource.getrusage(resource.RUSAGE_THREAD)
    except (AttributeError, OSError):
        return 0, 0, 0, 0, 0
    return (use.ru_minflt + use.ru_majflt, use.ru_nvcsw, use.ru_nivcsw,
            round(use.ru_utime * 1e6), round(use.ru_stime * 1e6))


class _Collections:
    """Every garbage collection while the loop runs (``gc.callbacks``): per generation a
    count and the longest, and the recent ones (start and end in ``perf_counter_ns``,
    generation, main thread or not) for the stalls to look up."""

    KEEP = 64

    def __init__(self) -> None:
        self.main = threading.get_ident()
        self.started: dict[int, int] = {}  # thread → start of its running collection
        self.recent: list[tuple[int, int, int, bool]] = []
        self.count = [0, 0, 0]
        self.max_ns = [0, 0, 0]
        self.main_count = [0, 0, 0]

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        now, thread = time.perf_counter_ns(), threading.get_ident()
        if phase == "start":
            self.started[thread] = now
            return
        began = self.started.pop(thread, now)
        gen = info.get("generation", 2)
        self.count[gen] += 1
        self.max_ns[gen] = max(self.max_ns[gen], now - began)
        self.main_count[gen] += thread == self.main
        self.recent.append((began, now, gen, thread == self.main))
        if len(self.recent) > 2 * self.KEEP:
            del self.recent[:self.KEEP]

    def inside(self, start: int, end: int) -> dict[str, Any]:
        """Collection time from ``start`` to ``end`` (ns): total ms, the deepest generation
        and whether the main thread ran it."""
        total, gen, main = 0, -1, False
        for began, ended, g, in_main in self.recent:
            overlap = min(end, ended) - max(start, began)
            if overlap > 0:
                total += overlap
                if g > gen:
                    gen, main = g, in_main
        return {"gc_ms": round(total / 1e6, 3), "gc_generation": gen if total else None,
                "gc_in_main_thread": main if total else None}

    def report(self) -> dict[str, Any]:
        return {"count": self.count, "in_main_thread": self.main_count,
                "max_ms": [round(ns / 1e6, 3) for ns in self.max_ns]}


#: What a slow call's window says (``_Timing.classify_slow``).
SLOW_CAUSES = ("on_cpu", "on_cpu_after_switch", "our_threads", "preempted", "blocked")


@dataclass
class _Timing:
    """The timed loop's histogram and attributed stalls."""

    hist: list[int] = field(default_factory=lambda: [0] * EXACT_NS)
    long: list[int] = field(default_factory=list)
    stalls: list[dict[str, Any]] = field(default_factory=list)
    windows: int = 0
    has_schedstat: bool = True
    slow: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SLOW_CAUSES, 0))
    collections: _Collections | None = None

    def classify_slow(self, call_ns: int, wall: int, main: int, proc: int, runq: int,
                      slices: int) -> None:
        """Count one slow call (``SLOW_NS`` to ``STALL_NS``) by its window's deltas (ns; the
        window: at most ``sample_every`` calls ending with it). ``slices``: times the main
        thread was put back on a CPU in the window (0: it never left one).

        - ``on_cpu``: it never left the CPU — the time went to the call's own code, or to
          the CPU running it slowly (cold caches, interrupts, a busy sibling);
        - ``on_cpu_after_switch``: it left the CPU in the window but was off it for less
          than half the call — mostly ran, likely with caches another process had cooled;
        - else it was off the CPU for most of the call, and while off: ``our_threads`` ran
          for at least half that time (the GIL, our locks), or it waited ``preempted`` in
          the run queue for at least half, or it slept (``blocked``: the GIL or a lock held
          by one of our threads that was itself descheduled, or I/O)."""
        off = max(0, wall - main)  # the main thread's time off the CPU in the window
        others = max(0, proc - main)
        if not slices or off * 2 < call_ns:
            cause = "on_cpu" if not slices else "on_cpu_after_switch"
        elif others * 2 >= off:
            cause = "our_threads"
        elif runq * 2 >= off:
            cause = "preempted"
        else:
            cause = "blocked"
        self.slow[cause] += 1

    def attribute(self, call_ns: int, wall: int, main: int, proc: int, runq: int,
                  call_start: int = 0, usage: tuple[int, ...] = (0, 0, 0, 0, 0)) -> None:
        """Classify one stalled call from its window's wall, main-thread, process and
        run-queue deltas (ns); ``wall`` is 0 when the loop does not sample (unattributed).
        ``call_start`` (``perf_counter_ns``) finds the collections inside the call;
        ``usage`` is the window's ``_thread_usage`` delta (faults, voluntary and
        involuntary switches, user and system µs), recorded with it: a stall whose main
        thread ran without a page fault or a switch spent that CPU time in the call's own
        code or, on a kernel that charges interrupt time to whichever thread was running
        (no ``CONFIG_IRQ_TIME_ACCOUNTING``), in the interrupts that came while it ran —
        or the virtual machine was paused (the module's docstring)."""
        others = max(0, proc - main)
        # Outside the stalled call the loop ran ordinary calls: count all of that time as
        # the main thread's, so what is left of its CPU time was spent inside the call.
        main_in_call = min(call_ns, max(0, main - (wall - call_ns)))
        off = call_ns - main_in_call
        if not wall:
            cause = "unattributed"
        elif main_in_call >= off or others * 2 >= off:
            cause = "ours"  # it ran our code, or mostly our threads ran while it waited
        else:
            cause = "os"
        self.stalls.append({
            # perf_counter_ns is CLOCK_MONOTONIC here: one clock for every process of the
            # machine, so the bench can line this stall up with the control's.
            "start_ns": call_start,
            "call_ms": round(call_ns / 1e6, 3),
            "window_ms": round(wall / 1e6, 3),
            "main_cpu_in_call_ms": round(main_in_call / 1e6, 3),
            "other_threads_cpu_ms": round(others / 1e6, 3),
            "off_cpu_ms": round(off / 1e6, 3),
            "runqueue_wait_ms": round(runq / 1e6, 3),
            "cause": cause,
            # Off the CPU mostly without being runnable: blocked (on the GIL or a lock whose
            # holder was not running either, or on I/O), rather than waiting for a CPU.
            "blocked": bool(self.has_schedstat and (off - runq) * 2 >= off),
            "main_page_faults": usage[0],
            "main_voluntary_switches": usage[1],
            "main_involuntary_switches": usage[2],
            "main_user_ms": round(usage[3] / 1e3, 3),
            "main_system_ms": round(usage[4] / 1e3, 3),
        })
        if self.collections is not None:
            self.stalls[-1].update(self.collections.inside(call_start, call_start + call_ns))

    def report(self) -> dict[str, Any]:
        counts = {i: n for i, n in enumerate(self.hist) if n}
        for value in self.long:
            counts[value] = counts.get(value, 0) + 1
        total = sum(counts.values())
        causes = [s["cause"] for s in self.stalls]
        return {
            "timed_calls": total,
            "calls_over_5ms": sum(v > STALL_NS for v in self.long),
            "call_ns": {
                "p50": percentile_from_counts(counts, total, 0.50),
                "p99": percentile_from_counts(counts, total, 0.99),
                "p999": percentile_from_counts(counts, total, 0.999),
                "max": float(max(counts)) if counts else 0.0,
            },
            "stalls_ours": causes.count("ours"),
            "stalls_os": causes.count("os"),
            "stalls_unattributed": causes.count("unattributed"),
            "stalls_os_blocked": sum(s["cause"] == "os" and s["blocked"] for s in self.stalls),
            "stalls": worst_and_ours(self.stalls, STALL_DETAILS),
            # Every stall as [start, end (perf_counter_ns), cause, whether the main thread
            # was on the CPU for most of it, and whether it did so without a page fault or
            # a sleep]: the bench matches the loops' stalls with the control's beside them
            # (``suite._paused_with_control``) and counts the quiet ones of each.
            "stall_spans": [
                [st["start_ns"], st["start_ns"] + round(st["call_ms"] * 1e6), st["cause"],
                 st["main_cpu_in_call_ms"] >= st["off_cpu_ms"],
                 st["main_cpu_in_call_ms"] >= st["off_cpu_ms"]
                 and not st["main_page_faults"] and not st["main_voluntary_switches"]]
                for st in self.stalls],
            "sample_windows": self.windows,
            "slow_calls": dict(self.slow),
            **({"collections": self.collections.report()} if self.collections else {}),
            "hist": compress(counts),
        }


def _timed_loop(
    log: Callable[..., None], *, names: list[str], duration_s: float, calls: int,
    sample_every: int, timing: _Timing,
) -> int:
    """Call ``log`` flat out, each call timed, stalls attributed; the points logged."""
    series = len(names)
    steps = CHUNK // series
    every = max(1, round(sample_every / series)) if sample_every > 0 else 0
    hist, long_calls = timing.hist, timing.long
    clock, thread_ns, process_ns = time.perf_counter_ns, time.thread_time_ns, time.process_time_ns
    sched = _Schedstat()
    timing.has_schedstat = sched.fd is not None
    runq = sched.read
    usage = _thread_usage
    end = time.perf_counter() + duration_s
    points = step = 0
    value = 0.5
    w_wall, w_main, w_proc, (w_runq, w_slices) = clock(), thread_ns(), process_ns(), runq()
    w_use = usage()
    while (calls <= 0 and time.perf_counter() < end) or (calls > 0 and points < calls):
        for _ in range(steps):
            for name in names:
                t0 = clock()
                log(name, value, step=step)
                dt = clock() - t0
                if dt < EXACT_NS:
                    hist[dt] += 1
                    if dt < SLOW_NS or not every:
                        continue
                else:
                    long_calls.append(dt)
                # A slow call or a stall: its window ends right after it.
                wall, main, proc, (rq, slices) = clock(), thread_ns(), process_ns(), runq()
                if dt > STALL_NS:
                    use = usage()
                    timing.attribute(dt, (wall - w_wall) if every else 0, main - w_main,
                                     proc - w_proc, rq - w_runq, t0,
                                     tuple(a - b for a, b in zip(use, w_use, strict=True)))
                elif every:
                    timing.classify_slow(dt, wall - w_wall, main - w_main, proc - w_proc,
                                         rq - w_runq, slices - w_slices)
                w_wall, w_main, w_proc, (w_runq, w_slices) = (
                    clock(), thread_ns(), process_ns(), runq())
                w_use = usage()
            step += 1
            value = value * 0.999 + 0.001
            if every and step % every == 0:
                w_wall, w_main, w_proc, (w_runq, w_slices) = (
                    clock(), thread_ns(), process_ns(), runq())
                w_use = usage()
                timing.windows += 1
        points += steps * series
    return points


def _loop(
    log: Callable[..., None], *, names: list[str], duration_s: float, calls: int, rate: float
) -> int:
    series = len(names)
    started = time.perf_counter()
    end = started + duration_s
    points = step = 0
    value = 0.5
    while True:
        now = time.perf_counter()
        if (calls <= 0 and now >= end) or 0 < calls <= points:
            break
        if rate > 0:
            due = started + points / rate
            if due > now:
                time.sleep(due - now)
        for _ in range(CHUNK // series):
            for name in names:
                log(name, value, step=step)
            step += 1
            value = value * 0.999 + 0.001
        points += (CHUNK // series) * series
    return points


def main(spec_json: str) -> int:
    spec: dict[str, Any] = json.loads(spec_json)
    noop = bool(spec.get("noop", False))
    names = [f"metric_{i}" for i in range(int(spec.get("series", 10)))]
    duration_s, calls = float(spec["duration_s"]), int(spec.get("calls", 0))
    run = None
    if not noop:
        from producer import Run

        run = Run.get_context()
    log: Callable[..., None] = _noop if run is None else run.log
    spin_ns = int(spec.get("spin_ns", 0))
    control = str(spec.get("control", "spin"))
    control_steps = 0
    if noop and spin_ns > 0:
        if control == "python":
            log, control_steps = _python_work(spin_ns)
        else:
            log, spin_ns = _spinner(spin_ns)
    timing = _Timing() if spec.get("time_calls") else None
    started = time.perf_counter()
    if timing is not None:
        # The histogram is a list of a million counters: young, the first collections
        # (whichever thread triggers them, the SDK's sender too) would walk it, ~5 ms
        # each — the bench's cost, not the SDK's. Aged once here, they do not.
        gc.collect()
        timing.collections = _Collections()
        gc.callbacks.append(timing.collections)
        try:
            points = _timed_loop(log, names=names, duration_s=duration_s, calls=calls,
                                 sample_every=int(spec.get("sample_every", SAMPLE_EVERY)),
                                 timing=timing)
        finally:
            gc.callbacks.remove(timing.collections)
    else:
        points = _loop(log, names=names, duration_s=duration_s, calls=calls,
                       rate=float(spec.get("rate", 0)))
    logging_s = time.perf_counter() - started
    logged_at = time.time()
    close_started = time.perf_counter()
    stats: dict[str, Any] | None = None
    dropped = 0
    if run is not None:
        workspace = run.experiment.workspace
        workspace.close(timeout_s=float(spec.get("close_timeout_s", 120)))
        dropped = run.dropped_events
        stats = dataclasses.asdict(workspace.stats())
    close_s = time.perf_counter() - close_started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    report: dict[str, Any] = {
        "points": points,
        "logging_s": logging_s,
        "logged_until": logged_at,
        "close_s": close_s,
        "dropped_events": dropped,
        "producer_stats": stats,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "max_rss_bytes": usage.ru_maxrss * 1024,
        "timed_calls": 0,
        "calls_over_5ms": 0,
        "call_ns": {"p50": 0.0, "p99": 0.0, "p999": 0.0, "max": 0.0},
        **({"spin_ns": spin_ns, "control": control, "control_steps": control_steps}
           if noop else {}),
    }
    if timing is not None:
        report.update(timing.report())
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
