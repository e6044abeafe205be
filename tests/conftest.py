"""Shared fixtures: the real local stack, per-test topics and per-test databases.

The stack (Kafka + PostgreSQL) starts once per session through ``runstream up``, which
reuses whatever already runs, exactly as a developer would start it. Isolation comes from
names, not from restarts: each test gets its own topic (and dead-letter topic), consumer
group and database.

Fixtures live here and in tests/integration/conftest.py and are used by name; plain
helpers (and the types the fixtures give, for annotations) are in tests/helpers.py and
tests/integration/helpers.py. No test module imports another test module or a conftest.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from ingest.settings import Settings
from ingest.stack.kafka import ensure_topics
from tests.helpers import DbFactory, StackInfo, TopicFactory, unique

# The ``reliability`` fixture and the figures it writes for RELIABILITY.md.
pytest_plugins = ["tests.reliability"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in item.nodeid.replace("\\", "/"):
            item.add_marker(pytest.mark.integration)


def _with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


@pytest.fixture(scope="session")
def stack() -> StackInfo:
    """The running local stack; started with ``runstream up`` if it is not up yet."""
    result = subprocess.run(
        [sys.executable, "-m", "ingest.cli", "up", "--json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if result.returncode != 0:
        pytest.fail(f"runstream up failed:\n{result.stdout}\n{result.stderr}")
    status = json.loads(result.stdout.strip().splitlines()[-1])
    settings = Settings.from_env()
    dsn = settings.db_dsn.value if settings.db_dsn else status["postgres"]["dsn"]
    return StackInfo(settings=settings, kafka_bootstrap=settings.kafka_bootstrap, db_dsn=dsn)


@pytest.fixture
async def topic_factory(stack: StackInfo) -> AsyncIterator[TopicFactory]:
    """``await topic_factory(partitions=6)`` → a fresh topic name; its ``.dlq`` exists too."""
    created: list[str] = []

    async def make(partitions: int = 6) -> str:
        name = unique("test.")
        await ensure_topics(stack.kafka_bootstrap, [name, f"{name}.dlq"], partitions=partitions)
        created.extend([name, f"{name}.dlq"])
        return name

    yield make
    if created:
        admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
        await admin.start()
        try:
            await admin.delete_topics(created)
        finally:
            await admin.close()


@pytest.fixture
async def db_factory(stack: StackInfo) -> AsyncIterator[DbFactory]:
    """``await db_factory()`` → the DSN of a fresh, empty database, dropped afterwards."""
    created: list[str] = []
    admin_dsn = _with_database(stack.db_dsn, "postgres")

    async def make() -> str:
        name = unique("rs_test_")
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        created.append(name)
        return _with_database(stack.db_dsn, name)

    yield make
    if created:
        conn = await asyncpg.connect(admin_dsn)
        try:
            for name in created:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()
