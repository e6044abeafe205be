"""On-disk spool of already-encoded Kafka messages (``RUNSTREAM_HOME/spool/events``).

Segment file format::

    b"RSSPOOL1"                                 8-byte magic
    then records, each:
      >I  payload length
      >I  crc32(payload)
      payload = >H key length, key (run id, utf-8), value (Confluent-framed Avro event)

Crash safety. A record is one ``os.write`` on an ``O_APPEND`` descriptor, so a killed
process leaves at most a torn last record; readers stop at the first short or
crc-mismatched record. After a failed write (disk full) the writer truncates back to the
last whole record, so nothing valid ever follows a torn one. Segments are fsynced when
sealed and on ``sync()`` — by a thread of the writer's own, never by the caller: on a
disk busy with other writes (a database's checkpoint) an fsync can take seconds, and the
sender that appends must keep draining the log calls' buffer meanwhile. Syncs of the
active segment coalesce (one in progress at a time); ``sync(wait=True)`` and ``close()``
wait for every fsync and raise what failed. Readers see appended records at once (the
page cache), fsynced or not.

Budget. A writer holds at most ``max_bytes`` of its own undelivered segments (sealed and
active) and never leaves less than ``min_free_bytes`` free on the spool's file system
(checked when a segment is created); past either, ``append`` raises ``SpoolError`` and
the caller drops and counts. ``replayed(path)`` gives a delivered segment's bytes back.

Ownership. A new segment is created under a dot-name, locked (``flock LOCK_EX``) and only
then renamed to ``<writer>-<n>.seg``, so nobody sees an unlocked live segment. The writer
keeps the lock while it appends. A replayer — the owning sender after a reconnect, or
``runstream sync`` in any process — takes the lock non-blocking, checks the path still
names the locked inode, sends every record, waits for the acks, and unlinks while still
holding the lock. One segment is thus replayed by one process at a time and deleted only
after delivery; a crash mid-replay leaves it for the next replay, whose duplicates are
dropped downstream by ``event_id`` (inside the encoded bytes, so replay never changes it).
"""

from __future__ import annotations

import fcntl
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from ._errors import SpoolError

MAGIC = b"RSSPOOL1"
FRAME = struct.Struct(">II")
KEY_LEN = struct.Struct(">H")
SUFFIX = ".seg"

Record = tuple[bytes, bytes]


def frame(key: bytes, value: bytes) -> bytes:
    payload = KEY_LEN.pack(len(key)) + key + value
    return FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def parse(data: bytes) -> tuple[list[Record], int]:
    """Whole records of one segment and the number of trailing bytes that were not one."""
    if not data.startswith(MAGIC):
        return [], len(data)
    out: list[Record] = []
    pos, end = len(MAGIC), len(data)
    while pos + FRAME.size <= end:
        length, crc = FRAME.unpack_from(data, pos)
        start = pos + FRAME.size
        payload = data[start : start + length]
        if len(payload) != length or zlib.crc32(payload) != crc or length < KEY_LEN.size:
            break
        (key_len,) = KEY_LEN.unpack_from(payload)
        out.append((payload[2 : 2 + key_len], payload[2 + key_len :]))
        pos = start + length
    return out, end - pos


def count_records(path: Path) -> int:
    """Records in a segment without loading it (headers only); 0 if it vanished."""
    n = 0
    try:
        with path.open("rb") as f:
            if f.read(len(MAGIC)) != MAGIC:
                return 0
            while header := f.read(FRAME.size):
                if len(header) < FRAME.size:
                    break
                length, _ = FRAME.unpack(header)
                f.seek(length, os.SEEK_CUR)
                n += 1
    except FileNotFoundError:
        return 0
    return n


def list_segments(directory: Path) -> list[Path]:
    """Every visible segment, oldest writer position first within a writer."""
    try:
        return sorted(p for p in directory.iterdir() if p.name.endswith(SUFFIX))
    except FileNotFoundError:
        return []


@dataclass
class ClaimedSegment:
    path: Path
    records: list[Record]
    torn_bytes: int

    def done(self) -> None:
        """Everything was delivered: delete the segment (the lock is still held)."""
        self.path.unlink(missing_ok=True)


