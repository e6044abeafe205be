"""Kafka over TLS and SASL, against a private broker that demands them.

The module makes a throwaway PKI with the ``openssl`` CLI (a CA; a broker certificate for
127.0.0.1/localhost; a client certificate whose key is encrypted; a second, untrusted CA)
and starts a broker of its own with two secured client listeners: SASL_SSL with a
SCRAM-SHA-512 user, and SSL that requires a client certificate (mutual TLS). Everything
is configured the way an operator does it, through ``RUNSTREAM_KAFKA_*`` variables.

- topics are created over SASL_SSL (``ensure_topics``);
- the SDK logs N known points over SASL_SSL and an ingest worker, reading over mutual TLS,
  stores exactly those N points in a fresh database;
- a wrong password fails with an error that says the login was refused, in the exception
  of every client kind (admin, worker, SDK sender); neither password shows in those
  errors, in ``repr(settings)`` or in any log line (debug included);
- clients without TLS, trusting another CA, or without a client certificate on the mutual
  TLS port cannot connect; the reason is named when it is the TLS setup.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from ingest.settings import Settings
from ingest.stack.kafka import SecuredListener, ensure_topics, kafka_healthy, topic_ends
from ingest.stack.procs import StackError
from ingest.worker.service import run_worker
from producer import Experiment, KafkaSecurity, ProducerTimeoutError, Workspace
from tests.helpers import StackInfo, unique
from tests.integration.helpers import (
    NewDb,
    fetch,
    start_broker,
    stop_broker,
    stored_offsets_reach,
    wait_for,
)
from tests.reliability import SECURITY, Reliability, storage_backend

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

USER = "alice"
PASSWORD = "alice-Scram-pw-7d1c"  # noqa: S105 - test credentials
WRONG_PASSWORD = "alice-Wrong-pw-9b3e"  # noqa: S105
KEY_PASSWORD = "client-Key-pw-4a2f"  # noqa: S105
SECRETS = (PASSWORD, WRONG_PASSWORD, KEY_PASSWORD)
NO_API = "http://127.0.0.1:9"

EXTENSIONS = """\
[server]
subjectAltName = IP:127.0.0.1, DNS:localhost
extendedKeyUsage = serverAuth
basicConstraints = critical, CA:FALSE
[client]
extendedKeyUsage = clientAuth
basicConstraints = critical, CA:FALSE
"""


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    #: Encrypted with KEY_PASSWORD.
    client_key: Path
    #: A CA that signed nothing the broker uses.
    other_ca: Path


def openssl(*args: str, cwd: Path, env: dict[str, str] | None = None) -> None:
    subprocess.run(
        ["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30, env=env
    )


def make_pki(d: Path) -> Pki:
    (d / "ext.cnf").write_text(EXTENSIONS)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "other-ca"):
        openssl(
            "req",
            "-x509",
            *ec,
            "-keyout",
            f"{ca}.key",
            "-out",
            f"{ca}.pem",
            "-days",
            "2",
            "-subj",
            f"/CN=runstream test {ca}",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            cwd=d,
        )
    for serial, (name, cn) in enumerate((("server", "localhost"), ("client", "runstream")), 1):
        openssl(
            "req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d
        )
        openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            str(serial),
            "-days",
            "2",
            "-out",
            f"{name}.pem",
            "-extfile",
            "ext.cnf",
            "-extensions",
            name,
            cwd=d,
        )
    openssl(
        "pkcs8",
        "-topk8",
        "-in",
        "client.key",
        "-out",
        "client-encrypted.key",
        "-v2",
        "aes-256-cbc",
        "-passout",
        "env:RS_KEY_PASSWORD",
        cwd=d,
        env={**os.environ, "RS_KEY_PASSWORD": KEY_PASSWORD},
    )
    return Pki(
        ca=d / "ca.pem",
        server_cert=d / "server.pem",
        server_key=d / "server.key",
        client_cert=d / "client.pem",
        client_key=d / "client-encrypted.key",
        other_ca=d / "other-ca.pem",
    )


@dataclass(frozen=True)
class Broker:
    pki: Pki
    plain: str
    sasl_ssl: str
    mtls: str

    def sasl_env(self, password: str = PASSWORD, *, ca: Path | None = None) -> dict[str, str]:
        """``RUNSTREAM_KAFKA*`` of a client of the SASL_SSL listener."""
        return {
            "RUNSTREAM_KAFKA": self.sasl_ssl,
            "RUNSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "RUNSTREAM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "RUNSTREAM_KAFKA_USERNAME": USER,
            "RUNSTREAM_KAFKA_PASSWORD": password,
            "RUNSTREAM_KAFKA_CA_FILE": str(ca or self.pki.ca),
        }

    def mtls_env(self) -> dict[str, str]:
        """``RUNSTREAM_KAFKA*`` of a client of the mutual-TLS listener."""
        return {
            "RUNSTREAM_KAFKA": self.mtls,
            "RUNSTREAM_KAFKA_SECURITY_PROTOCOL": "SSL",
            "RUNSTREAM_KAFKA_CA_FILE": str(self.pki.ca),
            "RUNSTREAM_KAFKA_CERT_FILE": str(self.pki.client_cert),
            "RUNSTREAM_KAFKA_KEY_FILE": str(self.pki.client_key),
            "RUNSTREAM_KAFKA_KEY_PASSWORD": KEY_PASSWORD,
        }

    @property
    def alice(self) -> KafkaSecurity:
        return KafkaSecurity.from_env(self.sasl_env())


def secured_listeners(pki: Pki) -> Callable[[int], SecuredListener]:
    """The SASL_SSL and mutual-TLS listeners on the two ports after the plaintext one and
    the controller's."""

    def build(port: int) -> SecuredListener:
        return SecuredListener(
            port=port + 2,
            mtls_port=port + 3,
            cert_file=pki.server_cert,
            key_file=pki.server_key,
            ca_file=pki.ca,
            scram_users={USER: PASSWORD},
            mechanism="SCRAM-SHA-512",
        )

    return build


