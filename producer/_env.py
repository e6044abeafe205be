"""``EnvReader``: the one way the SDK and the server read ``RUNSTREAM_*`` variables.

The same rules for every variable, in every process:

- Unset, empty and only-whitespace are the same thing: the default. ``RUNSTREAM_KAFKA=""``
  means ``127.0.0.1:9092`` in a training script and in the ingest worker alike.
- Text is stripped of surrounding whitespace. Secrets (tokens, passwords, DSNs) are kept
  exactly as given and come back as ``Secret``.
- A value that does not parse — an integer, a boolean (``1/true/yes/on``,
  ``0/false/no/off``, any case), JSON — raises ``ConfigError`` naming the variable and the
  value (a secret's value is never shown), never a bare ``ValueError``.

The environment is read once, at the edge (``Workspace.from_env``, ``Run.get_context``,
``KafkaSecurity.from_env``, the server's ``Settings.from_env``), into frozen typed
objects; nothing below reads it. The variables both sides read (``RUNSTREAM_KAFKA``,
``_API``, ``_HOME``, ``_TOPIC``, ``_TOKEN``) have one accessor each, so their names and
defaults cannot drift apart.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from ._errors import ConfigError
from ._secret import Secret

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
#: Longest part of a bad value quoted in an error message.
MAX_SHOWN_CHARS = 200


def default_home() -> Path:
    """``RUNSTREAM_HOME`` when unset: spool, blobs and the local stack's data."""
    return Path.home() / ".runstream"


def _shown(value: str) -> str:
    if len(value) > MAX_SHOWN_CHARS:
        return f"{value[:MAX_SHOWN_CHARS]!r}…"
    return repr(value)


class EnvReader:
    """Typed reads of one environment (``os.environ`` by default, or any mapping).

    ``text``, ``secret``, ``integer``, ``flag``, ``json`` and ``path`` take the variable's
    name and its default; ``kafka_bootstrap``, ``api_url``, ``home``, ``topic`` and
    ``token`` read the variables shared by the SDK and the server.
    """

    DEFAULT_KAFKA: ClassVar[str] = "127.0.0.1:9092"
    DEFAULT_API: ClassVar[str] = "http://127.0.0.1:8470"
    DEFAULT_TOPIC: ClassVar[str] = "runstream.events"

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self._env: Mapping[str, str] = os.environ if env is None else env

    def __repr__(self) -> str:
        source = "os.environ" if self._env is os.environ else f"{len(self._env)} variables"
        return f"EnvReader({source})"

    def _value(self, name: str) -> str | None:
        """The raw value, or None when it is unset or blank."""
        value = self._env.get(name)
        if value is None or not value.strip():
            return None
        return value

    # ---- by type ---------------------------------------------------------------------

    def text(self, name: str, default: str = "") -> str:
        value = self._value(name)
        return default if value is None else value.strip()

    def secret(self, name: str) -> Secret:
        """Kept exactly as given (a password may end in a space); blank is ``Secret('')``."""
        return Secret(self._value(name) or "")

    def integer(self, name: str, default: int) -> int:
        value = self._value(name)
        if value is None:
            return default
        try:
            return int(value)
        except ValueError:
            raise ConfigError(name, f"must be an integer, not {_shown(value.strip())}") from None

    def flag(self, name: str, default: bool) -> bool:
        value = self._value(name)
        if value is None:
            return default
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise ConfigError(
            name,
            f"must be one of {'/'.join(_TRUE)} or {'/'.join(_FALSE)}, not {_shown(value.strip())}",
        )

    def json(self, name: str, default: Any = None, *, secret: bool = False) -> Any:
        """The decoded document; a ``secret`` value is not quoted when it does not parse."""
        value = self._value(name)
        if value is None:
            return default
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            shown = "" if secret else f": {_shown(value)}"
            raise ConfigError(
                name, f"not valid JSON (line {exc.lineno}, column {exc.colno}){shown}"
            ) from None

    def path(self, name: str) -> Path | None:
        value = self.text(name)
        return Path(value).expanduser() if value else None

    # ---- variables of both the SDK and the server -------------------------------------

    def kafka_bootstrap(self) -> str:
        """``RUNSTREAM_KAFKA``: the Kafka bootstrap servers."""
        return self.text("RUNSTREAM_KAFKA", self.DEFAULT_KAFKA)

    def api_url(self) -> str:
        """``RUNSTREAM_API``: the API's base URL, without a trailing '/'."""
        return self.text("RUNSTREAM_API", self.DEFAULT_API).rstrip("/")

    def home(self) -> Path:
        """``RUNSTREAM_HOME`` (default ``~/.runstream``)."""
        return self.path("RUNSTREAM_HOME") or default_home()

    def topic(self) -> str:
        """``RUNSTREAM_TOPIC``: the events topic."""
        return self.text("RUNSTREAM_TOPIC", self.DEFAULT_TOPIC)

    def token(self) -> Secret:
        """``RUNSTREAM_TOKEN``: the API bearer token."""
        return self.secret("RUNSTREAM_TOKEN")
