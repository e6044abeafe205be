"""Keeping secrets out of logs and error output.

``Secret`` (``ingest/settings.py``) keeps a value out of ``repr``; this module is the net
under everything else: ``secrets_of(settings)`` lists every secret value a process was
configured with (API tokens, the PostgreSQL password in either spelling, the Kafka
password), and ``RedactingFormatter`` replaces any of them with ``***`` in every log
line *after* formatting — message, arguments and traceback alike — so a library that
logs a connection string or an exception that echoes a credential cannot leak it.
``redact`` does the same for text printed by the CLI.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit

from ingest.settings import Settings

__all__ = ["MIN_SECRET_CHARS", "RedactingFormatter", "install", "redact", "secrets_of"]

#: Shorter values are not searched for: replacing every "a" would garble every line
#: (and such a secret is no secret). Our own code never logs any secret anyway.
MIN_SECRET_CHARS = 4
MASK = "***"


def dsn_password(dsn: str) -> list[str]:
    """The password of a DSN as written and as decoded (either may be echoed)."""
    try:
        password = urlsplit(dsn).password
    except ValueError:
        return []
    return [] if password is None else [password, unquote(password)]


def secrets_of(settings: Settings) -> list[str]:
    values = [settings.token.value]
    values += [t.value for tokens in settings.workspace_tokens.values() for t in tokens]
    values += [t.value for tokens in settings.agent_tokens.values() for t in tokens]
    if settings.db_dsn:
        values += dsn_password(settings.db_dsn.value)
    values += [settings.kafka_security.password.value, settings.kafka_security.key_password.value]
    return values


def _searchable(secrets: Iterable[str]) -> tuple[str, ...]:
    # Longest first, so a secret that contains another is masked whole.
    return tuple(sorted({s for s in secrets if len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True))


def _mask(text: str, searchable: Iterable[str]) -> str:
    for secret in searchable:
        text = text.replace(secret, MASK)
    return text


def redact(text: str, secrets: Iterable[str]) -> str:
    return _mask(text, _searchable(secrets))


class RedactingFormatter(logging.Formatter):
    """A ``logging.Formatter`` whose output never contains one of ``secrets``."""

    def __init__(self, fmt: str | None = None, *, secrets: Iterable[str]) -> None:
        super().__init__(fmt)
        self._secrets = _searchable(secrets)

    def format(self, record: logging.LogRecord) -> str:
        return _mask(super().format(record), self._secrets)


def install(secrets: Iterable[str], fmt: str) -> None:
    """Put a ``RedactingFormatter`` on every handler of the root logger."""
    values = list(secrets)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(RedactingFormatter(fmt, secrets=values))
