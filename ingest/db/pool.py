"""The one asyncpg connection pool wrapper, the base of the worker's ``Store`` and the API's
``ReadStore``: built without I/O, connected by ``start()``, closed by ``stop()`` (both
idempotent). It never migrates (that is ``ingest/db/migrate.py``'s job)."""

from __future__ import annotations

from typing import Self

import asyncpg

__all__ = ["Pool"]


class Pool:
    """An asyncpg pool with ``start``/``stop`` and ``async with``; ``pool`` while started."""

    def __init__(self, *, dsn: str, min_size: int = 1, max_size: int = 4,
                 command_timeout_s: float = 60.0) -> None:
        self._dsn = dsn
        self._min_size = min_size
        self._max_size = max_size
        self._command_timeout_s = command_timeout_s
        self._pool: asyncpg.Pool | None = None

    def __repr__(self) -> str:  # never the DSN: it may carry a password
        return f"Pool(min_size={self._min_size}, max_size={self._max_size})"

    @property
    def command_timeout_s(self) -> float:
        return self._command_timeout_s

    async def start(self) -> None:
        if self._pool is None:
            self._pool = await asyncpg.create_pool(
                self._dsn, min_size=self._min_size, max_size=self._max_size,
                command_timeout=self._command_timeout_s,
            )

    async def stop(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the database pool is not started")
        return self._pool
