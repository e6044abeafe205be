"""Consume stage: a consumer-group member that fetches, decodes and hands batches to the
store, with offsets kept in PostgreSQL.

Protocol (the aiokafka "local state consumer" pattern, made safe for many workers)::

    assigned(partitions) → pause them, read next offsets from
                           runstream_data.consumer_offsets, seek there (no stored offset:
                           the beginning), bump the generation (anything fetched before the
                           seek is stale), resume
    fetch task           → getmany → decode (poison → DeadLetter) → queue bounded in
                           batches and in message bytes; when it is full, pause every
                           assigned partition until the writer frees space (together
                           with small fetch buffers this bounds the worker's memory)
    write task           → one transaction per batch (store.py): dedup by event_id, rows,
                           DLQ produce, next offsets; then, best effort, commit the same
                           offsets to Kafka so standard lag tooling works
    revoked(partitions)  → bump the generation (queued batches become stale and are
                           dropped), wait for the in-flight write to finish

Correctness never depends on Kafka's committed offsets, on the in-flight batch finishing,
or on being the only worker: a stale batch written by a worker that just lost its
partition is deduplicated by the event-id key, and stored offsets only move forward.

A batch the database rejects outright (not a transient error) is split: each event is
written alone and the ones still rejected become dead letters (reason ``store_rejected``),
so one unforeseen bad value cannot stall a partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from ingest.errors import InvalidEventError, StoreError
from ingest.worker.decode import DeadLetter, Event, decode_event
from ingest.worker.metrics import IngestMetrics
from ingest.worker.store import Batch, Store, WriteResult
from producer import KafkaSecurity
from schemas.codec import Codec

__all__ = ["DeadLetterProducer", "IngestConsumer"]

logger = logging.getLogger(__name__)

REASON_STORE_REJECTED = "store_rejected"


class DeadLetterProducer:
    """Produces poison messages to the DLQ topic and waits until they are durable."""

    def __init__(self, *, bootstrap: str, dlq_topic: str, source_topic: str,
                 security: KafkaSecurity | None = None) -> None:
        self._bootstrap = bootstrap
        self._security = security or KafkaSecurity()
        self.dlq_topic = dlq_topic
        self._source_topic = source_topic
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        if self._producer is None:
            producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap, acks="all",
                                        enable_idempotence=True,
                                        **self._security.client_kwargs())
            try:
                async with self._security.explain_failures(self._bootstrap):
                    await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def __aenter__(self) -> DeadLetterProducer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def send(self, dead: Sequence[DeadLetter]) -> None:
        if self._producer is None:
            raise RuntimeError("DeadLetterProducer is not started")
        futures = []
        for d in dead:
            headers = [
                ("reason", d.reason.encode()),
                ("source_topic", d.topic.encode()),
                ("source_partition", str(d.partition).encode()),
                ("source_offset", str(d.offset).encode()),
                ("detail", d.detail[:1000].encode()),
            ]
            futures.append(await self._producer.send(self.dlq_topic, value=d.value, key=d.key,
                                                     headers=headers))
        await asyncio.gather(*futures)


@dataclass(slots=True)
class _Queued:
    generation: int
    batch: Batch
    #: (partition, offset, key, value) of each event, aligned with batch.events.
    sources: list[tuple[int, int, bytes | None, bytes | None]] = field(default_factory=list)
    messages: int = 0
    nbytes: int = 0


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: IngestConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._owner.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self._owner.on_assigned(assigned)


class IngestConsumer:
    """One consumer-group member. ``run_fetch`` and ``run_write`` are its two loops."""

    def __init__(
        self,
        *,
        bootstrap: str,
        topic: str,
        group_id: str,
        store: Store,
        dead_letters: DeadLetterProducer,
        metrics: IngestMetrics,
        codec: Codec | None = None,
        max_batch_messages: int = 2000,
        max_batch_points: int = 500_000,
        max_queued_batches: int = 4,
        max_queued_bytes: int = 32 << 20,
        fetch_max_bytes: int = 8 << 20,
        max_partition_fetch_bytes: int = 1 << 20,
        fetch_timeout_ms: int = 100,
        kafka_commit_interval_s: float = 1.0,
        revoke_wait_s: float = 10.0,
        retry_backoff_max_s: float = 5.0,
        session_timeout_ms: int = 10_000,
        security: KafkaSecurity | None = None,
        on_commit: Callable[[WriteResult], None] | None = None,
    ) -> None:
        self.topic = topic
        #: Told what each committed batch wrote (the worker's SeriesTiler counts points).
        self._on_commit = on_commit
        self.group_id = group_id
        self._bootstrap = bootstrap
        self._security = security or KafkaSecurity()
        self._store = store
        self._dlq = dead_letters
        self._metrics = metrics
        self._codec = codec or Codec()
        self._max_batch_messages = max_batch_messages
        self._max_batch_points = max_batch_points
        self._max_queued_bytes = max_queued_bytes
        self._fetch_max_bytes = fetch_max_bytes
        self._max_partition_fetch_bytes = max_partition_fetch_bytes
        self._fetch_timeout_ms = fetch_timeout_ms
        self._commit_interval_s = kafka_commit_interval_s
        self._revoke_wait_s = revoke_wait_s
        self._retry_backoff_max_s = retry_backoff_max_s
        self._session_timeout_ms = session_timeout_ms
        self._queue: asyncio.Queue[_Queued | None] = asyncio.Queue(max_queued_batches)
        self._queued_bytes = 0
        self._space = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._generation = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._stored: dict[int, int] = {}
        self._last_kafka_commit = 0.0
        self._assign_error: BaseException | None = None

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        if self._consumer is not None:
            return
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=self._session_timeout_ms,
            heartbeat_interval_ms=max(1000, self._session_timeout_ms // 3),
            fetch_max_bytes=self._fetch_max_bytes,
            max_partition_fetch_bytes=self._max_partition_fetch_bytes,
            **self._security.client_kwargs(),
        )
        consumer.subscribe(topics=[self.topic], listener=_Rebalance(self))
        self._consumer = consumer  # the listener may run before start() returns
        try:
            async with self._security.explain_failures(self._bootstrap):
                await consumer.start()
        except BaseException:
            self._consumer = None
            await consumer.stop()
            raise

    async def stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    async def __aenter__(self) -> IngestConsumer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def consumer(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("IngestConsumer is not started")
        return self._consumer

    # --- rebalance -----------------------------------------------------------------------

    async def on_assigned(self, assigned: list[TopicPartition]) -> None:
        consumer = self._consumer
        mine = [tp for tp in assigned if tp.topic == self.topic]
        if not mine or consumer is None:  # None: stopping
            return
        # aiokafka may start fetching these before we have seeked: hold them, and make
        # anything fetched until the seek stale (the writer drops stale batches).
        consumer.pause(*mine)
        try:
            stored = await self._store.load_offsets(self.group_id, self.topic,
                                                    [tp.partition for tp in mine])
        except Exception as exc:
            # Without the stored offsets we would start from Kafka's committed ones, which
            # never run ahead of the database (dedup keeps that safe) — but stop loudly.
            logger.exception("could not load stored offsets for %s", mine)
            self._assign_error = exc
            return
        for tp in mine:
            if tp.partition in stored:
                consumer.seek(tp, stored[tp.partition])
                self._stored[tp.partition] = stored[tp.partition]
            else:
                await consumer.seek_to_beginning(tp)
        self._generation += 1
        consumer.resume(*mine)
        logger.info("assigned %s; stored offsets %s", sorted(tp.partition for tp in mine), stored)

    async def on_revoked(self, revoked: list[TopicPartition]) -> None:
        self._generation += 1
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is None:  # keep the shutdown sentinel
                self._queue.put_nowait(None)
                break
            self._release(item)
        try:
            await asyncio.wait_for(self._idle.wait(), self._revoke_wait_s)
        except TimeoutError:
            logger.warning("in-flight batch still running at revocation; it stays safe to "
                           "commit (dedup) and the new owner re-reads from stored offsets")
        await self._commit_to_kafka(force=True)
        parts = [tp.partition for tp in revoked if tp.topic == self.topic]
        for p in parts:
            self._stored.pop(p, None)
        self._metrics.forget_partitions(parts)
        logger.info("revoked %s", sorted(parts))

    # --- fetch stage -----------------------------------------------------------------------

    async def run_fetch(self, stop: asyncio.Event) -> None:
        """Fetch and decode until ``stop`` is set, then queue the end-of-stream marker."""
        consumer = self.consumer
        finished = False
        try:
            while not stop.is_set():
                if self._assign_error is not None:
                    raise RuntimeError("partition assignment failed") from self._assign_error
                data = await consumer.getmany(timeout_ms=self._fetch_timeout_ms,
                                              max_records=self._max_batch_messages)
                if not data:
                    continue
                item = self._decode(data)
                self._update_lag()
                if self._no_space():
                    paused = consumer.assignment()
                    consumer.pause(*paused)
                    try:
                        await self._wait_for_space(stop)
                    finally:
                        consumer.resume(*(tp for tp in paused if tp in consumer.assignment()))
                if stop.is_set():
                    break  # not queued: its offsets were never stored, the next owner re-reads
                self._queued_bytes += item.nbytes
                self._queue.put_nowait(item)
            await self._queue.put(None)
            finished = True
        finally:
            if not finished:  # crashed or cancelled: the writer is going away too
                with contextlib.suppress(asyncio.QueueFull):
                    self._queue.put_nowait(None)

    def _no_space(self) -> bool:
        return self._queue.full() or self._queued_bytes >= self._max_queued_bytes

    async def _wait_for_space(self, stop: asyncio.Event) -> None:
        while self._no_space() and not stop.is_set():
            self._space.clear()
            space = asyncio.ensure_future(self._space.wait())
            stopped = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({space, stopped}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                space.cancel()
                stopped.cancel()

    def _release(self, item: _Queued) -> None:
        self._queued_bytes -= item.nbytes
        self._space.set()

    def _decode(self, data: dict[TopicPartition, list[object]]) -> _Queued:
        item = _Queued(self._generation, Batch(topic=self.topic, group_id=self.group_id))
        batch = item.batch
        for tp, messages in data.items():
            for msg in messages:
                key, value = msg.key, msg.value  # type: ignore[attr-defined]
                offset: int = msg.offset  # type: ignore[attr-defined]
                try:
                    event = decode_event(self._codec, value)
                except InvalidEventError as exc:
                    batch.dead_letters.append(DeadLetter(
                        tp.topic, tp.partition, offset, key, value, exc.reason, exc.detail))
                else:
                    batch.events.append(event)
                    item.sources.append((tp.partition, offset, key, value))
                item.nbytes += len(value or b"") + len(key or b"")
            if messages:
                batch.next_offsets[tp.partition] = messages[-1].offset + 1  # type: ignore[attr-defined]
                item.messages += len(messages)
        return item

    def _update_lag(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is not None and tp.partition in self._stored:
                self._metrics.set_lag(tp.partition, high - self._stored[tp.partition])

    # --- write stage -------------------------------------------------------------------------

    async def run_write(self) -> None:
        """Write queued batches until the end-of-stream marker."""
        while True:
            item = await self._queue.get()
            if item is None:
                # The periodic mirror is rate-limited: bring Kafka's copy up to date before
                # leaving, or lag tools would show lag that is not there.
                await self._commit_to_kafka(force=True)
                return
            if item.generation != self._generation:
                self._release(item)
                continue  # partitions were revoked since this was fetched
            item = self._coalesce(item)
            self._idle.clear()
            try:
                await self._write(item)
            finally:
                self._idle.set()
                self._release(item)
            if item.generation != self._generation:
                continue
            for p, off in item.batch.next_offsets.items():
                self._stored[p] = max(self._stored.get(p, 0), off)
            self._update_lag()
            await self._commit_to_kafka()

    def _coalesce(self, item: _Queued) -> _Queued:
        """Merge batches already waiting into one transaction (fewer, larger commits)."""
        points = sum(e.points for e in item.batch.events)
        while not self._queue.empty() and points < self._max_batch_points:
            nxt = self._queue.get_nowait()
            if nxt is None:
                self._queue.put_nowait(None)  # stays last: nothing else is queued
                break
            if nxt.generation != item.generation:
                self._release(nxt)
                continue
            points += sum(e.points for e in nxt.batch.events)
            item.batch.events += nxt.batch.events
            item.batch.dead_letters += nxt.batch.dead_letters
            item.batch.next_offsets.update(nxt.batch.next_offsets)
            item.sources += nxt.sources
            item.messages += nxt.messages
            item.nbytes += nxt.nbytes
        return item

    async def _write(self, item: _Queued) -> None:
        started = time.perf_counter()
        try:
            result = await self._write_with_retry(item.batch)
        except StoreError as exc:
            if exc.retriable:
                raise
            logger.warning("batch rejected by the database (%s); writing events one by one",
                           exc)
            result = await self._write_split(item)
        committed_at = time.time()
        m = self._metrics
        m.events_consumed.inc(item.messages)
        m.batch_seconds.observe(time.perf_counter() - started)
        m.points_persisted.inc(result.points)
        m.duplicates_dropped.inc(result.duplicates)
        m.observe_log_to_commit(committed_at, result.new_event_ts_us)
        if self._on_commit is not None:
            self._on_commit(result)

    async def _write_with_retry(self, batch: Batch) -> WriteResult:
        delay = 0.1
        while True:
            try:
                return await self._store.write_batch(batch, send_dead_letters=self._send_dlq)
            except StoreError as exc:
                if not exc.retriable:
                    raise
                self._metrics.write_retries.inc()
                logger.warning("batch write failed, retrying in %.1f s: %s", delay, exc)
            except KafkaError as exc:
                self._metrics.write_retries.inc()
                logger.warning("dead-letter produce failed, retrying in %.1f s: %r", delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._retry_backoff_max_s)

    async def _write_split(self, item: _Queued) -> WriteResult:
        batch = item.batch
        kept: list[Event] = []
        dead = list(batch.dead_letters)
        for event, (partition, offset, key, value) in zip(batch.events, item.sources,
                                                           strict=True):
            single = Batch(topic=batch.topic, group_id=batch.group_id, events=[event])
            try:
                await self._write_with_retry(single)
            except StoreError as exc:
                dead.append(DeadLetter(batch.topic, partition, offset, key, value,
                                       REASON_STORE_REJECTED, str(exc)))
            else:
                kept.append(event)
        # Events written above are now duplicates; this commits the dead letters + offsets.
        rest = Batch(topic=batch.topic, group_id=batch.group_id, events=kept,
                     dead_letters=dead, next_offsets=batch.next_offsets)
        await self._write_with_retry(rest)
        return WriteResult(new_events=len(kept), duplicates=len(batch.events) - len(kept),
                           points=sum(e.points for e in kept), dead_letters=len(dead),
                           new_event_ts_us=tuple(e.ts_us for e in kept))

    async def _send_dlq(self, dead: Sequence[DeadLetter]) -> None:
        await self._dlq.send(dead)
        for d in dead:
            self._metrics.dead_letters.labels(reason=d.reason).inc()
            logger.warning("dead letter %s[%d]@%d: %s: %s", d.topic, d.partition, d.offset,
                           d.reason, d.detail)

    async def _commit_to_kafka(self, *, force: bool = False) -> None:
        """Mirror stored offsets into Kafka for lag tooling; never used for correctness."""
        consumer = self._consumer
        now = time.monotonic()
        if consumer is None or not self._stored:
            return
        if not force and now - self._last_kafka_commit < self._commit_interval_s:
            return
        self._last_kafka_commit = now
        assigned = {tp.partition: tp for tp in consumer.assignment() if tp.topic == self.topic}
        offsets = {assigned[p]: off for p, off in self._stored.items() if p in assigned}
        if offsets:
            with contextlib.suppress(KafkaError):
                await consumer.commit(offsets)
