"""The API's database side: a connection pool and the read queries (SQL in queries.py).

``ReadStore`` has ``start``/``stop`` like the write-side ``Store``; the constructor does
no I/O and the pool keeps no idle connection open until first use (``min_size=0``), so
the API starts, and answers ``/healthz``, while PostgreSQL is still coming up; until it
is reachable, data endpoints answer 503 and ``/readyz`` reports ``database: failed``.

Methods return asyncpg records; shaping them into API documents is the route modules'
job. Connection-level failures become ``DatabaseUnavailableError``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Concatenate, Final, ParamSpec, TypeVar

import asyncpg

from ingest.db import queries as q
from ingest.db.pool import Pool
from ingest.db.queues import QueueState
from ingest.db.series import BucketPlan
from ingest.errors import IngestError

__all__ = [
    "DatabaseUnavailableError",
    "ReadStore",
    "RunFilter",
    "RunOrder",
    "SeriesStats",
]

T = TypeVar("T")
P = ParamSpec("P")

DEFAULT_MAX_CONNECTIONS: Final = 8
DEFAULT_COMMAND_TIMEOUT_S: Final = 30.0
#: Untiled points read raw rather than summarised first (about 3 ms of scanning).
TILE_AFTER_UNTILED_POINTS: Final = 10_000

_UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.InterfaceError,
    # lost connection; cancelled, shut down, starting up; too many connections
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.TooManyConnectionsError,
    # no such database or role, wrong password: misconfigured, not the request's fault
    asyncpg.exceptions.InvalidCatalogNameError,
    asyncpg.exceptions.InvalidAuthorizationSpecificationError,
    # not migrated (yet)
    asyncpg.exceptions.UndefinedTableError,
    asyncpg.exceptions.UndefinedFunctionError,
)


class DatabaseUnavailableError(IngestError):
    """PostgreSQL is unreachable, overloaded, or not migrated; the request may be retried."""


@dataclass(frozen=True, slots=True)
class RunFilter:
    """Conditions on runs, all of which must hold (None / empty: no condition)."""

    experiment: str | None = None
    workspace: str | None = None
    #: Only these workspaces (a scoped token's grant); None: any.
    workspaces: tuple[str, ...] | None = None
    statuses: tuple[str, ...] = ()
    #: (key, value): the run has the tag; value None matches any value.
    tags: tuple[tuple[str, str | None], ...] = ()
    compute_target: str | None = None
    parent_run_id: str | None = None
    #: Only runs without a parent.
    top_level: bool = False
    #: (key, value): the run has the property; value None matches any value.
    properties: tuple[tuple[str, str | None], ...] = ()
    created_after: datetime | None = None
    created_before: datetime | None = None
    #: (metric, op, bound): the run's last value of the metric compares so (op in
    #: queries.METRIC_OPS); a run without a numeric last value never matches.
    metric_filters: tuple[tuple[str, str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class RunOrder:
    """created_at (``metric`` None) or a metric's last value; newest/highest first unless
    ``descending`` is False. ``after`` is the keyset of the previous page's last run:
    (created_at, run_id) or (sort value or None, run_id)."""

    metric: str | None = None
    descending: bool = True
    after: tuple[Any, str] | None = field(default=None)


@dataclass(frozen=True, slots=True)
class SeriesStats:
    chunks: int
    points: int
    step_min: int | None
    step_max: int | None
    untiled_points: int
    min_level: int | None
    ranks: int
    stale_tiles: bool


#: The stats of a series with no chunk in the range asked (or none at all).
NO_CHUNKS: Final = SeriesStats(chunks=0, points=0, step_min=None, step_max=None,
                               untiled_points=0, min_level=None, ranks=0, stale_tiles=False)


class ReadStore(Pool):
    """The read queries, on a pool of their own (``ingest/db/pool.py``)."""

    def __init__(
        self,
        *,
        dsn: str,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        command_timeout_s: float = DEFAULT_COMMAND_TIMEOUT_S,
    ) -> None:
        super().__init__(dsn=dsn, min_size=0, max_size=max_connections,
                         command_timeout_s=command_timeout_s)

    def __repr__(self) -> str:  # never the DSN: it may carry a password
        return "ReadStore()"

    async def start(self) -> None:
        """As ``Pool.start``, with JIT compilation off on the read connections: the run
        lists' plans cost enough (a subquery per run) for PostgreSQL to JIT-compile them,
        ~1 s of compiling for a query that runs in tens of milliseconds."""
        if self._pool is None:
            self._pool = await asyncpg.create_pool(
                self._dsn, min_size=self._min_size, max_size=self._max_size,
                command_timeout=self._command_timeout_s, server_settings={"jit": "off"},
            )

    @property
    def pool(self) -> asyncpg.Pool:
        try:
            return super().pool
        except RuntimeError:
            raise DatabaseUnavailableError("the database pool is not started") from None

    async def _call(self, work: Callable[[], Awaitable[T]]) -> T:
        try:
            return await work()
        except _UNAVAILABLE as exc:
            raise DatabaseUnavailableError(f"database unavailable: {exc!r}") from exc

    async def call(
        self, work: Callable[Concatenate[asyncpg.Pool, P], Awaitable[T]], *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """``work(pool, *args, **kwargs)``: queries kept in modules of their own
        (``ingest/db/models.py``), with connection failures as DatabaseUnavailableError."""
        return await self._call(lambda: work(self.pool, *args, **kwargs))

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return await self._call(lambda: self.pool.fetch(sql, *args))

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        return await self._call(lambda: self.pool.fetchrow(sql, *args))

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._call(lambda: self.pool.fetchval(sql, *args))

    async def ping(self) -> None:
        """Raise unless a query runs now (``/readyz``)."""
        async with asyncio.timeout(self._command_timeout_s):
            await self.fetchval(q.SQL_PING)

    # -- runs ---------------------------------------------------------------------------

    async def run_exists(self, run_id: str) -> bool:
        return bool(await self.fetchval(q.SQL_RUN_EXISTS, run_id))

    async def run_workspace(self, run_id: str) -> str | None:
        """The run's workspace; None when there is no such run."""
        workspace = await self.fetchval(q.SQL_RUN_WORKSPACE, run_id)
        return None if workspace is None else str(workspace)

    async def target_named(self, target: str) -> bool:
        """Whether a submission or an agent names ``target`` (which may have no run yet)."""
        return bool(await self.fetchval(q.SQL_TARGET_NAMED, target))

    async def run_workspaces(self, run_ids: Sequence[str]) -> dict[str, str]:
        """The workspace of each of ``run_ids`` that exists."""
        rows = await self.fetch(q.SQL_RUN_WORKSPACES, list(run_ids))
        return {str(r["run_id"]): str(r["workspace"]) for r in rows}

    async def metric_names(self, where: RunFilter, runs: int) -> list[asyncpg.Record]:
        """(scanned, name, kind, runs) over the newest ``runs`` runs matching ``where``: how
        many runs were scanned, then one row per name and kind (a single row with name NULL
        when they logged none)."""
        args: list[Any] = []
        conditions = _conditions(where, args)
        args.append(runs)
        sql = q.SQL_METRIC_NAMES.format(where=" AND ".join(conditions) or "true",
                                        limit=len(args))
        return await self.fetch(sql, *args)

    async def runs(self, where: RunFilter, order: RunOrder, limit: int) -> list[asyncpg.Record]:
        """One page of RunSummary rows (plus ``sort_value`` when ordered by a metric)."""
        args: list[Any] = []
        conditions = _conditions(where, args)
        direction = "DESC" if order.descending else "ASC"
        if order.metric is None:
            if order.after is not None:
                fragment = (q.RUNS_AFTER_CREATED_DESC if order.descending
                            else q.RUNS_AFTER_CREATED_ASC)
                conditions.append(fragment.format(len(args) + 1, len(args) + 2))
                args += order.after
            args.append(limit)
            sql = q.SQL_RUNS_BY_CREATED.format(
                columns=q.RUN_SUMMARY_COLUMNS, where=" AND ".join(conditions) or "true",
                order=direction, limit=len(args),
            )
            return await self.fetch(sql, *args)
        args.append(order.metric)
        metric = len(args)
        keyset = q.METRIC_KEYSET_NONE
        if order.after is not None:
            value, run_id = order.after
            if value is None:
                keyset = q.METRIC_AFTER_NULL_DESC if order.descending else q.METRIC_AFTER_NULL_ASC
                keyset = keyset.format(len(args) + 1)
                args.append(run_id)
            else:
                keyset = (q.METRIC_AFTER_VALUE_DESC if order.descending
                          else q.METRIC_AFTER_VALUE_ASC)
                keyset = keyset.format(len(args) + 1, len(args) + 2)
                args += [value, run_id]
        args.append(limit)
        sql = q.SQL_RUNS_BY_METRIC.format(
            columns=q.RUN_SUMMARY_COLUMNS, where=" AND ".join(conditions) or "true",
            metric=metric, keyset=keyset, order=direction, limit=len(args),
        )
        return await self.fetch(sql, *args)

    async def run_details(self, run_id: str) -> asyncpg.Record | None:
        return await self.fetchrow(q.SQL_RUN_DETAILS, run_id)

    async def run_producers(self, run_id: str, producer_ids: Sequence[str]) -> list[asyncpg.Record]:
        """(producer_id, events, max_seq) of those of ``producer_ids`` stored for the run."""
        return await self.fetch(q.SQL_RUN_PRODUCERS, run_id, list(producer_ids))

    async def experiments(
        self, after: tuple[str, str] | None, limit: int, workspaces: Sequence[str] | None = None
    ) -> list[asyncpg.Record]:
        """A page of experiments, only of ``workspaces`` when given."""
        name, workspace = after if after is not None else (None, None)
        return await self.fetch(q.SQL_EXPERIMENTS, name, workspace, limit, _names(workspaces))

    async def files(self, run_id: str) -> list[asyncpg.Record]:
        return await self.fetch(q.SQL_FILES, run_id)

    async def file(self, run_id: str, name: str) -> asyncpg.Record | None:
        return await self.fetchrow(q.SQL_FILE, run_id, name)

    async def log_lines(
        self, run_id: str, after: tuple[datetime, str, int, int] | None, limit: int
    ) -> list[asyncpg.Record]:
        if after is None:
            return await self.fetch(q.SQL_LOG_LINES, run_id, limit)
        return await self.fetch(q.SQL_LOG_LINES_AFTER, run_id, *after, limit)

    # -- compute targets ------------------------------------------------------------------

    async def queues(self) -> list[QueueState]:
        return [QueueState.from_row(r) for r in await self.fetch(q.SQL_QUEUES)]

    async def queue(self, target: str) -> QueueState | None:
        row = await self.fetchrow(q.SQL_QUEUE, target)
        return None if row is None else QueueState.from_row(row)

    async def active_runs(
        self, target: str, workspaces: Sequence[str] | None = None
    ) -> list[asyncpg.Record]:
        """A target's active runs, only of ``workspaces`` when given."""
        return await self.fetch(q.SQL_ACTIVE_RUNS, target, _names(workspaces))

    # -- metrics -----------------------------------------------------------------------------

    async def metric_chunks(
        self, run_id: str, names: Sequence[str] | None, *, part: int = 0, parts: int = 1
    ) -> list[asyncpg.Record]:
        """Chunk heads of the run's series, of the names in ``part`` of ``parts``."""
        return await self.fetch(q.SQL_METRIC_CHUNKS, run_id, _names(names), part, parts)

    async def metric_chunks_full(self, run_id: str, names: Sequence[str]) -> list[asyncpg.Record]:
        return await self.fetch(q.SQL_METRIC_CHUNKS_FULL, run_id, list(names))

    async def list_values(self, run_id: str, names: Sequence[str] | None) -> list[asyncpg.Record]:
        return await self.fetch(q.SQL_LIST_VALUES, run_id, _names(names))

    async def table_columns(
        self, run_id: str, names: Sequence[str] | None
    ) -> list[asyncpg.Record]:
        return await self.fetch(q.SQL_TABLE_COLUMNS, run_id, _names(names))

    async def metric_index(
        self, run_id: str
    ) -> tuple[list[str], list[asyncpg.Record], list[asyncpg.Record]]:
        """Series names, (name, count) of lists and (name, count, columns) of tables."""
        series, lists, tables = await asyncio.gather(
            self.fetch(q.SQL_SERIES_NAMES, run_id), self.fetch(q.SQL_LIST_COUNTS, run_id),
            self.fetch(q.SQL_TABLE_SHAPES, run_id))
        return [r["name"] for r in series], lists, tables

    async def series_exists(self, run_id: str, name: str) -> bool:
        return bool(await self.fetchval(q.SQL_SERIES_EXISTS, run_id, name))

    async def series_stats(
        self, run_id: str, name: str, rank: int | None, lo: int, hi: int
    ) -> SeriesStats:
        stats = await self.many_series_stats([run_id], name, lo, hi, rank=rank)
        return stats.get(run_id, NO_CHUNKS)

    async def many_series_stats(
        self, run_ids: Sequence[str], name: str, lo: int, hi: int, *, rank: int | None = None
    ) -> dict[str, SeriesStats]:
        """``series_stats`` of the series ``name`` of each of ``run_ids``, in one
        statement; a run without chunks of it in [lo, hi] is absent."""
        rows = await self.fetch(q.SQL_SERIES_STATS, list(run_ids), name, rank, lo, hi)
        return {
            str(row["run_id"]): SeriesStats(
                chunks=row["chunks"], points=row["points"], step_min=row["step_min"],
                step_max=row["step_max"], untiled_points=row["untiled_points"],
                min_level=row["min_level"], ranks=row["ranks"],
                stale_tiles=row["stale_tiles"])
            for row in rows
        }

    async def series_points(
        self, run_id: str, name: str, rank: int | None, lo: int, hi: int, limit: int
    ) -> list[asyncpg.Record]:
        """The first ``limit`` points in [lo, hi], in (step, rank, time) order."""
        return await self.fetch(q.SQL_SERIES_POINTS, run_id, name, rank, lo, hi, limit)

    async def tile_series(self, run_id: str, name: str) -> None:
        """Summarise the series' new chunks into tiles (migration 0006), committed."""
        await self.fetchval(q.SQL_TILE_SERIES, run_id, name)

    async def series_bucket_columns(
        self, run_id: str, name: str, rank: int | None, plan: BucketPlan
    ) -> asyncpg.Record:
        """The buckets of ``plan`` as JSON arrays (``queries.SQL_SERIES_BUCKET_COLUMNS``)."""
        level = plan.level if plan.level is not None else 0
        rows = await self.fetch(
            q.SQL_SERIES_BUCKET_COLUMNS, run_id, name, rank, plan.lo, plan.hi, level,
            plan.width, plan.base, plan.tile_first, plan.tile_last, plan.full_lo, plan.full_hi,
            plan.level is not None,
        )
        (row,) = rows  # an aggregate without GROUP BY yields exactly one row
        return row

    async def series_summaries(
        self, run_ids: Sequence[str], names: Sequence[str]
    ) -> list[asyncpg.Record]:
        """(run_id, name, points, vmin, vmax, last_v, last_k, last_x, untiled, stale) of
        each of ``names`` that is a series of one of ``run_ids`` (migration 0012)."""
        return await self.fetch(q.SQL_SERIES_SUMMARIES, list(run_ids), list(names))

    async def series_buckets(
        self, run_id: str, name: str, rank: int | None, plan: BucketPlan
    ) -> list[asyncpg.Record]:
        """Buckets of ``plan``, in bucket order."""
        level = plan.level if plan.level is not None else 0
        return await self.fetch(
            q.SQL_SERIES_BUCKETS, run_id, name, rank, plan.lo, plan.hi, level, plan.width,
            plan.base, plan.tile_first, plan.tile_last, plan.full_lo, plan.full_hi,
            plan.level is not None,
        )


