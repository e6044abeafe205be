"""Store stage: migrations and the exactly-once batch write.

The batch write protocol (one PostgreSQL transaction per consumed batch)::

    1. INSERT the batch's event ids into dedup_keys ON CONFLICT DO NOTHING RETURNING
       → the ids that are new. The primary key decides, so two workers racing on the
       same events (a rebalance, a zombie) serialise on the key and exactly one wins.
       Keys live in daily partitions by the event's own time and are dropped past a
       horizon (migration 0011, ``SQL_DEDUP_EVENTS``).
    2. write rows for the new events only: metric chunks (and their fine tiles,
       ``chunk_tiles.py``) by binary COPY — on TimescaleDB a chunk the COPY created is
       compressed at once (migration 0017) —, other payloads by COPY/upsert; merge run
       state, producers, tags and artifacts (order-independent merges, see status.py),
       locking rows in run-id order.
    3. INSERT dead letters ON CONFLICT DO NOTHING RETURNING; produce the new ones to the
       DLQ topic and wait for the broker's ack — still inside the transaction, so the
       offset never moves past a poison message whose DLQ record is not durable.
    4. UPSERT the partitions' next offsets (monotonic: GREATEST).
    COMMIT.

Between 2 and 3, ``db/notices.notify_changes`` queues a NOTIFY naming the runs and compute
targets the new events touched. PostgreSQL sends it at COMMIT and drops it on rollback,
so live readers (``ingest/api/live/``) hear of exactly the batches that became visible.

A crash anywhere before COMMIT leaves nothing behind; the worker that gets the
partition next seeks to the stored offset and redoes the batch. Kafka's own committed
offsets are never used for correctness. Retriable failures (deadlock, serialization,
lost connection) surface as ``StoreError(retriable=True)``; the caller retries the whole
batch, which is safe because nothing of it was committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import asyncpg

from ingest.db import pgcopy
from ingest.db.notices import notify_changes
from ingest.db.pool import Pool
from ingest.db.runstatus import STATUS_COLUMNS
from ingest.errors import StoreError
from ingest.worker.chunk_tiles import chunk_tiles, packed_le
from ingest.worker.decode import (
    Artifact,
    DeadLetter,
    Event,
    Heartbeat,
    Lifecycle,
    ListValue,
    LogLines,
    MetricBatch,
    TableBlock,
    Tag,
    scalar_json,
)
from ingest.worker.status import (
    WriteStamp,
    newer_write,
    reduce_producers,
    reduce_runs,
)

__all__ = ["Batch", "Store", "WriteResult"]

logger = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# --- worker queries -------------------------------------------------------------------

#: The read path's tiler (migration 0006), also run by the worker (``worker/tiler.py``).
SQL_TILE_SERIES: Final = "SELECT runstream_data.tile_metric_series($1, $2)"
SQL_LOAD_OFFSETS: Final = """
SELECT partition, next_offset FROM runstream_data.consumer_offsets
WHERE group_id = $1 AND topic = $2 AND partition = ANY($3::integer[])
"""
SQL_ENSURE_PARTITIONS: Final = """
SELECT runstream_data.ensure_metric_partitions(now() - interval '1 month',
                                               now() + interval '3 months')
"""
#: No planner statistics for the payload arrays of partitions and chunks made since the
#: last pass (migration 0018: ANALYZE sorted every sampled array's elements, ~35 s of CPU
#: for a month's partition, under the worker's feet).
SQL_QUIET_PAYLOAD_STATS: Final = "SELECT runstream_data.quiet_metric_chunk_stats()"

# --- the batch write --------------------------------------------------------------------

#: Dedup keys (migration 0011): an event is keyed under the UTC day of its own time ($2,
#: days since 1970-01-01), so any replay of it meets the same key. A day outside the
#: partitions kept (older than the horizon, or too far ahead) is looked up in every kept
#: partition and, if new, keyed under today (clamped into the window). Keys stored before
#: 0011 are in event_ids (read-only here, until maintenance truncates it). Rows go in
#: (day, event_id) order, so racing workers lock keys in the same order. ``LIMIT 1`` and
#: ``k.day >= w.oldest`` are for the planner: a one-row window (no JIT-sized estimates),
#: and a lookup it cannot turn into hashing every kept key (it probes each id's index).
SQL_DEDUP_EVENTS: Final = """
WITH w AS (SELECT oldest, newest,
                  least(greatest((now() AT TIME ZONE 'UTC')::date, oldest), newest) AS today
           FROM runstream_data.dedup_window LIMIT 1),
