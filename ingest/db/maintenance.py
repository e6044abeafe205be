"""TimescaleDB maintenance: what the storage really is, how its background jobs fare, and
running a job from an ordinary connection when the extension's scheduler cannot (issue 13).

On TimescaleDB (migration 0002) the extension's background jobs compress metric chunks
older than the policy's ``compress_after`` (``compression``), refresh the hourly aggregate
``metric_series_hourly`` (``aggregate_refresh``) and prune the extension's own job history
(``job_history_retention``). Where its scheduler fails them every time (seen with 2.22.1
on PostgreSQL 15.20: ``cannot drop portal "" while it is being set up``) or never starts
them, nothing is compressed or aggregated and the extension says nothing.

``read_storage`` reports it all: the extension's version, the table layout
(``hypertable``, ``partitions``), and per job its kind, schedule, the scheduler's last run
and failures since its last success (``timescaledb_information.job_stats`` and
``job_errors``) and what Runstream ran itself (``runstream_data.maintenance_runs``,
migration 0013). ``runstream status``, the API's ``/readyz`` and ``/metrics`` and the
workers read it.

``MaintenanceRunner`` (every ingest worker, once a minute): a job whose scheduler run
failed ``min_failures`` times in a row since its last success, or that is overdue by more
than its schedule, is run by Runstream with ``CALL run_job(id)`` on the job's own
schedule, from a connection of its own (never the batch writer's) with a short
``lock_timeout`` so that it never queues ahead of ingest for a chunk's lock, and by one
worker at a time (``pg_try_advisory_lock``: the others skip). When the scheduler succeeds
again Runstream leaves the job to it. Each change is logged once per worker process.

Compression never blocks ingest, whoever runs the policy (migration 0017): TimescaleDB's
first compression of a chunk holds an ExclusiveLock on it for the whole pass (a batch
with a late point for that chunk would wait seconds), while recompressing a chunk that
is already compressed and has taken rows since ("partial") goes segment by segment under
a ShareUpdateExclusiveLock that inserts do not wait for. So the batch write compresses
each metric chunk in the transaction that creates it, with that batch's rows only
(``runstream_data.compress_new_metric_chunks``), later rows go to the chunk's
uncompressed part, and every pass of the policy is such a recompression; the policy's
REINDEX after it (a ShareLock) is turned off. Chunks made before 0017 keep their first,
blocking compression. ``convert_to_timescaledb`` compresses every chunk it makes.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Final

import asyncpg

__all__ = [
    "JOB_KINDS",
    "MAINTENANCE_LOCK_ID",
    "MaintenanceJob",
    "MaintenanceRunner",
    "Storage",
    "convert_to_timescaledb",
    "read_storage",
    "storage_mismatch",
]

logger = logging.getLogger(__name__)

#: pg_advisory_lock key: one Runstream maintenance runner at a time per database ("mntn").
MAINTENANCE_LOCK_ID: Final = 0x6D6E746E
#: A job is run by Runstream after this many failed scheduler runs since its last success.
DEFAULT_MIN_FAILURES: Final = 2
#: Runstream's run of a job gives up waiting for a lock after this long (ingest first).
MAINTENANCE_LOCK_TIMEOUT: Final = "5s"
#: After a failed run of its own, Runstream tries again after at most this long.
RETRY_AFTER_S: Final = 600.0
#: Grace beyond twice a job's schedule before its last success counts as too old.
GRACE_S: Final = 600.0

#: The extension's job procedures → the kind Runstream reports (labels of its metrics).
JOB_KINDS: Final = {
    "policy_compression": "compression",
    "policy_refresh_continuous_aggregate": "aggregate_refresh",
    "policy_job_stat_history_retention": "job_history_retention",
    "policy_retention": "retention",
    "policy_reorder": "reorder",
}

SQL_EXTENSION: Final = "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
SQL_MIGRATED: Final = """
SELECT to_regclass('runstream_data.settings') IS NOT NULL AS settings,
       to_regclass('runstream_data.maintenance_runs') IS NOT NULL AS runs,
       (SELECT c.relkind::text FROM pg_class c
        WHERE c.oid = to_regclass('runstream_data.metric_chunks')) AS relkind
"""
SQL_BACKEND: Final = "SELECT value FROM runstream_data.settings WHERE key = 'storage_backend'"
SQL_IS_HYPERTABLE: Final = """
SELECT EXISTS (SELECT 1 FROM timescaledb_information.hypertables
               WHERE hypertable_schema = 'runstream_data' AND hypertable_name = 'metric_chunks')
