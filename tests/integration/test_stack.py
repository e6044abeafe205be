"""The local stack: real broker, real database, and the up/down/status lifecycle."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from ingest.settings import Settings
from ingest.stack.postgres import LocalPostgres
from ingest.stack.procs import port_open
from tests.helpers import DbFactory, StackInfo, TopicFactory, unique
from tests.integration.helpers import port_clash, private_env, runstream


async def test_idempotent_produce_group_consume_commit(
    stack: StackInfo, topic_factory: TopicFactory
) -> None:
    topic = await topic_factory(partitions=3)
    producer = AIOKafkaProducer(
        bootstrap_servers=stack.kafka_bootstrap,
        enable_idempotence=True,
        acks="all",
        compression_type="zstd",
    )
    await producer.start()
    try:
        sent = {f"v{i}".encode() for i in range(300)}
        for i, value in enumerate(sorted(sent)):
            await producer.send(topic, key=f"run-{i % 7}".encode(), value=value)
        await producer.flush()
    finally:
        await producer.stop()

    group = unique("g-")
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=stack.kafka_bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    got: list[bytes] = []
    try:
        deadline = time.monotonic() + 60
        while len(got) < len(sent) and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for messages in batch.values():
                got.extend(m.value for m in messages if m.value is not None)
        await consumer.commit()
        committed = [await consumer.committed(TopicPartition(topic, p)) for p in range(3)]
    finally:
        await consumer.stop()
    assert sorted(got) == sorted(sent)  # each exactly once
    assert sum(c or 0 for c in committed) == len(sent)


async def test_postgres_round_trip(db_factory: DbFactory) -> None:
    dsn = await db_factory()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE t (x double precision, s text)")
        rows = [(float("nan"), "a"), (float("inf"), "'; DROP TABLE t; --"), (-1.5, None)]
        await conn.executemany("INSERT INTO t VALUES ($1, $2)", rows)
        back = await conn.fetch("SELECT x, s FROM t ORDER BY s NULLS LAST")
    finally:
        await conn.close()
    values = [(r["x"], r["s"]) for r in back]
    assert values[0][1] == "'; DROP TABLE t; --"
    assert values[0][0] == float("inf")
    assert values[1][1] == "a"
    assert values[1][0] != values[1][0]
    assert values[2] == (-1.5, None)


def test_status_json_reports_healthy_components(stack: StackInfo) -> None:
    result = runstream("status", "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["kafka"] == status["kafka"] | {"bootstrap": stack.kafka_bootstrap, "ok": True}
    assert status["postgres"]["ok"] is True
    assert "timescaledb" in status["postgres"]
    assert status["api"]["ok"] is True


def readme_status_sample() -> dict[str, dict[str, object]]:
    """The README's sample of ``runstream status --json`` (Set up)."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    after = text[text.index("`runstream status --json` on the local stack"):]
    start = after.index("```json\n") + len("```json\n")
    sample: dict[str, dict[str, object]] = json.loads(after[start:after.index("```", start)])
    return sample


