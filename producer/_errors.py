"""Errors raised by the producer SDK.

Tree::

    ProducerError                  root of everything this package raises on purpose
    ├── ConfigError                a RUNSTREAM_* variable or argument is unusable (also ValueError)
    ├── RunClosedError             logging into a run handle after ``close()``
    │   ├── RunEndedError          logging, tagging, uploading, child runs or ``fail`` on a
    │   │                          run this handle ended, or ``Run.resume`` of an ended
    │   │                          run; ``run_id``, ``status``
    │   └── ReadOnlyRunError       logging into a handle attached by id (``get_runs``, ``attach``)
    ├── ProducerTimeoutError       ``flush``/``close``/``wait_for_completion`` ran out of time
    │                              (also TimeoutError)
    ├── RunFailedError             ``wait_for_completion`` saw the run end Failed; ``run_id``,
    │                              ``error`` (the run's error text)
    ├── SpoolError                 the on-disk spool cannot be written or read
    └── TransportError             talking to Kafka or the API failed; ``retriable``
        ├── KafkaUnavailableError  no broker reachable, or a send failed
        ├── BlobUploadError        ``PUT /v1/blobs/{sha256}`` failed; ``status``, ``sha256``
        └── ApiError               a read (``get_metrics``, ``get_runs``…) failed; ``status``
            │                      (None without a response), ``message`` (the server's)
            └── NotFoundError      404: no such run, file or compute target (yet)

A bad call (empty or over-long name, unsupported value type, unequal table columns,
missing file, bad artifact name, an event that can never fit in one message) raises a
plain ``ValueError``/``TypeError`` at the call site instead, like the standard library.

Read calls raise ``ApiError``/``NotFoundError`` directly: they are answers the caller
asked for, not background work. Transport and spool errors of the write side are mostly
handled inside the background sender, which spools, retries or counts a drop; they reach
user code through ``runstream sync`` results, log warnings and ``Workspace.stats()``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = [
    "ApiError",
    "BlobUploadError",
    "ConfigError",
    "KafkaUnavailableError",
    "NotFoundError",
    "ProducerError",
    "ProducerTimeoutError",
    "ReadOnlyRunError",
    "RunClosedError",
    "RunEndedError",
    "RunFailedError",
    "SpoolError",
    "TransportError",
    "UnknownExperimentWarning",
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

    def __init__(self, run_id: str, message: str | None = None) -> None:
        super().__init__(
            message or f"run {run_id!r} is closed; open a new run or use Run.get_context()"
        )
        self.run_id = run_id


class RunEndedError(RunClosedError):
    """This handle ended the run (``complete``, ``fail``, ``cancel``, or the process's end:
    Ctrl-C, SIGTERM): it takes no more metrics, files, tags, child runs or statuses.

    Tags, properties, display name and description of an ended run are set through a
    handle fetched by id — ``Run(run.experiment, run.id).tag(...)`` — on purpose, not by
    a late call on the handle that ended it."""

    def __init__(
        self, run_id: str, status: str, what: str = "logging", *, message: str | None = None
    ) -> None:
        super().__init__(
            run_id,
            message
            or f"{what}: run {run_id!r} has ended ({status}); the handle that ended it takes "
            "no more metrics, files, tags, child runs or statuses. To tag it or add "
            f"properties now, fetch it: Run(run.experiment, {run_id!r}).tag(...)",
        )
        self.status = status


class ReadOnlyRunError(RunClosedError):
    """The handle was attached by id to read a run; it cannot log into it."""

    def __init__(self, run_id: str) -> None:
        super().__init__(
            run_id,
            f"run {run_id!r} was attached by id for reading and accepts no metrics or "
            "files (tags, properties, display_name and description can be set); log "
            "through the handle that started it, or reopen the run for logging in this "
            f"process while it is still active: Run.resume(workspace, {run_id!r})",
        )


class ProducerTimeoutError(ProducerError, TimeoutError):
    """``flush``/``close`` (nothing was discarded; ``pending_events`` are kept) or
    ``wait_for_completion`` (``pending_events`` is 0) did not finish within ``timeout_s``.
    """

    def __init__(
        self, operation: str, timeout_s: float, pending_events: int, *, detail: str | None = None
    ) -> None:
        if detail is None:
            detail = (
                f"{pending_events} events are still queued or spooled (they are kept and sent "
                "later, or by `runstream sync`)"
            )
        super().__init__(f"{operation} did not finish within {timeout_s:g} s; {detail}")
        self.operation = operation
        self.timeout_s = timeout_s
        self.pending_events = pending_events


class RunFailedError(ProducerError):
    """The run that ``wait_for_completion`` waited for ended Failed (``raise_on_error``)."""

    def __init__(self, run_id: str, error: str | None, details: dict[str, Any]) -> None:
        tail = f":\n{error}" if error else " (no error text was recorded)"
        super().__init__(f"run {run_id} failed{tail}")
        self.run_id = run_id
        self.error = error
        self.details = details


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


class ApiError(TransportError):
    """A read request to the API failed.

    ``status`` is the HTTP status, or None when no response came (unreachable, timed out,
    not JSON); ``message`` is the server's own error message when it sent one.
    """

    def __init__(self, status: int | None, message: str, *, what: str, retriable: bool) -> None:
        shown = "API unreachable" if status is None else f"HTTP {status}"
        super().__init__(f"{what}: {shown}: {message}", retriable=retriable)
        self.status = status
        self.message = message


class NotFoundError(ApiError):
    """404: the run, file or compute target does not exist, or the ingest worker has not
    committed it yet (a run becomes visible with its first event)."""


class UnknownExperimentWarning(UserWarning):
    """``Experiment.get_runs`` of an experiment no run was ever logged in (a typo?); the
    answer is still empty, as it is in Azure ML."""
