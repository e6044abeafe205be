"""Faults between a training process and the broker, made with a network namespace.

The training job runs inside a network namespace of this module's own, joined to the
host by a veth pair; a private broker listens on the host end of the pair (and the
ingest worker on the host reaches it there directly). Taking the namespace's end of the
link down cuts the job off from the broker — its open connections go silent, new ones
fail — while the worker keeps consuming; bringing it up heals the cut.

(``tc netem`` and iptables are not available in this kernel/image; the link is the cut.)

- a 30 s cut in the middle of a run: every point delivered exactly once after healing,
  and no ``log`` call blocked meanwhile;
- a full spool: ``RUNSTREAM_HOME`` on a 2 MiB tmpfs while the job is cut off, so the
  spool fills and events are dropped — counted by the SDK, reported by heartbeats once
  the cut heals (``runstream.runs.dropped_events``), every gap in a producer's sequence
  is one of those counted drops, and the training loop never blocked. The runs end
  while the disk is full and the link down: their status events, which the spool
  refuses, are held by the SDK and the runs end as planned once the cut heals.
"""

from __future__ import annotations

import asyncio
import errno
import random
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ingest.bench.ledger import RunPlan, Workload
from ingest.stack.kafka import KafkaNode
from tests.helpers import StackInfo
from tests.integration.faults import BLOCKED_LOG_CALL_MS, FaultRunFactory
from tests.integration.helpers import start_broker, stop_broker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

CUT_S = 30.0


def ip(*args: str, netns: str | None = None) -> None:
    argv = ["ip", *args] if netns is None else ["ip", "netns", "exec", netns, "ip", *args]
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


@dataclass
class Lab:
    netns: str
    inner_link: str
    bootstrap: str

    @property
    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.netns]

    def cut(self) -> None:
        ip("link", "set", self.inner_link, "down", netns=self.netns)

    def heal(self) -> None:
        ip("link", "set", self.inner_link, "up", netns=self.netns)


@pytest.fixture(scope="module")
def lab(stack: StackInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if shutil.which("ip") is None:
        pytest.fail("iproute2 (`ip`) is needed: apt-get install -y iproute2")
    tag = uuid.uuid4().hex[:6]
    netns, outer, inner = f"rsf{tag}", f"rsh{tag}", f"rsn{tag}"
    subnet = f"10.{random.randint(200, 250)}.{random.randint(0, 255)}"
    host_ip, job_ip = f"{subnet}.1", f"{subnet}.2"
    ip("netns", "add", netns)
    node: KafkaNode | None = None
    try:
        ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        ip("link", "set", inner, "netns", netns)
        ip("addr", "add", f"{host_ip}/30", "dev", outer)
        ip("link", "set", outer, "up")
        ip("addr", "add", f"{job_ip}/30", "dev", inner, netns=netns)
        ip("link", "set", inner, "up", netns=netns)
        ip("link", "set", "lo", "up", netns=netns)
        # The client listener is on the host end of the veth pair (the controller stays on
        # 127.0.0.1).
        node = start_broker(tmp_path_factory.mktemp("veth-broker"),
                            jars_from=stack.settings.home, host=host_ip)
        yield Lab(netns=netns, inner_link=inner, bootstrap=node.bootstrap)
    finally:
        if node is not None:
            stop_broker(node)
        subprocess.run(["ip", "netns", "del", netns], check=False, timeout=30)
        subprocess.run(["ip", "link", "del", outer], check=False, timeout=30,
                       capture_output=True)


@pytest.fixture
def tiny_home(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs to be a job's RUNSTREAM_HOME (its spool fills up quickly)."""
    home = tmp_path / "tiny"
    home.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(home)],
                   check=True, timeout=30)
    try:
        yield home
    finally:
        subprocess.run(["umount", "-l", str(home)], check=False, timeout=30)