e AS (SELECT u.event_id, date '1970-01-01' + u.days AS day
      FROM unnest($1::uuid[], $2::integer[]) AS u(event_id, days))
INSERT INTO runstream_data.dedup_keys (event_id, day)
SELECT e.event_id, CASE WHEN e.day BETWEEN w.oldest AND w.newest THEN e.day ELSE w.today END
FROM e CROSS JOIN w
WHERE (e.day BETWEEN w.oldest AND w.newest
       OR NOT EXISTS (SELECT 1 FROM runstream_data.dedup_keys k
                      WHERE k.event_id = e.event_id AND k.day >= w.oldest))
  AND NOT EXISTS (SELECT 1 FROM runstream_data.event_ids l WHERE l.event_id = e.event_id)
ORDER BY 2, 1
ON CONFLICT (event_id, day) DO NOTHING
RETURNING event_id::text
"""
#: TimescaleDB: compress the metric chunks this transaction created (migration 0017).
SQL_COMPRESS_NEW_CHUNKS: Final = "SELECT runstream_data.compress_new_metric_chunks()"
#: Dedup key upkeep (migration 0011): partitions ahead created, days past the horizon dropped.
SQL_MAINTAIN_DEDUP_KEYS: Final = "SELECT * FROM runstream_data.maintain_dedup_keys()"
US_PER_DAY: Final = 86_400_000_000
METRIC_CHUNK_COLUMNS: Final = (
    "run_id", "name", "rank", "producer_id", "seq", "series_idx", "n", "time_min",
    "time_max", "step_min", "step_max", "steps", "values", "times", "kinds", "texts",
)
#: Migration 0015: one row of level-6 tiles per chunk (``worker/chunk_tiles.py``).
CHUNK_TILE_COLUMNS: Final = (
    "run_id", "name", "producer_id", "seq", "series_idx", "rank", "time_min", "tiles", "ns",
    "vmins", "vmaxs", "smins", "smaxs", "tmins", "tmaxs", "last_ts", "last_vs", "last_ks",
    "last_xs",
)
LIST_COLUMNS: Final = (
    "run_id", "name", "rank", "producer_id", "seq", "logged_at", "n", "nums", "kinds", "texts",
)
TABLE_COLUMNS: Final = (
    "run_id", "name", "source", "rank", "producer_id", "seq", "logged_at", "column_idx",
    "column_name", "n", "nums", "kinds", "texts",
)
LOG_COLUMNS: Final = ("run_id", "stream", "rank", "producer_id", "seq", "logged_at", "lines")

SQL_MERGE_RUNS: Final = """
INSERT INTO runstream_data.runs AS r (
    run_id, experiment, workspace, created_at, last_event_at, last_heartbeat_at, meta_at,
    parent_run_id, display_name, compute_target, properties, error,
    not_started_at, queued_at, preparing_at, running_at, finalizing_at,
    cancel_requested_at, completed_at, failed_at, canceled_at, attempt)
SELECT u.run_id, u.experiment, u.workspace, u.created_at, u.last_event_at,
       u.last_heartbeat_at, u.meta_at, u.parent_run_id, u.display_name, u.compute_target,
       u.properties::jsonb, u.error, u.not_started_at, u.queued_at, u.preparing_at,
       u.running_at, u.finalizing_at, u.cancel_requested_at, u.completed_at, u.failed_at,
       u.canceled_at, u.attempt
FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[],
            $6::timestamptz[], $7::timestamptz[], $8::text[], $9::text[], $10::text[],
            $11::text[], $12::text[], $13::timestamptz[], $14::timestamptz[],
            $15::timestamptz[], $16::timestamptz[], $17::timestamptz[], $18::timestamptz[],
            $19::timestamptz[], $20::timestamptz[], $21::timestamptz[], $22::integer[])
     AS u(run_id, experiment, workspace, created_at, last_event_at, last_heartbeat_at,
          meta_at, parent_run_id, display_name, compute_target, properties, error,
          not_started_at, queued_at, preparing_at, running_at, finalizing_at,
          cancel_requested_at, completed_at, failed_at, canceled_at, attempt)
