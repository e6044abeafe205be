"""The on-disk spool: framing, torn tails, ownership locks, rotation, unwritable places."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from producer._errors import SpoolError
from producer._spool import (
    MAGIC,
    SpoolWriter,
    claim,
    count_records,
    frame,
    list_segments,
)


def writer(directory: Path, max_segment_bytes: int = 1 << 20) -> SpoolWriter:
    return SpoolWriter(directory, writer_id="w1", max_segment_bytes=max_segment_bytes)


def records(n: int) -> list[tuple[bytes, bytes]]:
    return [(f"run-{i % 3}".encode(), os.urandom(i * 7 % 300) + bytes([i % 256])) for i in range(n)]


def test_constructor_touches_nothing(tmp_path: Path) -> None:
    writer(tmp_path / "spool")
    assert not (tmp_path / "spool").exists()


def test_records_round_trip_in_order(tmp_path: Path) -> None:
    w = writer(tmp_path)
    written = records(100)
    for key, value in written:
        w.append(key, value)
    w.seal()

    (path,) = list_segments(tmp_path)
    assert count_records(path) == 100
    with claim(path) as segment:
        assert segment is not None
        assert segment.records == written
        assert segment.torn_bytes == 0
        segment.done()
    assert list_segments(tmp_path) == []


def test_a_torn_tail_is_skipped_and_reported(tmp_path: Path) -> None:
    w = writer(tmp_path)
    written = records(5)
    for key, value in written:
        w.append(key, value)
    w.seal()
    (path,) = list_segments(tmp_path)
    with path.open("ab") as f:
        f.write(frame(b"k", b"x" * 100)[:20])  # a crash mid-record

    with claim(path) as segment:
        assert segment is not None
        assert segment.records == written
        assert segment.torn_bytes == 20


def test_a_corrupt_record_ends_the_readable_part(tmp_path: Path) -> None:
    w = writer(tmp_path)
    for key, value in records(3):
        w.append(key, value)
    w.seal()
    (path,) = list_segments(tmp_path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # flip a bit of the last record's payload: crc mismatch
    path.write_bytes(bytes(data))

    with claim(path) as segment:
        assert segment is not None
        assert len(segment.records) == 2
        assert segment.torn_bytes > 0


def test_the_active_segment_is_locked_until_sealed(tmp_path: Path) -> None:
    w = writer(tmp_path)
    w.append(b"k", b"v")
    (path,) = list_segments(tmp_path)

    with claim(path) as segment:
        assert segment is None  # another owner (here: the writer's descriptor) holds it
    assert w.has_pending()

    w.seal()
    assert w.sealed == [path]
    with claim(path) as segment:
        assert segment is not None
        with claim(path) as second:
            assert second is None  # one replayer at a time
        segment.done()
    with claim(path) as gone:
        assert gone is None


def test_segments_rotate_at_their_size_and_keep_writer_order(tmp_path: Path) -> None:
    w = writer(tmp_path, max_segment_bytes=1000)
    written = [(b"k", bytes([i]) * 300) for i in range(10)]
    for key, value in written:
        w.append(key, value)
    w.seal()

    paths = list_segments(tmp_path)
    assert len(paths) >= 3
    assert paths == w.sealed
    replayed = []
    for path in paths:
        with claim(path) as segment:
            assert segment is not None
            replayed.extend(segment.records)
    assert replayed == written


def test_sealing_an_empty_segment_leaves_no_file(tmp_path: Path) -> None:
    w = writer(tmp_path)
    w.seal()
    assert list_segments(tmp_path) == []
    assert not w.has_pending()


def test_an_unwritable_spool_raises_spool_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the spool directory should be")
    w = writer(blocker / "spool")

    with pytest.raises(SpoolError) as raised:
        w.append(b"k", b"v")
    assert raised.value.path == blocker / "spool"
    assert w.records_written == 0


def test_hidden_partial_segments_are_not_listed(tmp_path: Path) -> None:
    (tmp_path / ".w1-00000000.seg.new").write_bytes(MAGIC)
    assert list_segments(tmp_path) == []
    assert list_segments(tmp_path / "missing") == []


def test_a_budget_bounds_undelivered_bytes_and_replays_give_them_back(tmp_path: Path) -> None:
    w = SpoolWriter(tmp_path, writer_id="w1", max_segment_bytes=4096, max_bytes=10_000)
    value = b"v" * 990
    written = 0
    while w.pending_bytes + 1000 <= 10_000:
        w.append(b"k", value)
        written += 1
    with pytest.raises(SpoolError, match="budget"):
        w.append(b"k", value)
    assert 0 < written < 10
    assert w.pending_bytes <= 10_000
    before = w.pending_bytes
    w.seal()
    for path in list(w.sealed):
        with claim(path) as segment:
            assert segment is not None
            segment.done()
        w.replayed(path)
    assert w.pending_bytes == 0 < before
    w.append(b"k", value)  # room again


def test_the_spool_leaves_the_disk_its_free_space_floor(tmp_path: Path) -> None:
    w = SpoolWriter(tmp_path, writer_id="w1", max_segment_bytes=4096, min_free_bytes=1 << 62)
    with pytest.raises(SpoolError, match="free"):
        w.append(b"k", b"v")
    assert list_segments(tmp_path) == []


def test_fsync_runs_on_the_writers_own_thread_and_never_holds_up_appends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk busy elsewhere can make an fsync take seconds; the sender appending to the
    spool must go on draining the log calls' buffer meanwhile."""
    import threading

    release = threading.Event()
    synced: list[tuple[int, int]] = []  # (fd, thread)
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        synced.append((fd, threading.get_ident()))
        release.wait(30)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    w = SpoolWriter(tmp_path, writer_id="w1", max_segment_bytes=4096)
    written = records(200)
    for i, (key, value) in enumerate(written):
        w.append(key, value)  # seals a segment every ~4 KiB: an fsync each, all queued
        if i % 20 == 0:
            w.sync()  # asks for an fsync of the active segment; one at a time
    assert not release.is_set()
    assert synced  # the first one is waiting for the disk, on another thread
    assert all(thread != threading.get_ident() for _, thread in synced)
    assert len(w.sealed) > 5
    # a replayer can claim a sealed segment while its fsync is still queued
    with claim(w.sealed[0]) as segment:
        assert segment is not None
        assert segment.records
    release.set()
    w.close()  # waits for every fsync and close
    assert len({fd for fd, _ in synced}) > 5
    got: list[tuple[bytes, bytes]] = []
    for path in w.sealed:
        with claim(path) as segment:
            assert segment is not None
            got += segment.records
    assert got == written
