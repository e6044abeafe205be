"""``wait_for_completion``: follow a run until it ends, printing its log lines and status.

A run that has already ended is printed in one pass (``GET /v1/runs/{id}/logs``: all of
it is committed). Otherwise it is followed in one of two ways, the first when the
server offers it:

**Event stream** (``GET /v1/runs/{id}/events?types=log,status``). With ``show_output``
the stream is opened with ``Last-Event-ID: 0_0`` (from the beginning), so it carries the
run's whole log and then every line as the worker commits it, in commit order; without,
only status events are asked for. In each round the server writes a status change after
the lines committed before it, so when a terminal status (Completed, Failed, Canceled)
arrives every line before it has been printed. The one exception is a connection's
first event, the current status, which comes *before* what the connection replays: a
terminal status there is followed by reading on until the stream is quiet for
``DRAIN_QUIET_S``. A reader thread parses the stream into a bounded queue; the main
thread prints, keeps the deadline and returns. A stream that ends or breaks is reopened
with the last event id received, so nothing is printed twice or skipped. While the
stream is quiet the run's details are re-read every ``SSE_SAFETY_POLL_S``, a safety net.

**Polling**, when there is no event stream (no such endpoint, refused, not an event
stream): ``GET /v1/runs/{id}`` for the status and ``GET /v1/runs/{id}/logs?after=<cursor>``
for new lines every ``POLL_INTERVAL_S``. That cursor follows the lines' *logging* time,
so a line another rank logged earlier but whose events were committed later than lines
already printed can be missed; the event stream (commit order) has no such gap. If an
event stream that worked cannot be reopened (``SSE_REOPEN_ATTEMPTS``), following goes on
by polling the status only, with a note, since the two cursors do not translate.

Output: ``RunId``/``Web View``, then every status change (``Status: Queued``,
``Preparing``, ``Running``, ``Finalizing``…) and log line as it comes (other ranks and
stderr marked), then Azure ML's ``Execution Summary`` with the run's duration (and time
queued) and its error. Ctrl-C stops the wait, never the run: a line says so (the run goes
on; ``run.cancel()`` stops it) and ``KeyboardInterrupt`` goes on up.

The reader thread blocks in ``readline`` with a socket timeout above the server's 15 s
keep-alive; when the wait ends it is told to stop and exits at its next line or timeout
(a daemon thread: a silent stream never keeps the process alive). ``timeout_s`` is kept
by the main thread alone, never by a blocking read.
"""

from __future__ import annotations

import http.client
import json
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, TextIO

from ._client import ApiClient
from ._errors import ApiError, ProducerTimeoutError
from ._session import STATUS_RANK

TERMINAL_STATUSES: Final = frozenset({"Completed", "Failed", "Canceled"})
#: Between looks when there is no event stream.
POLL_INTERVAL_S: Final = 0.5
#: Between looks at the details while the event stream is up but quiet (a safety net).
SSE_SAFETY_POLL_S: Final = 5.0
#: Socket timeout of the event stream: longer than the server's 15 s keep-alive.
SSE_READ_TIMEOUT_S: Final = 40.0
#: Reopening a broken event stream: attempts in a row before giving up on it.
SSE_REOPEN_ATTEMPTS: Final = 3
SSE_REOPEN_BACKOFF_S: Final = 0.5
#: After a terminal status opening a connection: quiet time that ends the missed lines.
DRAIN_QUIET_S: Final = 0.5
#: Events parsed but not yet printed (the reader thread waits when it is full).
QUEUE_EVENTS: Final = 10_000
LOG_PAGE_LINES: Final = 1000
FROM_THE_START: Final = "0_0"


@dataclass(frozen=True, slots=True)
class SseEvent:
    event: str
    data: str
    id: str | None


def parse_sse(lines: Iterable[bytes]) -> Iterator[SseEvent]:
    """Events of a ``text/event-stream`` body given line by line (WHATWG rules, minus retry)."""
    event = ""
    data: list[str] = []
    last_id: str | None = None
    for raw in lines:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if data:
                yield SseEvent(event or "message", "\n".join(data), last_id)
            event, data = "", []
            continue
        if line.startswith(":"):
            continue  # comment (keep-alive)
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id" and "\0" not in value:
            last_id = value


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """The reader thread's last item: ``connected`` says whether the stream ever opened."""

    connected: bool
    error: str


