"""Event ids: time-ordered UUIDs (the layout of RFC 9562's version 7).

Every event carries a fresh id that the worker keeps as its dedup key (migration 0011:
``runstream_data.dedup_keys``, primary key ``(event_id, day)``). A random (version 4)
id lands on a random page of that index, so each insert touches a page anywhere in the
day's partition — millions of keys a day, whose index outgrows the database's buffers.
An id that starts with the time in milliseconds lands at the index's right edge, where
the newest keys are: inserts (and the lookups of replays, which are of recent events)
stay within the few pages that are already in memory, however many keys are kept.
Uniqueness comes from the 74 random bits, as with version 4's 122 (collisions would
need ~2^37 ids within one millisecond).
"""

from __future__ import annotations

import os
import time

__all__ = ["new_event_id"]

_VARIANT = "89ab"


def new_event_id() -> str:
    """A fresh version-7 UUID, as text (``xxxxxxxx-xxxx-7xxx-yxxx-xxxxxxxxxxxx``)."""
    ms = f"{time.time_ns() // 1_000_000:012x}"
    r = os.urandom(10).hex()
    return f"{ms[:8]}-{ms[8:]}-7{r[:3]}-{_VARIANT[int(r[3], 16) & 3]}{r[4:7]}-{r[7:19]}"
