"""The Kafka client's own log lines, folded into Runstream's.

With Kafka unreachable, aiokafka logs a line of its own for every connection attempt
(``Unable connect to "127.0.0.1:9092": [Errno 111] Connect call failed …``, ``Unable to
update metadata …``) at WARNING or ERROR — printed beside Runstream's one-line message,
and again at every retry for as long as the outage lasts. Runstream already says what
happens (the events are spooled, and sent when Kafka is back or by ``runstream sync``).

``install()`` (called by each sender as it starts) puts one ``FoldedKafkaLogs`` filter on
aiokafka's loggers. It holds back the records of WARNING and above that aiokafka logs on
a sender's thread (``SENDER_THREAD``) — only the SDK's own Kafka client: a Kafka consumer
of the same process (an ingest worker) logs as before —, counts them and keeps the last;
the sender's messages end with ``held_back()`` ("the Kafka client logged 3 errors, not
shown; the last: …"). Each record held back is still logged at DEBUG on this module's
logger, and whoever asked for aiokafka's details (its logger, or the root, at DEBUG) gets
every line as before.
"""

from __future__ import annotations

import logging
import threading

__all__ = ["SENDER_THREAD", "FoldedKafkaLogs", "held_back", "install"]

logger = logging.getLogger(__name__)

#: The name of every sender's thread (``_sender.py``): the records folded come from there.
SENDER_THREAD = "runstream-sender"
#: aiokafka's loggers a producer logs through (a filter is consulted only by the logger it
#: is on, never by its parents); ``install`` adds any other aiokafka logger existing then.
_LOGGERS = (
    "aiokafka",
    "aiokafka.cluster",
    "aiokafka.conn",
    "aiokafka.producer",
    "aiokafka.producer.message_accumulator",
    "aiokafka.producer.producer",
    "aiokafka.producer.sender",
)
#: The longest part of the last record a message quotes.
MAX_QUOTED_CHARS = 300


class FoldedKafkaLogs(logging.Filter):
    """Holds back aiokafka's WARNING+ records logged on a sender's thread; counts them."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._count = 0
        self._last: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or threading.current_thread().name != SENDER_THREAD:
            return True
        if logging.getLogger("aiokafka").isEnabledFor(logging.DEBUG):
            return True  # someone asked for the Kafka client's own lines
        try:
            text = record.getMessage()
        except (TypeError, ValueError, KeyError):  # arguments that do not format: keep it
            return True
        with self._lock:
            self._count += 1
            self._last = text
        logger.debug("held back from %s: %s", record.name, text)
        return False

    def take(self) -> tuple[int, str | None]:
        """(records held back since the previous ``take``, the last one's text)."""
        with self._lock:
            count, last = self._count, self._last
            self._count, self._last = 0, None
        return count, last


FOLD = FoldedKafkaLogs()


def install() -> None:
    """Put ``FOLD`` on aiokafka's loggers (idempotent; new aiokafka loggers are added)."""
    names = set(_LOGGERS) | {
        name for name in list(logging.Logger.manager.loggerDict) if name.startswith("aiokafka.")
    }
    for name in sorted(names):
        log = logging.getLogger(name)
        if FOLD not in log.filters:
            log.addFilter(FOLD)


def held_back() -> str:
    """What the Kafka client logged since the last call, as the end of a message ("" if
    nothing): ``; the Kafka client logged 3 errors, not shown; the last: Unable connect…``."""
    count, last = FOLD.take()
    if not count or last is None:
        return ""
    if len(last) > MAX_QUOTED_CHARS:
        last = last[: MAX_QUOTED_CHARS - 1] + "…"
    errors = "an error" if count == 1 else f"{count} errors"
    return f"; the Kafka client logged {errors}, not shown; the last: {last}"
