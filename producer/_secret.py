"""``Secret``: one type for every password, token and DSN of the SDK and the server."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Secret:
    """A string that never shows up in ``repr``/``str`` or logs; ``.value`` reads it."""

    value: str = field(repr=False)

    def __repr__(self) -> str:
        return "Secret('***')" if self.value else "Secret('')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self.value)
