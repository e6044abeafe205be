"""The overload suite's CPU quota (ingest/bench/cpuquota.py), on the kernel's own cgroups:
a busy process held to a fifth of a CPU is throttled and gets no more than that, and is
back in its own cgroup, the bench's gone, afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from ingest.bench.cpuquota import _cgroup_of, _hierarchy, cpu_quota

ROOT = Path("/sys/fs/cgroup")


def _writable_hierarchy() -> tuple[Path, str] | None:
    found = _hierarchy(ROOT)
    if found is None or not os.access(found[0], os.W_OK):
        return None
    return found


needs_cgroups = pytest.mark.skipif(
    _writable_hierarchy() is None,
    reason="no writable cgroup cpu controller here (needs root and cgroup v1 cpu or v2 cpu)",
)


@needs_cgroups
def test_a_busy_process_gets_no_more_than_its_share_and_goes_back() -> None:
    parent, version = _writable_hierarchy() or (ROOT, "")
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        before = _cgroup_of(busy.pid, parent, version)
        proc = psutil.Process(busy.pid)
        with cpu_quota(0.2, [busy.pid]) as quota:
            assert quota["share"] == 0.2
            assert quota["processes"] == 1
            group = _cgroup_of(busy.pid, parent, version)
            assert group is not None
            assert group.name.startswith("runstream-bench-")
            cpu0, wall0 = sum(proc.cpu_times()[:2]), time.monotonic()
            time.sleep(1.5)
            cpu, wall = sum(proc.cpu_times()[:2]) - cpu0, time.monotonic() - wall0
        # The kernel enforces the quota per 100 ms period: over 1.5 s at most 0.2 of the
        # wall time, plus one period's worth of slack at either end. A slower machine
        # only gives the process less.
        assert cpu <= 0.2 * wall + 0.05, (cpu, wall)
        assert quota["periods"] > 0, quota
        assert quota["throttled_periods"] > 0, quota
        assert _cgroup_of(busy.pid, parent, version) == before
        assert not group.exists()
    finally:
        busy.kill()
        busy.wait()


def test_no_quota_asked_or_no_controller_says_why(tmp_path: Path) -> None:
    with cpu_quota(0, [os.getpid()]) as quota:
        assert quota == {"share": None, "reason": "no quota asked"}
    with cpu_quota(0.5, [os.getpid()], root=tmp_path) as quota:
        assert quota["share"] is None
        assert "no cgroup cpu controller" in quota["reason"]
