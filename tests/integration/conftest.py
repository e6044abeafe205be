"""Helpers shared by the integration tests: database polling, run ids, free ports, topic
end offsets and ingest workers run as real processes.

Waiting is always polling with a deadline (``wait_for``): a test states the outcome it
waits for, never a sleep long enough to hope it happened.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from ingest.db.migrate import available_migrations, migrate
from tests.conftest import DbFactory


async def enable_timescaledb(dsn: str) -> bool:
    """Create the timescaledb extension in this (empty) database if the server has it.

    Returns False when the server cannot load it (not installed or not preloaded).
    """
    conn = await asyncpg.connect(dsn)
    try:
        if not await conn.fetchval(
            "SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'"
        ):
            return False
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        except asyncpg.PostgresError:
            return False
        return True
    finally:
        await conn.close()


def run_id(experiment: str = "exp") -> str:
    """A fresh run id in the SDK's ``{experiment}_{unix seconds}_{8 hex}`` form."""
    return f"{experiment}_{random.randint(1_600_000_000, 1_900_000_000)}_{uuid.uuid4().hex[:8]}"


async def wait_for(
    check: Callable[[], Awaitable[bool]], *, timeout_s: float = 60.0, what: str = "condition"
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await check():
        if loop.time() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(0.2)


async def fetch(dsn: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        return [dict(r) for r in await conn.fetch(sql, *args)]
    finally:
        await conn.close()


async def new_db(db_factory: DbFactory, backend: str = "partitioned") -> str:
    """A fresh database with every migration applied (``runstream migrate``)."""
    dsn = await db_factory()
    if backend == "timescaledb" and not await enable_timescaledb(dsn):
        pytest.skip("TimescaleDB is not available on this PostgreSQL")
    assert await migrate(dsn) == [version for version, _, _ in available_migrations()]
    return dsn


def stored_offsets_reach(
    dsn: str, topic: str, group: str, ends: dict[int, int]
) -> Callable[[], Awaitable[bool]]:
    """A check: the group's offsets in the database cover every produced message."""

    async def check() -> bool:
        rows = await fetch(
            dsn,
            "SELECT partition, next_offset FROM "
            "runstream_data.consumer_offsets WHERE group_id = $1 AND "
            "topic = $2",
            group,
            topic,
        )
        stored = {r["partition"]: r["next_offset"] for r in rows}
        return all(stored.get(p, 0) >= end for p, end in ends.items())

    return check


def runstream(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a user would (a subprocess), capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", "ingest.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
        env=env,
    )


def free_port(span: int = 1) -> int:
    """A port p such that p..p+span-1 are free right now."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + span < 65000 and all(_free(port + i) for i in range(span)):
            return port
    raise RuntimeError("no free port range")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@dataclass
class WorkerProcess:
    """One ``runstream ingest`` process; its output goes to ``log``."""

    proc: subprocess.Popen[bytes]
    log: Path

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM (drain and leave the group), SIGKILL past ``timeout_s``; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class WorkerFactory:
    """Starts ingest workers exactly as an operator would: ``python -m ingest.cli ingest``."""

    logs: Path
    started: list[WorkerProcess] = field(default_factory=list)

    def start(self, *, bootstrap: str, topic: str, dsn: str, group: str) -> WorkerProcess:
        env = {
            **os.environ,
            "RUNSTREAM_KAFKA": bootstrap,
            "RUNSTREAM_TOPIC": topic,
            "RUNSTREAM_DB": dsn,
            "RUNSTREAM_HOME": str(self.logs / "home"),
        }
        log = self.logs / f"worker-{len(self.started)}.log"
        self.logs.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "ingest.cli.main",
                    "ingest",
                    "--group",
                    group,
                    "--metrics-port",
                    "0",
                ],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.started.append(WorkerProcess(proc, log))
        return self.started[-1]


@pytest.fixture
def worker_procs(tmp_path: Path) -> Iterator[WorkerFactory]:
    """``worker_procs.start(bootstrap=..., topic=..., dsn=..., group=...)``; whatever still
    runs at the end of the test is stopped."""
    factory = WorkerFactory(logs=tmp_path / "workers")
    yield factory
    for worker in factory.started:
        worker.stop()
