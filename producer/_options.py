"""Tuning knobs of the background sender, frozen and validated once."""

from __future__ import annotations

from dataclasses import dataclass

from schemas.codec import DEFAULT_MAX_MESSAGE_BYTES

from ._transport import COMPRESSIONS

#: ``ProducerOptions.batch_max_bytes`` unless ``max_message_bytes`` is smaller.
DEFAULT_BATCH_MAX_BYTES = 1 << 20


@dataclass(frozen=True, kw_only=True)
class ProducerOptions:
    """How the SDK buffers, batches and sends; the defaults suit a training job.

    Sizes are bytes, durations carry their unit in the name.
    """

    #: Kafka batch compression: "zstd" or "lz4". zstd is the default: aiokafka compresses
    #: lz4 at level 9, about 3x slower than zstd at level 3 on metric columns (6.4 vs
    #: 2.2 ms per 240 KB here) for a worse ratio (52% vs 28%). Both release the GIL while
    #: they compress, but on a machine whose cores are busy that CPU is the training
    #: loop's too.
    compression: str = "zstd"
    #: The interpreter's GIL switch interval while a sender runs (``sys.setswitchinterval``,
    #: only ever lowered; None leaves it alone). Python's 5 ms default lets the sender
    #: thread hold the GIL for 5 ms while the training loop waits for it, and makes the
    #: sender wait as long to get it back, so it falls behind a fast loop; at 1 ms both
    #: waits are a fifth. The setting is process-wide and not restored.
    gil_switch_interval_s: float | None = 0.001
    #: Bound of the in-memory buffer between training threads and the sender: a metric
    #: point counts 24 bytes (its step, value and time in typed arrays), so 64 MiB hold
    #: about 2.8 M points; other events count their encoded size.
    buffer_max_bytes: int = 64 << 20
    #: Largest encoded event (Kafka message value); bigger single calls raise ValueError.
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    #: Target size of one metric batch event (many points, columnar), and of the Kafka
    #: batch it travels in. Each batch is one produce request and a few turns of the
    #: sender's event loop, and every turn takes the GIL back from a logging loop that is
    #: running (a stalled call of tens of µs); at 1 MiB a loop logging flat out costs about
    #: one request per ``linger_ms`` pass instead of four. The default is cut to
    #: ``max_message_bytes`` when that is smaller.
    batch_max_bytes: int = DEFAULT_BATCH_MAX_BYTES
    #: Unacknowledged bytes handed to Kafka before new events go to the spool instead.
    max_inflight_bytes: int = 16 << 20
    #: How long the sender lets points gather before batching them.
    linger_ms: int = 50
    #: Heartbeat period while a run is open.
    heartbeat_interval_s: float = 10.0
    #: Per-request Kafka timeout; an unacknowledged message is spooled after it.
    request_timeout_ms: int = 10_000
    #: Longest the sender waits on Kafka to accept (not acknowledge) one message; it
    #: spills to the spool sooner when logging fills the buffer meanwhile.
    send_block_s: float = 1.0
    #: Bound of one connection attempt; retries back off up to 5 s (so delivery resumes
    #: within seconds of the broker coming back).
    connect_timeout_s: float = 5.0
    #: Used by the atexit hook that closes every sender still open.
    close_timeout_s: float = 10.0
    #: Size at which a spool segment is sealed and a new one started.
    spool_segment_bytes: int = 16 << 20
    #: Most undelivered bytes one process keeps in the spool (Kafka down, or slower than
    #: the logging rate); past it, and past ``spool_min_free_bytes``, events are dropped
    #: and counted. About 25 bytes per metric point: 8 GiB hold some 340 M points.
    spool_max_bytes: int = 8 << 30
    #: Free space the spool always leaves on its disk (checkpoints need room too).
    spool_min_free_bytes: int = 1 << 30
    #: Per-request timeout of artifact uploads.
    blob_timeout_s: float = 60.0
    #: Per-request timeout of read calls (``get_metrics``, ``get_runs``, downloads…).
    api_timeout_s: float = 30.0
    #: How long a read call first waits for this process's pending events to reach Kafka
    #: (skipped while offline) and, for a run this process wrote into, for the worker to
    #: have stored them, so a script reads its own writes. Usually well under a second; the
    #: bound only matters on an overloaded machine or with the worker down (then the read
    #: answers what is stored).
    read_flush_timeout_s: float = 15.0

    def __post_init__(self) -> None:
        if self.batch_max_bytes == DEFAULT_BATCH_MAX_BYTES and self.max_message_bytes > 0:
            object.__setattr__(
                self, "batch_max_bytes", min(DEFAULT_BATCH_MAX_BYTES, self.max_message_bytes)
            )
        if self.compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {COMPRESSIONS}, not {self.compression!r}")
        for name in (
            "buffer_max_bytes",
            "max_message_bytes",
            "batch_max_bytes",
            "max_inflight_bytes",
            "linger_ms",
            "request_timeout_ms",
            "spool_segment_bytes",
            "spool_max_bytes",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.gil_switch_interval_s is not None and not 0 < self.gil_switch_interval_s <= 1:
            raise ValueError("gil_switch_interval_s must be in (0, 1] seconds, or None")
        if self.spool_min_free_bytes < 0:
            raise ValueError("spool_min_free_bytes must not be negative")
        for name in (
            "heartbeat_interval_s",
            "send_block_s",
            "connect_timeout_s",
            "blob_timeout_s",
            "api_timeout_s",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        for name in ("close_timeout_s", "read_flush_timeout_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if not 4096 <= self.batch_max_bytes <= self.max_message_bytes:
            raise ValueError("batch_max_bytes must be between 4096 and max_message_bytes")