ORDER BY u.run_id
ON CONFLICT (run_id) DO UPDATE SET
    created_at = least(r.created_at, excluded.created_at),
    last_event_at = greatest(r.last_event_at, excluded.last_event_at),
    last_heartbeat_at = greatest(r.last_heartbeat_at, excluded.last_heartbeat_at),
    parent_run_id = CASE WHEN excluded.meta_at < r.meta_at OR r.meta_at IS NULL
        THEN coalesce(excluded.parent_run_id, r.parent_run_id)
        ELSE coalesce(r.parent_run_id, excluded.parent_run_id) END,
    display_name = CASE WHEN excluded.meta_at < r.meta_at OR r.meta_at IS NULL
        THEN coalesce(excluded.display_name, r.display_name)
        ELSE coalesce(r.display_name, excluded.display_name) END,
    compute_target = CASE WHEN excluded.meta_at < r.meta_at OR r.meta_at IS NULL
        THEN coalesce(excluded.compute_target, r.compute_target)
        ELSE coalesce(r.compute_target, excluded.compute_target) END,
    properties = CASE WHEN excluded.meta_at < r.meta_at OR r.meta_at IS NULL
        THEN r.properties || excluded.properties
        ELSE excluded.properties || r.properties END,
    meta_at = least(r.meta_at, excluded.meta_at),
    attempt = greatest(r.attempt, excluded.attempt),
    error = CASE WHEN excluded.attempt > r.attempt THEN excluded.error
        WHEN excluded.attempt < r.attempt THEN r.error
        WHEN least(excluded.failed_at, excluded.canceled_at)
                < least(r.failed_at, r.canceled_at)
             OR least(r.failed_at, r.canceled_at) IS NULL
            THEN excluded.error
        WHEN least(excluded.failed_at, excluded.canceled_at) = least(r.failed_at, r.canceled_at)
            THEN greatest(r.error COLLATE "C", excluded.error COLLATE "C")
        ELSE r.error END,
    not_started_at = CASE WHEN excluded.attempt > r.attempt THEN excluded.not_started_at
        WHEN excluded.attempt = r.attempt THEN least(r.not_started_at, excluded.not_started_at)
        ELSE r.not_started_at END,
    queued_at = CASE WHEN excluded.attempt > r.attempt THEN excluded.queued_at
        WHEN excluded.attempt = r.attempt THEN least(r.queued_at, excluded.queued_at)
        ELSE r.queued_at END,
    preparing_at = CASE WHEN excluded.attempt > r.attempt THEN excluded.preparing_at
        WHEN excluded.attempt = r.attempt THEN least(r.preparing_at, excluded.preparing_at)
        ELSE r.preparing_at END,
    running_at = CASE WHEN excluded.attempt > r.attempt THEN excluded.running_at
        WHEN excluded.attempt = r.attempt THEN least(r.running_at, excluded.running_at)
        ELSE r.running_at END,
    finalizing_at = CASE WHEN excluded.attempt > r.attempt THEN excluded.finalizing_at
        WHEN excluded.attempt = r.attempt THEN least(r.finalizing_at, excluded.finalizing_at)
        ELSE r.finalizing_at END,
    cancel_requested_at = CASE WHEN excluded.attempt > r.attempt THEN excluded.cancel_requested_at
        WHEN excluded.attempt = r.attempt
            THEN least(r.cancel_requested_at, excluded.cancel_requested_at)
        ELSE r.cancel_requested_at END,
    completed_at = CASE WHEN excluded.attempt > r.attempt THEN excluded.completed_at
        WHEN excluded.attempt = r.attempt THEN least(r.completed_at, excluded.completed_at)
        ELSE r.completed_at END,
    failed_at = CASE WHEN excluded.attempt > r.attempt THEN excluded.failed_at
        WHEN excluded.attempt = r.attempt THEN least(r.failed_at, excluded.failed_at)
        ELSE r.failed_at END,
    canceled_at = CASE WHEN excluded.attempt > r.attempt THEN excluded.canceled_at
        WHEN excluded.attempt = r.attempt THEN least(r.canceled_at, excluded.canceled_at)
        ELSE r.canceled_at END
