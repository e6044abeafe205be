"""The background sender: one daemon thread, one asyncio loop, one Kafka producer.

Pipeline, all on the sender thread::

    Buffer.drain ─► metric batches, pending events ─► seq + encode ─► route
                                                           ├─ ONLINE: Kafka (in flight until acked)
                                                           └─ else:   spool segment on disk
    ack failure ─► spool the message, go OFFLINE
    spool full  ─► (past its byte budget or the disk's free-space floor) drop and count
                   the message, unless it is a Lifecycle event: hold it
    supervisor  ─► (re)connect with backoff; while not ONLINE replay this sender's
                   sealed segments in order, then send the held events; an empty spool
                   and nothing held means ONLINE again

Modes. ``CONNECTING`` until the first connection attempt ends; ``OFFLINE`` after a
failed attempt or any send failure; ``SPOOLING`` when Kafka is slower than the logging
rate — more than ``max_inflight_bytes`` unacknowledged, or the buffer refilling past a
quarter of its bound while a pass is still sending (also while a send waits for room in
Kafka's queue), or a send waiting ``send_block_s``; ``ONLINE`` otherwise; ``CLOSED``
while shutting down. Once a message went to the spool, later ones follow it there
until the supervisor has replayed the spool, so one producer's events reach Kafka in
``seq`` order except around failures (then they may repeat or arrive late; the
consumer orders by ``seq`` and drops duplicates by ``event_id``).

Sequence numbers. This thread is the only one that assigns ``seq`` — when an event is
encoded, just before routing — so they are gap-free per stream. The only gap is an
event that was already encoded when both Kafka and the spool failed; it is counted in
``dropped_events``, which every heartbeat carries.

Held events. A run's status must never be what gets dropped (the buffer exempts
Lifecycle events from its bound for the same reason), so a Lifecycle event the spool
cannot take (disk full) is held in memory instead — at most ``MAX_HELD_EVENTS`` events
and ``MAX_HELD_BYTES``; past that it is dropped and counted like any other. The
supervisor sends the held events, in order, once it has replayed the spool; a retriable
failure keeps all of them for the next attempt (duplicates are dropped downstream by
``event_id``). A run that ended while its status events were held sends no more
heartbeats, so after them the sender emits one more Heartbeat per such run that has
dropped events (held like a Lifecycle event if need be): the drop count is reported
even when the whole end of the run fell into the outage.

Flush and close. ``flush`` drains the buffer and waits until nothing is in flight,
spooled or waiting for upload; it raises ``ProducerTimeoutError`` at its deadline and
discards nothing. ``close`` does the same within its budget (keeping a reserve), then
spools everything still undelivered — including messages in flight, which may thus be
delivered twice — fsyncs the spool and stops the producer, the uploader and the thread.
Held events go to the spool if it has room by then, else to Kafka if connected (within
what is left of the budget); what neither takes is counted as dropped, with a warning.
"""

from __future__ import annotations

import asyncio
import atexit
import enum
import functools
import itertools
import logging
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Coroutine
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from schemas.codec import Codec
from schemas.event_ids import new_event_id

from ._batch import envelope_bytes, event_dict, metric_batches
from ._blobs import BlobUploader, stage
from ._buffer import Buffer, PendingEvent, Stream
from ._client import ApiClient
from ._errors import KafkaUnavailableError, ProducerError, ProducerTimeoutError, SpoolError
from ._exit import close_senders_with, end_owned_runs_at_exit
from ._kafka_logs import SENDER_THREAD, held_back
from ._kafka_logs import install as install_kafka_log_folding
from ._options import ProducerOptions
from ._spool import SpoolWriter, claim
from ._transport import KafkaTransport, deliver, transport_error

logger = logging.getLogger(__name__)

