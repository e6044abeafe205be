"""Fixtures of the integration tests (the stack, topics and databases are tests/conftest.py's).

- ``new_db``: a fresh database with every migration applied;
- ``worker_procs``: ``runstream ingest`` processes, stopped at the end of the test;
- ``pipeline`` / ``read_pipeline``: a topic, database, group and worker of the test's own
  (the latter with an API server of its own too; tests/integration/pipelines.py);
- ``api_factory`` / ``api``: the real API server without a database, on an ephemeral
  port (tests/integration/api_servers.py); ``http``: an aiohttp client session;
- ``closed_port``: a local port nothing answers on, for as long as the test runs;
- ``fault_run``: the fault tests' skeleton (tests/integration/faults.py).

Plain helpers are in tests/integration/helpers.py.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from ingest.api.app import ReadinessCheck, create_app
from ingest.api.blobstore import DEFAULT_MAX_BLOB_BYTES, BlobStore
from ingest.db.migrate import available_migrations, migrate
from ingest.server import HttpServer
from ingest.settings import Secret
from ingest.stack.kafka import ensure_topics
from tests.helpers import DbFactory, StackInfo, TopicFactory, unique
from tests.integration.api_servers import Api, ApiFactory
from tests.integration.faults import FaultRun, FaultRunFactory
from tests.integration.helpers import NewDb, WorkerFactory, enable_timescaledb
from tests.integration.pipelines import READ_TOKEN, Pipeline, ReadPipeline, start_api
from tests.reliability import Reliability


@pytest.fixture
def new_db(db_factory: DbFactory) -> NewDb:
    """``await new_db()`` (or ``new_db("timescaledb")``, skipped where the server lacks it)
    → the DSN of a fresh database with every migration applied (``runstream migrate``)."""

    async def make(backend: str = "partitioned") -> str:
        dsn = await db_factory()
        if backend == "timescaledb" and not await enable_timescaledb(dsn):
            pytest.skip("TimescaleDB is not available on this PostgreSQL")
        assert await migrate(dsn) == [version for version, _, _ in available_migrations()]
        return dsn

    return make


@pytest.fixture
def worker_procs(tmp_path: Path) -> Iterator[WorkerFactory]:
    """``worker_procs.start(bootstrap=..., topic=..., dsn=..., group=...)``; whatever still
    runs at the end of the test is stopped."""
    factory = WorkerFactory(logs=tmp_path / "workers")
    yield factory
    factory.stop_all()


@pytest.fixture
async def pipeline(stack: StackInfo, topic_factory: TopicFactory, new_db: NewDb,
                   worker_procs: WorkerFactory) -> AsyncIterator[Pipeline]:
    """A topic, database, consumer group and ``runstream ingest`` process of the test's
    own; the SDK's API is the stack's."""
    topic, dsn = await topic_factory(partitions=4), await new_db()
    group = unique("e2e-")
    proc = worker_procs.start(bootstrap=stack.kafka_bootstrap, topic=topic, dsn=dsn, group=group)
    yield Pipeline(stack.kafka_bootstrap, stack.settings.api_url, topic, dsn, group, proc)
    assert proc.stop() == 0, proc.output()


@pytest.fixture
async def read_pipeline(pipeline: Pipeline, tmp_path: Path) -> AsyncIterator[ReadPipeline]:
    """``pipeline`` plus an API server of the test's own over its database (token
    ``READ_TOKEN``), and a home for each SDK process under the test's directory."""
    registry = CollectorRegistry()
    async with AsyncExitStack() as exits:
        url = await start_api(exits, dsn=pipeline.dsn, blob_root=tmp_path / "server-blobs",
                              token=READ_TOKEN, registry=registry,
                              bootstrap=pipeline.bootstrap, topic=pipeline.topic)
        yield ReadPipeline(pipeline.bootstrap, url, pipeline.topic, pipeline.dsn,
                           pipeline.group, pipeline.worker, home=tmp_path,
                           api_registry=registry)


@pytest.fixture
async def api_factory(tmp_path: Path) -> AsyncIterator[ApiFactory]:
    """``await api_factory(token=..., max_blob_bytes=..., ...)`` → a started ``Api``."""
    async with contextlib.AsyncExitStack() as stack:
        count = 0

        async def start(
            *,
            token: str | None = None,
            max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES,
            blob_root: Path | None = None,
            readiness_checks: Sequence[ReadinessCheck] = (),
            readiness_timeout_s: float = 2.0,
        ) -> Api:
            nonlocal count
            count += 1
            root = blob_root or tmp_path / f"blobs{count}"
            store = BlobStore(root=root, max_blob_bytes=max_blob_bytes)
            app = create_app(
                blob_store=store,
                registry=CollectorRegistry(),
                token=None if token is None else Secret(token),
                readiness_checks=readiness_checks,
                readiness_timeout_s=readiness_timeout_s,
            )
            server = await stack.enter_async_context(HttpServer(app, host="127.0.0.1", port=0))
            return Api(url=server.url, store=store)

        yield start


@pytest.fixture
async def api(api_factory: ApiFactory) -> Api:
    return await api_factory()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A local port bound by the test but not listening: connecting to it is refused, and
    no other process can start listening on it while the test runs."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


@pytest.fixture
async def fault_run(stack: StackInfo, topic_factory: TopicFactory, new_db: NewDb,
                    worker_procs: WorkerFactory, tmp_path: Path,
                    reliability: Reliability) -> AsyncIterator[FaultRunFactory]:
    """``await fault_run(partitions=4)`` → a ``FaultRun`` (tests/integration/faults.py):
    a topic on the stack's broker (or ``topic`` on ``bootstrap``, created when not
    given), a fresh migrated database (or ``dsn``) and a consumer group of its own."""
    made: list[FaultRun] = []

    async def make(*, partitions: int = 4, bootstrap: str | None = None,
                   topic: str | None = None, dsn: str | None = None) -> FaultRun:
        if bootstrap is None:
            bootstrap = stack.kafka_bootstrap
            topic = topic or await topic_factory(partitions=partitions)
        elif topic is None:
            topic = unique("faults.")
            await ensure_topics(bootstrap, [topic, f"{topic}.dlq"], partitions=partitions)
        run = FaultRun(bootstrap=bootstrap, topic=topic, dsn=dsn or await new_db(),
                       group=unique("faults-"), home=tmp_path / f"fault{len(made)}",
                       workers=worker_procs, reliability=reliability)
        made.append(run)
        return run

    yield make
    for run in made:
        run.stop()