@dataclass(frozen=True, slots=True)
class ConnectionEnd:
    """How one connection went: opened or not, why it ended, events read, the last id."""

    connected: bool
    error: str
    events: int
    last_id: str | None


class EventReader:
    """Reads one connection of a run's event stream into ``events`` on a daemon thread."""

    def __init__(
        self, client: ApiClient, path: str, *, types: str, last_event_id: str | None
    ) -> None:
        self._client = client
        self._path = path
        self._types = types
        self._last_event_id = last_event_id
        self.events: queue.Queue[SseEvent | StreamEnd] = queue.Queue(QUEUE_EVENTS)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="runstream-events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _put(self, item: SseEvent | StreamEnd) -> bool:
        while not self._stop.is_set():
            try:
                self.events.put(item, timeout=0.5)
            except queue.Full:
                continue
            return True
        return False

    def _run(self) -> None:
        headers = {"Last-Event-ID": self._last_event_id} if self._last_event_id else {}
        try:
            response = self._client.request(
                "GET",
                self._path,
                [("types", self._types)],
                accept="text/event-stream",
                timeout_s=SSE_READ_TIMEOUT_S,
                headers=headers,
            )
        except ApiError as exc:
            self._put(StreamEnd(connected=False, error=str(exc)))
            return
        with response:
            content_type = response.headers.get("Content-Type", "")
            if not content_type.startswith("text/event-stream"):
                self._put(StreamEnd(False, f"answer is {content_type!r}, not an event stream"))
                return
            error = "the server ended the stream"
            try:
                for event in parse_sse(self._lines(response)):
                    if not self._put(event):
                        return
            except (OSError, http.client.HTTPException) as exc:
                error = f"the stream broke: {exc}"
            self._put(StreamEnd(connected=True, error=error))

    def _lines(self, response: http.client.HTTPResponse) -> Iterator[bytes]:
        while not self._stop.is_set():
            line = response.readline()
            if not line:
                return
            yield line


def format_line(line: dict[str, Any]) -> str:
    """One log line as printed: other ranks and stderr are marked."""
    text = str(line.get("line", ""))
    rank = line.get("rank") or 0
    stream = line.get("stream")
    prefix = f"[rank {rank}] " if rank else ""
    if stream not in (None, "stdout"):
        prefix += f"[{stream}] "
    return f"{prefix}{text}\n"


