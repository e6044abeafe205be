"""What ``RunDetails`` shows and how it stays current, without anywidget: ``RunFeed`` reads
one run through the API and follows it until the run ends.

Reading. ``read_all`` reads the run once: its details (status, per-state times, error,
children ids, studio URL), its child runs' statuses (``GET /v1/runs/{id}/children``, one
page), its metric index (``/metric-index``: each metric's kind, count, last/min/max) with
each of the first ``MAX_CHARTS`` series downsampled to at most ``SERIES_POINTS`` points
(``/metrics/{name}?max_points``), and its log (``/logs``, paged) keeping the last
``LOG_TAIL_LINES`` lines. A run that has ended is read that way once, and nothing starts.

Following (``start``), with two daemon threads named ``runstream-widget…``:

- the *stream* thread holds the run's event stream (``GET /v1/runs/{id}/events``, every
  event type) and puts what it reads in a bounded queue. A connection that ends or breaks
  is reopened with the last event id received (``Last-Event-ID``), so nothing is skipped or
  repeated; reopening backs off from 0.5 s to 10 s. An answer that is not an event stream
  (or a 4xx) ends it: the feed then polls instead (``POLL_S``).
- the *follow* thread applies the events: a status event changes the status and times at
  once; a log line is appended to the tail; a point names a series that changed. Reads
  are coalesced. A *quick* refresh (the details, and the series that points named — those
  drawn, and single values for the table) follows a status or point event at once,
  unless the previous one ended less than ``MIN_GAP_S`` ago (or 5x its own duration: a
  slow API is asked at most a fifth of the time). A *full* refresh (details, child runs,
  the metric index and the drawn series whose count or last value changed) runs when the
  stream opens and every ``POLL_S`` while the run is live (or 10x its duration), since
  child runs and list/table metrics raise no event on the run's stream.

The seam. A new stream starts after what is committed when it opens, so the log lines
committed between ``read_all``'s read and that moment are read once more over HTTP when
the stream opens (``/logs?after=<the tail cursor>``), and the stream's copies of those
same lines are recognised by (stream, rank, time, text) and skipped: each line is shown
once. A stream reopened with an event id resumes exactly and needs no such read. Points
need no seam: charts are re-read whole (downsampled), and the full refresh that follows
the stream's opening re-reads every drawn series whose index entry changed meanwhile.

Ending. A terminal status (Completed, Failed, Canceled) — from the stream, or from a
refresh — is followed by reading on until the stream has been quiet for
``DRAIN_QUIET_S`` (at most ``DRAIN_MAX_S``: a rank's last lines may commit just after the
status), then one last refresh; then the stream's socket is shut down, both threads end
and ``live`` turns False. ``close()`` does the same at any time and waits for the threads.

State handed to ``publish`` (plain JSON: non-finite numbers stay the API's strings "NaN",
"Infinity", "-Infinity"): see ``RunFeed.state``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import queue
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from .._client import ApiClient, segment
from .._errors import ApiError, NotFoundError
from .._follow import (
    SSE_READ_TIMEOUT_S,
    TERMINAL_STATUSES,
    SseEvent,
    format_line,
    parse_sse,
    parse_time,
)

__all__ = ["RunFeed"]

logger = logging.getLogger(__name__)

#: Log lines kept (and shown) at the end of the log.
LOG_TAIL_LINES: Final = 200
#: Series drawn as charts (the first ones by name; the others are listed with their values).
MAX_CHARTS: Final = 24
#: Points (or min/max buckets) per chart.
SERIES_POINTS: Final = 300
#: Child runs listed (one page of ``/children``).
MAX_CHILDREN: Final = 100
#: Between refreshes while the run is live, for what raises no event (children, lists, tables).
POLL_S: Final = 1.5
#: Shortest time between two refreshes asked for by events.
MIN_GAP_S: Final = 0.25
#: A refresh may take at most 1/REFRESH_SHARE of the time (slow API → fewer refreshes).
REFRESH_SHARE: Final = 5
#: Shortest time between two publications of the state (bursts of log lines are batched).
PUBLISH_GAP_S: Final = 0.1
#: After a terminal status: quiet time on the stream that ends the last lines, and the cap.
DRAIN_QUIET_S: Final = 0.5
DRAIN_MAX_S: Final = 3.0
#: Reopening the stream: first and longest pause.
REOPEN_MIN_S: Final = 0.5
REOPEN_MAX_S: Final = 10.0
#: Events read but not yet applied (the stream thread waits when it is full).
QUEUE_EVENTS: Final = 10_000
#: How long ``close`` waits for each thread.
JOIN_TIMEOUT_S: Final = 5.0
LOG_PAGE_LINES: Final = 1000
EVENT_TYPES: Final = "point,log,status"
THREAD_PREFIX: Final = "runstream-widget"

LineKey = tuple[str, int, str, str]


@dataclass(frozen=True, slots=True)
class _Opened:
    """The stream's answer arrived; ``resumed``: it continues after an event id."""

    resumed: bool


