"""Live updates as Server-Sent Events: a run's new points, log lines and status; a compute
target's queue.

Endpoints::

    GET /v1/runs/{run_id}/events      events "point", "log", "status"
    GET /v1/compute/{target}/events   events "queue"

Protocol. The ingest worker NOTIFYs inside its batch transaction (``notify.py``), so a
notice arrives exactly when the batch COMMITs. The API holds ONE ``ChangeListener``
connection that LISTENs and wakes the streams concerned in-process; each stream then
reads what is new for it from the tables and writes it out. Notices carry only names
(run ids, targets), never data: a stream that was woken many times reads once, and one
that missed notices (listener reconnecting) loses nothing, because it reads from its own
cursor. While the listener is down, streams poll every ``poll_interval_s`` (0.5 s)
instead. Every ``tick_s`` (5 s) a run stream re-reads its status and a queue stream its
queue, woken or not: that is how changes no commit announces are seen (a run turning
NotResponding, runs leaving a queue's 1-hour windows).

Cursor. A run's batches commit one after another (one run → one partition → one writer,
which writes batch after batch; a worker losing the partition finishes its in-flight
write before the next owner starts), and rows carry their transaction's time
(``ingested_at``, the transaction start). So per run, ingest time orders commits, and
"everything after (time, position in that transaction)" is exact. Points are read from
``runstream_data.metric_chunks`` in (ingested_at, producer_id, seq, series_idx, point)
order, log lines from ``runstream_data.log_lines`` in (ingested_at, producer_id, seq,
line) order: within one producer, the order it logged in. A stream starts after what is
already committed (new data only) unless it resumes from an event id.

Event ids and resuming. Every point and log event carries ``id: <points>_<logs>``, each
part ``<µs>`` (all of that transaction delivered) or ``<µs>+<n>`` (its first n items
delivered); "status" and "queue" events carry none (a reconnected stream starts with the
current state anyway). Reconnecting with ``Last-Event-ID`` (browsers do it by themselves; or the
``last_event_id`` query parameter) continues exactly after the last event received. The
id ``0_0`` means "from the beginning". Points logged more than ``LATE_POINTS_WINDOW`` (1 day)
before the cursor's transaction (a spool replayed days later) are not streamed: live
readers get live data, and the query never touches compressed history; the points are
in ``/v1/runs/{id}/metrics`` as usual.

Events (``data`` is one JSON object per event; non-finite numbers are the strings
"NaN", "Infinity", "-Infinity", as everywhere in the API)::

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
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import asyncpg
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from ingest.api.http import EVENT_STREAM, RouteSpec, json_error
from ingest.api.params import query_parameter, str_param, str_params
from ingest.api.routes.runs import RUN_ID_PARAMETER
from ingest.api.shapes import queue_state
from ingest.db.notices import ChangeListener, Subscription
from ingest.db.reads import DatabaseUnavailableError, ReadStore
from ingest.db.runstatus import STATUS_COLUMNS
from ingest.db.values import KIND_FLOAT, dumps, iso, micros_to_iso, typed_value
from ingest.settings import Secret

__all__ = [
    "EVENT_TYPES",
    "EventRoutes",
    "LiveUpdates",
    "StreamOptions",
    "StreamPosition",
    "parse_event_id",
]

logger = logging.getLogger(__name__)

EVENT_TYPES: Final = ("point", "log", "status")
DEFAULT_KEEPALIVE_S: Final = 15.0
DEFAULT_WRITE_TIMEOUT_S: Final = 10.0
DEFAULT_TICK_S: Final = 5.0
DEFAULT_POLL_INTERVAL_S: Final = 0.5
#: How often a quiet stream checks that its client is still connected.
LIVENESS_CHECK_S: Final = 1.0
#: Rows per read: point chunks (each up to one event's points) or log-line events.
PAGE_ROWS: Final = 32
#: Written to the socket once this much is pending (and at the end of every page).
FLUSH_BYTES: Final = 256 * 1024
LATE_POINTS_WINDOW: Final = timedelta(days=1)
RETRY_MS: Final = 2000
SHUTDOWN_GRACE_S: Final = 1.0

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

SQL_RUN_STATUS: Final = """
SELECT v.status, v.error, r.not_started_at, r.queued_at, r.preparing_at, r.running_at,
       r.finalizing_at, r.cancel_requested_at, r.completed_at, r.failed_at, r.canceled_at
