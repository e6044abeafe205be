"""Typed, frozen settings for the server side, read from the environment once (in cli.py).

Constructors everywhere else take these objects (or plain keyword arguments), never
``os.environ``, so tests build them directly.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

# One ``Secret`` for the SDK and the server (the SDK must not import ``ingest``).
from producer._kafka_security import KafkaSecurity, Secret

__all__ = ["KafkaSecurity", "Secret", "Settings", "parse_workspace_tokens", "redact_dsn"]

DEFAULT_KAFKA = "127.0.0.1:9092"
DEFAULT_TOPIC = "runstream.events"
DEFAULT_API = "http://127.0.0.1:8470"
DEFAULT_PARTITIONS = 6
DEFAULT_PG_PORT = 54329
DEFAULT_METRICS_PORT = 8471


@dataclass(frozen=True, kw_only=True)
class Settings:
    kafka_bootstrap: str = DEFAULT_KAFKA
    #: TLS / SASL of every Kafka client (``RUNSTREAM_KAFKA_SECURITY_PROTOCOL`` and friends).
    kafka_security: KafkaSecurity = field(default_factory=KafkaSecurity)
    #: None means "the local stack's own PostgreSQL" (started by ``runstream up``).
    db_dsn: Secret | None = None
    api_url: str = DEFAULT_API
    home: Path = field(default_factory=lambda: Path.home() / ".runstream")
    topic: str = DEFAULT_TOPIC
    partitions: int = DEFAULT_PARTITIONS
    #: Admin token of the API: reads and writes every workspace ("" with no
    #: ``workspace_tokens`` = no auth).
    token: Secret = field(default_factory=lambda: Secret(""))
    #: Workspace-scoped API tokens: workspace name -> the tokens that grant it.
    workspace_tokens: Mapping[str, tuple[Secret, ...]] = field(default_factory=dict)
    #: Port of the local stack's own PostgreSQL (used only when db_dsn is None).
    pg_port: int = DEFAULT_PG_PORT
    #: Port of the ingest worker's /metrics (Prometheus) endpoint; 0 picks a free one.
    metrics_port: int = DEFAULT_METRICS_PORT

    @property
    def dlq_topic(self) -> str:
        return f"{self.topic}.dlq"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        dsn = env.get("RUNSTREAM_DB")
        home = env.get("RUNSTREAM_HOME")
        return cls(
            kafka_bootstrap=env.get("RUNSTREAM_KAFKA", DEFAULT_KAFKA),
            kafka_security=KafkaSecurity.from_env(env),
            db_dsn=Secret(dsn) if dsn else None,
            api_url=env.get("RUNSTREAM_API", DEFAULT_API).rstrip("/"),
            home=Path(home).expanduser() if home else Path.home() / ".runstream",
            topic=env.get("RUNSTREAM_TOPIC", DEFAULT_TOPIC),
            partitions=int(env.get("RUNSTREAM_PARTITIONS", str(DEFAULT_PARTITIONS))),
            token=Secret(env.get("RUNSTREAM_TOKEN", "")),
            workspace_tokens=parse_workspace_tokens(env.get("RUNSTREAM_WORKSPACE_TOKENS", "")),
            pg_port=int(env.get("RUNSTREAM_PG_PORT", str(DEFAULT_PG_PORT))),
            metrics_port=int(env.get("RUNSTREAM_METRICS_PORT", str(DEFAULT_METRICS_PORT))),
        )


def parse_workspace_tokens(text: str) -> dict[str, tuple[Secret, ...]]:
    """``RUNSTREAM_WORKSPACE_TOKENS``: a JSON object of workspace -> token or list of tokens.

    ``{"vision": "tok-a", "nlp": ["tok-b", "tok-b-next"]}`` (a list lets a token be rotated
    without downtime). Errors name the problem, never a token.
    """
    if not text.strip():
        return {}
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"RUNSTREAM_WORKSPACE_TOKENS is not valid JSON (line {exc.lineno}, column "
            f"{exc.colno}); expected an object of workspace -> token or list of tokens"
        ) from None
    if not isinstance(raw, dict):
        raise ValueError("RUNSTREAM_WORKSPACE_TOKENS must be a JSON object of workspace -> token")
    tokens: dict[str, tuple[Secret, ...]] = {}
    for workspace, value in raw.items():
        values = value if isinstance(value, list) else [value]
        if not workspace or not values or not all(isinstance(v, str) and v for v in values):
            raise ValueError(
                f"RUNSTREAM_WORKSPACE_TOKENS[{workspace!r}] must be a non-empty token string "
                "or a non-empty list of them"
            )
        tokens[workspace] = tuple(Secret(v) for v in values)
    return tokens


def redact_dsn(dsn: str) -> str:
    """The DSN with any password replaced by ``***`` (for status output and logs)."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
