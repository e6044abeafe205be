"""Scratch resources for the benchmarks: a database and a topic of their own, removed after.

The database lives on the stack's server, in the same storage mode as the database the
caller names (TimescaleDB when that one has the extension), and is migrated.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from ingest.db.migrate import migrate
from ingest.stack.kafka import ensure_topics

__all__ = ["scratch_database", "scratch_topic", "timescaledb_version", "with_database"]

SQL_TIMESCALEDB = "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"


def with_database(dsn: str, database: str) -> str:
    """The same server and credentials, another database."""
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{database}"))


async def timescaledb_version(dsn: str) -> str | None:
    conn = await asyncpg.connect(dsn)
    try:
        version: str | None = await conn.fetchval(SQL_TIMESCALEDB)
        return version
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def scratch_database(dsn: str, *, prefix: str = "runstream_bench") -> AsyncIterator[str]:
    """A fresh, migrated database beside ``dsn``'s (same storage mode); dropped after."""
    database = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(with_database(dsn, "postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{database}"')
        scratch = with_database(dsn, database)
        try:
            if await timescaledb_version(dsn):
                conn = await asyncpg.connect(scratch)
                try:
                    await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
                finally:
                    await conn.close()
            await migrate(scratch)
            yield scratch
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def scratch_topic(
    bootstrap: str, *, partitions: int, prefix: str = "runstream.bench"
) -> AsyncIterator[str]:
    """A fresh topic and its ``.dlq``; deleted after (best effort: the broker may be gone)."""
    topic = f"{prefix}.{uuid.uuid4().hex[:8]}"
    names = [topic, f"{topic}.dlq"]
    await ensure_topics(bootstrap, names, partitions=partitions)
    try:
        yield topic
    finally:
        with contextlib.suppress(KafkaError, OSError):
            client = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
            await client.start()
            try:
                await client.delete_topics(names)
            finally:
                await client.close()
