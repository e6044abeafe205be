"""Change notices: what a committed batch touched, announced with PostgreSQL NOTIFY.

The writer side (the worker's ``Store.write_batch``) calls ``notify_changes`` inside its batch
transaction, after the rows are written. PostgreSQL delivers notifications only when the
transaction COMMITs, and never if it rolls back, so a notice always means "this is now
readable" — exactly the signal live readers (``ingest/api/live/``) need, with no polling.

Channel ``runstream_changes``; each payload is compact JSON, one of::

    {"runs": ["<run id>", …], "targets": ["<compute target>", …]}
    {"all": true}

``runs`` are the runs that gained rows (points, log lines, status, heartbeats…).
``targets`` are the compute targets whose queue state may have moved: those of the runs
that got a Lifecycle (status) or Heartbeat (NotResponding ↔ Running) event, looked up in
``runstream_data.runs`` because only a run's first Lifecycle event carries its target.
Either list may be absent when empty.

PostgreSQL refuses payloads of 8000 bytes or more, so the ids are split over several
notices of at most ``MAX_PAYLOAD_BYTES`` each; a batch that would need more than
``MAX_NOTICES`` of them (thousands of runs at once) sends the single notice
``{"all": true}`` instead: every listener re-reads, which is correct, only less precise.

Notices are hints, never data: a listener that misses some (it was reconnecting) re-reads
everything it serves, so nothing is lost by a dropped notice. NOTIFY takes a brief global
lock at commit to keep the queue in commit order; at one commit per batch that is noise.

The reader side is ``ChangeListener``: ONE dedicated connection per API process LISTENs
and fans notices out in-process to ``Subscription``s keyed by run id and compute target.
Fan-out only sets each subscriber's wake flag (an ``asyncio.Event``), so it never blocks
and costs no memory per notice however slow a subscriber is: many notices before the
subscriber looks again collapse into one wake-up, and the subscriber reads what is new
from the tables. The connection is pinged every ``ping_interval_s`` (a half-open TCP
connection would otherwise go unnoticed) and re-opened with backoff when lost; on every
(re)connect and disconnect all subscribers are woken, because notices may have been
missed, and ``connected`` tells them to poll while no notices can arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self

import asyncpg

__all__ = [
    "APPLICATION_NAME",
    "CHANNEL",
    "MAX_NOTICES",
    "MAX_PAYLOAD_BYTES",
    "ChangeListener",
    "ChangeNotice",
    "Subscription",
    "change_payloads",
    "notify_changes",
    "parse_notice",
]

logger = logging.getLogger(__name__)

CHANNEL: Final = "runstream_changes"
#: Under PostgreSQL's hard limit of 8000 bytes (including the terminator).
MAX_PAYLOAD_BYTES: Final = 7900
MAX_NOTICES: Final = 16
#: How the listener's connection shows in pg_stat_activity.
APPLICATION_NAME: Final = "runstream-change-listener"

SQL_TARGETS_OF_RUNS: Final = """
SELECT DISTINCT compute_target FROM runstream_data.runs
WHERE run_id = ANY($1::text[]) AND compute_target IS NOT NULL
"""
SQL_NOTIFY: Final = "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p"

_ALL: Final = json.dumps({"all": True})
_OVERHEAD: Final = len('{"runs":[],"targets":[]}')


@dataclass(frozen=True, slots=True)
class ChangeNotice:
    """One parsed notice; ``all`` means "assume everything changed"."""

    runs: frozenset[str] = frozenset()
    targets: frozenset[str] = frozenset()
    all: bool = False


def change_payloads(runs: Iterable[str], targets: Iterable[str]) -> list[str]:
    """The NOTIFY payloads announcing ``runs`` and ``targets`` (sorted, deduplicated)."""
    items = [("targets", t) for t in sorted(set(targets))]
    items += [("runs", r) for r in sorted(set(runs))]
    payloads: list[str] = []
    chunk: dict[str, list[str]] = {}
    size = _OVERHEAD
    for key, value in items:
        cost = len(json.dumps(value, ensure_ascii=False).encode()) + 1  # the comma
        if chunk and size + cost > MAX_PAYLOAD_BYTES:
            payloads.append(_dump(chunk))
            chunk, size = {}, _OVERHEAD
        if size + cost > MAX_PAYLOAD_BYTES:
            return [_ALL]  # one id alone is too long (ids are capped far below this)
        chunk.setdefault(key, []).append(value)
        size += cost
    if chunk:
        payloads.append(_dump(chunk))
    return [_ALL] if len(payloads) > MAX_NOTICES else payloads


def parse_notice(payload: str) -> ChangeNotice:
    """A notice from its payload; anything unreadable counts as ``all`` (safe side)."""
    try:
        data: Any = json.loads(payload)
    except ValueError:
        return ChangeNotice(all=True)
    if not isinstance(data, dict) or data.get("all") is True:
        return ChangeNotice(all=True)
    runs, targets = data.get("runs", []), data.get("targets", [])
    if not _strings(runs) or not _strings(targets):
        return ChangeNotice(all=True)
    return ChangeNotice(runs=frozenset(runs), targets=frozenset(targets))


async def notify_changes(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy,
    *,
    runs: Collection[str],
    status_runs: Collection[str],
) -> None:
    """Queue the notices for a batch on ``conn``'s open transaction (they go out when it
    commits): ``runs`` gained rows; ``status_runs`` (a subset) got a status or heartbeat
    event, so their compute targets' queues may have moved."""
    if not runs:
        return
    targets: list[str] = []
    if status_runs:
        targets = [r[0] for r in await conn.fetch(SQL_TARGETS_OF_RUNS, sorted(status_runs))]
    await conn.execute(SQL_NOTIFY, CHANNEL, change_payloads(runs, targets))