"""
SQL_MERGE_PRODUCERS: Final = """
INSERT INTO runstream_data.producers AS p (
    run_id, producer_id, rank, events, max_seq, dropped_events, first_seen_at, last_seen_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::integer[], $4::bigint[], $5::bigint[],
                     $6::bigint[], $7::timestamptz[], $8::timestamptz[])
ORDER BY 1, 2
ON CONFLICT (run_id, producer_id) DO UPDATE SET
    events = p.events + excluded.events,
    max_seq = greatest(p.max_seq, excluded.max_seq),
    dropped_events = greatest(p.dropped_events, excluded.dropped_events),
    first_seen_at = least(p.first_seen_at, excluded.first_seen_at),
    last_seen_at = greatest(p.last_seen_at, excluded.last_seen_at)
"""
#: ``typed_value``: the value as JSON when it was given as a number or boolean (0016).
SQL_MERGE_TAGS: Final = """
INSERT INTO runstream_data.tags AS t (
    run_id, key, value, set_at, producer_id, seq, removed, typed_value)
SELECT u.run_id, u.key, u.value, u.set_at, u.producer_id, u.seq, u.removed,
       u.typed_value::jsonb
FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[],
            $6::bigint[], $7::boolean[], $8::text[])
     AS u(run_id, key, value, set_at, producer_id, seq, removed, typed_value)
ORDER BY 1, 2
ON CONFLICT (run_id, key) DO UPDATE SET
    value = excluded.value, typed_value = excluded.typed_value, set_at = excluded.set_at,
    producer_id = excluded.producer_id, seq = excluded.seq, removed = excluded.removed
WHERE CASE WHEN t.producer_id = excluded.producer_id THEN excluded.seq > t.seq
     ELSE (excluded.set_at, excluded.producer_id) > (t.set_at, t.producer_id) END
"""
#: Properties: the first write wins; display name and description: the newest (0009).
SQL_MERGE_EDITS: Final = """
INSERT INTO runstream_data.run_edits AS e (
    run_id, field, key, value, set_at, producer_id, seq, typed_value)
SELECT u.run_id, u.field, u.key, u.value, u.set_at, u.producer_id, u.seq,
       u.typed_value::jsonb
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
            $6::text[], $7::bigint[], $8::text[])
     AS u(run_id, field, key, value, set_at, producer_id, seq, typed_value)
ORDER BY 1, 2, 3
ON CONFLICT (run_id, field, key) DO UPDATE SET
    value = excluded.value, typed_value = excluded.typed_value, set_at = excluded.set_at,
    producer_id = excluded.producer_id, seq = excluded.seq
WHERE CASE WHEN e.field = 'property' THEN
         CASE WHEN e.producer_id = excluded.producer_id THEN excluded.seq < e.seq
              ELSE (excluded.set_at, excluded.producer_id) < (e.set_at, e.producer_id) END
     ELSE
         CASE WHEN e.producer_id = excluded.producer_id THEN excluded.seq > e.seq
              ELSE (excluded.set_at, excluded.producer_id) > (e.set_at, e.producer_id) END
     END
"""
SQL_MERGE_ARTIFACTS: Final = """
INSERT INTO runstream_data.artifacts AS a (
    run_id, name, kind, sha256, size_bytes, content_type, rank, producer_id, seq, created_at,
    metric)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[],
                     $6::text[], $7::integer[], $8::text[], $9::bigint[], $10::timestamptz[],
                     $11::text[])
ORDER BY 1, 2
ON CONFLICT (run_id, name) DO UPDATE SET
    kind = excluded.kind, sha256 = excluded.sha256, size_bytes = excluded.size_bytes,
    content_type = excluded.content_type, rank = excluded.rank, metric = excluded.metric,
    producer_id = excluded.producer_id, seq = excluded.seq, created_at = excluded.created_at
WHERE CASE WHEN a.producer_id = excluded.producer_id THEN excluded.seq > a.seq
     ELSE (excluded.created_at, excluded.producer_id) > (a.created_at, a.producer_id) END