@pytest.fixture(scope="module")
def broker(stack: StackInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    node = start_broker(tmp_path_factory.mktemp("secured-broker"), jars_from=stack.settings.home,
                        secured=secured_listeners(pki))
    assert node.secured is not None
    try:
        yield Broker(
            pki=pki,
            plain=node.bootstrap,
            sasl_ssl=f"127.0.0.1:{node.secured.port}",
            mtls=f"127.0.0.1:{node.secured.mtls_port}",
        )
    finally:
        stop_broker(node)


def assert_no_secret(*texts: object) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in str(text), f"a password leaked into: {str(text)[:300]}"


def error_chain(exc: BaseException | None) -> str:
    """Every message and repr of ``exc``, what caused it and what it groups."""
    if exc is None:
        return ""
    parts = [str(exc), repr(exc), error_chain(exc.__cause__ or exc.__context__)]
    if isinstance(exc, BaseExceptionGroup):
        parts += [error_chain(e) for e in exc.exceptions]
    return "\n".join(parts)


async def test_topics_are_created_over_sasl_ssl(broker: Broker) -> None:
    topic = unique("sec.")
    created = await ensure_topics(
        broker.sasl_ssl, [topic, f"{topic}.dlq"], partitions=2, security=broker.alice
    )
    assert sorted(created) == [topic, f"{topic}.dlq"]
    # Created for real: a second call finds them.
    assert await ensure_topics(broker.sasl_ssl, [topic], partitions=2, security=broker.alice) == []
    assert await kafka_healthy(broker.sasl_ssl, security=broker.alice)


async def test_sdk_over_sasl_ssl_and_a_worker_over_mutual_tls_store_each_point_once(
    broker: Broker,
    new_db: NewDb,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    reliability: Reliability,
) -> None:
    caplog.set_level(logging.DEBUG)
    started = time.monotonic()
    topic, dsn = unique("sec."), await new_db()
    await ensure_topics(
        broker.sasl_ssl, [topic, f"{topic}.dlq"], partitions=3, security=broker.alice
    )
    n = 2000
    sdk_env = {
        **broker.sasl_env(),
        "RUNSTREAM_TOPIC": topic,
        "RUNSTREAM_API": NO_API,
        "RUNSTREAM_HOME": str(tmp_path / "sdk"),
    }
    ws = Workspace.from_env(sdk_env)
    assert ws.kafka_security.security_protocol == "SASL_SSL"

    def train() -> str:
        with Experiment(ws, "secured").start_logging(display_name="scram", outputs_dir=None) as run:
            for i in range(n):
                run.log("loss", i / 8)
        ws.flush(30.0)
        return run.id

    try:
        run_id = await asyncio.to_thread(train)
        stats = ws.stats()
    finally:
        await asyncio.to_thread(ws.close, 10.0)
    assert (stats.events_spooled, stats.events_dropped, stats.last_error) == (0, 0, None)
    assert stats.events_sent > 0

    worker_env = {
        **broker.mtls_env(),
        "RUNSTREAM_TOPIC": topic,
        "RUNSTREAM_DB": dsn,
        "RUNSTREAM_HOME": str(tmp_path / "worker"),
    }
    settings = Settings.from_env(worker_env)
    assert settings.kafka_security.security_protocol == "SSL"
    group, stop = unique("sec-ingest-"), asyncio.Event()
    worker = asyncio.create_task(
        run_worker(
            settings,
            dsn=dsn,
            group_id=group,
            stop=stop,
            registry=CollectorRegistry(),
            metrics_port=None,
            handle_signals=False,
        )
    )
    try:
        ends = await topic_ends(broker.sasl_ssl, topic, security=broker.alice)
        assert sum(ends.values()) == stats.events_sent
        await wait_for(
            stored_offsets_reach(dsn, topic, group, ends),
            timeout_s=60,
            what="the worker to store every message",
        )
    finally:
        stop.set()
        assert await asyncio.wait_for(worker, 60) == 0

    (points,) = await fetch(
        dsn,
        "SELECT count(*) AS n, count(DISTINCT step) AS steps, "
        "min(step) AS first, max(step) AS last, sum(value) AS total, "
        "count(*) FILTER (WHERE value <> step / 8.0) AS wrong "
        "FROM runstream.metric_points WHERE run_id = $1 "
        "AND name = 'loss'",
        run_id,
    )
    reliability.record(
        guarantee="Kafka over SASL_SSL (SCRAM-SHA-512) from the SDK and mutual TLS from a "
        "worker, configured from the environment, against a broker that demands them",
        faults="a private broker with SASL_SSL and client-certificate listeners only",
        events=stats.events_sent,
        points=n,
        lost=n - int(points["steps"]),
        doubled=int(points["n"]) - int(points["steps"]),
        storage=await storage_backend(dsn),
        section=SECURITY,
        notes=f"{stats.events_spooled} spooled, {stats.events_dropped} dropped; no password "
        "in logs or reprs",
    )
    assert points == {
        "n": n,
        "steps": n,
        "first": 0,
        "last": n - 1,
        "total": sum(i / 8 for i in range(n)),
        "wrong": 0,
    }
    (run,) = await fetch(dsn, "SELECT status FROM runstream.runs WHERE run_id = $1", run_id)
    assert run["status"] == "Completed"
    assert_no_secret(caplog.text, repr(settings), repr(ws))
    print(
        f"{n} points over SASL_SSL, stored over mutual TLS, in {time.monotonic() - started:.1f} s"
    )


async def test_a_wrong_password_is_refused_clearly_and_never_shown(
    broker: Broker, new_db: NewDb, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    refused = f"refused the SCRAM-SHA-512 login of user '{USER}'"
    wrong_env = broker.sasl_env(WRONG_PASSWORD)
    wrong = KafkaSecurity.from_env(wrong_env)

    # Admin: fails at once (no 60 s of retries) and says why.
    t0 = time.monotonic()
    with pytest.raises(StackError) as admin_error:
        await ensure_topics(broker.sasl_ssl, [unique("sec.")], partitions=1, security=wrong)
    assert time.monotonic() - t0 < 15
    assert refused in str(admin_error.value)
    assert "RUNSTREAM_KAFKA_PASSWORD" in str(admin_error.value)
    assert not await kafka_healthy(broker.sasl_ssl, security=wrong)

    # The ingest worker: exits non-zero, its log says why.
    dsn = await new_db()
    settings = Settings.from_env(
        {
            **wrong_env,
            "RUNSTREAM_TOPIC": unique("sec."),
            "RUNSTREAM_DB": dsn,
            "RUNSTREAM_HOME": str(tmp_path),
        }
    )
    code = await asyncio.wait_for(
        run_worker(
            settings,
            dsn=dsn,
            group_id=unique("sec-ingest-"),
            metrics_port=None,
            registry=CollectorRegistry(),
            handle_signals=False,
        ),
        60,
    )
    assert code == 1
    crash = next(r for r in caplog.records if r.getMessage() == "ingest worker crashed")
    assert crash.exc_info is not None
    assert refused in error_chain(crash.exc_info[1])

    # The SDK: keeps the events (spool) and reports why it is offline.
    ws = Workspace.from_env(
        {
            **wrong_env,
            "RUNSTREAM_TOPIC": unique("sec."),
            "RUNSTREAM_API": NO_API,
            "RUNSTREAM_HOME": str(tmp_path / "sdk"),
        }
    )

    def log_one() -> None:
        run = Experiment(ws, "secured").start_logging(display_name="wrong", outputs_dir=None)
        run.log("loss", 1.0)
        with pytest.raises(ProducerTimeoutError):
            ws.flush(3.0)

    try:
        await asyncio.to_thread(log_one)
        stats = ws.stats()
    finally:
        await asyncio.to_thread(ws.close, 2.0)
    assert stats.mode == "offline"
    assert stats.events_dropped == 0
    assert stats.last_error is not None
    assert refused in stats.last_error
    assert any(
        refused in r.getMessage()
        for r in caplog.records
        if r.name.startswith("producer") and r.levelno >= logging.WARNING
    )

    assert_no_secret(
        error_chain(admin_error.value),
        error_chain(crash.exc_info[1]),
        stats.last_error,
        repr(settings),
        str(settings),
        repr(wrong),
        repr(ws),
        caplog.text,
    )
    for record in caplog.records:  # what a handler with another format would see, too
        assert_no_secret(record.getMessage(), record.args)


async def test_clients_without_tls_or_the_right_ca_or_a_client_certificate_cannot_connect(
    broker: Broker,
) -> None:
    # The controls: the right settings connect to each listener.
    assert await kafka_healthy(broker.sasl_ssl, security=broker.alice)
    mtls = KafkaSecurity.from_env(broker.mtls_env())
    assert await kafka_healthy(broker.mtls, security=mtls)

    # No TLS at all, on either secured port; SASL without TLS too.
    plaintext = KafkaSecurity()
    sasl_only = KafkaSecurity.from_env(
        {
            **broker.sasl_env(),
            "RUNSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "RUNSTREAM_KAFKA_CA_FILE": "",
        }
    )
    for bootstrap, security in (
        (broker.sasl_ssl, plaintext),
        (broker.mtls, plaintext),
        (broker.sasl_ssl, sasl_only),
    ):
        assert not await kafka_healthy(bootstrap, security=security, timeout_s=3)

    # The broker's certificate is checked against the CA the client trusts.
    untrusted = KafkaSecurity.from_env(broker.sasl_env(ca=broker.pki.other_ca))
    assert not await kafka_healthy(broker.sasl_ssl, security=untrusted)
    with pytest.raises(StackError) as info:
        await ensure_topics(broker.sasl_ssl, [unique("sec.")], partitions=1, security=untrusted)
    assert "the broker's certificate is not accepted" in str(info.value)
    assert f"RUNSTREAM_KAFKA_CA_FILE={broker.pki.other_ca}" in str(info.value)

    # The mutual-TLS listener wants a client certificate.
    no_cert = KafkaSecurity.from_env(
        {
            **broker.mtls_env(),
            "RUNSTREAM_KAFKA_CERT_FILE": "",
            "RUNSTREAM_KAFKA_KEY_FILE": "",
            "RUNSTREAM_KAFKA_KEY_PASSWORD": "",
        }
    )
    assert not await kafka_healthy(broker.mtls, security=no_cert)
    failure = await no_cert.diagnose(broker.mtls)
    assert failure is not None
    assert "client certificate" in str(failure)

    # A TLS client on the plaintext port is told it is not a TLS listener.
    tls_on_plain = KafkaSecurity.from_env({**broker.mtls_env(), "RUNSTREAM_KAFKA": broker.plain})
    assert not await kafka_healthy(broker.plain, security=tls_on_plain)
    failure = await tls_on_plain.diagnose(broker.plain)
    assert failure is not None
    assert "TLS listener" in str(failure)