@contextmanager
def claim(path: Path) -> Iterator[ClaimedSegment | None]:
    """Lock a segment for replay; yields None if another process holds it or it is gone."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        yield None
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None
            return
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # replayed and unlinked by someone else between open and lock
            yield None
            return
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read()
        records, torn = parse(data)
        yield ClaimedSegment(path, records, torn)
    finally:
        os.close(fd)  # releases the lock


def _nothing() -> None:
    return None


def _fsync_and_close(fd: int, dirty: bool) -> None:
    """A sealed segment's last fsync (a failure leaves the data in the page cache, where
    replay reads it) and close."""
    try:
        if dirty:
            with suppress(OSError):
                os.fsync(fd)
    finally:
        os.close(fd)


class SpoolWriter:
    """Appends to this writer's own segments; no I/O until the first ``append``."""

    def __init__(
        self,
        directory: Path,
        *,
        writer_id: str,
        max_segment_bytes: int,
        max_bytes: int | None = None,
        min_free_bytes: int = 0,
    ) -> None:
        self.directory = directory
        self.writer_id = writer_id
        self.max_segment_bytes = max_segment_bytes
        self.max_bytes = max_bytes
        self.min_free_bytes = min_free_bytes
        #: Bytes of this writer's segments not yet delivered (sealed ones and the active one).
        self.pending_bytes = 0
        self._sealed_bytes: dict[Path, int] = {}
        self._fd: int | None = None
        self._path: Path | None = None
        self._size = 0
        self._records = 0
        self._next = 0
        self._dirty = False
        #: Sealed segments of this writer that have not been replayed yet, oldest first.
        self.sealed: list[Path] = []
        self.records_written = 0
        #: fsyncs (and closes of sealed segments) run here, in order; made on first use.
        self._fsyncer: ThreadPoolExecutor | None = None
        self._active_sync: Future[None] | None = None

    @property
    def active_records(self) -> int:
        return self._records

    def has_pending(self) -> bool:
        return bool(self.sealed) or self._records > 0

    def _open(self) -> int:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            if self.min_free_bytes:
                fs = os.statvfs(self.directory)
                free = fs.f_bavail * fs.f_frsize
                if free < self.min_free_bytes:
                    raise SpoolError(
                        self.directory,
                        f"only {free >> 20} MiB free on its disk, under the "
                        f"{self.min_free_bytes >> 20} MiB the spool leaves free",
                    )
            name = f"{self.writer_id}-{self._next:08d}{SUFFIX}"
            tmp = self.directory / f".{name}.new"
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
            fd = os.open(tmp, flags, 0o600)
        except OSError as exc:
            raise SpoolError(self.directory, f"cannot create a spool segment: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, MAGIC)
            os.rename(tmp, self.directory / name)
        except OSError as exc:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise SpoolError(self.directory, f"cannot create a spool segment: {exc}") from exc
        self._next += 1
        self._fd, self._path, self._size, self._records = fd, self.directory / name, len(MAGIC), 0
        self.pending_bytes += len(MAGIC)
        return fd

    def append(self, key: bytes, value: bytes) -> None:
        """Append one message; raises ``SpoolError`` (nothing partial is left behind)."""
        data = frame(key, value)
        if self.max_bytes is not None and self.pending_bytes + len(data) > self.max_bytes:
            raise SpoolError(
                self.directory,
                f"its budget of {self.max_bytes >> 20} MiB of undelivered events is used up",
            )
        fd = self._fd if self._fd is not None else self._open()
        try:
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(f"short write ({written} of {len(data)} bytes)")
        except OSError as exc:
            try:
                os.ftruncate(fd, self._size)
            except OSError:
                self.seal()  # cannot repair in place: never write after a torn record
            raise SpoolError(self._path or self.directory, f"cannot append: {exc}") from exc
        self._size += len(data)
        self.pending_bytes += len(data)
        self._records += 1
        self.records_written += 1
        self._dirty = True
        if self._size >= self.max_segment_bytes:
            self.seal()

    def _submit(self, fn: Callable[..., None], *args: object) -> Future[None]:
        if self._fsyncer is None:
            self._fsyncer = ThreadPoolExecutor(1, thread_name_prefix="runstream-spool-fsync")
        try:
            return self._fsyncer.submit(fn, *args)
        except RuntimeError:
            # The interpreter is exiting (its executors take no more work before the atexit
            # hooks that close senders run): do it here, after what is queued.
            self._fsyncer.shutdown(wait=True)
            done: Future[None] = Future()
            try:
                fn(*args)
            except OSError as exc:
                done.set_exception(exc)
            else:
                done.set_result(None)
            return done

    def sync(self, *, wait: bool = False) -> None:
        """fsync the active segment if it changed, on the writer's fsync thread (unless
        one is still in progress: the next call asks again); with ``wait``, return once
        every fsync and close asked so far is done. Raises ``SpoolError`` for a failed
        fsync of the active segment (a sealed one's data stays readable in the page cache
        either way)."""
        previous = self._active_sync
        if previous is not None and previous.done():
            self._active_sync = None
            if (exc := previous.exception()) is not None:
                raise SpoolError(self._path or self.directory, f"fsync failed: {exc}")
        if self._fd is not None and self._dirty and self._active_sync is None:
            self._active_sync = self._submit(os.fsync, self._fd)
            self._dirty = False
        if wait and self._fsyncer is not None:
            self._submit(_nothing).result()  # one thread, in order: all before it are done
            self.sync()  # raises the active segment's failure, if any

    def seal(self) -> None:
        """Close the active segment so it can be replayed: unlocked at once, fsynced and
        closed on the fsync thread."""
        fd, path = self._fd, self._path
        if fd is None or path is None:
            return
        self._fd = self._path = None
        self._active_sync = None  # its failure no longer matters: the close fsyncs again
        with suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)  # a replayer may claim it now
        self._submit(_fsync_and_close, fd, self._dirty)
        self._dirty = False
        if self._records:
            self.sealed.append(path)
            self._sealed_bytes[path] = self._size
        else:
            path.unlink(missing_ok=True)
            self.pending_bytes = max(self.pending_bytes - self._size, 0)
        self._records = 0

    def replayed(self, path: Path) -> None:
        """A sealed segment of this writer was delivered (by us or ``runstream sync``)."""
        self.sealed.remove(path)
        self.pending_bytes = max(self.pending_bytes - self._sealed_bytes.pop(path, 0), 0)

    def close(self) -> None:
        """Seal the active segment and wait for every fsync (raising none: the data is
        written either way)."""
        self.seal()
        self._active_sync = None
        if self._fsyncer is not None:
            self._fsyncer.shutdown(wait=True)
            self._fsyncer = None
