"""A single-node Apache Kafka (KRaft, broker + controller) run from Maven Central jars.

No Docker and no tarball: ``deploy/pom.xml`` pins ``org.apache.kafka:kafka_2.13``; the
first ``up`` runs ``mvn dependency:copy-dependencies`` into
``<home>/stack/kafka/libs-<version>`` (a cache reused by every later ``up``), formats the
KRaft storage once, and runs ``kafka.Kafka`` on the machine's Java 17 with a 512 MiB heap,
listening on 127.0.0.1 only. The controller listens on the broker port + 1. Automatic topic
creation is off: ``ensure_topics`` creates the events and dead-letter topics.
"""

from __future__ import annotations

import asyncio
import base64
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from ingest.stack.procs import ManagedProcess, StackError, port_open, progress, wait_for

__all__ = ["KafkaNode", "ensure_topics", "kafka_healthy", "pom_path", "topic_ends"]

HEAP = "512m"
LOOPBACK = ("127.0.0.1", "localhost")

_LOG4J2 = """\
status = warn
appender.file.type = Console
appender.file.name = OUT
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.out.ref = OUT
logger.kafka.name = kafka.server.KafkaRaftServer
logger.kafka.level = info
"""


def pom_path() -> Path:
    return Path(__file__).resolve().parents[2] / "deploy" / "pom.xml"


def kafka_version(pom: Path) -> str:
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom.read_text())
    if not match:
        raise StackError(f"{pom} does not pin <kafka.version>")
    return match.group(1).strip()


def split_bootstrap(bootstrap: str) -> tuple[str, int]:
    first = bootstrap.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    if not host or not port.isdigit():
        raise StackError(f"RUNSTREAM_KAFKA={bootstrap!r} is not host:port")
    return host, int(port)


def java_major() -> int | None:
    java = shutil.which("java")
    if java is None:
        return None
    out = subprocess.run(  # noqa: S603 - fixed argv
        [java, "-version"], capture_output=True, text=True, check=False
    ).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


