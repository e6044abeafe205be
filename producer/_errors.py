"""Errors raised by the producer SDK.

Tree::

    ProducerError                  root of everything this package raises on purpose
    ├── ConfigError                a RUNSTREAM_* variable or argument is unusable (also ValueError)
    ├── RunClosedError             logging into a run handle after ``close()``
    ├── ProducerTimeoutError       ``flush``/``close`` ran out of time (also TimeoutError)
    ├── SpoolError                 the on-disk spool cannot be written or read
    └── TransportError             talking to Kafka or the blob API failed; ``retriable``
        ├── KafkaUnavailableError  no broker reachable, or a send failed
        └── BlobUploadError        ``PUT /v1/blobs/{sha256}`` failed; ``status``, ``sha256``

A bad call (empty or over-long name, unsupported value type, unequal table columns,
missing file, bad artifact name, an event that can never fit in one message) raises a
plain ``ValueError``/``TypeError`` at the call site instead, like the standard library.

Transport and spool errors are mostly handled inside the background sender, which
spools, retries or counts a drop; they reach user code through ``runstream sync``
results, log warnings and ``Workspace.stats()``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "BlobUploadError",
    "ConfigError",
    "KafkaUnavailableError",
    "ProducerError",
    "ProducerTimeoutError",
    "RunClosedError",
    "SpoolError",
    "TransportError",
]


class ProducerError(Exception):
    """Root of the producer SDK's errors."""


class ConfigError(ProducerError, ValueError):
    """A configuration value (usually from the environment) is unusable."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name


class RunClosedError(ProducerError):
    """The run handle was closed; it accepts no more events."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id!r} is closed; open a new run or use Run.get_context()")
        self.run_id = run_id


class ProducerTimeoutError(ProducerError, TimeoutError):
    """``flush``/``close`` did not finish within ``timeout_s``; nothing was discarded."""

    def __init__(self, operation: str, timeout_s: float, pending_events: int) -> None:
        super().__init__(
            f"{operation} did not finish within {timeout_s:g} s; {pending_events} events "
            "are still queued or spooled (they are kept and sent later, or by `runstream sync`)"
        )
        self.operation = operation
        self.timeout_s = timeout_s
        self.pending_events = pending_events


class SpoolError(ProducerError):
    """The on-disk spool under ``RUNSTREAM_HOME/spool`` cannot be used."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


class TransportError(ProducerError):
    """Kafka or the blob API could not be reached or refused a request.

    ``retriable`` says whether the same request may succeed later (broker down, timeout,
    5xx) or never will (message too large, digest mismatch).
    """

    def __init__(self, message: str, *, retriable: bool) -> None:
        super().__init__(message)
        self.retriable = retriable


class KafkaUnavailableError(TransportError):
    """No broker answered, or the broker did not acknowledge a message."""


class BlobUploadError(TransportError):
    """Uploading artifact bytes to the API failed; ``status`` is None without a response."""

    def __init__(self, sha256: str, status: int | None, message: str, *, retriable: bool) -> None:
        super().__init__(f"blob {sha256[:12]}: {message}", retriable=retriable)
        self.sha256 = sha256
        self.status = status
