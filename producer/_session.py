"""``Session``: what a run handle needs from its workspace, and nothing more.

A ``Workspace`` holds one session and every run handle opened through it shares it. The
session owns what those runs share:

- the background ``Sender`` (thread, Kafka producer, spool, uploader). It starts when the
  first run handle opens (``open_stream``), never in a constructor, and closes when the
  last one closes (``release``); a later run starts a new one.
- the ``ApiClient`` every read and upload goes through (``api``), and the ``Codec`` and
  ``ProducerOptions`` run handles size and time their events with.

Fork. In a fork()ed child (a data loader's worker, a ``multiprocessing`` pool with the
fork start method) the parent's sender thread does not exist. The child forgets the
parent's sender and unsent events (the parent sends them) and each open run handle goes
on logging through a new stream: same run and rank, a producer id of its own, so its
events reach the run exactly once. The child's sender starts at its first event (no
thread or connection in workers that never log) and is closed at the child's exit —
atexit, or multiprocessing's exit finalizers for its workers. A child killed before it
exits (SIGKILL, ``Pool.terminate``) loses what it logged in its last ``linger_ms``; call
``Workspace.flush()`` at the end of a task to be sure. Lifecycle events and heartbeats
stay the parent's.

Reads show what the ingest worker has committed, usually well under a second after Kafka
has the events. A script reads its own writes: each read first gives this process's
pending events a bounded chance to reach Kafka (``flush_for_read``), and a read of a run
this process wrote into waits (bounded by ``read_flush_timeout_s``) until the API reports
every event each of its producers sent there as stored (``GET /v1/runs/{id}?producer=``:
stored events ≥ the producer's next ``seq``; seqs are gap-free). ``has_unconfirmed``
tells a handle whether that wait is needed. Listing a run's children first waits the same
way for each child run this process started under it (``wait_for_children``), so a child
just started — or just ended — is listed, with its status.

A run handle uses ``name``, ``options``, ``codec``, ``api``, ``open_stream``, ``release``
and ``flush_for_read``. The workspace itself also uses ``flush``, ``close`` and ``stats``,
and ``runstream sync`` builds its Kafka producer with ``transport``.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from schemas.codec import Codec

from ._buffer import Stream
from ._client import ApiClient, segment
from ._errors import NotFoundError, ProducerTimeoutError
from ._options import ProducerOptions
from ._sender import ProducerStats, Sender, forget_senders_after_fork
from ._transport import KafkaTransport

if TYPE_CHECKING:
    from ._run import RunHandle

DEFAULT_FLUSH_TIMEOUT_S = 30.0
#: How far along a status is (the worker's rule: only forward; NotResponding is running).
STATUS_RANK = {
    "NotStarted": 0, "Queued": 1, "Preparing": 2, "Running": 3, "NotResponding": 3,
    "Finalizing": 4, "CancelRequested": 5, "Completed": 6, "Failed": 6, "Canceled": 6,
}
#: Between looks while waiting for a run logged here to be stored.
VISIBLE_POLL_S = 0.05
#: How many of its producers a read asks the API about (the API's limit).
MAX_PRODUCERS_ASKED = 100

#: Builds a Kafka transport for a client id (one per sender, one per ``runstream sync``).
TransportFactory = Callable[[str], KafkaTransport]


class Session:
    """One workspace's sender, API client, codec and options."""

    def __init__(
        self,
        *,
        name: str,
        options: ProducerOptions,
        api: ApiClient,
        transport: TransportFactory,
        spool_dir: Path,
        blob_dir: Path,
    ) -> None:
        self.name = name
        self.options = options
        self.codec = Codec(max_message_bytes=options.max_message_bytes)
        self.api = api
        self.spool_dir = spool_dir
        self.blob_dir = blob_dir
        self._transport = transport
        self._lock = threading.Lock()
        self._sender: Sender | None = None
        self._open: set[Stream] = set()
        #: Runs this process logged into: a read of one waits (bounded) until it is stored.
        self.own_runs: set[str] = set()
        #: The furthest status this process sent per run: a read waits (bounded) for it.
        self._sent_status: dict[str, str] = {}
        #: Every stream (producer) this process opened, per run.
        self._streams: dict[str, list[Stream]] = {}
        #: Per producer id: events seen stored (a prefix of its seqs).
        self._confirmed: dict[str, int] = {}
        #: Child runs this process started, per parent run.
        self._children: dict[str, list[str]] = {}
        #: Writable run handles, rebound to new streams in a fork()ed child.
        self._handles: weakref.WeakSet[RunHandle] = weakref.WeakSet()
        _sessions.add(self)

    def __repr__(self) -> str:
        return f"Session(name={self.name!r}, api_url={self.api.api_url!r})"

    @property
    def sender(self) -> Sender | None:
        """The current (or last) sender; None until the first run handle opened."""
        with self._lock:
            return self._sender

    def transport(self, client_id: str) -> KafkaTransport:
        return self._transport(client_id)

    def _new_sender(self) -> Sender:
        sender_id = uuid.uuid4().hex
        return Sender(
            sender_id=sender_id,
            options=self.options,
            codec=self.codec,
            transport=self._transport(f"runstream-{sender_id[:8]}"),
            spool_dir=self.spool_dir,
            blob_dir=self.blob_dir,
            api=self.api,
        )

    # ---- what a run handle needs ------------------------------------------------------

    def open_stream(self, stream: Stream) -> Sender:
        """Register a run handle's stream with the (started) sender."""
        with self._lock:
            if self._sender is None or self._sender.closed:
                self._sender = self._new_sender()
            sender = self._sender
            self._open.add(stream)
            self.own_runs.add(stream.run_id)
            self._streams.setdefault(stream.run_id, []).append(stream)
        sender.start()
        sender.buffer.register(stream)
        return sender

    def track(self, handle: RunHandle) -> None:
        """A writable run handle opened on this session (see Fork in the module doc)."""
        with self._lock:
            self._handles.add(handle)

    def logged_in(self, experiment: str) -> bool:
        """Whether a run handle of this process logs into a run of ``experiment``."""
        with self._lock:
            return any(h.experiment.name == experiment for h in self._handles)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        handles = [h for h in self._handles if h.writable_in_child()]
        self._sender = None
        self._open = set()
        self._streams = {}
        self._confirmed = {}
        self._children = {}
        self._sent_status = {}
        self.own_runs = set()
        self._handles = weakref.WeakSet()
        if not handles:
            return
        sender = self._sender = self._new_sender()
        sender.start_on_first_event()
        for handle in handles:
            stream = handle.continue_in_child()
            self._open.add(stream)
            self.own_runs.add(stream.run_id)
            self._streams.setdefault(stream.run_id, []).append(stream)
            sender.buffer.register(stream)
            handle.bind(stream, sender)
            self._handles.add(handle)

    def release(self, stream: Stream, timeout_s: float) -> None:
        """A run handle closed: close the sender if it was the last open one, else flush."""
        with self._lock:
            self._open.discard(stream)
            last = not self._open
            sender = self._sender
        if sender is None:
            return
        if last:
            sender.close(timeout_s)
            return
        # close never discards: what is not delivered in time stays queued for the sender
        # that the workspace's other open runs keep using.
        with suppress(ProducerTimeoutError):
            sender.flush(timeout_s)

    def flush_for_read(self) -> None:
        """Before a read: wait (bounded, never raising) for this process's pending events.

        Skipped while the sender is offline: the events are safe in the spool and waiting
        would only delay the read by ``read_flush_timeout_s`` every time.
        """
        sender = self.sender
        if sender is None or sender.closed or sender.stats().mode == "offline":
            return
        with suppress(ProducerTimeoutError):
            sender.flush(self.options.read_flush_timeout_s)

    def sent_status(self, run_id: str, status: str) -> None:
        """A run handle of this process sent ``status`` for ``run_id``."""
        with self._lock:
            before = self._sent_status.get(run_id)
            if before is None or STATUS_RANK[status] >= STATUS_RANK[before]:
                self._sent_status[run_id] = status

    def started_child(self, parent_run_id: str, run_id: str) -> None:
        """This process started child run ``run_id`` under ``parent_run_id``."""
        with self._lock:
            self._children.setdefault(parent_run_id, []).append(run_id)

    def wait_for_children(self, parent_run_id: str) -> None:
        """Before listing a run's children: wait (bounded by ``read_flush_timeout_s`` in
        all) until every child run this process started under it is stored with every
        event this process sent there (``run_details``), as a read of the run itself does."""
        if self._offline():
            return
        with self._lock:
            children = list(self._children.get(parent_run_id, ()))
        deadline = time.monotonic() + self.options.read_flush_timeout_s
        for child in children:
            if time.monotonic() >= deadline:
                return
            if self.has_unconfirmed(child):
                with suppress(NotFoundError):
                    self.run_details(child)

    def has_unconfirmed(self, run_id: str) -> bool:
        """Whether this process sent events for ``run_id`` not yet seen stored."""
        return bool(self._unconfirmed(run_id))

    def _unconfirmed(self, run_id: str) -> dict[str, int]:
        """{producer id: its next seq} of this process's producers of ``run_id`` with
        events not yet seen stored (at most ``MAX_PRODUCERS_ASKED``, newest first)."""
        with self._lock:
            streams = list(self._streams.get(run_id, ()))
            out = {}
            for stream in reversed(streams):
                sent = stream.next_seq  # assigned by the sender thread; an int read is atomic
                if sent > self._confirmed.get(stream.producer_id, 0):
                    out[stream.producer_id] = sent
                    if len(out) == MAX_PRODUCERS_ASKED:
                        break
            return out

    def run_details(self, run_id: str) -> dict[str, Any]:
        """``GET /v1/runs/{id}`` after flushing. A run this process logged into is waited
        for (up to ``read_flush_timeout_s``) until the worker has stored it, the status
        this process last sent and every event it sent there, so a script reads its own
        writes — not a ``NotFoundError``, a "Running" or a missing tag a moment too early.
        Offline (events in the spool), nothing is waited for."""
        self.flush_for_read()
        path = f"/v1/runs/{segment(run_id)}"
        deadline = time.monotonic() + self.options.read_flush_timeout_s
        with self._lock:
            sent = self._sent_status.get(run_id)
        pending = {} if self._offline() else self._unconfirmed(run_id)
        query = [("producer", producer_id) for producer_id in pending]
        while True:
            try:
                details = self.api.get_json(path, query)
            except NotFoundError:
                if run_id not in self.own_runs or time.monotonic() >= deadline:
                    raise
            else:
                seen = STATUS_RANK.get(str(details.get("status")), 0)
                stored = details.pop("producers", None) or {}
                caught_up = [pid for pid, n in pending.items()
                             if int((stored.get(pid) or {}).get("events", 0)) >= n]
                with self._lock:
                    for pid in caught_up:
                        self._confirmed[pid] = max(self._confirmed.get(pid, 0), pending[pid])
                status_seen = sent is None or seen >= STATUS_RANK[sent]
                if (status_seen and len(caught_up) == len(pending)) or (
                        time.monotonic() >= deadline):
                    return details
            time.sleep(VISIBLE_POLL_S)

    def _offline(self) -> bool:
        sender = self.sender
        return sender is not None and not sender.closed and sender.stats().mode == "offline"

    # ---- what the workspace needs -----------------------------------------------------

    def stats(self) -> ProducerStats:
        """Counters of the current (or last) sender; all zero before the first run."""
        with self._lock:
            sender = self._sender or self._new_sender()
        return sender.stats()

    def flush(self, timeout_s: float) -> None:
        sender = self.sender
        if sender is not None:
            sender.flush(timeout_s)

    def close(self, timeout_s: float) -> None:
        """Deliver what fits in ``timeout_s``, spool the rest, stop the sender."""
        with self._lock:
            sender = self._sender
            self._open.clear()
        if sender is not None:
            sender.close(timeout_s)


_sessions: weakref.WeakSet[Session] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    forget_senders_after_fork()
    for session in list(_sessions):
        session._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)