def _names(names: Sequence[str] | None) -> list[str] | None:
    return None if names is None else list(names)


def _conditions(where: RunFilter, args: list[Any]) -> list[str]:
    """SQL conditions of ``where``, appending their parameters to ``args``."""
    out: list[str] = []

    def add(fragment: str, *values: Any) -> None:
        out.append(fragment.format(*range(len(args) + 1, len(args) + 1 + len(values))))
        args.extend(values)

    if where.experiment is not None:
        add(q.RUNS_EXPERIMENT, where.experiment)
    if where.workspace is not None:
        add(q.RUNS_WORKSPACE, where.workspace)
    if where.workspaces is not None:
        add(q.RUNS_WORKSPACES, list(where.workspaces))
    if where.statuses:
        add(q.RUNS_STATUS, list(where.statuses))
    if where.compute_target is not None:
        add(q.RUNS_COMPUTE_TARGET, where.compute_target)
    if where.parent_run_id is not None:
        add(q.RUNS_PARENT, where.parent_run_id)
    if where.top_level:
        add(q.RUNS_TOP_LEVEL)
    if where.created_after is not None:
        add(q.RUNS_CREATED_AFTER, where.created_after)
    if where.created_before is not None:
        add(q.RUNS_CREATED_BEFORE, where.created_before)
    if where.tags:
        add(q.RUNS_TAGS, [k for k, _ in where.tags], [v for _, v in where.tags])
    if where.properties:
        pairs = where.properties
        add(q.RUNS_PROPERTIES, [k for k, _ in pairs], [v for _, v in pairs])
    for name, op, bound in where.metric_filters:
        if op not in q.METRIC_OPS:
            raise ValueError(f"not a comparison: {op!r}")
        add(q.RUNS_METRIC_COMPARE.replace("{op}", op), name, bound)
    return out

