"""One leased run on the agent, from its snapshot to its last status.

``RunJob.run()``:

1. opens the run as a producer of the agent (``Reporter.open``: the SDK's ``Run.open``
   with status Preparing, the attempt, ``outputs_dir`` = ``<work dir>/outputs``);
2. Preparing: a fresh working directory ``<work-dir>/<run>.<attempt>/`` from the
   snapshot (downloaded, its sha256 checked, unpacked by ``extract_snapshot``, which
   refuses zip-slip) and the environment (``envs.py``); build output goes to the run's
   log stream ``prepare``;
3. Running: starts ``process_count`` ranks of the argv (``spec.command_argv``, never a
   shell unless ``shell_command``) in process groups of their own, with the run's
   variables (``RUNSTREAM_RUN_ID``, ``_EXPERIMENT``, ``_ATTEMPT``, ``_WORKSPACE``,
   ``_API``, ``_TOKEN``, ``_KAFKA``, ``_TOPIC``, the Kafka security variables, a per-run
   ``RUNSTREAM_HOME``, the rank variables) so ``Run.get_context()`` attaches; each
   stdout/stderr line goes to the run's log lines (``stdout``/``stderr``, sent at most
   ``BATCH_S`` after it was printed; ``[rank N]`` in front when several ranks run) and
   to ``user_logs/std_log.txt``;
4. the end: ``./logs`` and the std log are uploaded, then ``complete()`` (which uploads
   ``./outputs`` and reports Finalizing, Completed), ``fail(error)`` or ``cancel()``,
   then the events are flushed and the handle closed. The caller then reports the
   outcome to the API (``finish``).

Stops: ``request_stop("cancel" | "shutdown" | "timeout")`` — SIGTERM to every process
group, SIGKILL after ``grace_s`` — ends Canceled (Failed for ``max_run_duration_seconds``);
one rank failing stops the others the same way and fails the run with its exit code and
the last lines of its stderr. ``lose()`` (the lease is gone) SIGKILLs at once and reports
nothing: ``run()`` returns None.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import re
import shutil
import signal
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from ingest.agent.client import AgentApiError
from ingest.agent.envs import EnvironmentCache, Prepared, PrepareError
from ingest.agent.procs import Watchdog, kill_group, pump_lines, signal_group, spawn
from ingest.agent.spec import (
    STDERR_TAIL_LINES,
    RankExit,
    SpecError,
    command_argv,
    exit_text,
    failure_text,
    process_count,
    rank_variables,
    run_environment,
)
from producer import ProducerError, SnapshotError, extract_snapshot

__all__ = ["Lease", "Outcome", "Reporter", "RunJob", "RunReport", "run_dir_name"]

logger = logging.getLogger(__name__)

#: Output lines wait at most this long before they are sent as one batch.
BATCH_S = 0.05
#: How long pipes may stay open after the processes ended (a straggler holding them).
PIPE_DRAIN_S = 5.0
#: Seconds the run's last events may take to reach Kafka before the agent moves on
#: (what is left is spooled, as for any producer).
FLUSH_TIMEOUT_S = 60.0


class RunReport(Protocol):
    """What the agent does with a run (the SDK's ``Run`` is one)."""

    def set_status(self, status: str) -> None: ...
    def log_output(self, stream: str, lines: Iterable[str]) -> None: ...
    def upload_file(self, name: str, path_or_stream: Path) -> None: ...
    def complete(self) -> None: ...
    def fail(self, error: str) -> None: ...
    def cancel(self) -> object: ...
    def flush(self, timeout_s: float = ...) -> None: ...
    def close(self, timeout_s: float = ...) -> None: ...


class Reporter(Protocol):
    def open(self, lease: Lease, outputs_dir: Path) -> RunReport:
        """Open the leased run (status Preparing); blocking, called in a thread."""
        ...


class SnapshotSource(Protocol):
    async def download_snapshot(self, run_id: str, path: Path) -> tuple[str, int]: ...


@dataclass(frozen=True)
class Lease:
    """A run as a poll answer delivers it."""

    run_id: str
    experiment: str
    workspace: str
    target: str
    attempt: int
    spec: Mapping[str, Any]
    snapshot_sha256: str
    snapshot_bytes: int
    display_name: str | None = None

    @classmethod
    def from_answer(cls, item: Mapping[str, Any]) -> Lease:
        snapshot = item.get("snapshot") or {}
        return cls(
            run_id=str(item["run_id"]),
            experiment=str(item["experiment"]),
            workspace=str(item.get("workspace") or "default"),
            target=str(item.get("target") or ""),
            attempt=int(item.get("attempt") or 0),
            spec=dict(item.get("spec") or {}),
            snapshot_sha256=str(snapshot.get("sha256") or ""),
            snapshot_bytes=int(snapshot.get("size_bytes") or 0),
            display_name=item.get("display_name"),
        )

    @property
    def key(self) -> tuple[str, int]:
        return self.run_id, self.attempt


@dataclass(frozen=True)
class Outcome:
    """How a run ended, as the API's ``finish`` takes it."""

    status: str  # Completed | Failed | Canceled
    exit_code: int | None = None
    error: str | None = None


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def run_dir_name(run_id: str, attempt: int) -> str:
    """``<run_id>.<attempt>``, made safe as one path component (a run id with other
    characters gets a hash of itself, so two ids never share a directory)."""
    safe = _UNSAFE.sub("_", run_id)[:150]
    if safe != run_id or safe.startswith("."):
        safe = f"{safe.lstrip('.')}-{hashlib.sha256(run_id.encode()).hexdigest()[:12]}"
    return f"{safe}.{attempt}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OutputSink:
    """Output lines → the run's log lines (batched, at most ``BATCH_S`` late) and the std
    log file (every line, in arrival order)."""

    def __init__(self, report: RunReport, std_log: IO[str] | None) -> None:
        self.report = report
        self.std_log = std_log
        self._pending: dict[str, list[str]] = {}
        self._timer: asyncio.TimerHandle | None = None

    def line(self, stream: str, text: str, *, to_file: bool = True) -> None:
        if to_file and self.std_log is not None and not self.std_log.closed:
            self.std_log.write(text + "\n")
        self._pending.setdefault(stream, []).append(text)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(BATCH_S, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, {}
        for stream, lines in pending.items():
            try:
                self.report.log_output(stream, lines)
            except Exception:  # never let a log line stop a run
                logger.exception("could not log %d lines of %s", len(lines), stream)
        if self.std_log is not None and not self.std_log.closed:
            self.std_log.flush()


@dataclass
class _Rank:
    rank: int
    proc: asyncio.subprocess.Process
    stderr_tail: collections.deque[str] = field(
        default_factory=lambda: collections.deque(maxlen=STDERR_TAIL_LINES)
    )
    pumps: list[asyncio.Task[None]] = field(default_factory=list)
    returncode: int | None = None


class RunJob:
    def __init__(
        self,
        lease: Lease,
        *,
        work_dir: Path,
        snapshots: SnapshotSource,
        reporter: Reporter,
        envs: EnvironmentCache,
        base_env: Mapping[str, str],
        run_variables: Mapping[str, str],
        grace_s: float = 10.0,
        watchdog: Watchdog | None = None,
    ) -> None:
        self.lease = lease
        self.work_dir = work_dir
        self.snapshots = snapshots
        self.reporter = reporter
        self.envs = envs
        self.base_env = base_env
        self.run_variables = run_variables
        self.grace_s = grace_s
        self.watchdog = watchdog
        name = run_dir_name(lease.run_id, lease.attempt)
        #: The working directory (the snapshot; the processes' cwd).
        self.cwd = work_dir / name
        #: The agent's side of the run: the snapshot zip, the std log, RUNSTREAM_HOME.
        self.side = work_dir / f"{name}.agent"
        self.std_log_path = self.side / "std_log.txt"
        self.phase = "starting"
        #: Why the run is being stopped: cancel, shutdown, timeout or lost (None: it is not).
        self.stop_reason: str | None = None
        self._stop = asyncio.Event()
        self._ranks: list[_Rank] = []
        self._prep: asyncio.Task[Prepared] | None = None
        self._report: RunReport | None = None
        self._sink: OutputSink | None = None
        self.started_at = time.monotonic()

    @property
    def run_id(self) -> str:
        return self.lease.run_id

    # ---- control (from the agent's poll loop) -------------------------------------------

    def request_stop(self, reason: str) -> None:
        """Stop the run: SIGTERM, then SIGKILL after the grace time (``reason``: cancel,
        shutdown or timeout)."""
        if self.stop_reason is not None:
            return
        self.stop_reason = reason
        self._stop.set()
        if self._prep is not None and not self._prep.done():
            self._prep.cancel()

    def lose(self) -> None:
        """The lease is no longer ours: SIGKILL now, report nothing."""
        self.stop_reason = "lost"
        self._stop.set()
        for rank in self._ranks:
            kill_group(rank.proc.pid)
        if self._prep is not None and not self._prep.done():
            self._prep.cancel()

    @property
    def lost(self) -> bool:
        return self.stop_reason == "lost"

    # ---- the run ------------------------------------------------------------------------

    async def run(self) -> Outcome | None:
        """Run it to the end and report its statuses; the outcome, None when lost."""
        try:
            self._report = await asyncio.to_thread(
                self.reporter.open, self.lease, self.cwd / "outputs"
            )
        except Exception as exc:
            logger.exception("run %s: cannot open it as a producer", self.run_id)
            if self.lost:
                return None
            return Outcome("Failed", None, f"agent: cannot open the run: {exc}")
        report = self._report
        try:
            outcome = await self._execute(report)
        except Exception as exc:
            logger.exception("run %s: agent error", self.run_id)
            self._kill_all()
            outcome = Outcome("Failed", None, f"agent error: {type(exc).__name__}: {exc}")
        if self.lost:
            await asyncio.to_thread(report.close)
            return None
        self.phase = "finishing"
        await asyncio.to_thread(self._report_end, report, outcome)
        return outcome

    async def _execute(self, report: RunReport) -> Outcome:
        self.phase = "preparing"
        if self.stop_reason is not None:  # canceled or lost while the run was being opened
            return self._stopped_outcome(None)
        self.side.mkdir(parents=True, exist_ok=True)
        with self.std_log_path.open("w", encoding="utf-8", errors="replace") as std_log:
            sink = self._sink = OutputSink(report, std_log)
            try:
                self._prep = asyncio.create_task(self._prepare(sink))
                try:
                    prepared = await self._prep
                except asyncio.CancelledError:
                    current = asyncio.current_task()
                    if current is not None and current.cancelling():
                        raise
                    return self._stopped_outcome(None)
                except (PrepareError, SpecError, SnapshotError) as exc:
                    sink.line("prepare", f"runstream agent: {exc}", to_file=False)
                    return Outcome("Failed", None, str(exc))
                if self.stop_reason is not None:
                    return self._stopped_outcome(None)
                return await self._run_processes(report, sink, prepared)
            finally:
                sink.flush()

    async def _prepare(self, sink: OutputSink) -> Prepared:
        def note(text: str) -> None:
            sink.line("prepare", text, to_file=False)

        spec = self.lease.spec
        command_argv(spec, "python")  # a spec that cannot run fails now, in Preparing
        process_count(spec)
        run_environment({}, spec, {})
        await asyncio.to_thread(self._clear)  # what an earlier try of this attempt left
        zip_path = self.side / "snapshot.zip"
        sha256, size = await self._download(zip_path)
        lease = self.lease
        if lease.snapshot_sha256 and sha256 != lease.snapshot_sha256:
            raise PrepareError(
                f"the snapshot downloaded has sha256 {sha256}, not {lease.snapshot_sha256}"
            )
        files = await asyncio.to_thread(extract_snapshot, zip_path, self.cwd)
        zip_path.unlink(missing_ok=True)
        note(f"runstream agent: snapshot {sha256[:12]} ({size} bytes, {len(files)} files) "
             f"in {self.cwd}")
        environment = self.lease.spec.get("environment") or {}
        if not isinstance(environment, Mapping):
            raise SpecError(f"environment must be an object, not {environment!r}")
        prepared = await self.envs.prepare(environment, note)
        note(f"runstream agent: running with {prepared.description or prepared.interpreter}")
        return prepared

    def _clear(self) -> None:
        for path in (self.cwd, self.side / "home", self.side / "snapshot.zip"):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)

    async def _download(self, zip_path: Path) -> tuple[str, int]:
        """The snapshot, retried a few times while the API is unreachable or failing."""
        for delay in (1.0, 2.0, 4.0, None):
            try:
                return await self.snapshots.download_snapshot(self.run_id, zip_path)
            except AgentApiError as exc:
                retriable = exc.status is None or exc.status >= 500
                if delay is None or not retriable:
                    raise PrepareError(f"cannot download the run's snapshot: {exc}") from exc
                logger.warning("run %s: %s; retrying in %gs", self.run_id, exc, delay)
                await asyncio.sleep(delay)
            except OSError as exc:
                raise PrepareError(f"cannot store the run's snapshot: {exc}") from exc
        raise AssertionError("unreachable")

    def _variables(self, prepared: Prepared) -> dict[str, str]:
        lease = self.lease
        home = self.side / "home"
        home.mkdir(parents=True, exist_ok=True)
        return {
            **prepared.variables,
            **self.run_variables,
            "RUNSTREAM_RUN_ID": lease.run_id,
            "RUNSTREAM_EXPERIMENT": lease.experiment,
            "RUNSTREAM_WORKSPACE": lease.workspace,
            "RUNSTREAM_ATTEMPT": str(lease.attempt),
            "RUNSTREAM_HOME": str(home),
        }

    async def _run_processes(
        self, report: RunReport, sink: OutputSink, prepared: Prepared
    ) -> Outcome:
        spec = self.lease.spec
        world = process_count(spec)
        argv = command_argv(spec, prepared.interpreter)
        distributed = spec.get("distributed") is not None
        port = free_port() if distributed else None
        variables = self._variables(prepared)
        max_s = spec.get("max_run_duration_seconds")
        self.phase = "running"
        report.set_status("Running")
        logger.info("run %s: Running %s (%d process%s)", self.run_id, argv[:3],
                    world, "es" if world > 1 else "")
        started = time.monotonic()
        for rank in range(world):
            env = run_environment(
                self.base_env,
                spec,
                {**variables, **rank_variables(rank, world, master_port=port,
                                               distributed=distributed)},
                path_prefix=prepared.path_prefix,
            )
            try:
                proc = await spawn(argv, cwd=self.cwd, env=env)
            except OSError as exc:
                self._kill_all()
                await self._reap()
                await self._drain_pipes()
                what = f"rank {rank}: " if world > 1 else ""
                sink.line("stderr", f"runstream agent: cannot start {argv[0]!r}: {exc}")
                return Outcome("Failed", None, f"{what}cannot start {argv[0]!r}: {exc}")
            self._start_rank(rank, proc, sink, world)
            if self.stop_reason == "lost":
                kill_group(proc.pid)
        return await self._wait(world, started, max_s if isinstance(max_s, int) else None)

    def _start_rank(
        self, rank: int, proc: asyncio.subprocess.Process, sink: OutputSink, world: int
    ) -> None:
        if self.watchdog is not None:
            self.watchdog.add(proc.pid)
        state = _Rank(rank, proc)
        prefix = f"[rank {rank}] " if world > 1 else ""

        def reader(stream: str) -> Callable[[str], None]:
            def on_line(text: str) -> None:
                if stream == "stderr":
                    state.stderr_tail.append(text)
                sink.line(stream, prefix + text)

            return on_line

        if proc.stdout is not None and proc.stderr is not None:
            state.pumps = [
                asyncio.create_task(pump_lines(proc.stdout, reader("stdout"))),
                asyncio.create_task(pump_lines(proc.stderr, reader("stderr"))),
            ]
        self._ranks.append(state)

    async def _wait(self, world: int, started: float, max_s: int | None) -> Outcome:
        waiters = {asyncio.create_task(r.proc.wait()): r for r in self._ranks}
        stop_waiter: asyncio.Task[Any] | None = asyncio.create_task(self._stop.wait())
        stopper: asyncio.Task[None] | None = None
        first_failure: RankExit | None = None
        stopped_by: str | None = None
        deadline = started + max_s if max_s else None
        try:
            while waiters:
                pending: set[asyncio.Task[Any]] = set(waiters)
                if stop_waiter is not None:
                    pending.add(stop_waiter)
                timeout = None
                if deadline is not None and stopper is None:
                    timeout = max(0.0, deadline - time.monotonic())
                done, _ = await asyncio.wait(
                    pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if not done:  # max_run_duration_seconds
                    self.request_stop("timeout")
                    continue
                for task in done & set(waiters):
                    state = waiters.pop(task)
                    state.returncode = task.result()
                    self._ended(state)
                    if state.returncode != 0 and first_failure is None and stopper is None:
                        first_failure = RankExit(state.rank, state.returncode,
                                                 list(state.stderr_tail))
                        if waiters:
                            stopper = asyncio.create_task(self._terminate())
                if stop_waiter is not None and stop_waiter in done:
                    stop_waiter = None
                    if waiters and stopper is None:
                        stopped_by = self.stop_reason
                        if self.stop_reason != "lost":
                            logger.info("run %s: stopping (%s): SIGTERM, SIGKILL after %gs",
                                        self.run_id, self.stop_reason, self.grace_s)
                        stopper = asyncio.create_task(self._terminate())
        finally:
            leftovers: list[asyncio.Task[Any] | None] = [*waiters, stop_waiter, stopper]
            for leftover in leftovers:
                if leftover is not None:
                    leftover.cancel()
            if waiters:
                self._kill_all()
        await self._drain_pipes()
        return self._outcome(world, first_failure, stopped_by, max_s)

    def _outcome(
        self, world: int, first_failure: RankExit | None, stopped_by: str | None,
        max_s: int | None,
    ) -> Outcome:
        rank0 = self._ranks[0].returncode if self._ranks else None
        if stopped_by is not None:
            return self._stopped_outcome(rank0, max_s)
        if first_failure is not None:
            return Outcome("Failed", first_failure.returncode, failure_text(first_failure, world))
        return Outcome("Completed", rank0)

    def _stopped_outcome(self, exit_code: int | None, max_s: int | None = None) -> Outcome:
        if self.stop_reason == "timeout":
            limit = max_s or self.lease.spec.get("max_run_duration_seconds")
            tail = list(self._ranks[0].stderr_tail) if self._ranks else []
            error = (
                f"max_run_duration_seconds ({limit} s) exceeded: the run was stopped "
                f"(SIGTERM, SIGKILL after {self.grace_s:g} s)"
            )
            if exit_code is not None:
                error += f"; {exit_text(exit_code)}"
            return Outcome("Failed", exit_code, error + ("\n" + "\n".join(tail) if tail else ""))
        return Outcome("Canceled", exit_code, None)

    def _ended(self, state: _Rank) -> None:
        """A rank's main process ended: what it left in its group goes too."""
        kill_group(state.proc.pid)
        if self.watchdog is not None:
            self.watchdog.remove(state.proc.pid)

    async def _terminate(self) -> None:
        """SIGTERM every live process group; SIGKILL what is left after the grace time."""
        live = [r for r in self._ranks if r.returncode is None]
        for state in live:
            signal_group(state.proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(
                asyncio.gather(*(r.proc.wait() for r in live)), timeout=self.grace_s
            )
        except TimeoutError:
            logger.info("run %s: still running after %gs: SIGKILL", self.run_id, self.grace_s)
            self._kill_all()

    def _kill_all(self) -> None:
        for state in self._ranks:
            kill_group(state.proc.pid)

    async def _reap(self) -> None:
        for state in self._ranks:
            with contextlib.suppress(ProcessLookupError):
                state.returncode = await state.proc.wait()
            self._ended(state)

    async def _drain_pipes(self) -> None:
        pumps = [p for r in self._ranks for p in r.pumps]
        if not pumps:
            return
        _, pending = await asyncio.wait(pumps, timeout=PIPE_DRAIN_S)
        for task in pending:  # an escaped descendant holds a pipe open
            task.cancel()

    # ---- the end ------------------------------------------------------------------------

    def _report_end(self, report: RunReport, outcome: Outcome) -> None:
        """Upload ./logs and the std log, report the end, flush and close (blocking)."""
        logs = self.cwd / "logs"
        if logs.is_dir():
            for path in sorted(p for p in logs.rglob("*") if p.is_file()):
                self._upload(report, f"logs/{path.relative_to(logs).as_posix()}", path)
        if self._ranks and self.std_log_path.is_file():
            self._upload(report, "user_logs/std_log.txt", self.std_log_path)
        try:
            if outcome.status == "Completed":
                report.complete()
            elif outcome.status == "Canceled":
                report.cancel()
            else:
                report.fail(outcome.error or "Failed")
        except Exception:
            logger.exception("run %s: could not report %s", self.run_id, outcome.status)
        try:
            report.flush(FLUSH_TIMEOUT_S)
        except ProducerError as exc:
            logger.warning("run %s: its last events are not delivered yet (%s); they are "
                           "spooled and sent later", self.run_id, exc)
        report.close()

    def _upload(self, report: RunReport, name: str, path: Path) -> None:
        try:
            report.upload_file(name, path)
        except (OSError, ValueError) as exc:
            logger.warning("run %s: not uploading %s: %s", self.run_id, name, exc)