"""
SQL_RECORD_DEAD_LETTERS: Final = """
INSERT INTO runstream_data.dead_letters (topic, partition, "offset", reason, detail, key)
SELECT * FROM unnest($1::text[], $2::integer[], $3::bigint[], $4::text[], $5::text[],
                     $6::bytea[])
ORDER BY 1, 2, 3
ON CONFLICT (topic, partition, "offset") DO NOTHING
RETURNING partition, "offset"
"""
SQL_SAVE_OFFSETS: Final = """
INSERT INTO runstream_data.consumer_offsets AS o (group_id, topic, partition, next_offset)
SELECT $1, $2, u.partition, u.next_offset
FROM unnest($3::integer[], $4::bigint[]) AS u(partition, next_offset)
ORDER BY u.partition
ON CONFLICT (group_id, topic, partition) DO UPDATE SET
    next_offset = greatest(o.next_offset, excluded.next_offset), updated_at = now()
"""

_RETRIABLE = (
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.ConnectionFailureError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.InterfaceError,
    ConnectionError,
    OSError,
)

Conn = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy
SendDeadLetters = Callable[[Sequence[DeadLetter]], Awaitable[None]]


def _ts(us: int | None) -> datetime | None:
    return None if us is None else _EPOCH + timedelta(microseconds=us)


@dataclass(slots=True)
class Batch:
    """What one write transaction commits: decoded events, dead letters and, per
    partition, the next offset to read (last consumed offset + 1)."""

    topic: str
    group_id: str
    events: list[Event] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    next_offsets: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WriteResult:
    new_events: int
    duplicates: int
    points: int
    dead_letters: int
    #: ts (µs) of each newly stored event, for log-to-commit latency.
    new_event_ts_us: tuple[int, ...]
    #: (run_id, name, points) of each metric series the new events added to.
    series_points: tuple[tuple[str, str, int], ...] = ()


COPY_CHUNK_BYTES: Final = 1 << 20


def _metric_copy(events: Sequence[Event]) -> Iterator[bytes]:
    """The binary COPY stream of the batch's metric chunks, in ~1 MiB pieces."""
    parts: list[bytes] = [pgcopy.COPY_HEADER]
    size = 0
    head = pgcopy.row_header(len(METRIC_CHUNK_COLUMNS))
    null = pgcopy.field_null()
    for e in events:
        if not isinstance(e.payload, MetricBatch):
            continue
        run_id = pgcopy.field_text(e.run_id)
        producer = pgcopy.field_text(e.producer_id)
        rank = pgcopy.field_int4(e.rank)
        seq = pgcopy.field_int8(e.seq)
        for idx, s in enumerate(e.payload.series):
            if s.n == 0:
                continue
            parts += (
                head, run_id, pgcopy.field_text(s.name), rank, producer, seq,
                pgcopy.field_int4(idx), pgcopy.field_int4(s.n),
                pgcopy.field_timestamptz_us(s.time_min_us),
                pgcopy.field_timestamptz_us(s.time_max_us),
                pgcopy.field_int8(s.step_min), pgcopy.field_int8(s.step_max),
                pgcopy.field_packed_array(s.steps, pgcopy.INT8_OID),
                pgcopy.field_packed_array(s.values, pgcopy.FLOAT8_OID),
                pgcopy.field_packed_array(s.times, pgcopy.INT8_OID),
                null if s.kinds is None else pgcopy.field_bytea(s.kinds),
                null if s.texts is None else pgcopy.field_text_array(s.texts),
            )
            size += 36 * s.n
            if size >= COPY_CHUNK_BYTES:
                yield b"".join(parts)
                parts, size = [], 0
    parts.append(pgcopy.COPY_TRAILER)
    yield b"".join(parts)


