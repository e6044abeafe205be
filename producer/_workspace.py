"""``Workspace``: where runs go (Kafka, API, local spool) and the sender that takes them there.

The environment is read in exactly one place, ``Workspace.from_env``; everything else
takes keyword arguments. A workspace starts its sender (thread, Kafka producer) lazily
when its first run opens, never in the constructor.

The read side (``get_run``, ``compute_targets``, and the read methods of ``Run`` and
``Experiment``) goes through the API with the workspace's ``ApiClient``. Reads show what
the ingest worker has committed, usually well under a second after Kafka has the events;
each read first gives this process's pending events a bounded chance to reach Kafka
(``_flush_for_read``), so a script reads its own writes as soon as the worker catches up.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from schemas.codec import Codec

from ._buffer import Stream
from ._client import ApiClient, segment
from ._errors import ConfigError, ProducerTimeoutError
from ._kafka_security import KafkaSecurity
from ._options import ProducerOptions
from ._sender import ProducerStats, Sender
from ._transport import KafkaTransport
from ._validate import check_name

if TYPE_CHECKING:
    from ._run import Run

DEFAULT_KAFKA = "127.0.0.1:9092"
DEFAULT_API = "http://127.0.0.1:8470"
DEFAULT_TOPIC = "runstream.events"
DEFAULT_WORKSPACE = "default"
DEFAULT_FLUSH_TIMEOUT_S = 30.0


def default_home() -> Path:
    return Path.home() / ".runstream"


class Workspace:
    """Connection settings plus the background sender shared by all runs logged through it.

    Use ``Workspace.from_env()`` in scripts; tests and embedding code pass keyword
    arguments. ``token`` and the Kafka password are never shown in ``repr`` or logs.
    """

    def __init__(
        self,
        *,
        name: str = DEFAULT_WORKSPACE,
        kafka_bootstrap: str = DEFAULT_KAFKA,
        api_url: str = DEFAULT_API,
        home: str | os.PathLike[str] | None = None,
        topic: str = DEFAULT_TOPIC,
        token: str = "",
        options: ProducerOptions | None = None,
        kafka_security: KafkaSecurity | None = None,
    ) -> None:
        self.name = check_name(name, "workspace name")
        if not api_url.startswith(("http://", "https://")):
            raise ConfigError("api_url", f"must be an http(s) URL, not {api_url!r}")
        if not kafka_bootstrap:
            raise ConfigError("kafka_bootstrap", "must not be empty")
        self.kafka_bootstrap = kafka_bootstrap
        self.kafka_security = kafka_security or KafkaSecurity()
        self.api_url = api_url.rstrip("/")
        self.home = Path(home).expanduser() if home is not None else default_home()
        self.topic = check_name(topic, "topic")
        self._token = token
        self.options = options or ProducerOptions()
        self.codec = Codec(max_message_bytes=self.options.max_message_bytes)
        self._lock = threading.Lock()
        self._sender: Sender | None = None
        self._open: set[Stream] = set()
        self._api = self._api_client()

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, options: ProducerOptions | None = None
    ) -> Workspace:
        """Read ``RUNSTREAM_{WORKSPACE,KAFKA,API,HOME,TOPIC,TOKEN}`` and the Kafka security
        variables (``RUNSTREAM_KAFKA_SECURITY_PROTOCOL``, ``…_USERNAME``, ``…_PASSWORD``,
        ``…_CA_FILE``…; see ``KafkaSecurity.from_env``) once."""
        env = os.environ if env is None else env
        return cls(
            name=env.get("RUNSTREAM_WORKSPACE") or DEFAULT_WORKSPACE,
            kafka_bootstrap=env.get("RUNSTREAM_KAFKA") or DEFAULT_KAFKA,
            api_url=env.get("RUNSTREAM_API") or DEFAULT_API,
            home=env.get("RUNSTREAM_HOME") or None,
            topic=env.get("RUNSTREAM_TOPIC") or DEFAULT_TOPIC,
            token=env.get("RUNSTREAM_TOKEN", ""),
            options=options,
            kafka_security=KafkaSecurity.from_env(env),
        )

    def __repr__(self) -> str:
        return (
            f"Workspace(name={self.name!r}, kafka_bootstrap={self.kafka_bootstrap!r}, "
            f"api_url={self.api_url!r}, home={str(self.home)!r}, topic={self.topic!r})"
        )

    @property
    def spool_dir(self) -> Path:
        """Encoded events waiting for Kafka."""
        return self.home / "spool" / "events"

    @property
    def blob_dir(self) -> Path:
        """Artifact bytes waiting for the API."""
        return self.home / "spool" / "blobs"

    def _transport(self, *, client_id: str) -> KafkaTransport:
        return KafkaTransport(
            bootstrap=self.kafka_bootstrap,
            topic=self.topic,
            compression=self.options.compression,
            max_message_bytes=self.options.max_message_bytes,
            batch_bytes=self.options.batch_max_bytes,
            request_timeout_ms=self.options.request_timeout_ms,
            client_id=client_id,
            security=self.kafka_security,
        )

    def _api_client(self) -> ApiClient:
        return ApiClient(
            api_url=self.api_url, token=self._token, timeout_s=self.options.api_timeout_s
        )

    def _new_sender(self) -> Sender:
        sender_id = uuid.uuid4().hex
        return Sender(
            sender_id=sender_id,
            options=self.options,
            codec=self.codec,
            transport=self._transport(client_id=f"runstream-{sender_id[:8]}"),
            spool_dir=self.spool_dir,
            blob_dir=self.blob_dir,
            api_url=self.api_url,
            token=self._token,
            workspace=self.name,
        )

    def _open_stream(self, stream: Stream) -> Sender:
        """Register a run handle's stream with the (started) sender."""
        with self._lock:
            if self._sender is None or self._sender.closed:
                self._sender = self._new_sender()
            sender = self._sender
            self._open.add(stream)
        sender.start()
        sender.buffer.register(stream)
        return sender

    def _release(self, stream: Stream, timeout_s: float) -> None:
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

    def stats(self) -> ProducerStats:
        """Counters of the current (or last) sender; all zero before the first run."""
        with self._lock:
            sender = self._sender or self._new_sender()
        return sender.stats()

    def flush(self, timeout_s: float = DEFAULT_FLUSH_TIMEOUT_S) -> None:
        """Wait until every run's events are acknowledged by Kafka; raises on timeout."""
        with self._lock:
            sender = self._sender
        if sender is not None:
            sender.flush(timeout_s)

    def _flush_for_read(self) -> None:
        """Before a read: wait (bounded, never raising) for this process's pending events.

        Skipped while the sender is offline: the events are safe in the spool and waiting
        would only delay the read by ``read_flush_timeout_s`` every time.
        """
        with self._lock:
            sender = self._sender
        if sender is None or sender.closed or sender.stats().mode == "offline":
            return
        with suppress(ProducerTimeoutError):
            sender.flush(self.options.read_flush_timeout_s)

    def get_run(self, run_id: str) -> Run:
        """A read-only handle on an existing run (``Run.attach``); ``NotFoundError`` if unknown."""
        from ._run import Run

        return Run.attach(self, run_id)

    def compute_targets(self) -> list[dict[str, Any]]:
        """Queue state of every compute target: ``compute_target``, ``queued``, ``preparing``,
        ``running``, ``not_responding``, ``oldest_queued_age_s``, ``queue_wait_p50_s``,
        ``queue_wait_p95_s``, ``completed_1h``, ``failed_1h``, ``canceled_1h``."""
        self._flush_for_read()
        return list(self._api.pages("/v1/compute", (), "targets"))

    def compute_target(self, name: str) -> dict[str, Any]:
        """One target's queue state plus ``active_runs`` (run summaries of its queued,
        preparing, running and not-responding runs); ``NotFoundError`` if unknown."""
        check_name(name, "compute target")
        self._flush_for_read()
        return self._api.get_json(f"/v1/compute/{segment(name)}")

    def close(self, timeout_s: float = DEFAULT_FLUSH_TIMEOUT_S) -> None:
        """Deliver what fits in ``timeout_s``, spool the rest, stop the sender.

        Every run handle of this workspace is closed; a later run starts a new sender.
        """
        with self._lock:
            sender = self._sender
            self._open.clear()
        if sender is not None:
            sender.close(timeout_s)
