"""Plain helpers of the integration tests: database polling, run ids, the CLI, ports,
ingest workers run as real processes, events decoded by the real codec, private brokers.

Fixtures that hand these out are in tests/integration/conftest.py.

Waiting is always polling with a deadline (``wait_for``): a test states the outcome it
waits for, never a sleep long enough to hope it happened.

Ports. A server that can bind port 0 and say which port it got is started that way:
``HttpServer.port``, and a process's "… listening on http://…" log line
(``listening_url``). Only a server that must be told its port before it starts (a Kafka
broker's listeners, PostgreSQL, the ports ``runstream up`` reads from ``RUNSTREAM_*``) gets
a probed one (``free_port``): another process may take it before the server binds it, so
such starts are retried on fresh ports when the port turned out to be taken.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from ingest.stack.kafka import KafkaNode, SecuredListener, kafka_version, pom_path
from ingest.stack.procs import StackError
from ingest.worker.decode import DeadLetter, Event, decode_event
from schemas.codec import Codec

__all__ = [
    "NewDb",
    "WorkerFactory",
    "WorkerProcess",
    "decoded",
    "enable_timescaledb",
    "fetch",
    "free_port",
    "listening_url",
    "logged_url",
    "no_dlq",
    "no_resource_warnings",
    "private_broker",
    "run_id",
    "runstream",
    "start_broker",
    "stored_offsets_reach",
    "wait_for",
]

#: ``await new_db()`` / ``await new_db("timescaledb")`` → a fresh migrated database's DSN.
NewDb = Callable[..., Awaitable[str]]

_CODEC = Codec()
_LISTENING = re.compile(r"(\S+) listening on (http://\S+)")


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
    """A port p such that p..p+span-1 are free right now (racy: see the module docstring;
    only for servers that must be told their port up front, with a retried start)."""
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


def listening_url(output: str, name: str) -> str | None:
    """The URL a server logged as ``"<name> listening on http://…"`` (the last one), if any."""
    found = [m.group(2) for m in _LISTENING.finditer(output) if m.group(1) == name]
    return found[-1] if found else None


async def logged_url(caplog: pytest.LogCaptureFixture, name: str,
                     task: asyncio.Future[Any], timeout_s: float = 30.0) -> str:
    """The URL an in-process server (``task``) logged as "<name> listening on http://…"
    (``caplog`` at INFO for ``ingest.server``): it was started on port 0."""
    async with asyncio.timeout(timeout_s):
        while (url := listening_url(caplog.text, name)) is None:
            assert not task.done(), task
            await asyncio.sleep(0.02)
    return url


def decoded(*events: dict[str, Any]) -> list[Event]:
    """Events as a worker sees them: encoded and decoded by the real codec."""
    return [decode_event(_CODEC, _CODEC.encode(e)) for e in events]


async def no_dlq(dead: Sequence[DeadLetter]) -> None:
    """``send_dead_letters`` for batches that must have none."""
    raise AssertionError(f"unexpected dead letters {dead}")


@dataclass
class WorkerProcess:
    """One ``runstream ingest`` process; its output goes to ``log``."""

    proc: subprocess.Popen[bytes]
    log: Path

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM (drain and leave the group), SIGKILL past ``timeout_s``; the exit code.

        A worker still starting up (no signal handler yet: a short test) is given until
        it listens before the signal, so the exit code tells how it shut down."""
        deadline = time.monotonic() + timeout_s
        while (self.proc.poll() is None and self.metrics_url() is None
               and time.monotonic() < deadline):
            time.sleep(0.05)
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

    def metrics_url(self) -> str | None:
        """Where its ``/metrics`` listens (it binds port 0 and logs the port it got)."""
        return listening_url(self.output(), "metrics")


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
                [sys.executable, "-m", "ingest.cli.main", "ingest", "--group", group,
                 "--metrics-port", "0"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.started.append(WorkerProcess(proc, log))
        return self.started[-1]

    def stop_all(self) -> None:
        for worker in self.started:
            worker.stop()


@contextlib.contextmanager
def no_resource_warnings() -> Iterator[None]:
    # KafkaNode starts the broker detached (like `runstream up`) and lets go of its Popen.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        yield


def start_broker(
    home: Path,
    *,
    jars_from: Path,
    host: str = "127.0.0.1",
    secured: Callable[[int], SecuredListener] | None = None,
    tries: int = 3,
) -> KafkaNode:
    """A started broker of a test's own under ``home`` (a fresh directory per try).

    Its listeners need ports up front (plaintext, the controller on the next one, then
    the ``secured`` ones: ``secured(port)`` builds them from the plaintext port), so they
    are probed; a start that failed because another process took one meanwhile is retried
    on fresh ports. The jar cache under ``jars_from`` (the session stack's home) is reused
    read-only when there is one; otherwise the first start fetches the jars with Maven.
    """
    libs = f"libs-{kafka_version(pom_path())}"
    cached = jars_from / "stack" / "kafka" / libs
    span = 2 if secured is None else 4
    for attempt in range(tries):
        port = free_port(span=span)
        node = KafkaNode(home=home / f"try{attempt}", bootstrap=f"{host}:{port}", listen_host=host,
                         secured=None if secured is None else secured(port))
        if cached.is_dir():
            node.dir.mkdir(parents=True, exist_ok=True)
            (node.dir / libs).symlink_to(cached, target_is_directory=True)
        try:
            with no_resource_warnings():
                node.start()
        except StackError as exc:
            log = node.dir / "kafka.log"
            text = log.read_text(errors="replace") if log.exists() else ""
            if "Address already in use" in text or "is taken by a process" in str(exc):
                continue
            pytest.fail(f"{exc}\n{text[-4000:]}")
        return node
    pytest.fail(f"no free ports for a private broker in {tries} tries")


def stop_broker(node: KafkaNode) -> None:
    with no_resource_warnings():
        node.stop()


@contextlib.asynccontextmanager
async def private_broker(home: Path, *, jars_from: Path) -> AsyncIterator[KafkaNode]:
    """A broker of the test's own (the session's broker is shared with other tests)."""
    node = await asyncio.to_thread(start_broker, home, jars_from=jars_from)
    try:
        yield node
    finally:
        await asyncio.to_thread(stop_broker, node)


def private_env(home: Path) -> dict[str, str]:
    """Environment for a second, throwaway stack on its own home and ports.

    ``runstream up`` reads every port from the environment before it starts anything, so
    they are probed here; another process may take one before the stack binds it (see
    tests/integration/helpers.py), which ``up_private`` answers with fresh ports.
    """
    ports = {"kafka": free_port(span=2), "pg": free_port(), "api": free_port(),
             "metrics": free_port()}
    while len(set(ports.values()) | {ports["kafka"] + 1}) < 5:  # all distinct
        ports = {**ports, "pg": free_port(), "api": free_port(), "metrics": free_port()}
    env = {
        **os.environ,
        "RUNSTREAM_HOME": str(home),
        "RUNSTREAM_KAFKA": f"127.0.0.1:{ports['kafka']}",
        "RUNSTREAM_PG_PORT": str(ports["pg"]),
        "RUNSTREAM_API": f"http://127.0.0.1:{ports['api']}",
        "RUNSTREAM_METRICS_PORT": str(ports["metrics"]),
    }
    env.pop("RUNSTREAM_DB", None)
    return env


def port_clash(result: subprocess.CompletedProcess[str], home: Path) -> bool:
    """Whether ``up`` failed because one of its probed ports was taken meanwhile."""
    if any(words in result.stderr for words in ("is taken by", "already answers")):
        return True
    logs = [*(home / "stack").glob("*.log"), home / "stack" / "kafka" / "kafka.log"]
    return any("Address already in use" in log.read_text(errors="replace")
               for log in logs if log.exists())
