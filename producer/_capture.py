"""``capture_output=True``: tee ``sys.stdout``/``sys.stderr`` into ``LogLines`` events.

Writes go to the original stream first and unchanged; complete lines are handed to the
run. A failure to enqueue never reaches ``print``. A thread-local guard stops the loop
that a warning logged while enqueueing (written to stderr, i.e. back here) would start.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from ._validate import valid_text

#: Longer lines are cut so one line can never outgrow a message.
MAX_LINE_CHARS = 16 * 1024
#: Lines written at once go out in events of at most this much text (UTF-8, upper bound),
#: so a burst of output never makes one event too big to send.
MAX_LINES_EVENT_BYTES = 256 * 1024

Emit = Callable[[str, list[str]], None]


class _Tee:
    def __init__(self, original: TextIO, stream_name: str, emit: Emit) -> None:
        self._original = original
        self._name = stream_name
        self._emit = emit
        self._partial = ""
        self._lock = threading.Lock()
        self._guard = threading.local()

    def write(self, text: str) -> int:
        written = self._original.write(text)
        with self._lock:
            self._partial += text
            if getattr(self._guard, "active", False):
                return written  # written by our own emit path; forwarded with the next line
            if "\n" in text:
                *lines, self._partial = self._partial.split("\n")
            elif len(self._partial) >= MAX_LINE_CHARS:
                lines, self._partial = [self._partial], ""
            else:
                return written
        self._forward(lines)
        return written

    def _forward(self, lines: list[str]) -> None:
        if not lines:
            return
        self._guard.active = True
        try:
            for group in _groups([valid_text(line[:MAX_LINE_CHARS]) for line in lines]):
                self._emit(self._name, group)
        finally:
            self._guard.active = False

    def flush(self) -> None:
        self._original.flush()

    def drain(self) -> None:
        with self._lock:
            rest, self._partial = self._partial, ""
        if rest:
            self._forward([rest])

    def __getattr__(self, name: str) -> Any:
        return getattr(self._original, name)


def _groups(lines: list[str]) -> Iterator[list[str]]:
    group: list[str] = []
    size = 0
    for line in lines:
        cost = 4 * len(line) + 5  # at most 4 UTF-8 bytes a character, plus a length prefix
        if group and size + cost > MAX_LINES_EVENT_BYTES:
            yield group
            group, size = [], 0
        group.append(line)
        size += cost
    if group:
        yield group


class OutputCapture:
    """Installs the tees on ``start`` and removes them (if still installed) on ``stop``."""

    def __init__(self, emit: Emit) -> None:
        self._emit = emit
        self._tees: tuple[_Tee, _Tee] | None = None

    def start(self) -> None:
        out = _Tee(sys.stdout, "stdout", self._emit)
        err = _Tee(sys.stderr, "stderr", self._emit)
        self._tees = (out, err)
        sys.stdout = out
        sys.stderr = err

    def stop(self) -> None:
        if self._tees is None:
            return
        out, err = self._tees
        self._tees = None
        for tee in (out, err):
            tee.drain()
        if sys.stdout is out:
            sys.stdout = out._original
        if sys.stderr is err:
            sys.stderr = err._original