#: Reconnect attempts back off 0.5 s, 1 s, … up to this; cheap (one TCP connect), and it
#: bounds how long delivery lags behind a broker that came back.
MAX_BACKOFF_S = 5.0
#: A real (not zero) sleep between metric batches of one pass when the switch interval is
#: above ``GIL_HANDOFF_MAX_INTERVAL_S`` (``gil_switch_interval_s=None`` and a long one
#: set by the program). A thread that only runs Python code keeps the GIL until another
#: thread forces a switch, so a long pass would stall a CPU-bound training loop for that
#: long; blocking briefly in the selector hands the GIL over after each batch (about a
#: millisecond of work) — at the price of waiting up to an interval to get it back.
GIL_HANDOFF_S = 0.0002
GIL_HANDOFF_MAX_INTERVAL_S = 0.001
#: Past ``1/SPILL_FRACTION`` of the buffer's bound, events of a pass go to the spool instead
#: of waiting on Kafka: the buffer keeps draining, so logging faster than Kafka takes it
#: fills the disk (within its budget), not the floor. The spool drains at Kafka's speed.
SPILL_FRACTION = 4
#: How often a send waiting for room in Kafka's queue checks whether the buffer is
#: filling up behind it (then the message spills to the spool).
SEND_POLL_S = 0.01
#: Encoded size of a Heartbeat payload, for the buffer's byte estimate.
HEARTBEAT_COST_BYTES = 256
#: Bounds of the events held in memory while the spool cannot take them. A run has a
#: handful of Lifecycle events, usually under 1 KiB each (a Failed one carries up to
#: 64 Ki characters of traceback).
MAX_HELD_EVENTS = 4096
MAX_HELD_BYTES = 8 << 20


class Mode(enum.Enum):
    CONNECTING = "connecting"
    OFFLINE = "offline"
    ONLINE = "online"
    SPOOLING = "spooling"
    CLOSED = "closed"


@dataclass(frozen=True)
class ProducerStats:
    """Counters of one workspace's sender since it started (events are Kafka messages)."""

    #: connecting, online, spooling (Kafka slower than logging), offline or closed.
    mode: str
    #: Acknowledged by Kafka, replays from the spool included.
    events_sent: int
    #: Written to the on-disk spool (Kafka unreachable or slow, or undelivered at close).
    events_spooled: int
    #: Sent from the spool by this process (the rest goes with `runstream sync`).
    events_replayed: int
    #: Lost: buffer full and spool unusable, or refused by Kafka for good.
    events_dropped: int
    events_in_flight: int
    buffered_bytes: int
    blobs_uploaded: int
    blobs_pending: int
    #: Refused by the API for good (digest mismatch, too large).
    blobs_dropped: int
    last_error: str | None
    #: Run status (Lifecycle) events the spool could not take (disk full), kept in memory
    #: until Kafka is back; flush waits for them like for spooled ones.
    events_held: int = 0


def now_us() -> int:
    return time.time_ns() // 1000


class Message(NamedTuple):
    """An encoded event between ``_emit`` and its ack (or the spool, or the hold)."""

    stream: Stream | None
    key: bytes
    data: bytes
    kind: str
    seq: int
    #: Held in memory when the spool cannot take it, instead of being dropped.
    precious: bool


