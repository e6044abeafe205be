"""The model registry's SQL (migration 0008): register a version, read versions and pages.

Registration protocol (``register``), one transaction:

1. ``pg_advisory_xact_lock(hashtextextended(workspace || '/' || name, 0))``: registrations
   of one (workspace, name) run one at a time; the lock is released at commit.
2. Insert version ``max(version) + 1`` of that name, read in a statement that starts after
   the lock was granted, so it sees every version committed before (READ COMMITTED takes
   a fresh snapshot per statement): the versions are 1, 2, 3… exactly, with no
   catch-rollback-retry loop. ``created_at`` is the clock at that moment (not the
   transaction's start), so newer versions of a name never sort before older ones.
3. ``ON CONFLICT (registration_id) DO NOTHING``: a retried registration inserts nothing
   and the first one is read back (``created`` False). A retry racing its first attempt
   waits on the unique index (or on the lock) until that one commits.

Functions take the pool (``ReadStore.call`` hands it over and turns connection failures
into ``DatabaseUnavailableError``) and return asyncpg records with ``MODEL_COLUMNS``;
``ingest/api/shapes.py`` turns them into Model documents.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

import asyncpg

from ingest.db.values import dumps

__all__ = [
    "MODEL_COLUMNS",
    "ModelFile",
    "ModelFilter",
    "NewModel",
    "latest_version",
    "model_exists",
    "model_version",
    "models_page",
    "register",
    "run_file_names",
    "run_files_under",
    "run_origin",
]

#: Columns of a Model document (``runstream.models``, alias ``m``).
MODEL_COLUMNS: Final = (
    "m.workspace, m.name, m.version, m.run_id, m.experiment, m.path, m.files, m.tags, "
    "m.properties, m.description, m.created_at"
)

SQL_LOCK_NAME: Final = "SELECT pg_advisory_xact_lock(hashtextextended($1 || '/' || $2, 0))"
SQL_INSERT_VERSION: Final = f"""
INSERT INTO runstream_data.models AS m
    (workspace, name, version, run_id, experiment, path, files, tags, properties,
     description, registration_id, created_at)
SELECT $1, $2, coalesce(max(v.version), 0) + 1, $3, $4, $5, $6::jsonb, $7::jsonb, $8::jsonb,
       $9, $10, clock_timestamp()
FROM runstream_data.models v
WHERE v.workspace = $1 AND v.name = $2
ON CONFLICT (registration_id) DO NOTHING
RETURNING {MODEL_COLUMNS}
"""  # noqa: S608 - built from constants only
SQL_BY_REGISTRATION: Final = f"""
SELECT {MODEL_COLUMNS} FROM runstream_data.models m WHERE m.registration_id = $1
"""  # noqa: S608 - built from constants only

SQL_MODEL_VERSION: Final = f"""
SELECT {MODEL_COLUMNS} FROM runstream.models m
WHERE m.workspace = $1 AND m.name = $2 AND m.version = $3
"""  # noqa: S608 - built from constants only
SQL_LATEST_VERSION: Final = f"""
SELECT {MODEL_COLUMNS} FROM runstream.models m
WHERE m.workspace = $1 AND m.name = $2
ORDER BY m.version DESC
LIMIT 1
"""  # noqa: S608 - built from constants only
SQL_MODEL_EXISTS: Final = """
SELECT EXISTS (SELECT 1 FROM runstream.models m WHERE m.workspace = $1 AND m.name = $2)
"""
# Newest first; keyset on (created_at, workspace, name, version). $5: only each name's
# highest version. $6..$9: the last model of the previous page (NULL: the first page).
SQL_MODELS_PAGE: Final = f"""
SELECT {MODEL_COLUMNS} FROM runstream.models m
WHERE ($1::text[] IS NULL OR m.workspace = ANY($1::text[]))
  AND ($2::text IS NULL OR m.workspace = $2)
  AND ($3::text IS NULL OR m.name = $3)
  AND ($4::text IS NULL OR m.run_id = $4)
  AND (NOT $5::boolean OR NOT EXISTS (
        SELECT 1 FROM runstream_data.models n
        WHERE n.workspace = m.workspace AND n.name = m.name AND n.version > m.version))
  AND ($6::timestamptz IS NULL
       OR (m.created_at, m.workspace, m.name, m.version) < ($6, $7::text, $8::text, $9::integer))