def _fine_tiles_copy(events: Sequence[Event]) -> bytes | None:
    """The binary COPY stream of the batch's chunks' fine tiles (migration 0015), or None
    when no chunk has any (see chunk_tiles.py for which do)."""
    parts: list[bytes] = [pgcopy.COPY_HEADER]
    head = pgcopy.row_header(len(CHUNK_TILE_COLUMNS))
    null = pgcopy.field_null()
    q, d = pgcopy.INT8_OID, pgcopy.FLOAT8_OID
    for e in events:
        if not isinstance(e.payload, MetricBatch):
            continue
        for idx, s in enumerate(e.payload.series):
            t = chunk_tiles(s)
            if t is None:
                continue
            parts += (
                head, pgcopy.field_text(e.run_id), pgcopy.field_text(s.name),
                pgcopy.field_text(e.producer_id), pgcopy.field_int8(e.seq),
                pgcopy.field_int4(idx), pgcopy.field_int4(e.rank),
                pgcopy.field_timestamptz_us(s.time_min_us),
                *(pgcopy.field_packed_array(packed_le(column), q)
                  for column in (t.tiles, t.ns)),
                *(pgcopy.field_packed_array(packed_le(column), d)
                  for column in (t.vmins, t.vmaxs)),
                *(pgcopy.field_packed_array(packed_le(column), q)
                  for column in (t.smins, t.smaxs, t.tmins, t.tmaxs, t.last_ts)),
                pgcopy.field_packed_array(packed_le(t.last_vs), d),
                pgcopy.field_bytea(t.last_ks),
                null if t.last_xs is None else pgcopy.field_text_array(t.last_xs),
            )
    if len(parts) == 1:
        return None
    parts.append(pgcopy.COPY_TRAILER)
    return b"".join(parts)


def _columns(rows: Sequence[Sequence[Any]], n: int) -> list[list[Any]]:
    return [[row[i] for row in rows] for i in range(n)]