"""
_SQL_JOBS: Final = """
SELECT j.job_id, j.proc_name, j.hypertable_schema, j.hypertable_name, j.scheduled,
       extract(epoch FROM j.schedule_interval)::float8 AS schedule_s,
       s.last_run_status,
       CASE WHEN isfinite(s.last_successful_finish)
            THEN extract(epoch FROM now() - s.last_successful_finish)::float8 END
           AS scheduler_success_age_s,
       CASE WHEN j.scheduled AND s.job_status <> 'Running' AND isfinite(s.next_start)
            THEN extract(epoch FROM now() - s.next_start)::float8 END AS overdue_s,
       CASE WHEN s.last_run_status = 'Failed' THEN greatest(coalesce(f.n, 0), 1)
            ELSE 0 END::integer AS scheduler_failures,
       e.sqlerrcode, e.err_message,
       {runs_columns}
FROM timescaledb_information.jobs j
LEFT JOIN timescaledb_information.job_stats s ON s.job_id = j.job_id
LEFT JOIN LATERAL (
    SELECT count(*) AS n FROM timescaledb_information.job_errors x
    WHERE x.job_id = j.job_id
      AND x.start_time > coalesce(nullif(s.last_successful_finish, '-infinity'), '-infinity')
) f ON s.last_run_status = 'Failed'
LEFT JOIN LATERAL (
    SELECT x.sqlerrcode, x.err_message FROM timescaledb_information.job_errors x
    WHERE x.job_id = j.job_id ORDER BY x.start_time DESC LIMIT 1
) e ON s.last_run_status = 'Failed'
{runs_join}
WHERE j.proc_schema IN ('_timescaledb_functions', '_timescaledb_internal')
  AND j.proc_name <> 'policy_telemetry'
ORDER BY j.job_id
"""
SQL_JOBS: Final = _SQL_JOBS.format(
    runs_columns="""
       extract(epoch FROM now() - r.last_success_at)::float8 AS runstream_success_age_s,
       extract(epoch FROM now() - r.last_attempt_at)::float8 AS runstream_attempt_age_s,
       coalesce(r.consecutive_failures, 0) AS runstream_failures,
       coalesce(r.total_runs, 0) AS runstream_runs,
       r.last_error AS runstream_error""",
    runs_join="LEFT JOIN runstream_data.maintenance_runs r ON r.job_id = j.job_id",
)
#: Before migration 0013 (nothing of Runstream's own recorded yet).
SQL_JOBS_BEFORE_0013: Final = _SQL_JOBS.format(
    runs_columns="""
       NULL::float8 AS runstream_success_age_s, NULL::float8 AS runstream_attempt_age_s,
       0 AS runstream_failures, 0::bigint AS runstream_runs, NULL::text AS runstream_error""",
    runs_join="",
)
SQL_TRY_LOCK: Final = "SELECT pg_try_advisory_lock($1)"
SQL_UNLOCK: Final = "SELECT pg_advisory_unlock($1)"
SQL_RECORD_RUN: Final = """
INSERT INTO runstream_data.maintenance_runs AS r (
    job_id, kind, last_attempt_at, last_success_at, last_failure_at, consecutive_failures,
    total_runs, total_failures, last_error, last_duration_s, last_runner)
VALUES ($1, $2, now(), CASE WHEN $3 THEN now() END, CASE WHEN $3 THEN NULL ELSE now() END,
        CASE WHEN $3 THEN 0 ELSE 1 END, 1, CASE WHEN $3 THEN 0 ELSE 1 END, $4, $5, $6)
ON CONFLICT (job_id) DO UPDATE SET
    kind = excluded.kind,
    last_attempt_at = now(),
    last_success_at = coalesce(excluded.last_success_at, r.last_success_at),
    last_failure_at = coalesce(excluded.last_failure_at, r.last_failure_at),
    consecutive_failures = CASE WHEN $3 THEN 0 ELSE r.consecutive_failures + 1 END,
    total_runs = r.total_runs + 1,
    total_failures = r.total_failures + excluded.total_failures,
    last_error = coalesce($4, r.last_error),
    last_duration_s = $5,
    last_runner = $6
"""
SQL_CONVERT: Final = "SELECT runstream_data.convert_metric_chunks_to_hypertable()"
#: Migration 0017, after a conversion in its transaction: the chunks it made compressed (so
#: that no pass of the policy ever compresses one for the first time) and the policy's
#: REINDEX off.
SQL_CONVERTED_COMPRESSION: Final = """
SELECT runstream_data.compress_new_metric_chunks(),
       runstream_data.tune_metric_compression_policy()
