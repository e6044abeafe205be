"""``wait_for_completion``: follow a run until it ends, printing its log lines and status.

Protocol. The content always comes from the paged endpoints, so nothing is printed twice
or skipped whatever the push channel does:

- status from ``GET /v1/runs/{id}`` (RunDetails), log lines from
  ``GET /v1/runs/{id}/logs?after=<cursor>`` (a line cursor: each page continues exactly
  where the last one ended);
- the Server-Sent Events stream ``GET /v1/runs/{id}/events?types=log,status`` only says
  *when* to look: a reader thread sets ``wake`` on every "status" or "log" event (any
  other type is ignored). The main loop waits on ``wake`` with a timeout, so it still
  re-checks every ``SSE_SAFETY_POLL_S`` while the stream is quiet, and every
  ``POLL_INTERVAL_S`` once the stream is unavailable (no such endpoint, refused, ended):
  polling is the fallback;
- nothing falls between the first look and the stream's start: the server opens every
  stream with the current "status" event, which wakes the loop for another look;
- on a terminal status (Completed, Failed, Canceled) the log is read once more to its
  end — lines are committed before the status that follows them — then the details are
  returned.

The reader thread blocks in ``readline`` with a socket timeout above the server's 15 s
keep-alive; when the wait ends it is told to stop and exits at its next line or timeout
(a daemon thread: a silent stream never keeps the process alive). The deadline of
``timeout_s`` is kept by the main loop alone, never by a blocking read.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final, TextIO

from ._client import ApiClient
from ._errors import ApiError, ProducerTimeoutError

TERMINAL_STATUSES: Final = frozenset({"Completed", "Failed", "Canceled"})
#: Between looks when there is no event stream.
POLL_INTERVAL_S: Final = 0.5
#: Between looks while the event stream is up but quiet (a safety net, not the signal).
SSE_SAFETY_POLL_S: Final = 5.0
#: Socket timeout of the event stream: longer than the server's 15 s keep-alive.
SSE_READ_TIMEOUT_S: Final = 40.0
LOG_PAGE_LINES: Final = 1000
#: Event types that may change what the loop prints.
WAKING_EVENTS: Final = frozenset({"status", "log"})


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
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)
        elif field == "id" and "\0" not in value:
            last_id = value


class EventWatcher:
    """Reads a run's event stream on a daemon thread and sets ``wake`` when it matters."""

    def __init__(self, client: ApiClient, path: str) -> None:
        self._client = client
        self._path = path
        self.wake = threading.Event()
        self._stop = threading.Event()
        self._alive = threading.Event()
        self._thread = threading.Thread(target=self._run, name="runstream-events", daemon=True)

    @property
    def alive(self) -> bool:
        """True while the stream is connected (False before, after, and if unavailable)."""
        return self._alive.is_set()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        try:
            response = self._client.open(
                self._path,
                [("types", ",".join(sorted(WAKING_EVENTS)))],
                accept="text/event-stream",
                timeout_s=SSE_READ_TIMEOUT_S,
            )
        except ApiError:
            self.wake.set()  # the loop switches to polling now
            return
        with response:
            if not response.headers.get("Content-Type", "").startswith("text/event-stream"):
                self.wake.set()
                return
            self._alive.set()
            try:
                for event in parse_sse(self._lines(response)):
                    if event.event in WAKING_EVENTS:
                        self.wake.set()
            except (OSError, http.client.HTTPException):
                pass  # dropped or timed out: polling takes over
            finally:
                self._alive.clear()
                self.wake.set()

    def _lines(self, response: http.client.HTTPResponse) -> Iterator[bytes]:
        while not self._stop.is_set():
            line = response.readline()
            if not line:
                return
            yield line


@dataclass
class LogTail:
    """Prints a run's log lines once each, in the server's order, from a cursor."""

    client: ApiClient
    path: str
    out: TextIO
    cursor: str | None = None

    def print_new(self) -> None:
        while True:
            params = [("limit", str(LOG_PAGE_LINES))]
            if self.cursor is not None:
                params.append(("after", self.cursor))
            page = self.client.get_json(self.path, params)
            lines = page.get("lines") or []
            for line in lines:
                self.out.write(format_line(line))
            if lines:
                self.out.flush()
            next_cursor = page.get("next_cursor")
            if next_cursor:
                self.cursor = str(next_cursor)
            if not next_cursor or len(lines) < LOG_PAGE_LINES:
                return


def format_line(line: dict[str, Any]) -> str:
    """One log line as printed: other ranks and stderr are marked."""
    text = str(line.get("line", ""))
    rank = line.get("rank") or 0
    stream = line.get("stream")
    prefix = f"[rank {rank}] " if rank else ""
    if stream not in (None, "stdout"):
        prefix += f"[{stream}] "
    return f"{prefix}{text}\n"


def wait_for_completion(
    client: ApiClient,
    run_path: str,
    run_id: str,
    *,
    show_output: bool,
    timeout_s: float | None,
    out: TextIO,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Block until the run is Completed, Failed or Canceled; return its details."""
    if timeout_s is not None and timeout_s < 0:
        raise ValueError("timeout_s must not be negative")
    deadline = None if timeout_s is None else clock() + timeout_s
    limit_s = timeout_s or 0.0
    watcher = EventWatcher(client, f"{run_path}/events")
    watcher.start()
    tail = LogTail(client, f"{run_path}/logs", out)
    status: str | None = None
    try:
        details = client.get_json(run_path)
        if show_output:
            out.write(f"RunId: {run_id}\nWeb View: {details.get('portal_url')}\n\n")
        while True:
            if show_output:
                tail.print_new()
            if details.get("status") != status:
                status = str(details.get("status"))
                if show_output and status not in TERMINAL_STATUSES:
                    out.write(f"Status: {status}\n")
                    out.flush()
            if status in TERMINAL_STATUSES:
                if show_output:
                    _summary(out, run_id, details)
                return details
            wait_s = SSE_SAFETY_POLL_S if watcher.alive else POLL_INTERVAL_S
            if deadline is not None:
                remaining_s = deadline - clock()
                if remaining_s <= 0:
                    raise ProducerTimeoutError(
                        "wait_for_completion",
                        limit_s,
                        0,
                        detail=f"run {run_id!r} is still {status}",
                    )
                wait_s = min(wait_s, remaining_s)
            watcher.wake.wait(wait_s)
            watcher.wake.clear()
            details = client.get_json(run_path)
    finally:
        watcher.stop()


def _summary(out: TextIO, run_id: str, details: dict[str, Any]) -> None:
    status = details.get("status")
    out.write(f"Status: {status}\n\nExecution Summary\n=================\nRunId: {run_id}\n")
    out.write(f"Web View: {details.get('portal_url')}\n")
    error = details.get("error")
    if error:
        out.write(f"Error:\n{error}\n")
    out.flush()
