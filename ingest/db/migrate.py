"""Schema migrations: the numbered ``.sql`` files in ``migrations/``, applied in order.

Each migration runs in its own transaction and is recorded in
``runstream_data.schema_migrations``; a session-level advisory lock serialises concurrent
callers (several workers and ``runstream migrate`` may start at once), so each version is
applied exactly once. Migrations are only ever added; an applied file never changes.
"""

from __future__ import annotations

import logging
import re
from importlib import resources
from typing import Final

import asyncpg

from ingest.db.maintenance import Storage, read_storage
from ingest.errors import MigrationError

__all__ = ["available_migrations", "migrate", "storage_after_migrate"]

logger = logging.getLogger(__name__)

_MIGRATION_FILE = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")
MIGRATION_LOCK_ID: Final = 0x72756E73  # "runs": pg_advisory_lock key for migrate()

SQL_MIGRATIONS_BOOTSTRAP: Final = """
CREATE SCHEMA IF NOT EXISTS runstream_data;
CREATE TABLE IF NOT EXISTS runstream_data.schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""
SQL_MIGRATION_LOCK: Final = "SELECT pg_advisory_lock($1)"
SQL_MIGRATION_UNLOCK: Final = "SELECT pg_advisory_unlock($1)"
SQL_APPLIED_VERSIONS: Final = "SELECT version FROM runstream_data.schema_migrations"
SQL_RECORD_MIGRATION: Final = (
    "INSERT INTO runstream_data.schema_migrations (version, name) VALUES ($1, $2)"
)


def available_migrations() -> list[tuple[int, str, str]]:
    """(version, file name, SQL) of every packaged migration, in order."""
    root = resources.files("ingest.db").joinpath("migrations")
    out = []
    for entry in root.iterdir():
        match = _MIGRATION_FILE.fullmatch(entry.name)
        if match:
            out.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    out.sort()
    versions = [v for v, _, _ in out]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration versions in {versions}")
    return out


async def migrate(dsn: str) -> list[int]:
    """Apply pending migrations in order, each in its own transaction; return the versions
    applied by this call. Safe to run concurrently (an advisory lock serialises callers)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(SQL_MIGRATION_LOCK, MIGRATION_LOCK_ID)
        try:
            await conn.execute(SQL_MIGRATIONS_BOOTSTRAP)
            applied = {r["version"] for r in await conn.fetch(SQL_APPLIED_VERSIONS)}
            done: list[int] = []
            for version, name, sql in available_migrations():
                if version in applied:
                    continue
                try:
                    async with conn.transaction():
                        await conn.execute(sql)
                        await conn.execute(SQL_RECORD_MIGRATION, version, name)
                except asyncpg.PostgresError as exc:
                    raise MigrationError(
                        f"migration {name} failed: {exc}", version=version
                    ) from exc
                logger.info("applied migration %s", name)
                done.append(version)
            return done
        finally:
            await conn.execute(SQL_MIGRATION_UNLOCK, MIGRATION_LOCK_ID)
    finally:
        await conn.close()


async def storage_after_migrate(dsn: str) -> Storage:
    """What the storage is once migrated: ``runstream migrate`` and ``up`` never switch a
    plain-PostgreSQL database to TimescaleDB by themselves (``Storage.mismatch`` says how)."""
    conn = await asyncpg.connect(dsn)
    try:
        return await read_storage(conn)
    finally:
        await conn.close()
