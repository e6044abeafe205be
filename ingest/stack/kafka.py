"""A single-node Apache Kafka (KRaft, broker + controller) run from Maven Central jars.

No Docker and no tarball: ``deploy/pom.xml`` (shipped as ``ingest/stack/pom.xml``) pins
``org.apache.kafka:kafka_2.13``; the first ``up`` runs ``mvn dependency:copy-dependencies`` into
``<home>/stack/kafka/libs-<version>`` (a cache reused by every later ``up``), formats the
KRaft storage once, and runs ``kafka.Kafka`` on the machine's Java 17 with a 512 MiB heap,
listening on 127.0.0.1 only. The controller listens on the broker port + 1. Automatic topic
creation is off: ``ensure_topics`` creates the events and dead-letter topics.

Tests can give a node secured client listeners (``SecuredListener``): SASL_SSL with SCRAM
users, and optionally SSL that requires a client certificate (mutual TLS), both from PEM
files. The plaintext listener stays for the controller and inter-broker traffic; SCRAM
credentials are written into the KRaft metadata when the storage is formatted, so they
are fixed for the life of the node's data directory.

The admin helpers (``kafka_healthy``, ``ensure_topics``, ``topic_ends``) take the clients'
``KafkaSecurity`` (default: plaintext).
"""

from __future__ import annotations

import asyncio
import base64
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from ingest.stack.procs import ManagedProcess, StackError, port_open, progress, wait_for
from producer import KafkaSecurity, KafkaSecurityError

__all__ = [
    "KafkaNode",
    "SecuredListener",
    "ensure_topics",
    "kafka_healthy",
    "pom_path",
    "topic_ends",
]

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
    """The pom that pins the Kafka version: ``deploy/pom.xml``, shipped in the package as
    ``ingest/stack/pom.xml`` (a link in the checkout), so an installed wheel can ``up``."""
    return Path(__file__).with_name("pom.xml")


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


SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
#: Characters StorageTool's ``--add-scram 'MECHANISM=[name=…,password=…]'`` cannot take.
_SCRAM_UNSAFE = frozenset(",[]=\"'\\") | frozenset(" \t\r\n")


@dataclass(frozen=True, kw_only=True)
class SecuredListener:
    """Client listeners of a (test) broker that need TLS, next to its plaintext one.

    ``port``: SASL_SSL, clients log in with ``mechanism`` as one of ``scram_users``
    (name -> password). ``mtls_port``: SSL that requires a client certificate signed by
    ``ca_file``. ``cert_file``/``key_file``: the broker's PEM certificate (chain) and its
    unencrypted PKCS#8 key (``openssl req -newkey`` writes that).
    """

    port: int
    cert_file: Path
    key_file: Path
    scram_users: Mapping[str, str] = field(repr=False)
    mechanism: str = "SCRAM-SHA-512"
    ca_file: Path | None = None
    mtls_port: int | None = None

    def __post_init__(self) -> None:
        if self.mechanism not in SCRAM_MECHANISMS:
            raise ValueError(f"mechanism must be one of {SCRAM_MECHANISMS}, not {self.mechanism!r}")
        if self.mtls_port is not None and self.ca_file is None:
            raise ValueError("mtls_port needs ca_file (the CA that signs client certificates)")
        if not self.scram_users:
            raise ValueError("scram_users must name at least one user")
        for name, password in self.scram_users.items():
            if not name or not password or _SCRAM_UNSAFE & set(name + password):
                raise ValueError(
                    f"SCRAM user {name!r}: name and password must be non-empty, without "
                    "spaces, quotes, commas, '=' or brackets"
                )

    @property
    def ports(self) -> list[int]:
        return [self.port] + ([self.mtls_port] if self.mtls_port is not None else [])

    def listeners(self, host: str) -> list[str]:
        out = [f"SASL_SSL://{host}:{self.port}"]
        if self.mtls_port is not None:
            out.append(f"SSL://{host}:{self.mtls_port}")
        return out

    def config(self, keystore: Path) -> list[str]:
        """server.properties lines for these listeners; ``keystore`` holds key + chain."""
        mechanism = self.mechanism.lower()
        lines = [
            f"sasl.enabled.mechanisms={self.mechanism}",
            f"listener.name.sasl_ssl.{mechanism}.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={keystore}",
        ]
        if self.ca_file is not None:
            lines += ["ssl.truststore.type=PEM", f"ssl.truststore.location={self.ca_file}"]
        if self.mtls_port is not None:
            lines.append("listener.name.ssl.ssl.client.auth=required")
        return lines

    def scram_args(self) -> list[str]:
        """``kafka-storage format`` arguments that create the SCRAM credentials."""
        args: list[str] = []
        for name, password in self.scram_users.items():
            args += ["--add-scram", f"{self.mechanism}=[name={name},password={password}]"]
        return args