"""


def _age(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True, slots=True)
class MaintenanceJob:
    """One TimescaleDB background job of the database, as the scheduler and Runstream ran it.

    Ages are seconds before the moment it was read; None: never."""

    job_id: int
    kind: str
    target: str | None
    schedule_s: float
    scheduled: bool
    #: The scheduler's last run: 'Success', 'Failed' or None (never ran).
    scheduler_last_status: str | None
    scheduler_success_age_s: float | None
    #: Failed scheduler runs since its last success (0 while its last run succeeded).
    scheduler_failures: int
    #: Seconds past its next scheduled start while not running (None: not known).
    overdue_s: float | None
    #: The scheduler's last error: SQLSTATE and message.
    error: str | None
    runstream_success_age_s: float | None
    runstream_attempt_age_s: float | None
    runstream_failures: int
    runstream_runs: int
    runstream_error: str | None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> MaintenanceJob:
        target = (f"{row['hypertable_schema']}.{row['hypertable_name']}"
                  if row["hypertable_name"] else None)
        error = None
        if row["err_message"] or row["sqlerrcode"]:
            error = " ".join(str(p) for p in (row["sqlerrcode"], row["err_message"]) if p)
        return cls(
            job_id=int(row["job_id"]),
            kind=JOB_KINDS.get(row["proc_name"], row["proc_name"]),
            target=target,
            schedule_s=float(row["schedule_s"] or 0.0),
            scheduled=bool(row["scheduled"]),
            scheduler_last_status=row["last_run_status"],
            scheduler_success_age_s=_age(row["scheduler_success_age_s"]),
            scheduler_failures=int(row["scheduler_failures"]),
            overdue_s=_age(row["overdue_s"]),
            error=error,
            runstream_success_age_s=_age(row["runstream_success_age_s"]),
            runstream_attempt_age_s=_age(row["runstream_attempt_age_s"]),
            runstream_failures=int(row["runstream_failures"]),
            runstream_runs=int(row["runstream_runs"]),
            runstream_error=row["runstream_error"],
        )

    @property
    def scheduler_overdue(self) -> bool:
        """Its next start passed more than a schedule ago (at least 5 min) and it is not
        running: the scheduler does not start it."""
        return (self.scheduled and self.overdue_s is not None
                and self.overdue_s > max(self.schedule_s, 300.0))

    def scheduler_fails(self, min_failures: int = DEFAULT_MIN_FAILURES) -> bool:
        """The extension's scheduler cannot run it: its last ``min_failures`` runs failed
        (none succeeded since), or it is overdue."""
        failing = (self.scheduler_last_status == "Failed"
                   and self.scheduler_failures >= min_failures)
        return failing or self.scheduler_overdue

    @property
    def last_success_age_s(self) -> float | None:
        """Since the job last succeeded, whoever ran it (None: never)."""
        ages = [a for a in (self.scheduler_success_age_s, self.runstream_success_age_s)
                if a is not None]
        return min(ages) if ages else None

    def due(self) -> bool:
        """Whether Runstream's own run of it is due: on the job's schedule after a success,
        within ``RETRY_AFTER_S`` after a failure, at once if it never ran it."""
        if self.runstream_attempt_age_s is None:
            return True
        wait = self.schedule_s if self.runstream_failures == 0 else min(self.schedule_s,
                                                                        RETRY_AFTER_S)
        return self.runstream_attempt_age_s >= wait

    def state(self, min_failures: int = 1) -> str:
        """``ok`` (the scheduler runs it), ``runstream`` (the scheduler cannot, Runstream
        ran it successfully within twice its schedule) or ``failing`` (nobody has)."""
        if not self.scheduler_fails(min_failures):
            return "ok"
        age = self.runstream_success_age_s
        if (age is not None and self.runstream_failures == 0
                and age <= 2 * self.schedule_s + GRACE_S):
            return "runstream"
        return "failing"

    def describe(self) -> str:
        what = f"TimescaleDB job {self.job_id} ({self.kind}"
        return what + (f" of {self.target})" if self.target else ")")

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["state"] = self.state()
        out["last_success_age_s"] = self.last_success_age_s
        return out


@dataclass(frozen=True, slots=True)
class Storage:
    """What the database's metric storage really is, and its maintenance jobs."""

    #: The extension's version when it is created in this database, else None.
    timescaledb: str | None
    #: ``hypertable``, ``partitions``, ``table`` or None (not migrated).
    tables: str | None
    #: What the migrations chose: ``timescaledb``, ``partitioned`` or None (not migrated).
    backend: str | None
    jobs: tuple[MaintenanceJob, ...] = field(default=())

    @property
    def mode(self) -> str | None:
        """``timescaledb`` only when metric chunks really are a hypertable."""
        if self.tables is None:
            return None
        return "timescaledb" if self.tables == "hypertable" else "postgresql"

    @property
    def mismatch(self) -> str | None:
        return storage_mismatch(self)

    def degraded(self) -> list[str]:
        """What an operator must look at: jobs the scheduler cannot run, and a database
        that has the extension but stores its metrics without it."""
        out = []
        for job in self.jobs:
            state = job.state()
            if state == "runstream":
                out.append(f"{job.kind}: the TimescaleDB scheduler fails it; Runstream runs it")
            elif state == "failing":
                out.append(f"{job.kind}: failing")
        if self.mismatch:
            out.append("storage: plain partitions although TimescaleDB is installed")
        return out

    def as_json(self) -> dict[str, Any]:
        return {
            "timescaledb": self.timescaledb,
            "tables": self.tables,
            "backend": self.backend,
            "mode": self.mode,
            "maintenance": [job.as_json() for job in self.jobs],
            "degraded": self.degraded(),
            "mismatch": self.mismatch,
        }


