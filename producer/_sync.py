"""``runstream sync``: deliver what producers left in ``RUNSTREAM_HOME/spool``.

Events first: every spool segment that no live producer holds is claimed (see
``_spool``), sent in order, and deleted once Kafka acknowledged all of it. A live
producer's active segment is locked and skipped (that producer replays it itself). The
encoded bytes are sent unchanged, so every event keeps its ``event_id`` and ``seq``.
Then blobs: every staged artifact file is PUT to the API and deleted once stored.

Nothing here prints; ``progress`` is called after each acknowledged window of events and
each blob, so the CLI can draw a bar. Transport trouble does not raise: it ends up in
``SyncResult.errors`` with what remains, and the CLI exits non-zero unless ``complete``.
Call from synchronous code (it runs its own event loop).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ._blobs import FATAL_STATUSES, list_staged, put_blob
from ._errors import BlobUploadError, KafkaUnavailableError
from ._spool import claim, count_records, list_segments
from ._transport import deliver
from ._workspace import Workspace

_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class SyncProgress:
    events_done: int
    events_total: int
    blobs_done: int
    blobs_total: int


@dataclass(frozen=True)
class SyncResult:
    events_sent: int
    events_remaining: int
    #: Segments held by a live producer (it sends them itself).
    segments_skipped: int
    #: Bytes at segment ends that were not a whole record (a crash mid-write); discarded.
    torn_bytes: int
    #: Events Kafka will never accept (e.g. too large); discarded.
    events_rejected: int
    blobs_uploaded: int
    blobs_remaining: int
    #: Blobs the API refused for good (digest mismatch, too large); discarded.
    blobs_rejected: int
    errors: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        return self.events_remaining == 0 and self.blobs_remaining == 0


ProgressCallback = Callable[[SyncProgress], None]


@dataclass
class _Tally:
    events_total: int = 0
    events_sent: int = 0
    events_remaining: int = 0
    segments_skipped: int = 0
    torn_bytes: int = 0
    events_rejected: int = 0
    blobs_total: int = 0
    blobs_done: int = 0
    blobs_uploaded: int = 0
    blobs_remaining: int = 0
    blobs_rejected: int = 0
    errors: list[str] = field(default_factory=list)
    progress: ProgressCallback | None = None

    def report(self) -> None:
        if self.progress is not None:
            self.progress(
                SyncProgress(self.events_sent, self.events_total, self.blobs_done, self.blobs_total)
            )


def sync(workspace: Workspace, *, progress: ProgressCallback | None = None) -> SyncResult:
    """Replay the spooled events to Kafka and upload the staged blobs to the API."""
    tally = _Tally(progress=progress)
    segments = list_segments(workspace.spool_dir)
    blobs = [p for p in list_staged(workspace.blob_dir) if _SHA256.fullmatch(p.name)]
    tally.events_total = sum(count_records(p) for p in segments)
    tally.blobs_total = len(blobs)
    tally.report()
    if segments:
        asyncio.run(_sync_events(workspace, segments, tally))
    for i, path in enumerate(blobs):
        if not _sync_blob(workspace, path, tally):
            tally.blobs_remaining += len(blobs) - i - 1  # API unreachable: stop trying
            break
    return SyncResult(
        events_sent=tally.events_sent,
        events_remaining=tally.events_remaining,
        segments_skipped=tally.segments_skipped,
        torn_bytes=tally.torn_bytes,
        events_rejected=tally.events_rejected,
        blobs_uploaded=tally.blobs_uploaded,
        blobs_remaining=tally.blobs_remaining,
        blobs_rejected=tally.blobs_rejected,
        errors=tuple(tally.errors),
    )


async def _sync_events(workspace: Workspace, segments: list[Path], tally: _Tally) -> None:
    options = workspace.options
    transport = workspace._transport(client_id="runstream-sync")
    try:
        await asyncio.wait_for(transport.start(), options.connect_timeout_s)
    except (TimeoutError, KafkaUnavailableError) as exc:
        tally.errors.append(str(exc) or "Kafka connection timed out")
        tally.events_remaining = tally.events_total
        return

    def acked(n: int) -> None:
        tally.events_sent += n
        tally.report()

    try:
        for i, path in enumerate(segments):
            with claim(path) as segment:
                if segment is None:
                    if path.exists():
                        tally.segments_skipped += 1
                        tally.events_remaining += count_records(path)
                    continue
                tally.torn_bytes += segment.torn_bytes
                outcome = await deliver(
                    transport,
                    segment.records,
                    window_bytes=options.max_inflight_bytes,
                    send_block_s=options.send_block_s,
                    on_acked=acked,
                )
                tally.events_rejected += len(outcome.rejected)
                if outcome.failure is not None:
                    tally.errors.append(str(outcome.failure))
                    tally.events_remaining += len(segment.records) - outcome.acked
                    tally.events_remaining += sum(count_records(p) for p in segments[i + 1 :])
                    return
                segment.done()
    finally:
        await transport.stop(options.request_timeout_ms / 1000)


def _sync_blob(workspace: Workspace, path: Path, tally: _Tally) -> bool:
    """Upload one staged blob; False when the API is unreachable (stop trying)."""
    try:
        put_blob(
            workspace.api_url,
            path.name,
            path,
            token=workspace._token,
            timeout_s=workspace.options.blob_timeout_s,
        )
    except FileNotFoundError:
        tally.blobs_done += 1  # uploaded meanwhile by a live producer
        return True
    except BlobUploadError as exc:
        if exc.status in FATAL_STATUSES:
            path.unlink(missing_ok=True)
            tally.blobs_rejected += 1
        else:
            tally.blobs_remaining += 1
            tally.errors.append(str(exc))
            if exc.status is None:
                return False
    else:
        path.unlink(missing_ok=True)
        tally.blobs_uploaded += 1
    tally.blobs_done += 1
    tally.report()
    return True
