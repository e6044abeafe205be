"""Live updates as Server-Sent Events: a run's new points, log lines and status; a compute
target's queue.

Endpoints::

    GET /v1/runs/{run_id}/events      events "point", "log", "status"
    GET /v1/compute/{target}/events   events "queue"

Protocol. The ingest worker NOTIFYs inside its batch transaction (``ingest/db/notices.py``), so a
notice arrives exactly when the batch COMMITs. The API holds ONE ``ChangeListener``
connection that LISTENs and wakes the streams concerned in-process; each stream then
reads what is new for it from the tables and writes it out. Notices carry only names
(run ids, targets), never data: a stream that was woken many times reads once, and one
that missed notices (listener reconnecting) loses nothing, because it reads from its own
cursor. While the listener is down, streams poll every ``poll_interval_s`` (0.5 s)
instead. Every ``tick_s`` (5 s) a run stream re-reads its status and a queue stream its
queue, woken or not: that is how changes no commit announces are seen (a run turning
NotResponding, runs leaving a queue's 1-hour windows).

Cursors and event ids: ``ingest/api/live/cursors.py``.

Events (``data`` is one JSON object per event; non-finite numbers are the strings
"NaN", "Infinity", "-Infinity", and a string value spelled like one of them is
``{"str": "NaN"}``, as everywhere in the API)::

    event: point   {"name", "step", "value", "rank", "time"}
    event: log     {"stream", "line", "rank", "time"}
    event: status  {"run_id", "status", "error", "status_times": {status: time|null}}
    event: queue   QueueState (see GET /v1/compute/{target})

The first event is always the current "status" (or "queue"). In each round a stream
reads the status first and writes it last, after the points and lines read in that
round, so a line committed before a status change is always sent before that change.
``types=point,log,status`` (default all) limits a run stream to some events; a client
that only needs status and logs (``wait_for_completion``) should say so.

Flow control. Nothing is queued per client but the socket: each round reads a bounded
page (``PAGE_ROWS`` rows), writes it, and reads the next only after the write went
through, so a client that reads slowly is served at its own pace from the database.
A write that cannot complete within ``write_timeout_s`` (the client stopped reading and
the socket buffers are full) drops the connection: memory stays bounded and other
streams are unaffected (they only share the listener, which never waits for anyone).
Disconnects are seen at the next write or within a second (the transport is checked
whenever the stream wakes). A comment line is sent after ``keepalive_s`` (15 s) of
silence, so proxies and clients see a live connection. On shutdown every stream ends at
once (``close``) and one stuck writing to a client that does not read is cut after
``SHUTDOWN_GRACE_S`` (1 s), so ``HttpServer.stop`` does not wait for clients.

Reads go through the read path's pool (``ReadStore``): a database outage answers 503
before a stream starts and ends a running one (the client resumes by its id). Metrics:
``runstream_sse_streams{kind}`` open streams, ``runstream_sse_events_total{event}``
events written, ``runstream_sse_closed_total{reason}`` streams ended (client_gone,
slow_client, shutdown, error).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import asyncpg
from aiohttp import web
from prometheus_client import CollectorRegistry

from ingest.api.http import EVENT_STREAM, RouteSpec, json_error
from ingest.api.live.cursors import parse_event_id
from ingest.api.live.sse import (
    SHUTDOWN_GRACE_S,
    ClientGoneError,
    EventMetrics,
    SseWriter,
    end_stream,
)
from ingest.api.live.streams import QueueStream, RunStream, queue_of, run_status, stream_heads
from ingest.api.params import query_parameter, str_param, str_params
from ingest.api.routes.runs import RUN_ID_PARAMETER
from ingest.api.shapes import empty_queue_state
from ingest.db.notices import ChangeListener, Subscription
from ingest.db.reads import DatabaseUnavailableError, ReadStore
from ingest.settings import Secret

__all__ = ["EVENT_TYPES", "EventRoutes", "LiveUpdates", "StreamOptions"]

logger = logging.getLogger(__name__)

EVENT_TYPES: Final = ("point", "log", "status")
DEFAULT_KEEPALIVE_S: Final = 15.0
DEFAULT_WRITE_TIMEOUT_S: Final = 10.0
DEFAULT_TICK_S: Final = 5.0
DEFAULT_POLL_INTERVAL_S: Final = 0.5
#: How often a quiet stream checks that its client is still connected.
LIVENESS_CHECK_S: Final = 1.0
RETRY_MS: Final = 2000


@dataclass(frozen=True, kw_only=True)
class StreamOptions:
    """Timing of every stream (the defaults are the documented protocol)."""

    keepalive_s: float = DEFAULT_KEEPALIVE_S
    write_timeout_s: float = DEFAULT_WRITE_TIMEOUT_S
    tick_s: float = DEFAULT_TICK_S
    poll_interval_s: float = DEFAULT_POLL_INTERVAL_S


class LiveUpdates:
    """What the SSE routes need, tied to an app's lifetime: the ``ChangeListener`` (its
    own connection) next to the read path's pool (``reads``, opened by the app).

    ``install(app)`` starts the listener on startup and stops it on cleanup, and ends
    the streams on shutdown (before aiohttp waits for handlers to finish).
    """

    def __init__(self, *, dsn: Secret, reads: ReadStore, registry: CollectorRegistry,
                 options: StreamOptions | None = None) -> None:
        self.listener = ChangeListener(dsn=dsn.value)
        self.routes = EventRoutes(reads=reads, listener=self.listener, registry=registry,
                                  options=options)

    def __repr__(self) -> str:
        return f"LiveUpdates(listener={self.listener!r})"

    def specs(self) -> list[RouteSpec]:
        return self.routes.specs()

    def install(self, app: web.Application) -> None:
        app.cleanup_ctx.append(self._lifetime)
        app.on_shutdown.append(self.routes.on_shutdown)

    async def _lifetime(self, app: web.Application) -> AsyncIterator[None]:
        async with self.listener:
            yield


_TARGET_PARAM: Final = {"name": "target", "in": "path", "required": True,
                        "schema": {"type": "string"}}
_LAST_ID_PARAMS: Final = [
    {"name": "Last-Event-ID", "in": "header", "required": False,
     "description": "Resume after this event id (sent by EventSource on reconnect).",
     "schema": {"type": "string"}},
    query_parameter("last_event_id", 'As Last-Event-ID, for clients that cannot set '
                    'headers; "0_0" replays from the beginning.', {"type": "string"}),
]
_TYPES_PARAM: Final = query_parameter(
    "types", "Which events (repeated, or comma-separated); default all.",
    {"type": "string", "enum": list(EVENT_TYPES)}, repeatable=True)


def _stream_content(description: str) -> dict[str, Any]:
    return {EVENT_STREAM: {"schema": {"type": "string", "description": description}}}


class EventRoutes:
    """The two SSE endpoints, over the read path's pool and a ``ChangeListener``."""

    def __init__(
        self,
        *,
        reads: ReadStore,
        listener: ChangeListener,
        registry: CollectorRegistry,
        options: StreamOptions | None = None,
    ) -> None:
        self._reads = reads
        self._listener = listener
        options = options or StreamOptions()
        self._keepalive_s = options.keepalive_s
        self._write_timeout_s = options.write_timeout_s
        self._tick_s = options.tick_s
        self._poll_interval_s = options.poll_interval_s
        self._metrics = EventMetrics(registry)
        self._closing = asyncio.Event()
        self._open: set[SseWriter] = set()
        self._all_closed = asyncio.Event()

    def specs(self) -> list[RouteSpec]:
        return [
            RouteSpec(
                method="GET",
                path="/v1/runs/{run_id}/events",
                handler=self.run_events,
                operation_id="runEvents",
                summary="Live updates of one run (Server-Sent Events): point, log, status.",
                responses={200: "An event stream; the first event is the current status.",
                           400: "Bad types or event id.", 404: "No such run."},
                response_content={200: _stream_content(
                    'Events "point" {name, step, value, rank, time}, "log" {stream, line, '
                    'rank, time}, "status" {run_id, status, error, status_times}; comment '
                    "lines every 15 s of silence; ids resume with Last-Event-ID.")},
                extra={"parameters": [RUN_ID_PARAMETER, _TYPES_PARAM, *_LAST_ID_PARAMS]},
            ),
            RouteSpec(
                method="GET",
                path="/v1/compute/{target}/events",
                handler=self.compute_events,
                operation_id="computeEvents",
                summary="Live queue state of one compute target (Server-Sent Events).",
                responses={200: "An event stream; the first event is the current queue.",
                           404: "No run ever used this compute target."},
                response_content={200: _stream_content(
                    'Events "queue" with the QueueState of GET /v1/compute/{target} whenever '
                    "it changes; comment lines every 15 s of silence.")},
                extra={"parameters": [_TARGET_PARAM]},
            ),
        ]

    def close(self) -> None:
        """Tell every open stream to end (server shutdown); new ones end at once too."""
        self._closing.set()
        self._listener.wake_all()

    async def on_shutdown(self, app: web.Application) -> None:
        """``app.on_shutdown`` hook: end the streams, so the server's graceful shutdown
        does not wait for clients; a stream stuck writing to a client that does not read
        is cut after ``SHUTDOWN_GRACE_S``."""
        self.close()
        if self._open:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_closed.wait(), SHUTDOWN_GRACE_S)
        for writer in list(self._open):
            writer.abort()

    # -- /v1/runs/{run_id}/events ---------------------------------------------------------

    async def run_events(self, request: web.Request) -> web.StreamResponse:
        run_id = request.match_info["run_id"]
        try:
            types = _parse_types(str_params(request, "types"))
        except ValueError as exc:
            return json_error(400, f"types: unknown event type {exc}; use {', '.join(EVENT_TYPES)}")
        last_id = request.headers.get("Last-Event-ID") or str_param(request, "last_event_id")
        resume = None
        if last_id:
            try:
                resume = parse_event_id(last_id)
            except ValueError:
                return json_error(400, "last_event_id: not an event id of this stream")
        reads = self._reads
        # Subscribe before reading anything, so a commit between the two still wakes us.
        with self._listener.subscribe(runs=[run_id]) as sub:
            status = await run_status(reads, run_id)
            if status is None:
                return json_error(404, f"no run {run_id!r}")
            if resume is None:
                points, logs = await stream_heads(reads, run_id)
            else:
                points, logs = resume
            stream = RunStream(reads, run_id, status, types=types, points=points, logs=logs)
            return await self._serve(request, "run", sub, stream)

    # -- /v1/compute/{target}/events ------------------------------------------------------

    async def compute_events(self, request: web.Request) -> web.StreamResponse:
        target = request.match_info["target"]
        with self._listener.subscribe(targets=[target]) as sub:
            state = await queue_of(self._reads, target)
            if state is None:
                # Submitted to, or served by an agent, before its first run is stored: the
                # stream starts empty (the studio opens it with the target's page).
                if not await self._reads.target_named(target):
                    return json_error(404, f"no compute target {target!r}")
                state = empty_queue_state(target)
            stream = QueueStream(self._reads, target, state)
            return await self._serve(request, "compute", sub, stream)

    # -- the loop both share --------------------------------------------------------------

    async def _serve(self, request: web.Request, kind: str, sub: Subscription,
                     stream: RunStream | QueueStream) -> web.StreamResponse:
        response = web.StreamResponse(headers={
            "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        response.content_type = EVENT_STREAM
        response.charset = "utf-8"
        await response.prepare(request)
        writer = SseWriter(request, response, write_timeout_s=self._write_timeout_s,
                           written=self._metrics.events)
        writer.raw(f"retry: {RETRY_MS}\n\n")
        loop = asyncio.get_running_loop()
        self._metrics.streams.labels(kind).inc()
        self._open.add(writer)
        self._all_closed.clear()
        reason = "shutdown"
        try:
            stream.start(writer)
            await writer.flush()
            await stream.round(writer, full=True)  # what a resumed stream missed
            await writer.flush()
            next_tick = loop.time() + self._tick_s
            while not self._closing.is_set():
                quiet_until = min(writer.last_write + self._keepalive_s, next_tick)
                interval = self._tick_s if self._listener.connected else self._poll_interval_s
                timeout = max(0.0, min(quiet_until - loop.time(), LIVENESS_CHECK_S, interval))
                woken = await sub.wait(timeout)
                if self._closing.is_set():
                    break
                writer.check_connected()
                now = loop.time()
                if woken or not self._listener.connected:
                    await stream.round(writer, full=True)
                elif now >= next_tick:
                    next_tick = now + self._tick_s
                    await stream.round(writer, full=False)
                if not writer.pending_bytes and now - writer.last_write >= self._keepalive_s:
                    writer.raw(": keep-alive\n\n")
                await writer.flush()
        except ClientGoneError as exc:
            reason = exc.reason
            if reason == "slow_client":
                logger.info("dropping a slow %s event stream (no progress in %.0f s)",
                            kind, self._write_timeout_s)
            writer.abort()
        except (DatabaseUnavailableError, asyncpg.PostgresError):
            # Headers are sent: all we can do is end the stream; the client reconnects
            # with its Last-Event-ID and loses nothing.
            logger.warning("%s event stream ended by a database error", kind, exc_info=True)
            reason = "error"
        except Exception:
            # Past prepare() the error middleware can no longer answer; end the stream.
            logger.exception("%s event stream failed", kind)
            reason = "error"
        finally:
            self._open.discard(writer)
            if not self._open:
                self._all_closed.set()
            self._metrics.streams.labels(kind).dec()
            self._metrics.closed.labels(reason).inc()
        if reason in ("shutdown", "error"):
            await end_stream(writer, response)
        return response


def _parse_types(values: Sequence[str]) -> frozenset[str]:
    if not values:
        return frozenset(EVENT_TYPES)
    chosen = {part.strip() for value in values for part in value.split(",") if part.strip()}
    unknown = chosen - set(EVENT_TYPES)
    if unknown:
        raise ValueError(", ".join(sorted(unknown)))
    if not chosen:
        raise ValueError("(empty)")
    return frozenset(chosen)