def storage_mismatch(storage: Storage) -> str | None:
    """The refusal ``runstream migrate`` prints when the database was migrated as plain
    PostgreSQL and has the extension now; None when storage and extension agree."""
    if storage.timescaledb and storage.tables == "partitions":
        return (
            f"metric chunks are plain PostgreSQL partitions, although TimescaleDB "
            f"{storage.timescaledb} is now created in this database: Runstream keeps them "
            "as they are (nothing was switched). To convert them to a compressed hypertable "
            "with the hourly aggregate, run `runstream migrate --to-timescaledb`: one "
            "transaction, so it either converts everything or changes nothing (run it "
            "again after an interruption); ingest waits for it while it copies the metric "
            "chunks (events wait in Kafka, nothing is lost)."
        )
    return None


Conn = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


async def read_storage(conn: Conn) -> Storage:
    """The storage and its jobs, in a few catalog queries (no table scans)."""
    version: str | None = await conn.fetchval(SQL_EXTENSION)
    migrated = await conn.fetchrow(SQL_MIGRATED)
    backend = None
    if migrated is not None and migrated["settings"]:
        backend = await conn.fetchval(SQL_BACKEND)
    relkind = None if migrated is None else migrated["relkind"]
    tables = None
    if relkind == "p":
        tables = "partitions"
    elif relkind == "r":
        hyper = version is not None and bool(await conn.fetchval(SQL_IS_HYPERTABLE))
        tables = "hypertable" if hyper else "table"
    jobs: tuple[MaintenanceJob, ...] = ()
    if version is not None:
        sql = SQL_JOBS if migrated is not None and migrated["runs"] else SQL_JOBS_BEFORE_0013
        jobs = tuple(MaintenanceJob.from_row(r) for r in await conn.fetch(sql))
    return Storage(timescaledb=version, tables=tables, backend=backend, jobs=jobs)


async def convert_to_timescaledb(dsn: str) -> int:
    """``runstream migrate --to-timescaledb``: metric chunks into a hypertable, each chunk
    compressed, in one transaction (migrations 0013 and 0017); the rows moved (0: already
    TimescaleDB storage)."""
    from ingest.db.migrate import MIGRATION_LOCK_ID, SQL_MIGRATION_LOCK, SQL_MIGRATION_UNLOCK

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(SQL_MIGRATION_LOCK, MIGRATION_LOCK_ID)
        try:
            async with conn.transaction():
                moved: int = await conn.fetchval(SQL_CONVERT)
                await conn.execute(SQL_CONVERTED_COMPRESSION)
            return moved
        finally:
            await conn.execute(SQL_MIGRATION_UNLOCK, MIGRATION_LOCK_ID)
    finally:
        await conn.close()


@dataclass(frozen=True, slots=True)
class JobRun:
    """One run of a job by Runstream."""

    job_id: int
    kind: str
    ok: bool
    seconds: float
    error: str | None