class Sender:
    """Owns the thread, the loop, the transport, the spool writer and the uploader (which
    uploads through ``api``, the workspace's HTTP client)."""

    def __init__(
        self,
        *,
        sender_id: str,
        options: ProducerOptions,
        codec: Codec,
        transport: KafkaTransport,
        spool_dir: Path,
        blob_dir: Path,
        api: ApiClient,
    ) -> None:
        self.options = options
        self.sender_id = sender_id
        self._codec = codec
        self.buffer = Buffer(max_bytes=options.buffer_max_bytes, wake=self.wake)
        self._transport = transport
        self.spool_dir = spool_dir
        self._spool = SpoolWriter(
            spool_dir,
            writer_id=self.sender_id,
            max_segment_bytes=options.spool_segment_bytes,
            max_bytes=options.spool_max_bytes,
            min_free_bytes=options.spool_min_free_bytes,
        )
        self.blob_dir = blob_dir
        self.uploader = BlobUploader(
            client=api,
            directory=blob_dir,
            timeout_s=options.blob_timeout_s,
            on_change=self._notify_threadsafe,
        )
        self._state_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._start_on_wake = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        # Everything below is touched only on the sender thread.
        self._mode = Mode.CONNECTING
        self._connected = False
        self._inflight: dict[int, Message] = {}
        self._inflight_bytes = 0
        self._tokens = itertools.count()
        self._spool_pending = 0
        self._last_spool_sync = 0.0
        self._sent = self._spooled = self._replayed = 0
        self._last_error: str | None = None
        self._warned_offline = False
        self._held: deque[Message] = deque()
        self._held_bytes = 0
        self._warned_hold_full = False
        #: Set by close before it stops the supervisor (no new connect attempts after).
        self._stopping = False

    def __repr__(self) -> str:
        return f"Sender(id={self.sender_id[:8]}, mode={self._mode.value}, spool={self.spool_dir})"

    # ---- any thread ----------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def start(self, *, wait: bool = True) -> None:
        """Start the thread and its loop (idempotent); ``wait`` until the loop runs."""
        with self._state_lock:
            if self._thread is not None:
                return
            if self._closed:
                raise ProducerError("this workspace's sender is closed")
            ready = threading.Event()
            install_kafka_log_folding()  # aiokafka's lines on this thread: see _kafka_logs
            self._thread = threading.Thread(
                target=self._thread_main, args=(ready,), name=SENDER_THREAD, daemon=True
            )
            self._thread.start()
        interval = self.options.gil_switch_interval_s
        if interval is not None and sys.getswitchinterval() > interval:
            sys.setswitchinterval(interval)
        _register_for_exit(self)
        if wait:
            ready.wait()

    def start_on_first_event(self) -> None:
        """Start the thread when the buffer first takes something (a forked child's
        sender: most data-loader workers never log, and need no thread or connection)."""
        self._start_on_wake = True
        self.buffer.wake_bytes = 0  # the first append calls wake()

    def wake(self) -> None:
        """Ask the sender to drain the buffer now instead of after ``linger_ms``."""
        if self._start_on_wake:
            self._start_on_wake = False
            # Called with the buffer lock held: start without waiting for the loop; its
            # first pass drains what was logged meanwhile.
            self.buffer.wake_bytes = max(self.buffer.max_bytes // 16, 1)
            if not self._closed:
                self.start(wait=False)
            return
        loop = self._loop
        if loop is not None:
            with suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(self._wakeup.set)

    def _notify_threadsafe(self) -> None:
        loop = self._loop
        if loop is not None:
            with suppress(RuntimeError):
                loop.call_soon_threadsafe(self._changed.set)

    def stage_blob(self, source: BinaryIO) -> tuple[str, int]:
        return stage(self.blob_dir, source)

    def submit_blob(self, sha256: str) -> None:
        self.uploader.submit(sha256)

    def stats(self) -> ProducerStats:
        return ProducerStats(
            mode=self._mode.value,
            events_sent=self._sent,
            events_spooled=self._spooled,
            events_replayed=self._replayed,
            events_dropped=self.buffer.dropped,
            events_in_flight=len(self._inflight),
            buffered_bytes=self.buffer.nbytes,
            blobs_uploaded=self.uploader.uploaded,
            blobs_pending=self.uploader.pending,
            blobs_dropped=self.uploader.dropped,
            last_error=self._last_error,
            events_held=len(self._held),
        )

    def pending_events(self) -> int:
        return len(self._inflight) + self._spool_pending + len(self._held)

    def _call(self, coro: Coroutine[Any, Any, None], operation: str, timeout_s: float) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            coro.close()
            return
        try:
            future = asyncio.run_coroutine_threadsafe(coro, loop)
        except RuntimeError:  # the loop stopped between the check and the call
            coro.close()
            return
        try:
            future.result(timeout=max(timeout_s, 0.0))
        except TimeoutError:
            future.cancel()
            raise ProducerTimeoutError(operation, timeout_s, self.pending_events()) from None

    def flush(self, timeout_s: float) -> None:
        """Wait until everything logged so far is acknowledged by Kafka (and blobs uploaded)."""
        if self._closed:
            return
        self._call(self._flush(), "flush", timeout_s)

    def close(self, timeout_s: float) -> None:
        """Deliver what fits in ``timeout_s``, spool the rest, stop. Idempotent."""
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
        deadline = time.monotonic() + timeout_s
        with self.buffer.lock:
            for stream in self.buffer.streams:
                stream.closed = True
        self._call(self._shutdown(deadline), "close", timeout_s + 1.0)
        if self._thread is not None:
            self._thread.join(timeout=max(deadline + 1.0 - time.monotonic(), 0.0))

    # ---- sender thread --------------------------------------------------------------

    def _thread_main(self, ready: threading.Event) -> None:
        try:
            asyncio.run(self._main(ready))
        except Exception:
            logger.exception("the runstream sender thread failed; events stay in its buffer")

    async def _main(self, ready: threading.Event) -> None:
        self._wakeup = asyncio.Event()
        self._changed = asyncio.Event()
        self._attention = asyncio.Event()
        self._connect_attempted = asyncio.Event()
        self._halt = asyncio.Event()
        self._done = asyncio.Event()
        self._pump_lock = asyncio.Lock()
        self._loop = asyncio.get_running_loop()
        ready.set()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._pump_loop())
            self._supervisor = tasks.create_task(self._supervise())
            tasks.create_task(self._heartbeats())
        await self._done.wait()

    async def _sleep(self, seconds: float, event: asyncio.Event | None = None) -> None:
        """Sleep, returning early on halt (or on ``event``)."""
        waits = [asyncio.ensure_future(self._halt.wait())]
        if event is not None:
            waits.append(asyncio.ensure_future(event.wait()))
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def _pump_loop(self) -> None:
        await self._connect_attempted.wait()
        linger_s = self.options.linger_ms / 1000
        while not self._halt.is_set():
            await self._sleep(linger_s, self._wakeup)
            self._wakeup.clear()
            await self._pump()
            self._sync_spool(max_age_s=1.0)

    async def _pump(self) -> None:
        handoff = sys.getswitchinterval() > GIL_HANDOFF_MAX_INTERVAL_S
        async with self._pump_lock:
            for stream, series, events in self.buffer.drain():
                if series:
                    ts = now_us()
                    max_bytes = self.options.batch_max_bytes - envelope_bytes(stream)
                    for i, record in enumerate(metric_batches(series, max_bytes=max_bytes)):
                        if i and handoff:
                            await asyncio.sleep(GIL_HANDOFF_S)
                        await self._emit(stream, "MetricBatch", record, new_event_id(), ts)
                    for points in series:
                        points.recycle()
                for event in events:
                    await self._emit(stream, event.kind, event.record, event.event_id, event.ts_us)
        self._changed.set()

    async def _emit(
        self,
        stream: Stream,
        kind: str,
        record: dict[str, Any],
        event_id: str,
        ts_us: int,
        *,
        precious: bool = False,
    ) -> None:
        seq = stream.next_seq
        event = event_dict(
            stream, seq=seq, event_id=event_id, ts_us=ts_us, kind=kind, record=record
        )
        try:
            data = self._codec.encode(event)
        except Exception:  # a bug: call sites validate and check sizes before enqueueing
            logger.exception("cannot encode a %s event of run %s; dropping it", kind, stream.run_id)
            self._count_drop(stream)
            return
        stream.next_seq = seq + 1
        precious = precious or kind == "Lifecycle"
        await self._route(Message(stream, stream.run_id.encode(), data, kind, seq, precious))

    def _behind(self) -> bool:
        """Whether logging is outrunning delivery: the buffer refilled past
        ``1/SPILL_FRACTION`` of its bound while this pass was still sending."""
        return self.buffer.nbytes * SPILL_FRACTION >= self.buffer.max_bytes

    async def _route(self, message: Message) -> None:
        if self._mode is Mode.ONLINE and (
            self._inflight_bytes >= self.options.max_inflight_bytes or self._behind()
        ):
            self._set_mode(Mode.SPOOLING)
        if self._mode is Mode.ONLINE:
            try:
                fut = await self._send_or_spill(message)
            except KafkaUnavailableError as exc:
                self._go_offline(exc)
            else:
                if fut is None:
                    self._set_mode(Mode.SPOOLING)
                else:
                    token = next(self._tokens)
                    self._inflight[token] = message
                    self._inflight_bytes += len(message.data)
                    fut.add_done_callback(functools.partial(self._on_ack, token))
                    return
        self._spool_put(message)

    async def _send_or_spill(self, message: Message) -> asyncio.Future[Any] | None:
        """Hand ``message`` to Kafka; ``None`` when it should go to the spool instead.

        A send waits while Kafka's queue for the partition is full (or its metadata is
        being fetched, or a leader elected). Waiting is fine while logging leaves the
        buffer room; once the buffer refills past ``1/SPILL_FRACTION`` of its bound
        (logging outruns Kafka) or the wait reaches ``send_block_s``, the send is given up
        and the message spilled — the replay, which waits up to ``send_block_s``, drains
        the spool at Kafka's speed and tells a broker that is down.

        The send is awaited in place, not as a task: the usual one only appends to
        aiokafka's batch and returns without a turn of the event loop. Each turn lets the
        GIL go (its ``epoll_wait``), and taking it back from a training loop that is
        running stalls the log call in progress (README, Performance). A wait is cut
        every ``SEND_POLL_S`` to check the buffer, and the send tried again: aiokafka
        awaits only before it appends, so a send cut short queued nothing.
        """
        deadline = time.monotonic() + self.options.send_block_s
        while True:
            left = deadline - time.monotonic()
            scope = asyncio.timeout(min(SEND_POLL_S, max(left, 0.0)))
            try:
                async with scope:
                    return await self._transport.send(message.key, message.data)
            except TimeoutError:
                if not scope.expired():
                    raise
            if left <= 0 or self._behind():
                return None

    def _on_ack(self, token: int, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled():
            exc: BaseException | None = KafkaUnavailableError("send cancelled", retriable=True)
        else:
            exc = fut.exception()  # always retrieved, so asyncio never logs it as unhandled
        message = self._inflight.pop(token, None)
        if message is None:
            return  # spooled by close() already
        self._inflight_bytes -= len(message.data)
        if exc is None:
            self._sent += 1
        else:
            error = transport_error(exc)
            if error.retriable:
                self._go_offline(error)
                self._spool_put(message)
            else:
                logger.warning("dropping an event Kafka will never accept: %s", error)
                self._count_drop(message.stream)
        self._changed.set()

    def _count_drop(self, stream: Stream | None) -> None:
        if stream is not None:
            self.buffer.count_drop(stream)
        else:
            with self.buffer.lock:
                self.buffer.dropped += 1

    def _spool_put(self, message: Message) -> None:
        try:
            self._spool.append(message.key, message.data)
        except SpoolError as exc:
            self._last_error = str(exc)
            if message.precious:
                self._hold(message)
            else:
                self._count_drop(message.stream)
        else:
            self._spooled += 1
            self._spool_pending += 1

    def _hold(self, message: Message) -> None:
        """Keep a message the spool refused in memory (bounded) until Kafka is back."""
        size = len(message.data)
        if len(self._held) >= MAX_HELD_EVENTS or self._held_bytes + size > MAX_HELD_BYTES:
            self._count_drop(message.stream)
            if not self._warned_hold_full:
                self._warned_hold_full = True
                logger.warning(
                    "runstream is dropping run status events: the spool under %s cannot take "
                    "them and %d are already held in memory (%d bytes); the count is reported "
                    "in heartbeats and Workspace.stats()",
                    self.spool_dir,
                    len(self._held),
                    self._held_bytes,
                )
            return
        self._held.append(message)
        self._held_bytes += size
        self._attention.set()

    def _sync_spool(self, max_age_s: float) -> None:
        if time.monotonic() - self._last_spool_sync < max_age_s:
            return
        self._last_spool_sync = time.monotonic()
        try:
            self._spool.sync()
        except SpoolError as exc:
            self._last_error = str(exc)

    def _set_mode(self, mode: Mode) -> None:
        if self._mode is Mode.CLOSED or mode is self._mode:
            return
        logger.debug("sender %s: %s -> %s", self.sender_id[:8], self._mode.value, mode.value)
        self._mode = mode
        if mode is not Mode.ONLINE:
            self._attention.set()
        self._changed.set()

    def _go_offline(self, exc: BaseException) -> None:
        self._last_error = str(transport_error(exc))
        if not self._warned_offline:
            self._warned_offline = True
            logger.warning(
                "runstream cannot reach Kafka (%s%s); events are spooled under %s and sent "
                "when it is back (or by `runstream sync`)",
                self._last_error,
                held_back(),
                self.spool_dir,
            )
        self._set_mode(Mode.OFFLINE)

    async def _supervise(self) -> None:
        backoff_s = 0.5
        while not self._halt.is_set() and not self._stopping:
            if not self._connected:
                try:
                    await asyncio.wait_for(self._transport.start(), self.options.connect_timeout_s)
                except (TimeoutError, KafkaUnavailableError) as exc:
                    self._go_offline(exc)
                    self._connect_attempted.set()
                    await self._sleep(backoff_s)
                    backoff_s = min(backoff_s * 2, MAX_BACKOFF_S)
                    continue
                self._connected = True
                self._connect_attempted.set()
            if self._mode is not Mode.ONLINE and self._mode is not Mode.CLOSED:
                if await self._replay_own():
                    backoff_s = 0.5
                    if self._warned_offline:
                        logger.info("runstream reached Kafka again; the spool is replayed%s",
                                    held_back())
                        self._warned_offline = False
                else:
                    # Start over with a fresh producer (new idempotence state): one that
                    # lived through a broker failure can be stuck in a fatal error.
                    self._connected = False
                    with suppress(KafkaUnavailableError):
                        await self._transport.stop(timeout_s=1.0)
                    await self._sleep(backoff_s)
                    backoff_s = min(backoff_s * 2, MAX_BACKOFF_S)
                    continue
            self._attention.clear()
            await self._sleep(MAX_BACKOFF_S, self._attention)

    async def _replay_own(self) -> bool:
        """Send this sender's spool in order, then the held events; True (and ONLINE) once
        the spool is empty and nothing is held."""
        while True:
            self._spool.seal()  # new messages go to a fresh segment meanwhile
            if self._spool.sealed:
                for path in list(self._spool.sealed):
                    if not await self._replay_segment(path):
                        return False
                    self._spool.replayed(path)
            elif self._held:
                if not await self._send_held():
                    return False
            else:
                self._set_mode(Mode.ONLINE)
                return True

    async def _replay_segment(self, path: Path) -> bool:
        with claim(path) as segment:
            if segment is None:
                # Gone means `runstream sync` delivered it; locked means it is doing so now.
                # (Spool I/O on this thread is by design: it is the sender's own disk queue.)
                return not path.exists()  # noqa: ASYNC240
            if segment.torn_bytes:
                logger.warning("spool segment %s ends in %d torn bytes", path, segment.torn_bytes)
            outcome = await deliver(
                self._transport,
                segment.records,
                window_bytes=self.options.max_inflight_bytes,
                send_block_s=self.options.send_block_s,
            )
            for error in outcome.rejected:
                logger.warning("dropping a spooled event Kafka will never accept: %s", error)
                self._count_drop(None)
            if outcome.failure is not None:
                self._go_offline(outcome.failure)
                return False
            segment.done()
        self._replayed += outcome.acked
        self._sent += outcome.acked
        self._spool_pending = max(self._spool_pending - len(segment.records), 0)
        self._changed.set()
        return True

    async def _send_held(self) -> bool:
        """Send the held events in order and await their acks; True once they are all
        acknowledged (or refused for good), False (all kept) on a retriable failure."""
        # In seq order per producer: a message whose send failed in flight was held after
        # newer ones that went straight to the hold.
        batch = sorted(self._held, key=lambda m: m.seq)
        outcome = await deliver(
            self._transport,
            [(m.key, m.data) for m in batch],
            window_bytes=self.options.max_inflight_bytes,
            send_block_s=self.options.send_block_s,
        )
        if outcome.failure is not None:
            self._go_offline(outcome.failure)
            return False
        for error in outcome.rejected:
            logger.warning("dropping a held event Kafka will never accept: %s", error)
            self._count_drop(None)
        for _ in batch:  # the first len(batch); events held meanwhile were appended after
            self._held_bytes -= len(self._held.popleft().data)
        self._sent += outcome.acked
        self._changed.set()
        # These runs may have ended during the outage: no heartbeat of theirs will carry
        # the drops to the server, so one more does (the held Lifecycle events' seqs are
        # below it; a Heartbeat is not a Lifecycle event, so this does not repeat).
        ended = {id(m.stream): m.stream for m in batch if m.kind == "Lifecycle" and m.stream}
        for stream in ended.values():
            if stream.dropped:
                record = {"dropped_events": stream.dropped}
                await self._emit(
                    stream, "Heartbeat", record, new_event_id(), now_us(), precious=True
                )
        return True

    async def _heartbeats(self) -> None:
        interval_s = self.options.heartbeat_interval_s
        while not self._halt.is_set():
            await self._sleep(interval_s)
            with self.buffer.lock:
                beating = [s for s in self.buffer.streams if s.heartbeat and not s.closed]
            for stream in beating:
                event = PendingEvent(
                    "Heartbeat", {"dropped_events": stream.dropped}, new_event_id(), now_us()
                )
                self.buffer.put_event(stream, event, HEARTBEAT_COST_BYTES)
            if beating:
                self._wakeup.set()

    def _events_delivered(self) -> bool:
        return (
            self._mode is Mode.ONLINE
            and not self._inflight
            and not self._held
            and not self._spool.has_pending()
        )

    def _is_quiet(self) -> bool:
        return self._events_delivered() and self.uploader.pending == 0

    def _is_settled_for_close(self) -> bool:
        """Nothing more will arrive by waiting: each side is delivered or failing."""
        events_done = self._events_delivered() or self._mode is Mode.OFFLINE
        blobs_done = self.uploader.pending == 0 or self.uploader.failing
        return events_done and blobs_done

    async def _wait_until(self, done: Callable[[], bool]) -> None:
        while not done():
            self._changed.clear()
            await self._changed.wait()

    async def _flush(self) -> None:
        await self._connect_attempted.wait()
        await self._pump()
        self._sync_spool(max_age_s=0.0)
        await self._wait_until(self._is_quiet)

    async def _settle_held(self, deadline: float) -> None:
        """At close: held events go to the spool if it has room now, else to Kafka if
        connected (within the budget left), else they are counted as dropped."""
        if not self._held:
            return
        held = sorted(self._held, key=lambda m: m.seq)
        self._held.clear()
        self._held_bytes = 0
        unsent: list[Message] = []
        for message in held:
            try:
                self._spool.append(message.key, message.data)
            except SpoolError as exc:
                self._last_error = str(exc)
                unsent.append(message)
            else:
                self._spooled += 1
                self._spool_pending += 1
        if unsent and self._connected:
            with suppress(TimeoutError):
                outcome = await asyncio.wait_for(
                    deliver(
                        self._transport,
                        [(m.key, m.data) for m in unsent],
                        window_bytes=self.options.max_inflight_bytes,
                        send_block_s=self.options.send_block_s,
                    ),
                    max(deadline - time.monotonic(), 0.0) / 2,  # the rest stops the transport
                )
                if outcome.failure is None:
                    self._sent += outcome.acked
                    unsent = []
                    for error in outcome.rejected:
                        logger.warning("dropping a held event Kafka will never accept: %s", error)
                        self._count_drop(None)
        if unsent:
            # Some may have reached Kafka before a failure; counting them all errs on the
            # side of reporting a drop that did not happen.
            for message in unsent:
                self._count_drop(message.stream)
            logger.warning(
                "%d runstream run status events could neither be spooled under %s (%s) nor "
                "sent before close; they are dropped and counted",
                len(unsent),
                self.spool_dir,
                self._last_error,
            )

    async def _shutdown(self, deadline: float) -> None:
        try:
            reserve_s = min(1.0, max(deadline - time.monotonic(), 0.0) / 10)

            def budget_s() -> float:
                return max(deadline - time.monotonic() - reserve_s, 0.0)

            with suppress(TimeoutError):
                await asyncio.wait_for(self._connect_attempted.wait(), budget_s())
            await self._pump()
            # Wait for delivery while it can still happen; when offline, the spool (already
            # on disk) is the answer and the process should not linger.
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wait_until(self._is_settled_for_close), budget_s())
            # No more connects or replays: a connect finishing after the transport's stop
            # would leak a producer, and a replay is pointless once the deadline is near.
            # Python 3.11's wait_for may swallow a cancel that meets a connect attempt
            # failing at that moment; the supervisor then sleeps its backoff and goes on.
            self._stopping = True
            while not self._supervisor.done():
                self._supervisor.cancel()
                await asyncio.wait({self._supervisor}, timeout=0.1)
            self._mode = Mode.CLOSED
            await self._pump()  # anything logged meanwhile goes straight to the spool
            left_in_flight = list(self._inflight.values())
            self._inflight.clear()
            self._inflight_bytes = 0
            for message in left_in_flight:
                self._spool_put(message)
            await self._settle_held(deadline)
            self._spool.close()
            self.uploader.stop()
            self._halt.set()
            try:
                await self._transport.stop(max(deadline - time.monotonic(), 0.0))
            except KafkaUnavailableError as exc:
                logger.debug("closing the Kafka producer: %s", exc)
            if self._spool_pending:
                logger.warning(
                    "%d runstream events were not delivered before close; they are kept under "
                    "%s and sent by `runstream sync`%s",
                    self._spool_pending,
                    self.spool_dir,
                    held_back(),
                )
        finally:
            self._halt.set()
            self._connect_attempted.set()
            self._done.set()