class KafkaNode:
    """The local broker under ``<home>/stack/kafka``; ``start``/``stop`` are idempotent."""

    def __init__(self, *, home: Path, bootstrap: str) -> None:
        self.home = home
        self.bootstrap = bootstrap
        self.host, self.port = split_bootstrap(bootstrap)
        self.dir = home / "stack" / "kafka"
        self.config = self.dir / "server.properties"
        self.process = ManagedProcess("kafka", home / "stack" / "kafka.pid", str(self.config))

    @property
    def managed(self) -> bool:
        """Whether ``up`` runs this broker (loopback) or only checks an external one."""
        return self.host in LOOPBACK

    def _libs(self, version: str) -> Path:
        return self.dir / f"libs-{version}"

    def fetch_jars(self) -> Path:
        pom = pom_path()
        if not pom.exists():
            raise StackError(f"{pom} is missing; run runstream from a checkout of the project")
        version = kafka_version(pom)
        libs = self._libs(version)
        if (libs / f"kafka_2.13-{version}.jar").exists():
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise StackError(
                "Maven (mvn) is needed once to fetch the Kafka jars from Maven Central; "
                "install it with: apt-get install -y maven"
            )
        progress(f"fetching Apache Kafka {version} jars with Maven (first run only, ~45 MB)…")
        started = time.monotonic()
        tmp = libs.with_name(libs.name + ".part")
        shutil.rmtree(tmp, ignore_errors=True)
        argv = [
            mvn, "-B", "-q", "--no-transfer-progress", "-f", str(pom),
            "dependency:copy-dependencies", "-DincludeScope=runtime",
            f"-DoutputDirectory={tmp}",
        ]  # fmt: skip
        result = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-15:])
            raise StackError(f"mvn could not fetch the Kafka jars:\n{tail}")
        tmp.rename(libs)
        progress(
            f"fetched {len(list(libs.glob('*.jar')))} jars in {time.monotonic() - started:.0f}s"
        )
        return libs

    def _write_config(self) -> None:
        data = self.dir / "data"
        controller = self.port + 1
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{controller}",
                    f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{controller}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                    "inter.broker.listener.name=PLAINTEXT",
                    f"log.dirs={data}",
                    "auto.create.topics.enable=false",
                    "num.partitions=6",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=6",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "log.retention.hours=168",
                    "message.max.bytes=2097152",
                    "",
                ]
            )
        )
        (self.dir / "log4j2.properties").write_text(_LOG4J2)

    def _java(self, libs: Path, *args: str, heap: str | None = None) -> list[str]:
        java = shutil.which("java") or "java"
        argv = [java]
        if heap:
            argv += [f"-Xmx{heap}", f"-Xms{heap}", "-XX:+UseG1GC"]
        argv += [
            f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
            "-Dkafka.logs.dir=" + str(self.dir / "logs"),
            "-cp",
            f"{libs}/*",
            *args,
        ]
        return argv

    def _format(self, libs: Path) -> None:
        if (self.dir / "data" / "meta.properties").exists():
            return
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        argv = self._java(
            libs, "kafka.tools.StorageTool", "format", "-t", cid, "-c", str(self.config)
        )
        result = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
        if result.returncode != 0:
            raise StackError(f"formatting KRaft storage failed:\n{result.stdout}{result.stderr}")

    def start(self, *, timeout_s: float = 90.0) -> bool:
        """Start the broker unless it runs. Returns True when this call started it."""
        if self.process.running():
            return False
        if port_open(self.host, self.port):
            raise StackError(
                f"port {self.port} is taken by a process runstream did not start; stop it or "
                "point RUNSTREAM_KAFKA at another port"
            )
        major = java_major()
        if major is None or major < 17:
            found = "not found" if major is None else f"Java {major}"
            raise StackError(
                f"Kafka needs Java 17 or newer ({found}); install it with: "
                "apt-get install -y openjdk-17-jre-headless"
            )
        libs = self.fetch_jars()
        self._write_config()
        self._format(libs)
        progress(f"starting Kafka on {self.host}:{self.port}…")
        self.process.spawn(
            self._java(libs, "kafka.Kafka", str(self.config), heap=HEAP),
            log_file=self.dir / "kafka.log",
        )
        if (
            not wait_for(
                lambda: port_open(self.host, self.port) or not self.process.running(),
                timeout_s=timeout_s,
            )
            or not self.process.running()
        ):
            self.process.stop(timeout_s=5)
            raise StackError(f"Kafka did not start; see {self.dir / 'kafka.log'}")
        return True

    def stop(self) -> bool:
        return self.process.stop(timeout_s=30.0)


async def kafka_healthy(bootstrap: str, *, timeout_s: float = 5.0) -> bool:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000)
    )
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        await asyncio.wait_for(admin.describe_cluster(), timeout_s)
        return True
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        await admin.close()


async def ensure_topics(
    bootstrap: str, topics: Sequence[str], *, partitions: int, timeout_s: float = 60.0
) -> list[str]:
    """Create the topics that don't exist yet (retrying while the broker settles).

    Returns the names created. Existing topics are left as they are.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [t for t in topics if t not in existing]
            if not missing:
                return []
            response = await admin.create_topics(
                [NewTopic(name, partitions, 1) for name in missing], timeout_ms=10_000
            )
            created: list[str] = []
            for name, code, *rest in response.topic_errors:
                if code == 0:
                    created.append(name)
                elif code != TopicAlreadyExistsError.errno:  # a concurrent creator won: fine
                    raise StackError(f"creating topic {name!r} failed: error {code} {rest}")
            return created
        except (KafkaError, OSError) as exc:
            if time.monotonic() > deadline:
                raise StackError(f"could not create topics on {bootstrap}: {exc}") from exc
            await asyncio.sleep(0.5)
        finally:
            await admin.close()


async def topic_ends(bootstrap: str, topic: str) -> dict[int, int]:
    """Per partition, the offset after the last message now on ``topic`` (empty ones left out)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    partitions = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
    if not partitions:
        raise StackError(f"topic {topic} has no partitions: {described}")
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    return {tp.partition: end for tp, end in ends.items() if end > 0}
