"""The Kafka side of a sender: one idempotent ``AIOKafkaProducer`` (acks=all).

Idempotence makes the broker drop the duplicates of its own retries; duplicates from
spool replays (a message may have reached the broker before its ack was lost) are
dropped downstream by ``event_id``. Messages are keyed by run id, so one run's events
share a partition and one producer's events stay in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordTooLargeError

from ._errors import KafkaUnavailableError
from ._kafka_security import KafkaSecurity, KafkaSecurityError

COMPRESSIONS = ("lz4", "zstd")
#: Room for the Kafka record and batch headers on top of the largest event.
RECORD_OVERHEAD_BYTES = 64 * 1024
#: After a failed TLS start: time for the dropped connections' close_notify exchange.
TLS_CLOSE_GRACE_S = 0.25


def transport_error(exc: BaseException) -> KafkaUnavailableError:
    """Map an aiokafka/asyncio failure; only size errors are not worth retrying."""
    if isinstance(exc, KafkaUnavailableError):
        return exc
    if isinstance(exc, TimeoutError):
        return KafkaUnavailableError("Kafka did not accept the message in time", retriable=True)
    too_large = isinstance(exc, MessageSizeTooLargeError | RecordTooLargeError)
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return KafkaUnavailableError(f"Kafka send failed: {detail}", retriable=not too_large)


class KafkaTransport:
    def __init__(
        self,
        *,
        bootstrap: str,
        topic: str,
        compression: str,
        max_message_bytes: int,
        batch_bytes: int,
        request_timeout_ms: int,
        client_id: str,
        security: KafkaSecurity | None = None,
    ) -> None:
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {COMPRESSIONS}, not {compression!r}")
        self.bootstrap = bootstrap
        self.topic = topic
        self.security = security or KafkaSecurity()
        self._config: dict[str, Any] = {
            "bootstrap_servers": bootstrap,
            "client_id": client_id,
            "enable_idempotence": True,
            "acks": "all",
            "compression_type": compression,
            "max_request_size": max_message_bytes + RECORD_OVERHEAD_BYTES,
            "max_batch_size": batch_bytes,
            "linger_ms": 5,
            "request_timeout_ms": request_timeout_ms,
        }
        self._producer: Any = None
        #: Closes still running in the background (kept referenced until they finish).
        self._closing: set[asyncio.Future[None]] = set()

    def __repr__(self) -> str:
        return f"KafkaTransport(bootstrap={self.bootstrap!r}, topic={self.topic!r})"

    async def start(self) -> None:
        """Connect; raises ``KafkaUnavailableError`` (retriable) when no broker answers, or
        when it refuses the credentials or TLS setup (the message says why; the events wait
        in the spool for a fixed configuration and ``runstream sync``)."""
        if self._producer is not None:
            return
        try:
            # Built per start: a rotated certificate file is read on the next connection.
            security = self.security.client_kwargs()
        except ValueError as exc:
            raise KafkaUnavailableError(str(exc), retriable=True) from exc
        producer = AIOKafkaProducer(**self._config, **security)
        try:
            async with self.security.explain_failures(self.bootstrap):
                await producer.start()
        except BaseException as exc:  # also a cancelled (timed out) start: never leak it
            await asyncio.shield(producer.stop())
            if self.security.tls:
                # aiokafka drops a failed connection without waiting for its TLS shutdown;
                # a loop that ends right after (the sender's close) would leak its socket.
                await asyncio.shield(asyncio.sleep(TLS_CLOSE_GRACE_S))
            if isinstance(exc, KafkaSecurityError):
                raise KafkaUnavailableError(str(exc), retriable=True) from exc
            if isinstance(exc, KafkaError | OSError):
                raise KafkaUnavailableError(
                    f"no Kafka broker reachable at {self.bootstrap}: {exc}", retriable=True
                ) from exc
            raise
        self._producer = producer

    async def send(self, key: bytes, value: bytes) -> asyncio.Future[Any]:
        """Hand one message to the producer; the returned future resolves on the broker ack."""
        if self._producer is None:
            raise KafkaUnavailableError("Kafka transport is not started", retriable=True)
        try:
            fut: asyncio.Future[Any] = await self._producer.send(self.topic, value=value, key=key)
        except KafkaError as exc:
            raise transport_error(exc) from exc
        return fut

    async def stop(self, timeout_s: float = 30.0) -> None:
        """Detach the producer and close it, waiting at most ``timeout_s``.

        With the broker down, aiokafka's close waits for pending batches to expire
        (``request_timeout_ms``); past ``timeout_s`` it goes on in the background, and
        its messages fail into their ack callbacks (which spool them), so nothing is lost.
        ``start`` may be called again at once: it builds a fresh producer.
        """
        producer, self._producer = self._producer, None
        if producer is None:
            return
        stopping = asyncio.ensure_future(producer.stop())
        self._closing.add(stopping)
        stopping.add_done_callback(self._closing.discard)
        done, _ = await asyncio.wait({stopping}, timeout=max(timeout_s, 0.0))
        if done and not stopping.cancelled() and (exc := stopping.exception()):
            raise transport_error(exc) from exc

    async def __aenter__(self) -> KafkaTransport:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


@dataclass
class Delivery:
    """Outcome of ``deliver``: how many were acknowledged, and what went wrong."""

    acked: int = 0
    #: First retriable failure; the records from there on may not have arrived.
    failure: KafkaUnavailableError | None = None
    #: Records Kafka will never accept (e.g. too large); they are not retried.
    rejected: list[KafkaUnavailableError] = field(default_factory=list)


async def deliver(
    transport: KafkaTransport,
    records: list[tuple[bytes, bytes]],
    *,
    window_bytes: int,
    send_block_s: float,
    on_acked: Callable[[int], None] | None = None,
) -> Delivery:
    """Send ``records`` in order and await every ack, ``window_bytes`` unacknowledged at most.

    Stops at the first retriable failure (the caller keeps the records and retries them
    all later; duplicates are dropped downstream by ``event_id``).
    """
    outcome = Delivery()
    futures: list[asyncio.Future[Any]] = []
    window = 0

    async def settle() -> None:
        nonlocal futures, window
        results = await asyncio.gather(*futures, return_exceptions=True)
        futures, window = [], 0
        acked = 0
        for result in results:
            if not isinstance(result, BaseException):
                acked += 1
                continue
            error = transport_error(result)
            if not error.retriable:
                outcome.rejected.append(error)
            elif outcome.failure is None:
                outcome.failure = error
        outcome.acked += acked
        if on_acked is not None and acked:
            on_acked(acked)

    for key, value in records:
        try:
            futures.append(await asyncio.wait_for(transport.send(key, value), send_block_s))
        except (TimeoutError, KafkaUnavailableError) as exc:
            outcome.failure = transport_error(exc)
            break
        window += len(value)
        if window >= window_bytes:
            await settle()
            if outcome.failure is not None:
                break
    await settle()
    return outcome
