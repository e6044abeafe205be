"""The Server-Sent Events wire: frames buffered per client, written with a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Final

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from ingest.db.values import dumps

__all__ = ["SHUTDOWN_GRACE_S", "ClientGoneError", "EventMetrics", "SseWriter", "end_stream"]

SHUTDOWN_GRACE_S: Final = 1.0


class ClientGoneError(Exception):
    """The client disconnected, or stopped reading for longer than the write timeout."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason



class SseWriter:
    """Frames events into a buffer and writes it with a deadline."""

    def __init__(self, request: web.Request, response: web.StreamResponse, *,
                 write_timeout_s: float, written: Counter) -> None:
        self._request = request
        self._response = response
        self._write_timeout_s = write_timeout_s
        self._written = written
        self._pending: list[str] = []
        self._pending_bytes = 0
        self._pending_events: dict[str, int] = {}
        self.last_write = asyncio.get_running_loop().time()

    def event(self, kind: str, data: Mapping[str, Any], event_id: str | None = None) -> None:
        frame = f"event: {kind}\n"
        if event_id is not None:
            frame += f"id: {event_id}\n"
        frame += f"data: {dumps(data)}\n\n"
        self._pending.append(frame)
        self._pending_bytes += len(frame)
        self._pending_events[kind] = self._pending_events.get(kind, 0) + 1

    def raw(self, text: str) -> None:
        self._pending.append(text)
        self._pending_bytes += len(text)

    @property
    def pending_bytes(self) -> int:
        return self._pending_bytes

    def abort(self) -> None:
        """Cut the connection now (the client sees the stream end without its last chunk).

        ``abort``, not ``close``: close would wait to send the buffered bytes first, which
        a client that stopped reading never lets happen."""
        transport = self._request.transport
        if transport is not None:
            transport.abort()

    def check_connected(self) -> None:
        transport = self._request.transport
        if transport is None or transport.is_closing():
            raise ClientGoneError("client_gone")

    async def flush(self) -> None:
        if not self._pending:
            return
        data = "".join(self._pending).encode()
        self._pending.clear()
        self._pending_bytes = 0
        self.check_connected()
        try:
            async with asyncio.timeout(self._write_timeout_s):
                await self._response.write(data)
        except TimeoutError:
            raise ClientGoneError("slow_client") from None
        except ConnectionError:
            raise ClientGoneError("client_gone") from None
        self.last_write = asyncio.get_running_loop().time()
        for kind, count in self._pending_events.items():
            self._written.labels(kind).inc(count)
        self._pending_events.clear()


class EventMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.streams = Gauge(
            "runstream_sse_streams", "Open Server-Sent Event streams, by kind (run, compute).",
            ["kind"], registry=registry)
        self.events = Counter(
            "runstream_sse_events", "Server-Sent Events written, by event type.",
            ["event"], registry=registry)
        self.closed = Counter(
            "runstream_sse_closed",
            "Server-Sent Event streams ended, by reason (client_gone, slow_client, shutdown, "
            "error).", ["reason"], registry=registry)


async def end_stream(writer: SseWriter, response: web.StreamResponse) -> None:
    """Finish the chunked body cleanly, or cut the connection if the client does not read."""
    try:
        async with asyncio.timeout(SHUTDOWN_GRACE_S):
            await response.write_eof()
    except (TimeoutError, ConnectionError):
        writer.abort()
