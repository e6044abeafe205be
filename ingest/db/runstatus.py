"""Run statuses as stored: their ranks, the terminal ones, and the column that records when
each was first reached (``runstream_data.runs``). The worker's merge (``ingest/worker/
status.py``) and the readers (API shapes, live streams) share these definitions.
"""

from __future__ import annotations

from typing import Final

__all__ = ["STATUS_COLUMNS", "STATUS_RANK", "TERMINAL", "derive_status"]

STATUS_RANK: Final[dict[str, int]] = {
    "NotStarted": 0,
    "Queued": 1,
    "Preparing": 2,
    "Running": 3,
    "Finalizing": 4,
    "CancelRequested": 5,
    "Completed": 6,
    "Failed": 6,
    "Canceled": 6,
}
TERMINAL: Final = ("Completed", "Failed", "Canceled")
#: Status → column of runstream_data.runs holding the first time it was reached.
STATUS_COLUMNS: Final[dict[str, str]] = {
    "NotStarted": "not_started_at",
    "Queued": "queued_at",
    "Preparing": "preparing_at",
    "Running": "running_at",
    "Finalizing": "finalizing_at",
    "CancelRequested": "cancel_requested_at",
    "Completed": "completed_at",
    "Failed": "failed_at",
    "Canceled": "canceled_at",
}


def derive_status(first_seen_us: dict[str, int]) -> str:
    """The run's status from the first time each status was seen (same rule as the SQL)."""
    ended = [(first_seen_us[s], i, s) for i, s in enumerate(TERMINAL) if s in first_seen_us]
    if ended:
        return min(ended)[2]
    reached = [s for s in first_seen_us if s in STATUS_RANK]
    return max(reached, key=STATUS_RANK.__getitem__, default="NotStarted")
