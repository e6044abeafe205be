"""A dependency-free progress bar for long CLI work (``runstream sync``).

Draws one self-overwriting line on a terminal; on a pipe or file it prints a line at
most every ``interval_s`` so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["ProgressBar"]


class ProgressBar:
    def __init__(
        self, label: str, *, stream: TextIO | None = None, interval_s: float = 2.0
    ) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.interval_s = 0.1 if self.tty else interval_s
        self._last = 0.0
        self._drawn = False
        self._started = time.monotonic()

    def update(self, done: int, total: int, detail: str = "") -> None:
        if total == 0:
            return
        now = time.monotonic()
        if now - self._last < self.interval_s and done < total:
            return
        self._last = now
        fraction = done / total if total else 1.0
        width = 30
        filled = round(width * fraction)
        bar = "#" * filled + "-" * (width - filled)
        rate = done / max(now - self._started, 1e-9)
        text = f"{self.label} [{bar}] {done:,}/{total:,} ({rate:,.0f}/s) {detail}".rstrip()
        if self.tty:
            self.stream.write("\r" + text + "\x1b[K")
            self._drawn = True
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