def fill_up(directory: Path) -> None:
    """Take every free block of the file system holding ``directory``."""
    with (directory / "filler").open("wb", buffering=0) as f:
        chunk = 1 << 16
        while chunk:
            try:
                f.write(b"\0" * chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                chunk //= 2


async def test_job_cut_off_from_the_broker_for_30_s_delivers_everything_once_without_blocking(
    lab: Lab, fault_run: FaultRunFactory,
) -> None:
    started = time.monotonic()
    run = await fault_run(bootstrap=lab.bootstrap, partitions=2)
    healed = run.gate("healed")
    worker = run.start_worker()
    # At least 100 ticks, and on until the cut has healed: the job logs throughout it.
    workload = Workload(ticks=100, points_per_tick=100, pace_s=0.1, until_file=str(healed),
                        runs=(RunPlan("parent"), RunPlan("child", parent="parent", end="cancel")))
    job = run.start_job(workload, prefix=lab.prefix)
    await asyncio.to_thread(job.wait_ticks, 30)
    await asyncio.to_thread(lab.cut)
    cut_at = time.monotonic()
    ticks_at_cut = job.ticks_done()
    try:
        await asyncio.sleep(CUT_S)  # the fault's size: past the SDK's request timeout (10 s)
        # ... and long enough for training to go on through it, however slow the machine.
        await asyncio.to_thread(job.wait_ticks, ticks_at_cut + 50)
    finally:
        await asyncio.to_thread(lab.heal)
    cut_s = time.monotonic() - cut_at
    ticks_during_cut = job.ticks_done() - ticks_at_cut
    offline = [x for x in job.lines() if x.get("kind") == "tick" and x["mode"] != "online"]
    assert job.proc.poll() is None, "the job ended before the cut healed"
    healed.touch()
    report = await run.finish()
    result = await run.check()
    await run.record(
        result,
        guarantee="a network cut between job and broker: everything delivered once, no log "
                  "call blocked",
        faults=f"the job's veth link down for {cut_s:.0f} s (network namespace)",
        notes=f"{report['spooled']:,} events spooled, {report['replayed']:,} replayed; "
              f"{ticks_during_cut} ticks logged during the cut; slowest log call "
              f"{report['slowest_log_ms']:.1f} ms (blocked: over {BLOCKED_LOG_CALL_MS:.0f})",
        cut_s=cut_s, ticks_during_cut=ticks_during_cut)
    assert worker.stop() == 0, worker.output()

    assert result.ok, result.as_dict()
    assert (result.lost, result.doubled, result.missing_events) == (0, 0, 0)
    assert result.points_stored == result.points_expected >= workload.points
    assert result.statuses == {"parent": "Completed", "child": "Canceled"}
    assert report["events_dropped"] == 0
    assert report["spooled"] > 0, report  # the cut was real for the SDK
    assert report["replayed"] > 0, report
    assert offline, "the SDK never noticed the cut"
    assert ticks_during_cut >= 50  # training went on throughout the cut
    assert report["slowest_log_ms"] < BLOCKED_LOG_CALL_MS, report
    print(f"cut {cut_s:.1f} s: {ticks_during_cut} ticks logged during it, slowest log call "
          f"{report['slowest_log_ms']:.2f} ms; ledger {result.as_dict()}; job {report}; "
          f"{time.monotonic() - started:.1f} s")


async def test_full_spool_counts_and_reports_drops_and_never_blocks_training(
    lab: Lab, fault_run: FaultRunFactory, tiny_home: Path,
) -> None:
    started = time.monotonic()
    run = await fault_run(bootstrap=lab.bootstrap, partitions=2)
    home = tiny_home
    go, healed = run.gate("end-runs"), run.gate("healed")
    # ~100 KB of encoded points per run and tick: the 2 MiB spool is full after ~10 ticks.
    # The job holds after its last tick; once told, it ends the runs (the parent
    # completes, the child fails) and holds again until the cut has healed.
    workload = Workload(ticks=60, points_per_tick=2000, pace_s=0.05, holds={60: str(go)},
                        end_hold_file=str(healed), series=("loss", "acc"),
                        runs=(RunPlan("parent"), RunPlan("child", parent="parent", end="fail")),
                        # No free-space floor: this is about the disk itself running full.
                        options={"heartbeat_interval_s": 0.2, "spool_min_free_bytes": 0})
    worker = run.start_worker()
    job = run.start_job(workload, home=home, prefix=lab.prefix)
    await asyncio.to_thread(job.wait_ticks, 3)
    await asyncio.to_thread(lab.cut)
    try:
        # Unacknowledged sends go to the spool when their request times out (10 s);
        # the spool fills and the rest is dropped.
        def dropping() -> bool:
            held = job.last("held")
            return held is not None and held["dropped"] > 0

        await asyncio.to_thread(job.wait, dropping, timeout_s=60,
                                what="the full spool to drop events")
        assert shutil.disk_usage(home).free < 256 << 10
        # The last free blocks go too. The spool's open segment may still have room
        # in its last block; the heartbeats (the only new events now) use it up until
        # they are refused — then so is a Lifecycle event (never smaller than a
        # Heartbeat). More drops than sends left in flight prove a refused heartbeat.
        await asyncio.to_thread(fill_up, home)
        assert shutil.disk_usage(home).free == 0
        before = job.last("held")
        assert before is not None
        enough = before["dropped"] + before["in_flight"] + 2

        def heartbeats_refused() -> bool:
            held = job.last("held")
            return held is not None and held["dropped"] >= enough

        await asyncio.to_thread(job.wait, heartbeats_refused, timeout_s=30,
                                what="the spool to refuse a heartbeat")
        go.touch()  # the runs end now, with the link down and the disk full

        def statuses_held() -> bool:
            ended = job.last("ended")
            return ended is not None and ended["held"] == 3  # Failed; Finalizing, Completed

        await asyncio.to_thread(job.wait, statuses_held, timeout_s=30,
                                what="the runs' status events to be held")
        ended = job.last("ended")
        assert ended is not None
        assert ended["mode"] != "online", ended
    finally:
        await asyncio.to_thread(lab.heal)
    healed.touch()
    report = await run.finish()
    result = await run.check()
    assert worker.stop() == 0, worker.output()

    dropped = sum(report["dropped"].values())
    await run.record(
        result,
        guarantee="a full spool disk: drops are counted and reported, never silent",
        faults="a 2 MiB tmpfs spool filled while the job is cut off from the broker; the "
               "runs end during the cut",
        notes=f"lost = the points of the {dropped} events dropped, each counted by the SDK "
              f"and reported by heartbeat ({result.dropped_events} in "
              f"`runstream.runs.dropped_events`); {result.missing_events} seq gaps; slowest "
              f"log call {report['slowest_log_ms']:.1f} ms (blocked: over "
              f"{BLOCKED_LOG_CALL_MS:.0f}); final statuses "
              f"{', '.join(f'{k} {v}' for k, v in sorted(result.statuses.items()))} as planned "
              f"(the runs ended with the disk full and the link down: their "
              f"{ended['held']} status events were held in memory, sent after healing)",
        dropped_events=dropped)
    assert dropped == report["events_dropped"] > 0, report
    assert result.dropped_events == dropped  # reported by a heartbeat after the cut healed
    # Every sequence gap is a counted drop (an encoded event neither Kafka nor the spool
    # took); drops before encoding (a full buffer) leave no gap.
    assert 0 < result.missing_events <= dropped
    assert result.lost > 0  # the points of the dropped events, and only those:
    assert (result.doubled, result.unexpected, result.order_violations) == (0, 0, 0)
    assert result.statuses == {"parent": "Completed", "child": "Failed"}
    assert report["delivered"], report  # the final flush waited for the held events
    assert report["slowest_log_ms"] < BLOCKED_LOG_CALL_MS, report
    print(f"full spool: {dropped} events dropped and reported, {result.lost} of "
          f"{workload.points} points lost with them, {result.missing_events} seq gaps, "
          f"{ended['held']} status events held, statuses {result.statuses}, slowest log "
          f"call {report['slowest_log_ms']:.2f} ms; ledger {result.as_dict()}; "
          f"{time.monotonic() - started:.1f} s")
