"""Errors raised by the ingest side.

::

    IngestError                      root: catch this to catch everything below
    ├── MigrationError               a migration file failed or the history is inconsistent
    ├── StoreError                   PostgreSQL refused or lost a batch write (.retriable)
    ├── InvalidEventError            one message is poison: .reason (DLQ header) and .detail
    └── ShutdownTimeoutError         the graceful drain did not finish within its deadline

Poison input never propagates as an exception out of the consumer: ``decode`` turns an
``InvalidEventError`` into a dead-letter record (topic, partition, offset, reason), which is
counted and produced to the DLQ while the partition keeps flowing.
"""

from __future__ import annotations

__all__ = [
    "IngestError",
    "InvalidEventError",
    "MigrationError",
    "ShutdownTimeoutError",
    "StoreError",
]


class IngestError(Exception):
    """Root of every error the ingest package raises on purpose."""


class MigrationError(IngestError):
    def __init__(self, message: str, *, version: int | None = None) -> None:
        super().__init__(message)
        self.version = version


class StoreError(IngestError):
    """A batch write failed; ``retriable`` says whether trying the same batch again may work."""

    def __init__(self, message: str, *, retriable: bool) -> None:
        super().__init__(message)
        self.retriable = retriable


class InvalidEventError(IngestError):
    """A message that cannot become stored rows; ``reason`` is the short DLQ reason tag."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class ShutdownTimeoutError(IngestError):
    def __init__(self, deadline_s: float) -> None:
        super().__init__(f"graceful shutdown did not finish within {deadline_s:g} s")
        self.deadline_s = deadline_s