def _runner_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class MaintenanceRunner:
    """Runs the jobs the extension's scheduler cannot (see the module docstring)."""

    def __init__(self, dsn: str, *, min_failures: int = DEFAULT_MIN_FAILURES,
                 runner: str | None = None) -> None:
        self._dsn = dsn
        self._min_failures = min_failures
        self._runner = runner or _runner_name()
        #: job id → the trouble last logged for it ("scheduler", "runstream"), per process.
        self._logged: dict[int, set[str]] = {}

    def __repr__(self) -> str:  # never the DSN: it may carry a password
        return f"MaintenanceRunner(min_failures={self._min_failures})"

    async def tick(self) -> list[JobRun]:
        """Read the jobs, log what changed, run those due; the runs made by this call.
        A database that cannot be reached is left to the batch writer to report."""
        try:
            conn = await asyncpg.connect(self._dsn)
        except (OSError, asyncpg.exceptions.CannotConnectNowError,
                asyncpg.exceptions.TooManyConnectionsError) as exc:
            logger.debug("TimescaleDB maintenance: no connection (%s)", type(exc).__name__)
            return []
        try:
            storage = await read_storage(conn)
            self._log_changes(storage.jobs)
            if not any(self._wanted(j) for j in storage.jobs):
                return []
            if not await conn.fetchval(SQL_TRY_LOCK, MAINTENANCE_LOCK_ID):
                return []  # another worker is at it
            try:
                # Read again under the lock: another worker may have just run them.
                jobs = (await read_storage(conn)).jobs
                runs = [await self._run(conn, j) for j in jobs if self._wanted(j)]
            finally:
                await conn.execute(SQL_UNLOCK, MAINTENANCE_LOCK_ID)
            self._log_runs(runs, jobs)
            return runs
        finally:
            await conn.close()

    def _wanted(self, job: MaintenanceJob) -> bool:
        return job.scheduler_fails(self._min_failures) and job.due()

    async def _run(self, conn: asyncpg.Connection, job: MaintenanceJob) -> JobRun:
        started = time.monotonic()
        error = None
        try:
            await conn.execute(f"SET lock_timeout = '{MAINTENANCE_LOCK_TIMEOUT}'")
            # A procedure that commits per chunk: called outside any transaction block.
            await conn.execute(f"CALL run_job({int(job.job_id)})")
        except asyncpg.PostgresError as exc:
            error = f"{exc.sqlstate} {exc}"
        finally:
            await conn.execute("RESET lock_timeout")
        seconds = time.monotonic() - started
        await conn.execute(SQL_RECORD_RUN, job.job_id, job.kind, error is None, error,
                           seconds, self._runner)
        return JobRun(job.job_id, job.kind, error is None, seconds, error)

    def _log_changes(self, jobs: Iterable[MaintenanceJob]) -> None:
        seen = set()
        for job in jobs:
            seen.add(job.job_id)
            logged = self._logged.setdefault(job.job_id, set())
            if job.scheduler_fails(self._min_failures):
                if "scheduler" not in logged:
                    logged.add("scheduler")
                    why = (f"overdue by {job.overdue_s:.0f} s (the scheduler does not start it)"
                           if job.scheduler_overdue and job.scheduler_last_status != "Failed"
                           else f"{job.scheduler_failures} failed runs since its last success "
                                f"({_ago(job.scheduler_success_age_s)}), last error: "
                                f"{job.error or 'not recorded'}")
                    logger.warning(
                        "%s keeps failing in the extension's scheduler: %s; Runstream runs "
                        "it itself from the ingest workers (CALL run_job(%d), one worker at "
                        "a time) every %s until the scheduler succeeds again",
                        job.describe(), why, job.job_id, _interval(job.schedule_s))
            elif "scheduler" in logged:
                logged.discard("scheduler")
                logger.info("%s succeeds in the extension's scheduler again; Runstream "
                            "leaves it to the scheduler", job.describe())
        for gone in set(self._logged) - seen:
            del self._logged[gone]

    def _log_runs(self, runs: Iterable[JobRun], jobs: Iterable[MaintenanceJob]) -> None:
        by_id = {j.job_id: j for j in jobs}
        for run in runs:
            logged = self._logged.setdefault(run.job_id, set())
            job = by_id.get(run.job_id)
            what = job.describe() if job else f"TimescaleDB job {run.job_id}"
            if run.ok:
                logger.info("%s run by Runstream in %.1f s", what, run.seconds)
                if "runstream" in logged:
                    logged.discard("runstream")
                    logger.info("%s: Runstream's runs succeed again", what)
            elif "runstream" not in logged:
                logged.add("runstream")
                logger.error("%s also fails when Runstream runs it (CALL run_job(%d)): %s; "
                             "its maintenance is not happening; trying again within %s",
                             what, run.job_id, run.error,
                             _interval(min(job.schedule_s if job else RETRY_AFTER_S,
                                           RETRY_AFTER_S)))


def _ago(age_s: float | None) -> str:
    return "never" if age_s is None else f"{_interval(age_s)} ago"


def _interval(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "never"
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"
