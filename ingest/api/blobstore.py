"""Content-addressed blob store: artifact and image bytes, named by their SHA-256.

Layout: ``<root>/ab/cd/<sha256>`` where ``ab`` and ``cd`` are the first two byte pairs
of the hex digest, so no directory grows past 65,536 entries.

Write protocol (``BlobStore.put``), which is what makes a blob either fully there or
absent, never partial:

1. Validate the digest (64 lowercase hex) before touching the disk.
2. Stream the bytes into a fresh temp file *in the blob's own shard directory* (same
   filesystem, so the final rename is atomic), hashing as we go and counting bytes; the
   size limit is enforced per chunk, so an oversized upload stops at the limit rather
   than after it has all been written.
3. ``fsync`` the file, compare the computed digest with the claimed one, and only then
   ``os.replace`` it onto its final name and ``fsync`` the directory.
4. Any failure (mismatch, too large, client gone) removes the temp file.

Workspace claims (``claim``/``claimed``): an upload made with a workspace-scoped token
also leaves an empty marker ``<root>/.workspaces/<h>/ab/<sha256>`` (``h`` = the first 32
hex digits of the SHA-256 of the workspace name, so hostile names never become paths).
Only a workspace that has sent the bytes itself may then probe or download the blob by
digest (``ingest/api/auth.py``); the bytes themselves are stored once.

Blobs are immutable, so uploads are idempotent: a blob already present yields
``created=False``. Two concurrent first uploads of the same digest may both report
``created=True``; both wrote identical bytes and the later rename wins harmlessly.

File I/O runs in the default executor so a slow disk never stalls the event loop;
hashlib releases the GIL for large updates. The constructor does no I/O; directories are
created on first write (or by ``check_writable``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import tempfile
import time
from collections.abc import AsyncIterable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ingest.errors import IngestError

__all__ = [
    "DEFAULT_MAX_BLOB_BYTES",
    "BlobError",
    "BlobInfo",
    "BlobNotFoundError",
    "BlobStore",
    "BlobTooLargeError",
    "DigestMismatchError",
    "InvalidDigestError",
    "PutResult",
    "is_valid_digest",
    "shard_path",
]

DEFAULT_MAX_BLOB_BYTES = 512 * 1024 * 1024
#: Bytes gathered in memory before one executor write; bounds memory per upload.
WRITE_BUFFER_BYTES = 1024 * 1024
TEMP_PREFIX = ".upload-"
CLAIMS_DIR = ".workspaces"
TEMP_SUFFIX = ".tmp"
#: Upload temp files older than this are leftovers of a killed upload (``sweep_temp``).
TEMP_MAX_AGE_S = 3600.0

_DIGEST_RE = re.compile(r"[0-9a-f]{64}")


class BlobError(IngestError):
    """Root of blob store errors (under the package root, ``ingest.errors.IngestError``).

    BlobError
    ├── InvalidDigestError    digest is not 64 lowercase hex characters
    ├── DigestMismatchError   the bytes hash to something else (.expected, .actual)
    ├── BlobTooLargeError     more than .limit_bytes were offered
    └── BlobNotFoundError     no blob with that digest
    """


class InvalidDigestError(BlobError, ValueError):
    def __init__(self, digest: str) -> None:
        shown = digest if len(digest) <= 80 else digest[:80] + "…"
        super().__init__(f"invalid sha256 digest {shown!r}: expected 64 lowercase hex characters")
        self.digest = digest


class DigestMismatchError(BlobError, ValueError):
    def __init__(self, *, expected: str, actual: str) -> None:
        super().__init__(f"body has sha256 {actual}, but the URL names {expected}")
        self.expected = expected
        self.actual = actual


class BlobTooLargeError(BlobError):
    def __init__(self, *, limit_bytes: int) -> None:
        super().__init__(f"blob exceeds the size limit of {limit_bytes} bytes")
        self.limit_bytes = limit_bytes


class BlobNotFoundError(BlobError, LookupError):
    def __init__(self, digest: str) -> None:
        super().__init__(f"no blob with sha256 {digest}")
        self.digest = digest


@dataclass(frozen=True, slots=True)
class PutResult:
    digest: str
    size_bytes: int
    #: False when the blob was already stored (the upload was a no-op).
    created: bool


@dataclass(frozen=True, slots=True)
class BlobInfo:
    digest: str
    size_bytes: int
    path: Path


def is_valid_digest(digest: str) -> bool:
    return _DIGEST_RE.fullmatch(digest) is not None


def shard_path(root: Path, digest: str) -> Path:
    """Where the blob named ``digest`` lives under ``root`` (no I/O)."""
    if not is_valid_digest(digest):
        raise InvalidDigestError(digest)
    return root / digest[0:2] / digest[2:4] / digest


class BlobStore:
    """A directory of immutable blobs named by SHA-256; see the module docstring."""

    def __init__(self, *, root: Path, max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES) -> None:
        if max_blob_bytes < 0:
            raise ValueError("max_blob_bytes must be >= 0")
        self._root = root
        self._max_blob_bytes = max_blob_bytes

    def __repr__(self) -> str:
        return f"BlobStore(root={str(self._root)!r}, max_blob_bytes={self._max_blob_bytes})"

    @property
    def root(self) -> Path:
        return self._root

    @property
    def max_blob_bytes(self) -> int:
        return self._max_blob_bytes

    def path_for(self, digest: str) -> Path:
        return shard_path(self._root, digest)

    # -- reading -------------------------------------------------------------------

    def stat(self, digest: str) -> BlobInfo | None:
        """Size and path of a stored blob, or None when absent. Blocking (one stat)."""
        path = self.path_for(digest)
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        return BlobInfo(digest=digest, size_bytes=st.st_size, path=path)

    def open(self, digest: str) -> BinaryIO:
        """Open a stored blob for reading (caller closes). Blocking."""
        path = self.path_for(digest)
        try:
            return path.open("rb")
        except FileNotFoundError:
            raise BlobNotFoundError(digest) from None

    async def read_bytes(self, digest: str) -> bytes:
        """The whole blob in memory; for small blobs (images, tests)."""
        path = self.path_for(digest)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise BlobNotFoundError(digest) from None

    async def exists(self, digest: str) -> bool:
        return await asyncio.to_thread(self.path_for(digest).is_file)

    # -- workspace claims ------------------------------------------------------------

    def claim_path(self, digest: str, workspace: str) -> Path:
        if not is_valid_digest(digest):
            raise InvalidDigestError(digest)
        space = hashlib.sha256(workspace.encode()).hexdigest()[:32]
        return self._root / CLAIMS_DIR / space / digest[0:2] / digest

    def claimed(self, digest: str, workspaces: Iterable[str]) -> bool:
        """Whether one of ``workspaces`` uploaded this blob itself. Blocking (stats)."""
        return any(self.claim_path(digest, w).is_file() for w in workspaces)

    def claim(self, digest: str, workspace: str) -> None:
        """Record that ``workspace`` sent the bytes of a stored blob. Blocking."""
        path = self.claim_path(digest, workspace)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()

    # -- writing -------------------------------------------------------------------

    async def put(self, digest: str, chunks: AsyncIterable[bytes]) -> PutResult:
        """Store the bytes of ``chunks`` under ``digest``, verifying both digest and size.

        Raises InvalidDigestError before reading anything, BlobTooLargeError as soon as
        the limit is crossed (the rest of ``chunks`` is not consumed), and
        DigestMismatchError after the last chunk. On any error nothing is stored.
        """
        final = self.path_for(digest)
        writer = await asyncio.to_thread(_TempWriter.create, final.parent)
        try:
            buffer = bytearray()
            size = 0
            async for chunk in chunks:
                size += len(chunk)
                if size > self._max_blob_bytes:
                    raise BlobTooLargeError(limit_bytes=self._max_blob_bytes)
                buffer += chunk
                if len(buffer) >= WRITE_BUFFER_BYTES:
                    await asyncio.to_thread(writer.write, bytes(buffer))
                    buffer.clear()
            if buffer:
                await asyncio.to_thread(writer.write, bytes(buffer))
            created = await asyncio.to_thread(writer.commit, final, digest)
        except BaseException:
            # Also on cancellation; removing one file is quick enough to not await.
            writer.abort()
            raise
        return PutResult(digest=digest, size_bytes=size, created=created)

    def sweep_temp(self, *, older_than_s: float = TEMP_MAX_AGE_S) -> int:
        """Remove upload temp files older than ``older_than_s``; the number removed.

        An upload killed mid-way (``kill -9`` of the API, a crashed disk) leaves its temp
        file behind; a live upload touches its file at least every few seconds. Blocking
        (walks the shard directories): run it in a thread.
        """
        cutoff = time.time() - older_than_s
        removed = 0
        shard = "[0-9a-f][0-9a-f]"
        for temp in self._root.glob(f"{shard}/{shard}/{TEMP_PREFIX}*{TEMP_SUFFIX}"):
            with contextlib.suppress(FileNotFoundError):
                if temp.stat().st_mtime < cutoff:
                    temp.unlink()
                    removed += 1
        return removed

    async def check_writable(self) -> None:
        """Raise OSError unless a blob could be written now (used by /readyz)."""
        await asyncio.to_thread(self._check_writable)

    def _check_writable(self) -> None:
        self._root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=self._root, prefix=TEMP_PREFIX) as probe:
            probe.write(b"ok")


class _TempWriter:
    """One upload's temp file and running hash. Blocking; driven from a thread."""

    def __init__(self, fd: int, path: Path) -> None:
        self._file = os.fdopen(fd, "wb")
        self._path = path
        self._hash = hashlib.sha256()

    @classmethod
    def create(cls, directory: Path) -> _TempWriter:
        directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=directory, prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX)
        return cls(fd, Path(name))

    def write(self, data: bytes) -> None:
        self._hash.update(data)
        self._file.write(data)

    def commit(self, final: Path, digest: str) -> bool:
        """Verify, make durable and rename into place; True when newly created."""
        actual = self._hash.hexdigest()
        if actual != digest:
            raise DigestMismatchError(expected=digest, actual=actual)
        if final.exists():
            self.abort()
            return False
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        # mkstemp creates 0600; blobs are plain readable data like any other file.
        os.chmod(self._path, 0o644)
        os.replace(self._path, final)
        _fsync_dir(final.parent)
        return True

    def abort(self) -> None:
        self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()


def _fsync_dir(directory: Path) -> None:
    """Persist a rename: fsync the directory entry (POSIX; a no-op where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