FROM runstream.runs v JOIN runstream_data.runs r ON r.run_id = v.run_id
WHERE v.run_id = $1
"""
# The newest transaction already committed for a run: where a stream without an id starts.
SQL_POINTS_HEAD: Final = """
SELECT coalesce(max(ingested_at), now() - $2::interval) FROM runstream_data.metric_chunks
WHERE run_id = $1 AND time_min > now() - $2::interval
"""
SQL_LOGS_HEAD: Final = """
SELECT coalesce(max(ingested_at), 'epoch'::timestamptz) FROM runstream_data.log_lines
WHERE run_id = $1
"""
# $2 ingested_at of the cursor; $3..$5 the last row read in it (NULLs: none yet); rows of
# transaction $2 come first. `ingested_at >= $2` is what the (run_id, ingested_at) index
# serves; the row comparison then skips what was read.
SQL_POINTS_PAGE: Final = """
SELECT ingested_at, producer_id, seq, series_idx, name, rank, steps, "values", times,
       kinds, texts
FROM runstream_data.metric_chunks
WHERE run_id = $1 AND ingested_at >= $2 AND time_min > $2 - $7::interval
  AND ($3::text IS NULL OR (ingested_at, producer_id, seq, series_idx) > ($2, $3, $4, $5))
  AND ($8 OR ingested_at > $2)
ORDER BY ingested_at, producer_id, seq, series_idx
LIMIT $6
"""
SQL_LOGS_PAGE: Final = """
SELECT ingested_at, producer_id, seq, 0 AS series_idx, stream, rank, logged_at, lines
FROM runstream_data.log_lines
WHERE run_id = $1 AND ingested_at >= $2
  AND ($3::text IS NULL OR (ingested_at, producer_id, seq) > ($2, $3, $4))
  AND ($5 OR ingested_at > $2)
ORDER BY ingested_at, producer_id, seq
LIMIT $6
"""
Row = asyncpg.Record | Mapping[str, Any]


class ClientGoneError(Exception):
    """The client disconnected, or stopped reading for longer than the write timeout."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# -- positions and event ids ----------------------------------------------------------------


@dataclass(slots=True)
class StreamPosition:
    """Where one table's stream stands: transaction ``t`` (ingested_at), ``done`` items of
    it delivered (None: all of it), and the last row fully read in it (for paging)."""

    t: datetime
    done: int | None = None
    #: (producer_id, seq, series_idx) of the last row of ``t`` fully read.
    row: tuple[str, int, int] | None = None
    #: Items still to skip at the start of ``t`` (resuming mid-transaction).
    skip: int = 0

    @classmethod
    def after(cls, t: datetime) -> StreamPosition:
        return cls(t=t)

    def token(self) -> str:
        us = (self.t - _EPOCH) // timedelta(microseconds=1)
        return str(us) if self.done is None else f"{us}+{self.done}"

    @classmethod
    def from_token(cls, token: str) -> StreamPosition:
        us, plus, done = token.partition("+")
        t = _EPOCH + timedelta(microseconds=_nonnegative(us))
        if not plus:
            return cls(t=t)
        n = _nonnegative(done)
        return cls(t=t, done=n, skip=n)

    def take(self, t: datetime, key: tuple[str, int, int], n_items: int) -> range:
        """Account for a row read at ``t``; the indexes of its items to deliver."""
        if t != self.t:
            self.t, self.done, self.skip = t, 0, 0
        start = min(self.skip, n_items)
        self.skip -= start
        self.row = key
        return range(start, n_items)

    def delivered(self) -> None:
        self.done = (self.done or 0) + 1

    def params(self) -> tuple[datetime, str | None, int | None, int | None, bool]:
        """Query parameters: t, last row (or NULLs), whether rows of ``t`` itself qualify."""
        whole_t_done = self.done is None and self.row is None and not self.skip
        producer, seq, idx = self.row if self.row is not None else (None, None, None)
        return self.t, producer, seq, idx, not whole_t_done