@dataclass(frozen=True, slots=True)
class _Closed:
    """A connection ended (``available``: it will be reopened) or could not be opened."""

    error: str
    available: bool


_Item = _Opened | _Closed | SseEvent


def _line_key(line: Mapping[str, Any]) -> LineKey:
    return (
        str(line.get("stream") or "stdout"),
        int(line.get("rank") or 0),
        str(line.get("time") or ""),
        str(line.get("line") or ""),
    )


class LogTail:
    """The last lines of the log, and what tells a line already shown from a new one."""

    def __init__(self, size: int = LOG_TAIL_LINES) -> None:
        self.lines: deque[str] = deque(maxlen=size)
        self._keys: deque[LineKey] = deque(maxlen=size)
        #: Keys of the lines in ``lines`` (a line read twice over HTTP is shown once).
        self._shown: Counter[LineKey] = Counter()
        #: Lines read over HTTP that the stream may send again (committed after it opened).
        self._seam: Counter[LineKey] = Counter()
        #: ``/logs`` cursor after the last line read over HTTP.
        self.cursor: str | None = None

    def _append(self, key: LineKey, line: Mapping[str, Any]) -> None:
        if len(self._keys) == self._keys.maxlen:
            old = self._keys[0]
            self._shown[old] -= 1
            if self._shown[old] <= 0:
                del self._shown[old]
        self._keys.append(key)
        self._shown[key] += 1
        self.lines.append(format_line(dict(line)).rstrip("\n"))

    def streamed(self, line: Mapping[str, Any]) -> bool:
        """A line from the stream; False when it was already read over HTTP."""
        key = _line_key(line)
        if self._seam[key] > 0:
            self._seam[key] -= 1
            if not self._seam[key]:
                del self._seam[key]
            return False
        self._append(key, line)
        return True

    def read(self, client: ApiClient, path: str, *, seam: bool) -> int:
        """Read the lines after ``cursor`` over HTTP (all of them the first time); with
        ``seam`` the stream may send them again, and those copies are skipped. Lines
        already shown are not shown twice. The number of lines added."""
        added = 0
        while True:
            params = [("limit", str(LOG_PAGE_LINES))]
            if self.cursor is not None:
                params.append(("after", self.cursor))
            page = client.get_json(f"{path}/logs", params)
            lines = [line for line in page.get("lines") or [] if isinstance(line, dict)]
            for line in lines:
                key = _line_key(line)
                if seam:
                    self._seam[key] += 1
                if self.cursor is not None and self._shown[key] > 0:
                    continue
                self._append(key, line)
                added += 1
            next_cursor = page.get("next_cursor")
            if next_cursor:
                self.cursor = str(next_cursor)
            if not next_cursor or len(lines) < LOG_PAGE_LINES:
                return added


