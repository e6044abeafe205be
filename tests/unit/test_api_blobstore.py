"""BlobStore on a real directory (a temporary one): atomic, verified, bounded, idempotent
writes. (Its temp-file sweep when the API starts is tested with the server, in
tests/integration/test_api_server.py.)"""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest

from ingest.api.blobstore import (
    TEMP_PREFIX,
    BlobNotFoundError,
    BlobStore,
    BlobTooLargeError,
    DigestMismatchError,
    InvalidDigestError,
)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def chunks_of(parts: Iterable[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def files_under(root: Path) -> list[Path]:
    return sorted(Path(d) / f for d, _, names in os.walk(root) for f in names)


async def test_put_stores_under_the_sharded_path_and_reads_back(tmp_path: Path) -> None:
    store = BlobStore(root=tmp_path / "blobs")
    parts = [os.urandom(700_000) for _ in range(3)]  # crosses the 1 MiB write buffer
    data = b"".join(parts)
    digest = sha(data)

    result = await store.put(digest, chunks_of(parts))

    assert (result.digest, result.size_bytes, result.created) == (digest, len(data), True)
    path = tmp_path / "blobs" / digest[:2] / digest[2:4] / digest
    assert files_under(tmp_path / "blobs") == [path]
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    info = store.stat(digest)
    assert info is not None
    assert (info.size_bytes, info.path) == (len(data), path)
    with store.open(digest) as f:
        assert f.read() == data
    assert await store.read_bytes(digest) == data
    assert await store.exists(digest)


async def test_second_put_is_a_no_op(tmp_path: Path) -> None:
    store = BlobStore(root=tmp_path)
    first = await store.put(sha(b"abc"), chunks_of([b"a", b"bc"]))
    mtime = store.path_for(sha(b"abc")).stat().st_mtime_ns
    second = await store.put(sha(b"abc"), chunks_of([b"abc"]))
    assert (first.created, second.created) == (True, False)
    assert store.path_for(sha(b"abc")).stat().st_mtime_ns == mtime
    assert len(files_under(tmp_path)) == 1


async def test_mismatch_raises_and_leaves_nothing(tmp_path: Path) -> None:
    store = BlobStore(root=tmp_path)
    with pytest.raises(DigestMismatchError) as caught:
        await store.put(sha(b"expected"), chunks_of([b"actual"]))
    assert (caught.value.expected, caught.value.actual) == (sha(b"expected"), sha(b"actual"))
    assert files_under(tmp_path) == []
    assert store.stat(sha(b"expected")) is None


async def test_limit_stops_reading_at_the_first_chunk_over_it(tmp_path: Path) -> None:
    store = BlobStore(root=tmp_path, max_blob_bytes=10)
    pulled = 0

    async def counted() -> AsyncIterator[bytes]:
        nonlocal pulled
        for _ in range(100):
            pulled += 1
            yield b"1234"

    with pytest.raises(BlobTooLargeError) as caught:
        await store.put("0" * 64, counted())
    assert caught.value.limit_bytes == 10
    assert pulled == 3
    assert files_under(tmp_path) == []


async def test_exactly_the_limit_is_allowed(tmp_path: Path) -> None:
    store = BlobStore(root=tmp_path, max_blob_bytes=4)
    assert (await store.put(sha(b"1234"), chunks_of([b"12", b"34"]))).created


async def test_invalid_digest_is_refused_before_reading_or_touching_disk(tmp_path: Path) -> None:
    store = BlobStore(root=tmp_path / "blobs")
    pulled = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal pulled
        pulled += 1
        yield b"x"

    with pytest.raises(InvalidDigestError):
        await store.put("../../" + "0" * 58, body())
    assert pulled == 0
    assert not (tmp_path / "blobs").exists()


async def test_cancelled_upload_removes_its_temp_file(tmp_path: Path) -> None:
    store = BlobStore(root=tmp_path)
    started = asyncio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        yield b"partial"
        started.set()
        await asyncio.Event().wait()
        yield b"never"

    task = asyncio.create_task(store.put(sha(b"partial never"), stalls()))
    await started.wait()
    temps = [p for p in files_under(tmp_path) if p.name.startswith(TEMP_PREFIX)]
    assert len(temps) == 1
    assert temps[0].parent == store.path_for(sha(b"partial never")).parent
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert files_under(tmp_path) == []


async def test_missing_blob(tmp_path: Path) -> None:
    store = BlobStore(root=tmp_path)
    assert store.stat("f" * 64) is None
    assert not await store.exists("f" * 64)
    with pytest.raises(BlobNotFoundError):
        store.open("f" * 64)
    with pytest.raises(BlobNotFoundError):
        await store.read_bytes("f" * 64)


async def test_check_writable(tmp_path: Path) -> None:
    store = BlobStore(root=tmp_path / "new" / "blobs")
    assert not store.root.exists()  # the constructor did no I/O
    await store.check_writable()
    assert store.root.is_dir()
    assert files_under(store.root) == []

    occupied = tmp_path / "file"
    occupied.write_bytes(b"")
    with pytest.raises(OSError, match=r"exists|directory"):
        await BlobStore(root=occupied).check_writable()