def _nonnegative(text: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        raise ValueError(text)
    return int(text)


def parse_event_id(event_id: str) -> tuple[StreamPosition, StreamPosition]:
    """The (points, logs) positions of an event id; ValueError when malformed."""
    points, sep, logs = event_id.strip().partition("_")
    try:
        if not sep:
            raise ValueError(event_id)
        return StreamPosition.from_token(points), StreamPosition.from_token(logs)
    except ValueError:
        raise ValueError(f"not an event id: {event_id[:64]!r}") from None


# -- values ---------------------------------------------------------------------------------


def point_events(row: Row, indexes: range) -> Iterator[dict[str, Any]]:
    """The points of one metric chunk row, at ``indexes``, as "point" event data."""
    steps, values, times = row["steps"], row["values"], row["times"]
    kinds: bytes | None = row["kinds"]
    texts: Sequence[str | None] | None = row["texts"]
    name, rank = row["name"], row["rank"]
    for i in indexes:
        kind = KIND_FLOAT if kinds is None else kinds[i]
        text = None if texts is None else texts[i]
        yield {"name": name, "step": steps[i], "value": typed_value(values[i], kind, text),
               "rank": rank, "time": micros_to_iso(times[i])}


def log_events(row: Row, indexes: range) -> Iterator[dict[str, Any]]:
    stream, rank, time = row["stream"], row["rank"], iso(row["logged_at"])
    lines = row["lines"]
    for i in indexes:
        yield {"stream": stream, "line": lines[i], "rank": rank, "time": time}


# -- the wire -------------------------------------------------------------------------------


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


@dataclass(frozen=True, kw_only=True)
class StreamOptions:
    """Timing of every stream (the defaults are the documented protocol)."""

    keepalive_s: float = DEFAULT_KEEPALIVE_S
    write_timeout_s: float = DEFAULT_WRITE_TIMEOUT_S
    tick_s: float = DEFAULT_TICK_S
    poll_interval_s: float = DEFAULT_POLL_INTERVAL_S


# -- wiring ---------------------------------------------------------------------------------


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


# -- the routes -----------------------------------------------------------------------------


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
            status = await _run_status(reads, run_id)
            if status is None:
                return json_error(404, f"no run {run_id!r}")
            if resume is None:
                points, logs = await _heads(reads, run_id)
            else:
                points, logs = resume
            stream = RunStream(reads, run_id, status, types=types, points=points, logs=logs)
            return await self._serve(request, "run", sub, stream)

    # -- /v1/compute/{target}/events ------------------------------------------------------

    async def compute_events(self, request: web.Request) -> web.StreamResponse:
        target = request.match_info["target"]
        with self._listener.subscribe(targets=[target]) as sub:
            state = await _queue(self._reads, target)
            if state is None:
                return json_error(404, f"no compute target {target!r}")
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
            await _end(writer, response)
        return response


class RunStream:
    """One run's cursors and what one round sends."""

    def __init__(self, reads: ReadStore, run_id: str, status: dict[str, Any], *,
                 types: frozenset[str], points: StreamPosition, logs: StreamPosition) -> None:
        self._reads = reads
        self._run_id = run_id
        self._status = status
        self._types = types
        self._points = points
        self._logs = logs

    def _event_id(self) -> str:
        return f"{self._points.token()}_{self._logs.token()}"

    def start(self, writer: SseWriter) -> None:
        if "status" in self._types:
            writer.event("status", self._status)

    async def round(self, writer: SseWriter, *, full: bool) -> None:
        """Send what is new: the status (only it when not ``full``: the periodic check
        for NotResponding), else first the points and lines committed so far."""
        status = None
        if "status" in self._types:
            status = await _run_status(self._reads, self._run_id)
        if full and "point" in self._types:
            await self._drain(writer, self._points, SQL_POINTS_PAGE, "point", point_events)
        if full and "log" in self._types:
            await self._drain(writer, self._logs, SQL_LOGS_PAGE, "log", log_events)
        if status is not None and status != self._status:
            self._status = status
            writer.event("status", status)

    async def _drain(self, writer: SseWriter, position: StreamPosition, sql: str, kind: str,
                     explode: Callable[[Row, range], Iterator[dict[str, Any]]],
                     ) -> None:
        while True:
            t, producer, seq, idx, same_t = position.params()
            if kind == "point":
                rows = await self._reads.fetch(sql, self._run_id, t, producer, seq, idx,
                                              PAGE_ROWS, LATE_POINTS_WINDOW, same_t)
            else:
                rows = await self._reads.fetch(sql, self._run_id, t, producer, seq, same_t,
                                              PAGE_ROWS)
            for row in rows:
                key = (row["producer_id"], row["seq"], row["series_idx"])
                n_items = len(row["steps"] if kind == "point" else row["lines"])
                for data in explode(row, position.take(row["ingested_at"], key, n_items)):
                    position.delivered()
                    writer.event(kind, data, self._event_id())
                    if writer.pending_bytes >= FLUSH_BYTES:
                        await writer.flush()
                        await asyncio.sleep(0)  # a busy run must not starve other streams
            await writer.flush()
            if len(rows) < PAGE_ROWS:
                return


class QueueStream:
    """One compute target's last sent queue state."""

    def __init__(self, reads: ReadStore, target: str, first: dict[str, Any]) -> None:
        self._reads = reads
        self._target = target
        self._last = first

    def start(self, writer: SseWriter) -> None:
        writer.event("queue", self._last)

    async def round(self, writer: SseWriter, *, full: bool) -> None:
        state = await _queue(self._reads, self._target)
        if state is not None and _queue_key(state) != _queue_key(self._last):
            self._last = state
            writer.event("queue", state)


async def _end(writer: SseWriter, response: web.StreamResponse) -> None:
    """Finish the chunked body cleanly, or cut the connection if the client does not read."""
    try:
        async with asyncio.timeout(SHUTDOWN_GRACE_S):
            await response.write_eof()
    except (TimeoutError, ConnectionError):
        writer.abort()


def _queue_key(state: Mapping[str, Any]) -> tuple[Any, ...]:
    # The age of the oldest queued run grows every second; a change of *which* run is the
    # oldest shows in the counts or percentiles, so the age alone is not a change.
    return tuple(v for k, v in state.items() if k != "oldest_queued_age_s")


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


async def _queue(reads: ReadStore, target: str) -> dict[str, Any] | None:
    """QueueState of a compute target (as GET /v1/compute/{target}); None if unknown."""
    row = await reads.queue(target)
    return None if row is None else queue_state(row)


async def _run_status(reads: ReadStore, run_id: str) -> dict[str, Any] | None:
    row = await reads.fetchrow(SQL_RUN_STATUS, run_id)
    if row is None:
        return None
    return {
        "run_id": run_id,
        "status": row["status"],
        "error": row["error"],
        "status_times": {s: iso(row[c]) for s, c in STATUS_COLUMNS.items()},
    }


async def _heads(reads: ReadStore, run_id: str) -> tuple[StreamPosition, StreamPosition]:
    points = await reads.fetchval(SQL_POINTS_HEAD, run_id, LATE_POINTS_WINDOW)
    logs = await reads.fetchval(SQL_LOGS_HEAD, run_id)
    return StreamPosition.after(points), StreamPosition.after(logs)