@dataclass
class Follower:
    """One wait: the run, what to print, the deadline."""

    client: ApiClient
    run_path: str
    run_id: str
    show_output: bool
    timeout_s: float | None
    out: TextIO
    clock: Callable[[], float] = time.monotonic
    status: str | None = None
    deadline: float | None = field(default=None, init=False)
    #: The status of the first look (``status`` is what was printed).
    looked: str | None = field(default=None, init=False)
    #: Every status printed so far.
    printed: set[str] = field(default_factory=set, init=False)

    def __post_init__(self) -> None:
        if self.timeout_s is not None:
            if self.timeout_s < 0:
                raise ValueError("timeout_s must not be negative")
            self.deadline = self.clock() + self.timeout_s

    # -- output ------------------------------------------------------------------------

    def write(self, text: str) -> None:
        if self.show_output:
            self.out.write(text)
            self.out.flush()

    def saw_status(self, status: str, times: object = None) -> bool:
        """Print a change of status; True when the run has ended.

        ``times`` (the run's ``status_times``, when the event or details carry them) fills
        in the statuses passed since the last one printed — a wait that starts, or a stream
        that opens, after the run moved on still shows Queued, Preparing… in order."""
        if status != self.status:
            for missed in self.missed_statuses(status, times):
                self.write(f"Status: {missed}\n")
                self.printed.add(missed)
            self.status = status
            if status not in TERMINAL_STATUSES:
                self.write(f"Status: {status}\n")
                self.printed.add(status)
        return status in TERMINAL_STATUSES

    def missed_statuses(self, status: str, times: object) -> list[str]:
        """The statuses in ``times`` below ``status`` and not printed yet, in the order a
        run passes them (NotStarted, the terminal ones and ``status`` itself left out).

        Ordered by rank, not by time: the times come from different processes (the
        submitting notebook stamps Queued, the agent Preparing), and an agent that picks a
        run up within milliseconds can stamp Preparing before the notebook's Queued."""
        if not isinstance(times, dict):
            return []
        # Never back: a status whose event was stored late (Queued after the agent's
        # Preparing) is not printed once a later one was.
        shown = max((STATUS_RANK.get(p, 0) for p in self.printed), default=-1)
        below = STATUS_RANK.get(status, 0)
        reached = []
        for name, when in times.items():
            at = parse_time(when)
            rank = STATUS_RANK.get(name, 0)
            if at is None or name in self.printed or name == status:
                continue
            if not shown < rank < below:
                continue
            if name == "NotStarted" or name in TERMINAL_STATUSES:
                continue
            reached.append((rank, at, name))
        return [name for _, _, name in sorted(reached)]

    def finish(self, details: dict[str, Any]) -> dict[str, Any]:
        error = details.get("error")
        duration = run_duration(details)
        self.write(
            f"Status: {self.status}\n\nExecution Summary\n=================\n"
            f"RunId: {self.run_id}\nWeb View: {details.get('portal_url')}\n"
            + (f"Duration: {duration}\n" if duration else "")
            + (f"Error:\n{error}\n" if error else "")
        )
        return details

    def interrupted(self) -> None:
        """Ctrl-C: say that only the waiting stopped (printed even without show_output)."""
        self.out.write(
            f"\nStopped waiting for run {self.run_id} (interrupted); the run goes on "
            f"(status: {self.status or self.looked or 'unknown'}); run.cancel() stops it.\n"
        )
        self.out.flush()

    # -- time --------------------------------------------------------------------------

    def wait_s(self, interval_s: float) -> float:
        """How long to wait before the next look; raises once the deadline has passed."""
        if self.deadline is None:
            return interval_s
        remaining_s = self.deadline - self.clock()
        if remaining_s <= 0:
            raise ProducerTimeoutError(
                "wait_for_completion",
                self.timeout_s or 0.0,
                0,
                detail=f"run {self.run_id!r} is still {self.status}",
            )
        return min(interval_s, remaining_s)

    def details(self) -> dict[str, Any]:
        return self.client.get_json(self.run_path)

    # -- the two ways ------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        details = self.details()
        self.looked = str(details.get("status"))
        self.write(f"RunId: {self.run_id}\nWeb View: {details.get('portal_url')}\n\n")
        if str(details.get("status")) in TERMINAL_STATUSES:
            if self.show_output:  # all of it is committed: one pass prints it
                self.print_logs(None)
            self.saw_status(str(details.get("status")))  # its log is printed: no history
            return self.finish(details)
        return self.follow_stream()

    def follow_stream(self) -> dict[str, Any]:
        types = "log,status" if self.show_output else "status"
        last_id = FROM_THE_START if self.show_output else None
        ever_connected = False
        failures = 0
        while True:
            reader = EventReader(
                self.client, f"{self.run_path}/events", types=types, last_event_id=last_id
            )
            reader.start()
            try:
                end = self.read_connection(reader)
                if isinstance(end, dict):
                    return self.finish(end)
            finally:
                reader.stop()
            ever_connected |= end.connected
            if not ever_connected:
                return self.poll(with_logs=True)
            if end.connected:
                last_id = end.last_id or last_id
                failures = 0 if end.events else failures + 1
            else:
                failures += 1
            if failures >= SSE_REOPEN_ATTEMPTS:
                self.write(f"(live log unavailable: {end.error}; following the status)\n")
                return self.poll(with_logs=False)
            time.sleep(self.wait_s(SSE_REOPEN_BACKOFF_S * max(failures, 1)))

    def read_connection(self, reader: EventReader) -> dict[str, Any] | ConnectionEnd:
        """Print one connection's events; the final details, or how the connection ended.

        The server opens a stream with the current status and only then sends what a
        resumed stream missed, so a terminal status as a connection's first event is
        followed by lines committed before it: those are read until the stream has been
        quiet for ``DRAIN_QUIET_S``.
        """
        events = 0
        last_id: str | None = None
        first_status = True
        while True:
            try:
                item = reader.events.get(timeout=self.wait_s(SSE_SAFETY_POLL_S))
            except queue.Empty:
                details = self.details()
                if self.saw_status(str(details.get("status")), details.get("status_times")):
                    return details
                continue
            if isinstance(item, StreamEnd):
                return ConnectionEnd(item.connected, item.error, events, last_id)
            events += 1
            last_id = item.id or last_id
            ended = self.handle(item)
            if item.event == "status":
                if ended and first_status:
                    self.drain(reader)
                first_status = False
            if ended:
                return self.details()

    def drain(self, reader: EventReader) -> None:
        while True:
            try:
                item = reader.events.get(timeout=DRAIN_QUIET_S)
            except queue.Empty:
                return
            if isinstance(item, StreamEnd):
                return
            self.handle(item)

    def handle(self, event: SseEvent) -> bool:
        """Print one event; True when it says the run has ended."""
        try:
            data = json.loads(event.data)
        except ValueError:
            return False
        if not isinstance(data, dict):
            return False
        if event.event == "log":
            self.write(format_line(data))
        elif event.event == "status" and "status" in data:
            return self.saw_status(str(data["status"]), data.get("status_times"))
        return False

    def poll(self, *, with_logs: bool) -> dict[str, Any]:
        cursor: str | None = None
        while True:
            details = self.details()
            if with_logs and self.show_output:
                cursor = self.print_logs(cursor)
            if self.saw_status(str(details.get("status")), details.get("status_times")):
                return self.finish(details)
            time.sleep(self.wait_s(POLL_INTERVAL_S))

    def print_logs(self, cursor: str | None) -> str | None:
        """Print the lines after ``cursor``; the cursor to continue from."""
        while True:
            params = [("limit", str(LOG_PAGE_LINES))]
            if cursor is not None:
                params.append(("after", cursor))
            page = self.client.get_json(f"{self.run_path}/logs", params)
            lines = page.get("lines") or []
            self.write("".join(format_line(line) for line in lines))
            next_cursor = page.get("next_cursor")
            if next_cursor:
                cursor = str(next_cursor)
            if not next_cursor or len(lines) < LOG_PAGE_LINES:
                return cursor


def parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def run_duration(details: dict[str, Any]) -> str | None:
    """How long the run ran (start to end), and how long it was queued before, if known:
    ``"12.3 s"``, ``"1:02:03 (queued 0.4 s)"``; None without an end."""
    ended = parse_time(details.get("ended_at"))
    started = parse_time(details.get("started_at"))
    queued = parse_time(details.get("queued_at"))
    if ended is None:
        return None
    if started is None:  # ended before it ever ran (canceled while queued)
        since = queued or parse_time(details.get("created_at"))
        if since is None:
            return None
        return f"not started (queued {_seconds((ended - since).total_seconds())})"
    text = _seconds(max((ended - started).total_seconds(), 0.0))
    if queued is not None and queued <= started:
        text += f" (queued {_seconds((started - queued).total_seconds())})"
    return text


def wait_for_completion(
    client: ApiClient,
    run_path: str,
    run_id: str,
    *,
    show_output: bool,
    timeout_s: float | None,
    out: TextIO,
) -> dict[str, Any]:
    """Block until the run is Completed, Failed or Canceled; return its details.

    Ctrl-C (``KeyboardInterrupt``) stops the wait, not the run: a line says so and the
    interrupt goes on up."""
    follower = Follower(client, run_path, run_id, show_output, timeout_s, out)
    try:
        return follower.run()
    except KeyboardInterrupt:
        follower.interrupted()
        raise
