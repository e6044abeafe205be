"""Event ids are version-7 UUIDs: unique, and ordered by the millisecond they were made in
(so the worker's dedup index takes each new key at its right edge)."""

from __future__ import annotations

import time
import uuid

from schemas.event_ids import new_event_id


def test_event_ids_are_version_7_uuids_in_canonical_text() -> None:
    for _ in range(1000):
        text = new_event_id()
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122


def test_event_ids_start_with_the_millisecond_they_were_made_in() -> None:
    before = time.time_ns() // 1_000_000
    ms = uuid.UUID(new_event_id()).int >> 80
    after = time.time_ns() // 1_000_000
    assert before <= ms <= after


def test_event_ids_are_unique_and_ordered_by_their_millisecond() -> None:
    ids = []
    for _ in range(20):
        ids += [uuid.UUID(new_event_id()) for _ in range(5000)]
        time.sleep(0.002)
    assert len(set(ids)) == len(ids)
    millis = [u.int >> 80 for u in ids]
    assert millis == sorted(millis)
    assert millis[-1] > millis[0]
    # the 74 random bits do vary (not a counter, not constant)
    assert len({u.int & ((1 << 62) - 1) for u in ids}) == len(ids)
