"""Artifact bytes: staged content-addressed under ``RUNSTREAM_HOME/spool/blobs`` and
uploaded in the background with ``PUT {api}/v1/blobs/{sha256}``.

``upload_file``/``log_image`` copy the bytes into the staging directory while hashing
them, at call time: the event must carry the digest, and the source file may change (or
the stream be closed) once the call returns. The copy is written under a dot-name and
renamed to its digest, so a staged blob is always whole, and staging the same content
twice is harmless.

The uploader thread PUTs staged blobs through the workspace's ``ApiClient`` and deletes
each once the API answers 201 (created) or 200 (already there). These blocking calls live
on this thread, never on the training thread or the Kafka sender's event loop. When the
API is unreachable (or answers 5xx/401/403/404) the file stays and the thread retries
with backoff capped at 60 s; whatever is left at exit is uploaded by ``runstream sync``.
400 (digest mismatch: the staged copy is damaged) and 413 (too large for the server) can
never succeed: those blobs are deleted, counted in ``blobs_dropped`` and logged.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from ._client import ApiClient
from ._errors import ApiError, BlobUploadError, SpoolError

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
#: Answers after which retrying the same bytes is pointless.
FATAL_STATUSES = frozenset({400, 413})
MAX_BACKOFF_S = 60.0


def _read(source: BinaryIO) -> bytes:
    chunk = source.read(CHUNK_BYTES)
    if not isinstance(chunk, bytes | bytearray | memoryview):
        raise TypeError(
            f"stream must be opened in binary mode (read() returned {type(chunk).__name__})"
        )
    return bytes(chunk)


def stage(directory: Path, source: BinaryIO) -> tuple[str, int]:
    """Copy ``source`` to ``directory/<sha256>``; returns (sha256, size in bytes).

    Errors reading the source propagate unchanged; errors writing the copy raise
    ``SpoolError``.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".{uuid.uuid4().hex}.part"
        out = tmp.open("xb")
    except OSError as exc:
        raise SpoolError(directory, f"cannot stage artifact bytes: {exc}") from exc
    digest = hashlib.sha256()
    size = 0
    try:
        with out:
            while chunk := _read(source):
                digest.update(chunk)
                size += len(chunk)
                try:
                    out.write(chunk)
                except OSError as exc:
                    raise SpoolError(tmp, f"cannot stage artifact bytes: {exc}") from exc
        sha256 = digest.hexdigest()
        try:
            os.replace(tmp, directory / sha256)
        except OSError as exc:
            raise SpoolError(tmp, f"cannot stage artifact bytes: {exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return sha256, size


def list_staged(directory: Path) -> list[Path]:
    """Whole staged blobs (not the dot-named partial copies)."""
    try:
        return sorted(p for p in directory.iterdir() if not p.name.startswith("."))
    except FileNotFoundError:
        return []


def upload(client: ApiClient, sha256: str, path: Path, *, timeout_s: float) -> int:
    """PUT one staged blob to ``/v1/blobs/{sha256}``; returns the HTTP status (200 or 201).

    Raises ``FileNotFoundError`` if the staged file is gone (someone else uploaded it) and
    ``BlobUploadError`` otherwise.
    """
    try:
        return client.put_file(f"/v1/blobs/{sha256}", path, timeout_s=timeout_s)
    except ApiError as exc:
        shown = "API unreachable" if exc.status is None else f"HTTP {exc.status}"
        raise BlobUploadError(
            sha256, exc.status, f"{shown}: {exc.message}", retriable=exc.retriable
        ) from exc


def put_blob(
    api_url: str, sha256: str, path: Path, *, token: str, timeout_s: float, workspace: str = ""
) -> int:
    """``upload`` through a client of its own, for callers that hold no ``ApiClient``.

    ``workspace`` is sent as ``X-Runstream-Workspace``: with a token scoped to several
    workspaces the API records the bytes for that one.
    """
    client = ApiClient(api_url=api_url, token=token, timeout_s=timeout_s, workspace=workspace)
    return upload(client, sha256, path, timeout_s=timeout_s)


class BlobUploader:
    """One daemon thread uploading staged blobs in submission order, with backoff."""

    def __init__(
        self,
        *,
        client: ApiClient,
        directory: Path,
        timeout_s: float = 60.0,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self._client = client
        self.directory = directory
        self._timeout_s = timeout_s
        self._on_change = on_change
        self._cond = threading.Condition()
        self._queue: deque[str] = deque()
        self._busy = False
        self._retry_at = 0.0
        self._backoff_s = 1.0
        #: True from a failed upload until the next successful one.
        self.failing = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.uploaded = 0
        self.dropped = 0

    def __repr__(self) -> str:
        return f"BlobUploader(api_url={self._client.api_url!r}, pending={self.pending})"

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._queue) + self._busy

    def submit(self, sha256: str) -> None:
        with self._cond:
            if self._stopping:
                return  # staged on disk; `runstream sync` uploads it
            if sha256 not in self._queue:
                self._queue.append(sha256)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="runstream-blobs", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def stop(self) -> None:
        """Stop after the current request; staged blobs stay for ``runstream sync``."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def _next(self) -> str | None:
        with self._cond:
            while True:
                if self._stopping:
                    return None
                wait_s = self._retry_at - time.monotonic()
                if self._queue and wait_s <= 0:
                    self._busy = True
                    return self._queue.popleft()
                self._cond.wait(timeout=wait_s if self._queue else None)

    def _run(self) -> None:
        while (sha256 := self._next()) is not None:
            retry = self._upload(sha256)
            with self._cond:
                self._busy = False
                if retry:
                    self._queue.appendleft(sha256)
                    self._retry_at = time.monotonic() + self._backoff_s
                    self._backoff_s = min(self._backoff_s * 2, MAX_BACKOFF_S)
                else:
                    self._backoff_s = 1.0
            self._on_change()

    def _upload(self, sha256: str) -> bool:
        """Upload one blob; True means keep it and retry later."""
        path = self.directory / sha256
        try:
            upload(self._client, sha256, path, timeout_s=self._timeout_s)
        except FileNotFoundError:
            return False  # uploaded meanwhile (e.g. by `runstream sync`)
        except BlobUploadError as exc:
            if exc.status in FATAL_STATUSES:
                path.unlink(missing_ok=True)
                self.dropped += 1
                logger.warning("dropping artifact bytes %s: %s", sha256, exc)
                return False
            if not self.failing:
                logger.warning("artifact upload failed, will retry in the background: %s", exc)
            self.failing = True
            return True
        path.unlink(missing_ok=True)
        self.uploaded += 1
        self.failing = False
        return False
