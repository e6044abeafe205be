"""A CPU-time quota for a group of processes, for the overload suite.

The overload suite asks producers for 1.5x what the pipeline can store. On two cores,
with the pipeline (broker, PostgreSQL, workers) on one and the producers on the other, a
producer spends about as much CPU per point as the whole pipeline, so one CPU of
producers logs about what one CPU of pipeline stores: no overload. A quota on the
pipeline (``share`` of one CPU, enforced by the kernel's CFS bandwidth control) makes the
pipeline the slower side without a third core, as a busier database server or a smaller
broker would: capacity is then measured under the same quota, and the overload is a ratio
of the two.

Linux cgroups, v1 (``/sys/fs/cgroup/cpu``) or v2 (a ``cpu`` controller at
``/sys/fs/cgroup``); needs root. Where neither is writable the block runs without a quota
and says why (``quota["reason"]``)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

PERIOD_US = 100_000


def _hierarchy(root: Path) -> tuple[Path, str] | None:
    """The cgroup directory to create a child in, and its version ("v1"/"v2")."""
    v1 = root / "cpu"
    if (v1 / "cpu.cfs_quota_us").exists():
        return v1, "v1"
    controllers = root / "cgroup.controllers"
    if controllers.exists() and "cpu" in controllers.read_text().split():
        return root, "v2"
    return None


def _move(procs_file: Path, pids: Iterable[int]) -> int:
    """Write each pid (a whole process, every thread) to ``procs_file``; a process that has
    exited meanwhile is skipped. Returns how many moved."""
    moved = 0
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, FileNotFoundError), \
                open(procs_file, "w") as f:
            f.write(str(pid))
            moved += 1
    return moved


@contextlib.contextmanager
def cpu_quota(share: float, pids: Iterable[int], *,
              root: Path = Path("/sys/fs/cgroup")) -> Iterator[dict[str, Any]]:
    """Hold the processes ``pids`` (and the children they fork meanwhile, which inherit
    their parent's cgroup) to ``share`` of one CPU for the block, then move every process
    of the cgroup back where it was (a child: where the first process was) and remove
    the cgroup. ``share <= 0``: no quota. Yields what was done (``share`` None and a
    ``reason`` when no quota could be set); at the block's end that dict gains how many
    periods the block spanned and in how many the group was throttled, and for how long
    (a quota never throttled limited nothing)."""
    if share <= 0:
        yield {"share": None, "reason": "no quota asked"}
        return
    found = _hierarchy(root)
    if found is None:
        yield {"share": None, "reason": f"no cgroup cpu controller under {root}"}
        return
    parent, version = found
    group = parent / f"runstream-bench-{uuid.uuid4().hex[:8]}"
    quota_us = max(1000, round(share * PERIOD_US))
    try:
        group.mkdir()
        if version == "v1":
            (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (group / "cpu.cfs_quota_us").write_text(str(quota_us))
        else:
            with contextlib.suppress(OSError):  # already enabled, or not ours to enable
                (parent / "cgroup.subtree_control").write_text("+cpu")
            (group / "cpu.max").write_text(f"{quota_us} {PERIOD_US}")
    except OSError as e:
        with contextlib.suppress(OSError):
            group.rmdir()
        yield {"share": None, "reason": f"cannot create a cgroup under {parent}: {e}"}
        return
    mine = group / "cgroup.procs"
    origins: dict[int, Path] = {}
    info: dict[str, Any] = {"share": share, "cgroup": version, "quota_us": quota_us,
                            "period_us": PERIOD_US}
    try:
        members = [p for p in pids if p != os.getpid()]
        origins = {p: where for p in members if (where := _cgroup_of(p, parent, version))}
        info["processes"] = _move(mine, members)
        yield info
        stat = _stat(group / "cpu.stat")
        # v1: nr_periods/nr_throttled/throttled_time (ns); v2: .../throttled_usec
        info["periods"] = stat.get("nr_periods")
        info["throttled_periods"] = stat.get("nr_throttled")
        throttled_s = (stat["throttled_time"] / 1e9 if "throttled_time" in stat
                       else stat.get("throttled_usec", 0) / 1e6)
        info["throttled_s"] = round(throttled_s, 2)
    finally:
        fallback = next(iter(origins.values()), parent)
        with contextlib.suppress(OSError):
            for pid in (int(p) for p in mine.read_text().split()):
                _move(origins.get(pid, fallback) / "cgroup.procs", [pid])
        with contextlib.suppress(OSError):
            group.rmdir()


def _cgroup_of(pid: int, parent: Path, version: str) -> Path | None:
    """The directory of ``pid``'s cgroup in the hierarchy mounted at ``parent``."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if (version == "v2" and controllers == "") or (
                    version == "v1" and "cpu" in controllers.split(",")):
                return parent / path.lstrip("/")
    return None


def _stat(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            with contextlib.suppress(ValueError):
                out[key] = int(value)
    return out
