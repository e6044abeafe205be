"""Typed, frozen settings of the server side, read from the environment once (cli/main.py).

Constructors everywhere else take these objects (or plain keyword arguments), never
``os.environ``, so tests build them directly. The environment is read through the SDK's
``EnvReader``, so a variable means the same on both sides: blank is unset (the default),
and a value that does not parse is a ``ConfigError`` naming the variable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

# One ``Secret`` and one environment reader for the SDK and the server (the SDK must not
# import ``ingest``).
from producer import ConfigError, EnvReader, KafkaSecurity, Secret

__all__ = ["KafkaSecurity", "Secret", "Settings", "parse_workspace_tokens", "redact_dsn"]

DEFAULT_KAFKA = EnvReader.DEFAULT_KAFKA
DEFAULT_TOPIC = EnvReader.DEFAULT_TOPIC
DEFAULT_API = EnvReader.DEFAULT_API
DEFAULT_PARTITIONS = 6
DEFAULT_PG_PORT = 54329
DEFAULT_METRICS_PORT = 8471
#: The consumer group of ``runstream ingest``: every worker of a deployment shares it.
DEFAULT_GROUP_ID = "runstream-ingest"
WORKSPACE_TOKENS_VAR = "RUNSTREAM_WORKSPACE_TOKENS"
AGENT_TOKENS_VAR = "RUNSTREAM_AGENT_TOKENS"


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
    #: Agent tokens: compute target -> the tokens of the agents that serve it (they act
    #: only on the runs submitted to that target: ``ingest/api/auth.py``).
    agent_tokens: Mapping[str, tuple[Secret, ...]] = field(default_factory=dict)
    #: Port of the local stack's own PostgreSQL (used only when db_dsn is None).
    pg_port: int = DEFAULT_PG_PORT
    #: Port of the ingest worker's /metrics (Prometheus) endpoint; 0 picks a free one.
    metrics_port: int = DEFAULT_METRICS_PORT

    @property
    def dlq_topic(self) -> str:
        return f"{self.topic}.dlq"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        read = EnvReader(env)
        return cls(
            kafka_bootstrap=read.kafka_bootstrap(),
            kafka_security=KafkaSecurity.from_env(env),
            db_dsn=read.secret("RUNSTREAM_DB") or None,
            api_url=read.api_url(),
            home=read.home(),
            topic=read.topic(),
            partitions=read.integer("RUNSTREAM_PARTITIONS", DEFAULT_PARTITIONS),
            token=read.token(),
            workspace_tokens=workspace_tokens(read),
            agent_tokens=workspace_tokens(read, AGENT_TOKENS_VAR, "compute target"),
            pg_port=read.integer("RUNSTREAM_PG_PORT", DEFAULT_PG_PORT),
            metrics_port=read.integer("RUNSTREAM_METRICS_PORT", DEFAULT_METRICS_PORT),
        )


def workspace_tokens(read: EnvReader, var: str = WORKSPACE_TOKENS_VAR,
                     what: str = "workspace") -> dict[str, tuple[Secret, ...]]:
    """``RUNSTREAM_WORKSPACE_TOKENS``: a JSON object of workspace -> token or list of tokens
    (``RUNSTREAM_AGENT_TOKENS``: compute target -> tokens, the same way).

    ``{"vision": "tok-a", "nlp": ["tok-b", "tok-b-next"]}`` (a list lets a token be rotated
    without downtime). Errors (``ConfigError``) name the problem, never a token.
    """
    raw = read.json(var, {}, secret=True)
    if not isinstance(raw, dict):
        raise ConfigError(var, f"must be a JSON object of {what} -> token or list of tokens")
    tokens: dict[str, tuple[Secret, ...]] = {}
    for name, value in raw.items():
        values = value if isinstance(value, list) else [value]
        if not name or not values or not all(isinstance(v, str) and v for v in values):
            raise ConfigError(
                var,
                f"{var}[{name!r}] must be a non-empty token string or a non-empty list of them",
            )
        tokens[name] = tuple(Secret(v) for v in values)
    return tokens


def parse_workspace_tokens(text: str) -> dict[str, tuple[Secret, ...]]:
    """``workspace_tokens`` of ``text`` as the value of ``RUNSTREAM_WORKSPACE_TOKENS``."""
    return workspace_tokens(EnvReader({WORKSPACE_TOKENS_VAR: text}))


def redact_dsn(dsn: str) -> str:
    """The DSN with any password replaced by ``***`` (for status output and logs)."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
