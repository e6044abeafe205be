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

from ._blobs import FATAL_STATUSES, list_staged, upload
from ._errors import BlobUploadError, KafkaUnavailableError
from ._session import Session
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


@dataclass
class SyncResult:
    """What ``sync`` did; ``complete`` when nothing is left in the spool."""

    events_total: int = 0
    events_sent: int = 0
    events_remaining: int = 0
    #: Segments held by a live producer (it sends them itself).
    segments_skipped: int = 0
    #: Bytes at segment ends that were not a whole record (a crash mid-write); discarded.
    torn_bytes: int = 0
    #: Events Kafka will never accept (e.g. too large); discarded.
    events_rejected: int = 0
    blobs_total: int = 0
    #: Stored in the API (by this sync, or meanwhile by a live producer).
    blobs_uploaded: int = 0
    blobs_remaining: int = 0
    #: Blobs the API refused for good (digest mismatch, too large); discarded.
    blobs_rejected: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.events_remaining == 0 and self.blobs_remaining == 0

    def progress(self) -> SyncProgress:
        blobs_done = self.blobs_uploaded + self.blobs_rejected + self.blobs_remaining
        return SyncProgress(self.events_sent, self.events_total, blobs_done, self.blobs_total)


ProgressCallback = Callable[[SyncProgress], None]


def sync(workspace: Workspace, *, progress: ProgressCallback | None = None) -> SyncResult:
    """Replay the spooled events to Kafka and upload the staged blobs to the API."""

    def report() -> None:
        if progress is not None:
            progress(result.progress())

    session = workspace._session
    segments = list_segments(session.spool_dir)
    blobs = [p for p in list_staged(session.blob_dir) if _SHA256.fullmatch(p.name)]
    result = SyncResult(
        events_total=sum(count_records(p) for p in segments), blobs_total=len(blobs)
    )
    report()
    if segments:
        asyncio.run(_sync_events(session, segments, result, report))
    for i, path in enumerate(blobs):
        reachable = _sync_blob(session, path, result)
        if not reachable:
            result.blobs_remaining += len(blobs) - i - 1  # API unreachable: stop trying
        report()
        if not reachable:
            break
    return result


async def _sync_events(
    session: Session, segments: list[Path], result: SyncResult, report: Callable[[], None]
) -> None:
    options = session.options
    transport = session.transport("runstream-sync")
    try:
        await asyncio.wait_for(transport.start(), options.connect_timeout_s)
    except (TimeoutError, KafkaUnavailableError) as exc:
        result.errors.append(str(exc) or "Kafka connection timed out")
        result.events_remaining = result.events_total
        return

    def acked(n: int) -> None:
        result.events_sent += n
        report()

    try:
        for i, path in enumerate(segments):
            with claim(path) as segment:
                if segment is None:
                    if path.exists():
                        result.segments_skipped += 1
                        result.events_remaining += count_records(path)
                    continue
                result.torn_bytes += segment.torn_bytes
                outcome = await deliver(
                    transport,
                    segment.records,
                    window_bytes=options.max_inflight_bytes,
                    send_block_s=options.send_block_s,
                    on_acked=acked,
                )
                result.events_rejected += len(outcome.rejected)
                if outcome.failure is not None:
                    result.errors.append(str(outcome.failure))
                    result.events_remaining += len(segment.records) - outcome.acked
                    result.events_remaining += sum(count_records(p) for p in segments[i + 1 :])
                    return
                segment.done()
    finally:
        await transport.stop(options.request_timeout_ms / 1000)


def _sync_blob(session: Session, path: Path, result: SyncResult) -> bool:
    """Upload one staged blob; False when the API is unreachable (stop trying)."""
    try:
        upload(session.api, path.name, path, timeout_s=session.options.blob_timeout_s)
    except FileNotFoundError:
        result.blobs_uploaded += 1  # meanwhile, by a live producer
    except BlobUploadError as exc:
        if exc.status in FATAL_STATUSES:
            path.unlink(missing_ok=True)
            result.blobs_rejected += 1
        else:
            result.blobs_remaining += 1
            result.errors.append(str(exc))
            return exc.status is not None
    else:
        path.unlink(missing_ok=True)
        result.blobs_uploaded += 1
    return True