def _socket_of(response: http.client.HTTPResponse) -> socket.socket | None:
    """The socket under an open ``urllib`` response (``HTTPResponse.fp`` is a buffered
    reader over ``socket.SocketIO``), to shut it down from another thread."""
    raw = getattr(getattr(response, "fp", None), "raw", None)
    sock = getattr(raw, "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


class _StreamReader:
    """Holds the run's event stream on a daemon thread, reopening it after an id."""

    def __init__(self, client: ApiClient, path: str, events: queue.Queue[_Item],
                 stop: threading.Event, name: str) -> None:
        self._client = client
        self._path = path
        self._events = events
        self._stop = stop
        self._lock = threading.Lock()
        self._response: http.client.HTTPResponse | None = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def interrupt(self) -> None:
        """Unblock a read in progress (the stop flag is already set): shut the socket."""
        with self._lock:
            response = self._response
        sock = None if response is None else _socket_of(response)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _put(self, item: _Item) -> bool:
        while not self._stop.is_set():
            try:
                self._events.put(item, timeout=0.5)
            except queue.Full:
                continue
            return True
        return False

    def _lines(self, response: http.client.HTTPResponse) -> Iterator[bytes]:
        while not self._stop.is_set():
            line = response.readline()
            if not line:
                return
            yield line

    def _run(self) -> None:
        last_id: str | None = None
        pause = REOPEN_MIN_S
        while not self._stop.is_set():
            headers = {"Last-Event-ID": last_id} if last_id else {}
            try:
                response = self._client.request(
                    "GET", f"{self._path}/events", [("types", EVENT_TYPES)],
                    accept="text/event-stream", timeout_s=SSE_READ_TIMEOUT_S, headers=headers,
                )
            except ApiError as exc:
                if not self._put(_Closed(str(exc), available=exc.retriable)) or not (
                        exc.retriable):
                    return
                if self._stop.wait(pause):
                    return
                pause = min(pause * 2, REOPEN_MAX_S)
                continue
            with self._lock:
                self._response = response
            try:
                if self._stop.is_set():
                    return
                content_type = response.headers.get("Content-Type", "")
                if not content_type.startswith("text/event-stream"):
                    self._put(_Closed(f"the answer is {content_type!r}, not an event stream",
                                      available=False))
                    return
                if not self._put(_Opened(resumed=last_id is not None)):
                    return
                error = "the server ended the stream"
                try:
                    for event in parse_sse(self._lines(response)):
                        last_id = event.id or last_id
                        if not self._put(event):
                            return
                        pause = REOPEN_MIN_S
                except (OSError, http.client.HTTPException) as exc:
                    error = f"the stream broke: {exc}"
                if self._stop.is_set() or not self._put(_Closed(error, available=True)):
                    return
            finally:
                with self._lock:
                    self._response = None
                response.close()
            if self._stop.wait(pause):
                return
            pause = min(pause * 2, REOPEN_MAX_S)


def _seconds_between(start: object, end: object) -> float | None:
    a, b = parse_time(start), parse_time(end)
    if a is None or b is None:
        return None
    return max((b - a).total_seconds(), 0.0)


def run_times(details: Mapping[str, Any]) -> dict[str, Any]:
    """The ``times`` of the state: when the run was created, queued, started, ended, the
    time it reached each status (``status_times``), and ``duration_s`` (start to end,
    None while it runs) and ``queued_s`` (queued to start, or to its end if it never
    started)."""
    status_times = details.get("status_times")
    created, queued = details.get("created_at"), details.get("queued_at")
    started, ended = details.get("started_at"), details.get("ended_at")
    return {
        "created_at": created,
        "queued_at": queued,
        "started_at": started,
        "ended_at": ended,
        "status_times": dict(status_times) if isinstance(status_times, dict) else {},
        "duration_s": _seconds_between(started, ended),
        "queued_s": _seconds_between(queued, started or ended) if queued else None,
    }


def _chart(document: Mapping[str, Any]) -> dict[str, Any]:
    """A series answer (exact points, or min/max buckets) as chart columns."""
    if document.get("downsampled"):
        buckets = [b for b in document.get("buckets") or [] if isinstance(b, dict)]
        return {
            "steps": [b.get("step_max") for b in buckets],
            "values": [b.get("last") for b in buckets],
            "lo": [b.get("min") for b in buckets],
            "hi": [b.get("max") for b in buckets],
            "downsampled": True,
        }
    points = [p for p in document.get("points") or [] if isinstance(p, dict)]
    return {
        "steps": [p.get("step") for p in points],
        "values": [p.get("value") for p in points],
        "downsampled": False,
    }


def _number(value: object) -> bool:
    """A finite int or float as the API sends it (bools, strings and "NaN" are not)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _series_entry(name: str, document: Mapping[str, Any]) -> dict[str, Any]:
    """The metric index's entry of a series, from the series' own answer: its count, last
    value (the last point or bucket) and lowest and highest number."""
    if document.get("downsampled"):
        buckets = [b for b in document.get("buckets") or [] if isinstance(b, dict)]
        count = int(document.get("total_points") or sum(int(b.get("count") or 0)
                                                        for b in buckets))
        last = buckets[-1].get("last") if buckets else None
        lows = [b["min"] for b in buckets if _number(b.get("min"))]
        highs = [b["max"] for b in buckets if _number(b.get("max"))]
    else:
        points = [p for p in document.get("points") or [] if isinstance(p, dict)]
        count = len(points)
        last = points[-1].get("value") if points else None
        lows = highs = [p["value"] for p in points if _number(p.get("value"))]
    return {"name": name, "kind": "value" if count == 1 else "series", "count": count,
            "last": last, "min": min(lows) if lows else None,
            "max": max(highs) if highs else None}


class RunFeed:
    """One run's state, read through ``client`` and followed until the run ends.

    ``publish(state)`` is called with the whole state (``state()``) after ``read_all`` by
    the caller, and from the follow thread whenever something changed.
    """

    def __init__(self, client: ApiClient, run_id: str, details: Mapping[str, Any], *,
                 publish: Callable[[dict[str, Any]], None]) -> None:
        self._client = client
        self.run_id = run_id
        self._path = f"/v1/runs/{segment(run_id)}"
        self._publish = publish
        self._details: dict[str, Any] = dict(details)
        self._index: dict[str, dict[str, Any]] = {}
        self._typed: dict[str, dict[str, Any]] = {}
        self._charts: dict[str, dict[str, Any]] = {}
        self._children: list[dict[str, Any]] = []
        #: How many children the details listed when ``_children`` was read.
        self._children_seen = 0
        self._log = LogTail()
        self._notice = ""
        self._live = self.status not in TERMINAL_STATUSES
        self._stop = threading.Event()
        self._events: queue.Queue[_Item] = queue.Queue(QUEUE_EVENTS)
        self._reader: _StreamReader | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"RunFeed(run_id={self.run_id!r}, status={self.status!r}, live={self._live})"

    @property
    def status(self) -> str:
        return str(self._details.get("status") or "")

    @property
    def live(self) -> bool:
        """Whether the feed follows the run (False once it ended, or was closed)."""
        return self._live

    def threads(self) -> list[threading.Thread]:
        """The feed's threads that are still alive."""
        found = [self._thread, None if self._reader is None else self._reader.thread]
        return [t for t in found if t is not None and t.is_alive()]

    # -- reading -------------------------------------------------------------------------

    def read_all(self) -> None:
        """Read everything once (the details were given); the log from its start."""
        self._read_children()
        self._read_metrics()
        self._log.read(self._client, self._path, seam=False)

    def _read_details(self) -> None:
        details = self._client.get_json(self._path)
        self._details = details

    def _read_children(self) -> None:
        ids = [str(c) for c in self._details.get("children") or []]
        if not ids:
            self._children = []
            return
        if len(ids) == self._children_seen and all(
                c["status"] in TERMINAL_STATUSES for c in self._children):
            return  # no new child, and none that can still change
        page = self._client.get_json(f"{self._path}/children", [("limit", str(MAX_CHILDREN))])
        base = str(self._details.get("portal_url") or "").rpartition("/runs/")[0]
        self._children = [
            {
                "run_id": str(r.get("run_id")),
                "display_name": r.get("display_name"),
                "status": str(r.get("status") or ""),
                "created_at": r.get("created_at"),
                "started_at": r.get("started_at"),
                "ended_at": r.get("ended_at"),
                "duration_s": _seconds_between(r.get("started_at"), r.get("ended_at")),
                "portal_url": f"{base}/runs/{segment(str(r.get('run_id')))}" if base else "",
            }
            for r in page.get("runs") or []
            if isinstance(r, dict)
        ]
        self._children_seen = len(ids)

    def _charted(self) -> list[str]:
        """The series drawn: the first ``MAX_CHARTS`` by name."""
        return [n for n in sorted(self._index) if self._index[n].get("kind") == "series"][
            :MAX_CHARTS]

    def _read_series(self, name: str) -> None:
        """Read one series (downsampled): its chart and its index entry."""
        try:
            answer = self._client.get_json(f"{self._path}/metrics/{segment(name)}",
                                           [("max_points", str(SERIES_POINTS))])
        except NotFoundError:
            return
        entry = _series_entry(name, answer)
        if self._index.get(name, {}).get("kind") in ("list", "table"):
            return  # the name is also a list or table, shown as that (as get_metrics does)
        self._index[name] = entry
        self._charts[name] = {**_chart(answer), "count": entry["count"], "last": entry["last"]}

    def _keep_charted(self) -> None:
        charted = set(self._charted())
        for name in set(self._charts) - charted:
            del self._charts[name]

    def _read_metrics(self) -> None:
        """The metric index, and each drawn series whose count or last value changed."""
        document = self._client.get_json(f"{self._path}/metric-index")
        self._index = {
            str(e["name"]): e
            for e in document.get("metrics") or []
            if isinstance(e, dict) and "name" in e
        }
        typed = document.get("typed")
        self._typed = dict(typed) if isinstance(typed, dict) else {}
        for name in self._charted():
            entry, chart = self._index[name], self._charts.get(name)
            if chart is None or (chart["count"], chart["last"]) != (entry.get("count"),
                                                                    entry.get("last")):
                self._read_series(name)
        self._keep_charted()

    def _read_points(self, names: Iterable[str]) -> None:
        """The series that new points were logged to: those drawn, and single values (or
        new names) for the table; a series past the drawn ones waits for the next index."""
        for name in sorted(set(names)):
            kind = self._index.get(name, {}).get("kind")
            if kind in ("list", "table"):
                continue
            if kind == "series" and name not in self._charted():
                continue
            self._read_series(name)
        self._keep_charted()

    def refresh(self, *, full: bool = True, series: Iterable[str] = (),
                logs: bool = False) -> None:
        """Re-read the details, and: ``full``, the children and the metric index (with the
        drawn series that changed); else the ``series`` that new points were logged to.
        With ``logs`` also the log lines after the tail's cursor. An API error is shown
        as the notice, never raised."""
        try:
            self._read_details()
            if full:
                self._read_children()
                self._read_metrics()
            else:
                self._read_points(series)
            if logs:
                self._log.read(self._client, self._path, seam=False)
        except ApiError as exc:
            self._notice = f"could not read the run ({exc}); retrying"
        else:
            if self._notice.startswith("could not read"):
                self._notice = ""

    # -- the state -----------------------------------------------------------------------

    def _metrics_state(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in sorted(self._index):
            entry = self._index[name]
            item: dict[str, Any] = {"kind": str(entry.get("kind")),
                                    "count": entry.get("count")}
            for key in ("last", "min", "max", "columns"):
                if key in entry:
                    item[key] = entry[key]
            chart = self._charts.get(name)
            if chart is not None:
                item.update({k: v for k, v in chart.items() if k not in ("count", "last")})
            out[name] = item
        for name, typed in sorted(self._typed.items()):
            kind = typed.get("schema_type") if isinstance(typed, dict) else None
            out[name] = {"kind": "typed", "schema_type": kind, "count": 1}
        return out

    def state(self) -> dict[str, Any]:
        """What the widget shows: ``run_id``, ``experiment``, ``display_name``, ``status``,
        ``error``, ``times`` (``run_times``), ``metrics`` ({name: {kind, count, last, min,
        max, columns?, steps?, values?, lo?, hi?, downsampled?}}; charts for series),
        ``log_tail`` (formatted lines, oldest first), ``children`` ([{run_id,
        display_name, status, …, portal_url}]), ``children_total``, ``portal_url``,
        ``live`` and ``notice`` (what is wrong with following, if anything)."""
        d = self._details
        return {
            "run_id": self.run_id,
            "experiment": str(d.get("experiment") or ""),
            "display_name": str(d.get("display_name") or ""),
            "status": self.status,
            "error": str(d.get("error") or ""),
            "times": run_times(d),
            "metrics": self._metrics_state(),
            "log_tail": list(self._log.lines),
            "children": [dict(c) for c in self._children],
            "children_total": len(d.get("children") or []),
            "portal_url": str(d.get("portal_url") or ""),
            "live": self._live,
            "notice": self._notice,
        }

    # -- following -----------------------------------------------------------------------

    def start(self) -> None:
        """Follow the run on two daemon threads, unless it has ended (then: nothing)."""
        if not self._live or self._thread is not None:
            return
        name = f"{THREAD_PREFIX}:{self.run_id}"
        self._reader = _StreamReader(self._client, self._path, self._events, self._stop,
                                     f"{THREAD_PREFIX}-stream:{self.run_id}")
        self._thread = threading.Thread(target=self._follow, name=name, daemon=True)
        self._reader.thread.start()
        self._thread.start()

    def close(self, timeout_s: float = JOIN_TIMEOUT_S) -> None:
        """Stop following: shut the stream's socket and wait (bounded) for both threads."""
        self._stop.set()
        if self._reader is not None:
            self._reader.interrupt()
        current = threading.current_thread()
        for thread in (self._thread, None if self._reader is None else self._reader.thread):
            if thread is not None and thread is not current and thread.is_alive():
                thread.join(timeout_s)
        self._live = False

    def _follow(self) -> None:
        try:
            self._loop()
        except Exception as exc:  # a notebook must not get a thread's traceback
            logger.exception("following run %s failed", self.run_id)
            self._notice = f"live updates stopped: {exc}"
        finally:
            self._stop.set()
            if self._reader is not None:
                self._reader.interrupt()
                if self._reader.thread is not threading.current_thread():
                    self._reader.thread.join(JOIN_TIMEOUT_S)
            self._live = False
            self._emit()

    def _emit(self) -> None:
        try:
            self._publish(self.state())
        except Exception:  # the widget's own trouble (a closed comm) must not end the feed
            logger.exception("showing run %s failed", self.run_id)

    def _loop(self) -> None:
        clock = time.monotonic
        streaming = True  # until the server says it has no event stream for us
        connected = False
        quick_at: float | None = None  # an event asked for a quick refresh
        points: set[str] = set()  # series that new points were logged to
        dirty = False  # something to publish
        last_publish = last_event = last_quick_end = clock()
        quick_cost = 0.0
        full_due = clock() + POLL_S  # read_all was the first full read
        ending_at: float | None = None  # a terminal status was seen

        while not self._stop.is_set():
            now = clock()
            gap = max(MIN_GAP_S, REFRESH_SHARE * quick_cost)
            due = [full_due]
            if quick_at is not None:
                due.append(max(quick_at, last_quick_end + gap))
            if dirty:
                due.append(last_publish + PUBLISH_GAP_S)
            if ending_at is not None:
                due.append(min(last_event + DRAIN_QUIET_S, ending_at + DRAIN_MAX_S))
            items: list[_Item] = []
            with contextlib.suppress(queue.Empty):
                items.append(self._events.get(timeout=max(0.0, min(due) - now)))
                while len(items) < QUEUE_EVENTS:
                    items.append(self._events.get_nowait())
            if self._stop.is_set():
                return
            for item in items:
                now = clock()
                dirty = True
                if isinstance(item, _Opened):
                    connected = True
                    self._notice = ""
                    if not item.resumed:  # the seam: lines committed before it opened
                        try:
                            self._log.read(self._client, self._path, seam=True)
                        except ApiError as exc:
                            self._notice = f"could not read the log ({exc})"
                    full_due = min(full_due, now)  # and what else it did not send
                elif isinstance(item, _Closed):
                    connected = False
                    if not item.available:
                        streaming = False
                        self._notice = (f"no live stream ({item.error}); "
                                        f"re-reading every {POLL_S:g} s")
                    else:
                        self._notice = f"reconnecting ({item.error})"
                else:
                    last_event = now
                    wanted = self._apply(item)
                    if wanted is not None:
                        points |= wanted
                        quick_at = quick_at or now
                        if self.status in TERMINAL_STATUSES and ending_at is None:
                            ending_at = now
            now = clock()
            if ending_at is not None and (now - last_event >= DRAIN_QUIET_S
                                          or now - ending_at >= DRAIN_MAX_S
                                          or not connected):
                self.refresh(logs=not streaming or not connected)
                return
            if now >= full_due:
                self.refresh(logs=not streaming)
                points, quick_at, dirty = set(), None, True
                last_quick_end = clock()
                full_due = last_quick_end + max(POLL_S,
                                                2 * REFRESH_SHARE * (last_quick_end - now))
            elif quick_at is not None and now >= max(quick_at, last_quick_end + gap):
                self.refresh(full=False, series=points)
                points, quick_at, dirty = set(), None, True
                last_quick_end = clock()
                quick_cost = last_quick_end - now
            if ending_at is None and self.status in TERMINAL_STATUSES:
                ending_at = last_event = now  # seen by a re-read: drain what follows
            if dirty and clock() - last_publish >= PUBLISH_GAP_S:
                self._emit()
                dirty = False
                last_publish = clock()

    def _apply(self, event: SseEvent) -> set[str] | None:
        """Apply one stream event. None: nothing to re-read; else a quick refresh is due,
        for the series named (a point's), or the details alone (a status)."""
        try:
            data = json.loads(event.data)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        if event.event == "log":
            self._log.streamed(data)
            return None
        if event.event == "status" and "status" in data:
            self._details["status"] = str(data["status"])
            self._details["error"] = data.get("error")
            if isinstance(data.get("status_times"), dict):
                self._details["status_times"] = data["status_times"]
            return set()
        if event.event == "point" and isinstance(data.get("name"), str):
            return {data["name"]}
        return None