def test_the_readmes_status_sample_has_what_status_prints(stack: StackInfo) -> None:
    result = runstream("status", "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    sample = readme_status_sample()
    assert list(sample) == list(status) == sorted(status)
    for component, info in status.items():
        assert sorted(sample[component]) == sorted(set(info) - {"error"}), component
        assert type(sample[component]["ok"]) is type(info["ok"]), component


def test_up_again_is_a_no_op(stack: StackInfo) -> None:
    home = stack.settings.home / "stack"
    before = {p.name: p.read_text() for p in home.glob("*.pid")}
    result = runstream("up", "--json")
    assert result.returncode == 0, result.stderr
    assert "starting" not in result.stderr
    after = {p.name: p.read_text() for p in home.glob("*.pid")}
    assert before == after


UpPrivate = Callable[[], tuple[dict[str, str], subprocess.CompletedProcess[str]]]


@pytest.fixture
def up_private(tmp_path: Path) -> Iterator[UpPrivate]:
    """``env, result = up_private()``: ``runstream up --json`` of a second, throwaway stack
    (retried on fresh ports when a probed port was taken meanwhile); downed afterwards."""
    tried: list[dict[str, str]] = []

    def up() -> tuple[dict[str, str], subprocess.CompletedProcess[str]]:
        for attempt in range(3):
            home = tmp_path / f"home{attempt}"
            env = private_env(home)
            tried.append(env)
            result = runstream("up", "--json", env=env)
            if result.returncode == 0 or not port_clash(result, home):
                break
            runstream("down", env=env)
        return env, result

    yield up
    for env in tried:
        runstream("down", env=env)
        pg = LocalPostgres(home=Path(env["RUNSTREAM_HOME"]), port=int(env["RUNSTREAM_PG_PORT"]))
        if pg.dir.is_relative_to("/var/lib/runstream"):
            shutil.rmtree(pg.dir, ignore_errors=True)


def _our_processes(marker: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            pids.append(int(proc.name))
    return pids


def test_up_then_down_leaves_no_process_of_ours(stack: StackInfo, up_private: UpPrivate) -> None:
    env, up = up_private()
    home = env["RUNSTREAM_HOME"]
    assert up.returncode == 0, up.stderr
    status = json.loads(up.stdout)
    assert status["kafka"]["ok"]
    assert status["postgres"]["ok"]
    assert status["api"] == {"ok": True, "managed": True, "url": env["RUNSTREAM_API"]}
    settings = Settings.from_env(env)
    pg = LocalPostgres(home=settings.home, port=settings.pg_port)
    assert _our_processes(home)
    assert _our_processes(str(pg.data))
    assert pg.running()

    down = runstream("down", env=env)
    assert down.returncode == 0, down.stderr
    assert "kafka" in down.stdout
    assert "postgres" in down.stdout
    assert "api" in down.stdout
    assert "ingest" in down.stdout
    assert _our_processes(home) == []
    assert _our_processes(str(pg.data)) == []
    assert not pg.running()
    assert not port_open("127.0.0.1", int(env["RUNSTREAM_KAFKA"].rsplit(":", 1)[1]))
    assert not port_open("127.0.0.1", settings.pg_port)
    assert not port_open("127.0.0.1", int(env["RUNSTREAM_API"].rsplit(":", 1)[1]))
    assert not port_open("127.0.0.1", int(env["RUNSTREAM_METRICS_PORT"]))
    # Nothing else was touched: the session's stack still answers.
    assert json.loads(runstream("status", "--json").stdout)["kafka"]["ok"] is True
    assert runstream("down", env=env).stdout.strip() == "nothing of ours was running"


#: Logs a run with a file into the stack of the environment, and waits until it is stored.
LOG_A_RUN = """
from producer import Experiment, Workspace
ws = Workspace.from_env()
with Experiment(ws, "purged").start_logging(outputs_dir=None) as run:
    run.log("loss", 0.5)
    run.upload_file("model.bin", __import__("io").BytesIO(b"weights"))
run.flush(30.0)  # the file's bytes are in the API's blob store
assert run.get_file_names() == ["model.bin"], run.get_file_names()
ws.close(30.0)
"""


def test_down_purge_asks_then_removes_the_cluster_data_wherever_it_lives(
    stack: StackInfo, up_private: UpPrivate
) -> None:
    env, up = up_private()
    assert up.returncode == 0, up.stderr
    settings = Settings.from_env(env)
    home = settings.home
    logged = subprocess.run([sys.executable, "-c", LOG_A_RUN], env=env, capture_output=True,
                            text=True, timeout=300, check=False)
    assert logged.returncode == 0, logged.stderr
    pg = LocalPostgres(home=home, port=settings.pg_port)
    kafka = home / "stack" / "kafka"
    data = [pg.dir, kafka / "data", home / "blobs"]
    assert all(p.is_dir() and any(p.iterdir()) for p in data), data
    assert (pg.data / "PG_VERSION").is_file()
    assert list(kafka.glob("libs-*"))

    def down_purge(*args: str, answer: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ingest.cli", "down", "--purge", *args],
                              input=answer, env=env, capture_output=True, text=True,
                              timeout=300, check=False)

    refused = down_purge(answer="n\n")
    assert refused.returncode == 1
    assert str(pg.dir) in refused.stderr  # what it would remove, wherever it is
    assert str(kafka / "data") in refused.stderr
    assert "nothing stopped or removed" in refused.stderr
    assert pg.running()
    assert all(p.is_dir() for p in data)

    purged = down_purge(answer="y\n")
    assert purged.returncode == 0, purged.stderr
    assert "postgres" in purged.stdout
    assert "kafka" in purged.stdout
    assert not pg.running()
    assert [p for p in data if p.exists()] == []
    assert not list((home / "stack").glob("*.log"))
    assert list(kafka.glob("libs-*")), "the Kafka jars are kept"
    if os.geteuid() == 0:
        assert pg.dir.is_relative_to("/var/lib/runstream")  # outside RUNSTREAM_HOME, gone
    # Nothing else was touched: the session's stack still answers, with its data.
    assert json.loads(runstream("status", "--json").stdout)["postgres"]["ok"] is True
    shared = LocalPostgres(home=stack.settings.home, port=stack.settings.pg_port)
    assert stack.settings.db_dsn is not None or (shared.data / "PG_VERSION").is_file()

    again = down_purge("--yes", answer="")
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == ["nothing of ours was running",
                                         "no cluster data to remove"]