ORDER BY m.created_at DESC, m.workspace DESC, m.name DESC, m.version DESC
LIMIT $10
"""  # noqa: S608 - built from constants only

# What run.register_model reads of the run: its workspace and experiment, and the
# artifacts named by a path (the file itself, or every file under the folder).
SQL_RUN_ORIGIN: Final = """
SELECT r.workspace, r.experiment FROM runstream_data.runs r WHERE r.run_id = $1
"""
SQL_RUN_FILES_UNDER: Final = """
SELECT a.name, a.sha256, a.size_bytes FROM runstream.artifacts a
WHERE a.run_id = $1 AND (a.name = $2 OR starts_with(a.name, $2 || '/'))
ORDER BY a.name
"""
SQL_RUN_FILE_NAMES: Final = """
SELECT a.name FROM runstream.artifacts a WHERE a.run_id = $1 ORDER BY a.name LIMIT $2
"""


@dataclass(frozen=True, slots=True)
class ModelFile:
    #: Relative to the parent of the model's path (``model/a.bin`` for path ``outputs/model``).
    name: str
    sha256: str
    size_bytes: int


@dataclass(frozen=True, slots=True)
class NewModel:
    """A registration: everything of a version but its number and time."""

    workspace: str
    name: str
    path: str
    files: tuple[ModelFile, ...]
    registration_id: uuid.UUID
    run_id: str | None = None
    experiment: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    properties: Mapping[str, str] = field(default_factory=dict)
    description: str | None = None


@dataclass(frozen=True, slots=True)
class ModelFilter:
    """Conditions of a listing (None: no condition); ``after`` is the keyset of the
    previous page's last model: (created_at, workspace, name, version)."""

    #: Only these workspaces (a scoped token's grant); None: any.
    workspaces: tuple[str, ...] | None = None
    workspace: str | None = None
    name: str | None = None
    run_id: str | None = None
    #: Only each name's highest version.
    latest_only: bool = False
    after: tuple[datetime, str, str, int] | None = None


async def register(pool: asyncpg.Pool, model: NewModel) -> tuple[asyncpg.Record, bool]:
    """Register ``model`` as the next version of its name (see the module docstring).

    Returns the version's record and whether this call created it (False: its
    ``registration_id`` was registered before, and that first registration is returned,
    whatever name it has).
    """
    files = [{"name": f.name, "sha256": f.sha256, "size_bytes": f.size_bytes}
             for f in model.files]
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(SQL_LOCK_NAME, model.workspace, model.name)
        row = await conn.fetchrow(
            SQL_INSERT_VERSION, model.workspace, model.name, model.run_id, model.experiment,
            model.path, dumps(files), dumps(dict(model.tags)), dumps(dict(model.properties)),
            model.description, model.registration_id,
        )
        if row is not None:
            return row, True
        first = await conn.fetchrow(SQL_BY_REGISTRATION, model.registration_id)
    if first is None:  # the conflicting registration is committed: it cannot vanish
        raise RuntimeError(f"registration {model.registration_id} conflicted but is not stored")
    return first, False


async def model_version(
    pool: asyncpg.Pool, workspace: str, name: str, version: int
) -> asyncpg.Record | None:
    return await pool.fetchrow(SQL_MODEL_VERSION, workspace, name, version)


async def latest_version(pool: asyncpg.Pool, workspace: str, name: str) -> asyncpg.Record | None:
    return await pool.fetchrow(SQL_LATEST_VERSION, workspace, name)


async def model_exists(pool: asyncpg.Pool, workspace: str, name: str) -> bool:
    return bool(await pool.fetchval(SQL_MODEL_EXISTS, workspace, name))


async def models_page(pool: asyncpg.Pool, where: ModelFilter, limit: int) -> list[asyncpg.Record]:
    after = where.after or (None, None, None, None)
    return await pool.fetch(
        SQL_MODELS_PAGE,
        None if where.workspaces is None else list(where.workspaces), where.workspace,
        where.name, where.run_id, where.latest_only, *after, limit,
    )


async def run_origin(pool: asyncpg.Pool, run_id: str) -> asyncpg.Record | None:
    """The run's ``workspace`` and ``experiment``; None when there is no such run."""
    return await pool.fetchrow(SQL_RUN_ORIGIN, run_id)


async def run_files_under(pool: asyncpg.Pool, run_id: str, path: str) -> list[asyncpg.Record]:
    """The run's artifact named ``path`` and every one under the folder ``path/``, by name."""
    return await pool.fetch(SQL_RUN_FILES_UNDER, run_id, path)


async def run_file_names(pool: asyncpg.Pool, run_id: str, limit: int) -> list[str]:
    return [r["name"] for r in await pool.fetch(SQL_RUN_FILE_NAMES, run_id, limit)]