class Store(Pool):
    """A connection pool and the batch write. ``start()`` connects; it never migrates."""

    #: The dedup step of the batch write (a benchmark swaps in the layout before 0011).
    dedup_statement: str = SQL_DEDUP_EVENTS
    #: Run after the metric COPY: compress the chunks it created (a benchmark swaps in
    #: ``SELECT 0``, the behaviour before 0017).
    new_chunks_statement: str = SQL_COMPRESS_NEW_CHUNKS

    def __repr__(self) -> str:  # never the DSN: it may carry a password
        return "Store()"

    async def load_offsets(self, group_id: str, topic: str,
                           partitions: Sequence[int]) -> dict[int, int]:
        rows = await self.pool.fetch(SQL_LOAD_OFFSETS, group_id, topic, list(partitions))
        return {r["partition"]: r["next_offset"] for r in rows}

    async def ensure_partitions(self) -> int:
        """Metric partitions ahead created (plain PostgreSQL), and every partition or chunk
        without them given no payload statistics (migration 0018); how many created."""
        created: int = await self.pool.fetchval(SQL_ENSURE_PARTITIONS)
        await self.pool.fetchval(SQL_QUIET_PAYLOAD_STATS)
        return created

    async def maintain_dedup_keys(self) -> tuple[int, int]:
        """Create dedup key partitions ahead and drop those past the horizon (migration
        0011); (created, dropped). Idempotent; concurrent callers: one works, the others
        return (0, 0). A lock it could not get within 2 s leaves everything for next time."""
        try:
            row = await self.pool.fetchrow(SQL_MAINTAIN_DEDUP_KEYS)
        except asyncpg.exceptions.LockNotAvailableError:
            logger.info("dedup key upkeep: tables busy, trying again later")
            return 0, 0
        if row is None:  # the function always answers one row
            return 0, 0
        if row["created"] or row["dropped"] or row["legacy_truncated"]:
            logger.info("dedup key upkeep: %d partitions created, %d dropped%s",
                        row["created"], row["dropped"],
                        "; pre-0011 keys truncated" if row["legacy_truncated"] else "")
        return row["created"], row["dropped"]

    async def tile_series(self, run_id: str, name: str) -> None:
        """Summarise a series' chunks not yet in its tiles (migration 0006; committed,
        safe to race with the read path: one tiler per series at a time)."""
        await self.pool.fetchval(SQL_TILE_SERIES, run_id, name)


    async def write_batch(self, batch: Batch, *, send_dead_letters: SendDeadLetters) -> WriteResult:
        """Commit one batch exactly once (see the module docstring)."""
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                return await self._write(conn, batch, send_dead_letters)
        except _RETRIABLE as exc:
            raise StoreError(f"batch write failed: {exc!r}", retriable=True) from exc
        except asyncpg.PostgresError as exc:
            raise StoreError(f"batch write failed: {exc!r}", retriable=False) from exc

    async def _write(self, conn: Conn, batch: Batch,
                     send_dead_letters: SendDeadLetters) -> WriteResult:
        unique: dict[str, Event] = {}
        for e in batch.events:
            unique.setdefault(e.event_id, e)
        new: list[Event] = []
        if unique:
            ids = sorted(unique)
            rows = await conn.fetch(self.dedup_statement, ids,
                                    [unique[i].ts_us // US_PER_DAY for i in ids])
            new = [unique[r[0]] for r in rows]
            new.sort(key=lambda e: (e.run_id, e.producer_id, e.seq))
        if new:
            await self._write_events(conn, new)
            # Live updates: delivered on COMMIT only (see db/notices.py), never before.
            await notify_changes(
                conn,
                runs={e.run_id for e in new},
                status_runs={
                    e.run_id for e in new if isinstance(e.payload, Lifecycle | Heartbeat)
                },
            )
        dead_new = 0
        if batch.dead_letters:
            dead_new = await self._write_dead_letters(conn, batch, send_dead_letters)
        if batch.next_offsets:
            parts = sorted(batch.next_offsets)
            await conn.execute(SQL_SAVE_OFFSETS, batch.group_id, batch.topic, parts,
                               [batch.next_offsets[p] for p in parts])
        return WriteResult(
            new_events=len(new),
            duplicates=len(batch.events) - len(new),
            points=sum(e.points for e in new),
            dead_letters=dead_new,
            new_event_ts_us=tuple(e.ts_us for e in new),
            series_points=tuple(
                (e.run_id, series.name, series.n)
                for e in new if isinstance(e.payload, MetricBatch)
                for series in e.payload.series
            ),
        )

    async def _write_events(self, conn: Conn, new: Sequence[Event]) -> None:
        await self._merge_runs(conn, new)
        if any(isinstance(e.payload, MetricBatch) and e.points for e in new):
            async def source() -> AsyncIterator[bytes]:
                for piece in _metric_copy(new):
                    yield piece

            await conn.copy_to_table("metric_chunks", schema_name="runstream_data",
                                     source=source(), columns=METRIC_CHUNK_COLUMNS,
                                     format="binary")
            # A chunk this COPY created is compressed now, with this batch's rows only, so
            # that compressing it later never blocks a batch (migration 0017).
            await conn.fetchval(self.new_chunks_statement)
            fine = _fine_tiles_copy(new)
            if fine is not None:
                async def tiles() -> AsyncIterator[bytes]:
                    yield fine

                await conn.copy_to_table("metric_chunk_tiles", schema_name="runstream_data",
                                         source=tiles(), columns=CHUNK_TILE_COLUMNS,
                                         format="binary")
        lists, cells, logs = [], [], []
        tags: dict[tuple[str, str], tuple[WriteStamp, Event, Tag]] = {}
        edits: dict[tuple[str, str, str], tuple[WriteStamp, Event, Tag]] = {}
        artifacts: dict[tuple[str, str], tuple[WriteStamp, Event, Artifact]] = {}
        for e in new:
            p, at = e.payload, _ts(e.ts_us)
            if isinstance(p, ListValue):
                v = p.values
                lists.append((e.run_id, p.name, e.rank, e.producer_id, e.seq, at,
                              len(v.nums), list(v.nums), v.kinds, list(v.texts)))
            elif isinstance(p, TableBlock):
                cells += [
                    (e.run_id, p.name, p.source, e.rank, e.producer_id, e.seq, at, i, col,
                     len(v.nums), list(v.nums), v.kinds, list(v.texts))
                    for i, (col, v) in enumerate(p.columns)
                ]
            elif isinstance(p, LogLines):
                logs.append((e.run_id, p.stream, e.rank, e.producer_id, e.seq, at, list(p.lines)))
            elif isinstance(p, Tag) and p.target in ("tag", "untag"):
                _keep_newest(tags, (e.run_id, p.key), e, p)
            elif isinstance(p, Tag):
                key = p.key if p.target == "property" else ""
                _keep_newest(edits, (e.run_id, p.target, key), e, p,
                             first_wins=p.target == "property")
            elif isinstance(p, Artifact):
                _keep_newest(artifacts, (e.run_id, p.name), e, p)
        for table, columns, records in (("list_values", LIST_COLUMNS, lists),
                                        ("table_columns", TABLE_COLUMNS, cells),
                                        ("log_lines", LOG_COLUMNS, logs)):
            if records:
                await conn.copy_records_to_table(table, schema_name="runstream_data",
                                                 columns=columns, records=records)
        if tags:
            rows = [(e.run_id, t.key, t.value, _ts(e.ts_us), e.producer_id, e.seq,
                     t.target == "untag", _typed_json(t))
                    for _, e, t in (tags[k] for k in sorted(tags))]
            await conn.execute(SQL_MERGE_TAGS, *_columns(rows, 8))
        if edits:
            edit_rows = [(k[0], k[1], k[2], t.value, _ts(e.ts_us), e.producer_id, e.seq,
                          _typed_json(t))
                         for k, (_, e, t) in sorted(edits.items())]
            await conn.execute(SQL_MERGE_EDITS, *_columns(edit_rows, 8))
        if artifacts:
            art_rows = [(e.run_id, a.name, a.kind, a.sha256, a.size_bytes, a.content_type, e.rank,
                     e.producer_id, e.seq, _ts(e.ts_us), a.metric)
                    for _, e, a in (artifacts[k] for k in sorted(artifacts))]
            await conn.execute(SQL_MERGE_ARTIFACTS, *_columns(art_rows, 11))
        producers = reduce_producers(new)
        prod_rows = [(p.run_id, p.producer_id, p.rank, p.events, p.max_seq, p.dropped_events,
                 _ts(p.first_seen_us), _ts(p.last_seen_us)) for p in producers]
        await conn.execute(SQL_MERGE_PRODUCERS, *_columns(prod_rows, 8))

    async def _merge_runs(self, conn: Conn, new: Sequence[Event]) -> None:
        rows = [
            (d.run_id, d.experiment, d.workspace, _ts(d.created_us), _ts(d.last_event_us),
             _ts(d.last_heartbeat_us), _ts(d.meta_us), d.parent_run_id, d.display_name,
             d.compute_target, d.properties_json(), d.error,
             *(_ts(d.first_seen_us.get(s)) for s in STATUS_COLUMNS), d.attempt)
            for d in reduce_runs(new)
        ]
        await conn.execute(SQL_MERGE_RUNS, *_columns(rows, 13 + len(STATUS_COLUMNS)))

    async def _write_dead_letters(self, conn: Conn, batch: Batch,
                                  send_dead_letters: SendDeadLetters) -> int:
        dead = sorted(batch.dead_letters, key=lambda d: (d.topic, d.partition, d.offset))
        rows = [(d.topic, d.partition, d.offset, d.reason, d.detail[:2000], d.key)
                for d in dead]
        fresh = {(r["partition"], r["offset"])
                 for r in await conn.fetch(SQL_RECORD_DEAD_LETTERS, *_columns(rows, 6))}
        to_send = [d for d in dead if (d.partition, d.offset) in fresh]
        if to_send:
            # Inside the transaction: if the DLQ produce fails, the offsets do not move.
            await send_dead_letters(to_send)
        return len(to_send)


def _typed_json(tag: Tag) -> str | None:
    """A typed tag's or property's value as JSON (None: text, in ``value`` alone)."""
    return None if tag.typed is None else scalar_json(tag.typed)


def _keep_newest(acc: dict[Any, tuple[WriteStamp, Event, Any]], key: tuple[str, ...],
                 event: Event, item: Any, *, first_wins: bool = False) -> None:
    """Keep the batch's newest write per key (``first_wins``: the earliest), by the rule
    the upsert applies across batches."""
    stamp = WriteStamp(event.ts_us, event.producer_id, event.seq)
    held = acc.get(key)
    if held is None or (newer_write(held[0], stamp) if first_wins else newer_write(stamp, held[0])):
        acc[key] = (stamp, event, item)


async def wait_for_database(dsn: str, *, timeout_s: float) -> None:
    """Poll until PostgreSQL accepts connections (for start-up ordering)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        try:
            conn = await asyncpg.connect(dsn, timeout=min(5.0, timeout_s))
        except (TimeoutError, OSError, asyncpg.PostgresError):
            if loop.time() >= deadline:
                raise
            await asyncio.sleep(0.5)
        else:
            await conn.close()
            return