def _dump(chunk: dict[str, list[str]]) -> str:
    return json.dumps(chunk, ensure_ascii=False, separators=(",", ":"))


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


class Subscription:
    """Interest in some runs and/or compute targets; ``wait`` returns when one changed."""

    def __init__(self, listener: ChangeListener, *, runs: Collection[str],
                 targets: Collection[str]) -> None:
        self._listener = listener
        self.runs = frozenset(runs)
        self.targets = frozenset(targets)
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def wait(self, timeout_s: float) -> bool:
        """True when woken (and re-armed), False when ``timeout_s`` passed quietly."""
        try:
            await asyncio.wait_for(self._wake.wait(), timeout_s)
        except TimeoutError:
            return False
        self._wake.clear()
        return True

    def close(self) -> None:
        self._listener._remove(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class ChangeListener:
    """One LISTEN connection on ``CHANNEL``, fanned out to in-process subscriptions."""

    def __init__(self, *, dsn: str, ping_interval_s: float = 15.0, ping_timeout_s: float = 5.0,
                 max_reconnect_delay_s: float = 5.0) -> None:
        self._dsn = dsn
        self._ping_interval_s = ping_interval_s
        self._ping_timeout_s = ping_timeout_s
        self._max_reconnect_delay_s = max_reconnect_delay_s
        self._by_run: dict[str, set[Subscription]] = {}
        self._by_target: dict[str, set[Subscription]] = {}
        self._all: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        #: Notices received since start (for tests and metrics).
        self.notices = 0

    def __repr__(self) -> str:
        # Never the DSN: it may carry a password.
        return f"ChangeListener(connected={self.connected}, subscriptions={len(self._all)})"

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def subscriptions(self) -> int:
        return len(self._all)

    async def wait_connected(self, timeout_s: float) -> bool:
        try:
            await asyncio.wait_for(self._connected.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="change-listener")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.wake_all()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    def subscribe(self, *, runs: Collection[str] = (),
                  targets: Collection[str] = ()) -> Subscription:
        sub = Subscription(self, runs=runs, targets=targets)
        self._all.add(sub)
        for run in sub.runs:
            self._by_run.setdefault(run, set()).add(sub)
        for target in sub.targets:
            self._by_target.setdefault(target, set()).add(sub)
        return sub

    def wake_all(self) -> None:
        for sub in self._all:
            sub.wake()

    def dispatch(self, notice: ChangeNotice) -> None:
        """Wake the subscriptions a notice concerns (never blocks)."""
        self.notices += 1
        if notice.all:
            self.wake_all()
            return
        for key, index in ((notice.runs, self._by_run), (notice.targets, self._by_target)):
            for name in key:
                for sub in index.get(name, ()):
                    sub.wake()

    def _remove(self, sub: Subscription) -> None:
        self._all.discard(sub)
        for names, index in ((sub.runs, self._by_run), (sub.targets, self._by_target)):
            for name in names:
                subs = index.get(name)
                if subs is not None:
                    subs.discard(sub)
                    if not subs:
                        del index[name]

    def _on_notify(self, conn: asyncpg.Connection[Any] | asyncpg.pool.PoolConnectionProxy[Any],
                   pid: int, channel: str, payload: object) -> None:
        self.dispatch(parse_notice(str(payload)))

    async def _run(self) -> None:
        delay_s = 0.25
        while True:
            try:
                conn = await asyncpg.connect(
                    self._dsn, timeout=10, server_settings={"application_name": APPLICATION_NAME})
            except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
                logger.warning("change listener cannot connect (%s); retrying in %.1f s",
                               type(exc).__name__, delay_s)
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, self._max_reconnect_delay_s)
                continue
            delay_s = 0.25
            try:
                await self._listen(conn)
            except (OSError, TimeoutError, asyncpg.PostgresError,
                    asyncpg.InterfaceError) as exc:
                logger.warning("change listener lost its connection (%s); reconnecting",
                               type(exc).__name__)
            finally:
                self._connected.clear()
                self.wake_all()  # subscribers fall back to polling until we are back
                conn.terminate()
            await asyncio.sleep(delay_s)

    async def _listen(self, conn: asyncpg.Connection) -> None:
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        await conn.add_listener(CHANNEL, self._on_notify)
        self._connected.set()
        logger.info("listening for change notices on %s", CHANNEL)
        self.wake_all()  # notices may have been missed while not listening
        while True:
            try:
                await asyncio.wait_for(lost.wait(), self._ping_interval_s)
            except TimeoutError:
                await asyncio.wait_for(conn.fetchval("SELECT 1"), self._ping_timeout_s)
            else:
                raise ConnectionError("the server closed the connection")