class KafkaNode:
    """The local broker under ``<home>/stack/kafka``; ``start``/``stop`` are idempotent.

    ``listen_host``: the address of the plaintext client listener (the controller always
    listens on 127.0.0.1); ``secured``: extra TLS/SASL client listeners (tests).
    """

    def __init__(
        self,
        *,
        home: Path,
        bootstrap: str,
        listen_host: str = "127.0.0.1",
        secured: SecuredListener | None = None,
    ) -> None:
        self.home = home
        self.bootstrap = bootstrap
        self.host, self.port = split_bootstrap(bootstrap)
        self.listen_host = listen_host
        self.secured = secured
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
            raise StackError(f"{pom} is missing: reinstall runstream[server]")
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
        # Maven may write next to its pom (target/): give it a copy in our own directory,
        # never the installed package's.
        self.dir.mkdir(parents=True, exist_ok=True)
        work_pom = self.dir / "pom.xml"
        shutil.copyfile(pom, work_pom)
        argv = [
            mvn, "-B", "-q", "--no-transfer-progress", "-f", str(work_pom),
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
        plain = f"PLAINTEXT://{self.listen_host}:{self.port}"
        listeners = [plain, f"CONTROLLER://127.0.0.1:{controller}"]
        advertised = [plain]
        protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        secured: list[str] = []
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.secured is not None:
            extra = self.secured.listeners(self.listen_host)
            listeners += extra
            advertised += extra
            protocols += [f"{name}:{name}" for name in ("SASL_SSL", "SSL")[: len(extra)]]
            secured = self.secured.config(self._write_keystore(self.secured))
        self.config.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{controller}",
                    f"listeners={','.join(listeners)}",
                    f"advertised.listeners={','.join(advertised)}",
                    "controller.listener.names=CONTROLLER",
                    f"listener.security.protocol.map={','.join(protocols)}",
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
                    *secured,
                    "",
                ]
            )
        )
        (self.dir / "log4j2.properties").write_text(_LOG4J2)

    def _write_keystore(self, secured: SecuredListener) -> Path:
        """Kafka's PEM keystore is one file: the private key, then the certificate chain."""
        keystore = self.dir / "server-keystore.pem"
        keystore.touch(mode=0o600)
        keystore.chmod(0o600)
        key, chain = secured.key_file.read_text(), secured.cert_file.read_text()
        keystore.write_text(key.rstrip("\n") + "\n" + chain)
        return keystore

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
        cid = "-"
        while cid.startswith("-"):  # as Kafka's own ids: "-…" would be read as an option
            cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        argv = self._java(
            libs, "kafka.tools.StorageTool", "format", "-t", cid, "-c", str(self.config)
        )
        if self.secured is not None:
            argv += self.secured.scram_args()
        result = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
        if result.returncode != 0:
            output = result.stdout + result.stderr
            for password in self.secured.scram_users.values() if self.secured else ():
                output = output.replace(password, "***")
            raise StackError(f"formatting KRaft storage failed:\n{output}")

    def _client_ports(self) -> list[tuple[str, int]]:
        secured = self.secured.ports if self.secured is not None else []
        return [(self.host, self.port)] + [(self.listen_host, port) for port in secured]

    def start(self, *, timeout_s: float = 90.0) -> bool:
        """Start the broker unless it runs. Returns True when this call started it."""
        if self.process.running():
            return False
        for host, port in self._client_ports():
            if port_open(host, port):
                raise StackError(
                    f"port {port} is taken by a process runstream did not start; stop it or "
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
                lambda: (
                    all(port_open(host, port) for host, port in self._client_ports())
                    or not self.process.running()
                ),
                timeout_s=timeout_s,
            )
            or not self.process.running()
        ):
            self.process.stop(timeout_s=5)
            raise StackError(f"Kafka did not start; see {self.dir / 'kafka.log'}")
        return True

    def stop(self) -> bool:
        return self.process.stop(timeout_s=30.0)


def _client_kwargs(security: KafkaSecurity | None) -> dict[str, Any]:
    return (security or KafkaSecurity()).client_kwargs()


async def kafka_healthy(
    bootstrap: str, *, timeout_s: float = 5.0, security: KafkaSecurity | None = None
) -> bool:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        request_timeout_ms=int(timeout_s * 1000),
        **_client_kwargs(security),
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
    bootstrap: str,
    topics: Sequence[str],
    *,
    partitions: int,
    timeout_s: float = 60.0,
    security: KafkaSecurity | None = None,
) -> list[str]:
    """Create the topics that don't exist yet (retrying while the broker settles).

    Returns the names created. Existing topics are left as they are. A broker that
    refuses the client's credentials or TLS setup fails at once, with the reason.
    """
    security = security or KafkaSecurity()
    deadline = time.monotonic() + timeout_s
    while True:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=bootstrap, request_timeout_ms=10_000, **security.client_kwargs()
        )
        try:
            async with security.explain_failures(bootstrap):
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
        except KafkaSecurityError as exc:
            raise StackError(f"could not create topics: {exc}") from exc
        except (KafkaError, OSError) as exc:
            if time.monotonic() > deadline:
                raise StackError(f"could not create topics on {bootstrap}: {exc}") from exc
            await asyncio.sleep(0.5)
        finally:
            await admin.close()


async def topic_ends(
    bootstrap: str, topic: str, *, security: KafkaSecurity | None = None
) -> dict[int, int]:
    """Per partition, the offset after the last message now on ``topic`` (empty ones left out)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **_client_kwargs(security))
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    partitions = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
    if not partitions:
        raise StackError(f"topic {topic} has no partitions: {described}")
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, **_client_kwargs(security)
    )
    await consumer.start()
    try:
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    return {tp.partition: end for tp, end in ends.items() if end > 0}