_live: weakref.WeakSet[Sender] = weakref.WeakSet()
_live_lock = threading.Lock()
_exit_hook_installed = False
#: In a fork()ed child: multiprocessing's workers leave through os._exit (no atexit), so
#: senders there also close from multiprocessing's own exit finalizers.
_forked = False
_finalizer_installed = False


def _register_for_exit(sender: Sender) -> None:
    global _exit_hook_installed, _finalizer_installed
    with _live_lock:
        _live.add(sender)
        if not _exit_hook_installed:
            atexit.register(close_all_at_exit)
            _exit_hook_installed = True
        if _forked and not _finalizer_installed:
            from multiprocessing import util

            util.Finalize(None, close_all_at_exit, exitpriority=100)
            _finalizer_installed = True


def forget_senders_after_fork() -> None:
    """In a fork()ed child: the parent's senders (their threads did not survive the fork)
    are not this process's to close."""
    global _live, _live_lock, _forked, _finalizer_installed
    _live = weakref.WeakSet()
    _live_lock = threading.Lock()
    _forked = True
    _finalizer_installed = False


def close_all_at_exit() -> None:
    """End the runs this process owns that are still open (``_exit.py``: Failed, or
    Canceled after Ctrl-C or SIGTERM), then close every open sender, each within its own
    ``close_timeout_s``."""
    try:
        end_owned_runs_at_exit()
    except Exception:
        logger.exception("runstream: could not end the runs still open at exit")
    with _live_lock:
        senders = list(_live)
    for sender in senders:
        try:
            sender.close(sender.options.close_timeout_s)
        except ProducerError as exc:
            logger.warning("runstream: %s", exc)


close_senders_with(close_all_at_exit)
