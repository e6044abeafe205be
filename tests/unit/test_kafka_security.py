"""Kafka security settings from the environment: parsing, validation, and secrecy.

No broker here (tests/integration/test_kafka_security.py connects to one); only the files
a test writes into its tmp_path.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from ingest.settings import Settings
from ingest.stack.kafka import KafkaNode, SecuredListener
from producer import ConfigError, KafkaSecurity, KafkaSecurityError, Secret, Workspace

PASSWORD = "pw-hunter2-do-not-show"  # noqa: S105 - a test value that must never be shown
KEY_PASSWORD = "kp-swordfish-do-not-show"  # noqa: S105

SASL_SSL = {
    "RUNSTREAM_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
    "RUNSTREAM_KAFKA_SASL_MECHANISM": "scram-sha-256",
    "RUNSTREAM_KAFKA_USERNAME": "alice",
    "RUNSTREAM_KAFKA_PASSWORD": PASSWORD,
}


def test_nothing_set_is_plaintext_with_no_extra_client_arguments() -> None:
    security = KafkaSecurity.from_env({})
    assert security == KafkaSecurity()
    assert security.security_protocol == "PLAINTEXT"
    assert security.client_kwargs() == {"security_protocol": "PLAINTEXT"}


def test_sasl_ssl_from_env_gives_aiokafka_its_arguments() -> None:
    security = KafkaSecurity.from_env(SASL_SSL)  # no CA file: the system's CAs
    kwargs = security.client_kwargs()
    context = kwargs.pop("ssl_context")
    assert kwargs == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "alice",
        "sasl_plain_password": PASSWORD,
    }
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED


def test_mechanism_defaults_to_scram_sha_512() -> None:
    env = {k: v for k, v in SASL_SSL.items() if k != "RUNSTREAM_KAFKA_SASL_MECHANISM"}
    assert KafkaSecurity.from_env(env).sasl_mechanism == "SCRAM-SHA-512"


@pytest.mark.parametrize(
    ("value", "expected"), [("0", False), ("false", False), ("1", True), ("", True), ("YES", True)]
)
def test_hostname_check_can_be_turned_off(value: str, expected: bool) -> None:
    env = {**SASL_SSL, "RUNSTREAM_KAFKA_SSL_CHECK_HOSTNAME": value}
    security = KafkaSecurity.from_env(env)
    assert security.check_hostname is expected
    assert security.client_kwargs()["ssl_context"].check_hostname is expected


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def bad_envs(tmp_path: Path) -> list[tuple[dict[str, str], str, str]]:
    """(environment, variable the error names, words it says)."""
    garbage = write(tmp_path / "garbage.pem", "not a certificate\n")
    missing = tmp_path / "missing.pem"
    return [
        (
            {"RUNSTREAM_KAFKA_SECURITY_PROTOCOL": "TLS"},
            "RUNSTREAM_KAFKA_SECURITY_PROTOCOL",
            "must be one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL, not 'TLS'",
        ),
        (
            {**SASL_SSL, "RUNSTREAM_KAFKA_SASL_MECHANISM": "GSSAPI"},
            "RUNSTREAM_KAFKA_SASL_MECHANISM",
            "not 'GSSAPI'",
        ),
        (
            {**SASL_SSL, "RUNSTREAM_KAFKA_USERNAME": ""},
            "RUNSTREAM_KAFKA_USERNAME",
            "needs a user name and a password",
        ),
        (
            {**SASL_SSL, "RUNSTREAM_KAFKA_PASSWORD": ""},
            "RUNSTREAM_KAFKA_PASSWORD",
            "needs a user name and a password",
        ),
        (
            {**SASL_SSL, "RUNSTREAM_KAFKA_SECURITY_PROTOCOL": "SSL"},
            "RUNSTREAM_KAFKA_SECURITY_PROTOCOL",
            "which sends no credentials",
        ),
        (
            {**SASL_SSL, "RUNSTREAM_KAFKA_SECURITY_PROTOCOL": ""},
            "RUNSTREAM_KAFKA_SECURITY_PROTOCOL",
            "which sends no credentials",
        ),
        (
            {"RUNSTREAM_KAFKA_CA_FILE": str(garbage)},
            "RUNSTREAM_KAFKA_SECURITY_PROTOCOL",
            "does not use TLS",
        ),
        (
            {**SASL_SSL, "RUNSTREAM_KAFKA_CERT_FILE": str(garbage)},
            "RUNSTREAM_KAFKA_KEY_FILE",
            "needs its key",
        ),
        (
            {**SASL_SSL, "RUNSTREAM_KAFKA_KEY_FILE": str(garbage)},
            "RUNSTREAM_KAFKA_CERT_FILE",
            "needs its certificate",
        ),
        (
            {**SASL_SSL, "RUNSTREAM_KAFKA_KEY_PASSWORD": KEY_PASSWORD},
            "RUNSTREAM_KAFKA_KEY_PASSWORD",
            "RUNSTREAM_KAFKA_KEY_FILE is not",
        ),
        (
            {**SASL_SSL, "RUNSTREAM_KAFKA_CA_FILE": str(missing)},
            "RUNSTREAM_KAFKA_CA_FILE",
            f"cannot read {missing}",
        ),
        (
            {**SASL_SSL, "RUNSTREAM_KAFKA_CA_FILE": str(garbage)},
            "RUNSTREAM_KAFKA_CA_FILE",
            "holds no usable PEM certificate",
        ),
        (
            {
                **SASL_SSL,
                "RUNSTREAM_KAFKA_CERT_FILE": str(garbage),
                "RUNSTREAM_KAFKA_KEY_FILE": str(missing),
            },
            "RUNSTREAM_KAFKA_KEY_FILE",
            f"cannot read {missing}",
        ),
        (
            {
                **SASL_SSL,
                "RUNSTREAM_KAFKA_CERT_FILE": str(garbage),
                "RUNSTREAM_KAFKA_KEY_FILE": str(garbage),
                "RUNSTREAM_KAFKA_KEY_PASSWORD": KEY_PASSWORD,
            },
            "RUNSTREAM_KAFKA_CERT_FILE",
            "cannot load the client certificate",
        ),
        (
            {**SASL_SSL, "RUNSTREAM_KAFKA_SSL_CHECK_HOSTNAME": "maybe"},
            "RUNSTREAM_KAFKA_SSL_CHECK_HOSTNAME",
            "not 'maybe'",
        ),
    ]


def test_each_bad_setting_is_a_clear_value_error_without_the_passwords(tmp_path: Path) -> None:
    for env, variable, words in bad_envs(tmp_path):
        with pytest.raises(ConfigError) as info:
            KafkaSecurity.from_env(env)
        text = f"{info.value} {info.value!r}"
        assert isinstance(info.value, ValueError)
        assert str(info.value).startswith(f"{variable}: "), (env, text)
        assert words in text, (env, text)
        assert PASSWORD not in text
        assert KEY_PASSWORD not in text
        # Every consumer of the environment fails the same way.
        with pytest.raises(ValueError, match=variable):
            Settings.from_env(env)
        with pytest.raises(ValueError, match=variable):
            Workspace.from_env(env)


def test_passwords_never_show_in_repr_or_str(tmp_path: Path) -> None:
    env = {**SASL_SSL, "RUNSTREAM_HOME": str(tmp_path)}
    security = KafkaSecurity.from_env(env)
    with_key = KafkaSecurity(
        security_protocol="SSL",
        cert_file=tmp_path / "c.pem",
        key_file=tmp_path / "k.pem",
        key_password=Secret(KEY_PASSWORD),
    )
    settings = Settings.from_env(env)
    workspace = Workspace.from_env(env)
    assert settings.kafka_security == workspace.kafka_security == security
    for shown in (
        repr(security),
        str(security),
        repr(with_key),
        repr(settings),
        str(settings),
        repr(workspace),
        repr(security.password),
        str(security.password),
    ):
        assert PASSWORD not in shown
        assert KEY_PASSWORD not in shown
    assert "password=Secret('***')" in repr(security)
    assert "key_password=Secret('***')" in repr(with_key)
    assert "username='alice'" in repr(security)


def test_scrub_hides_both_passwords_in_foreign_text() -> None:
    security = KafkaSecurity(
        security_protocol="SASL_SSL", username="alice", password=Secret(PASSWORD)
    )
    said = f"broker said: bad login {PASSWORD} for alice"
    assert security.scrub(said) == "broker said: bad login *** for alice"
    error = KafkaSecurityError("Kafka at h:1 refused the login")
    assert str(error) == "Kafka at h:1 refused the login"


def test_secured_listener_keeps_its_passwords_out_of_repr_and_rejects_unsafe_ones(
    tmp_path: Path,
) -> None:
    listener = SecuredListener(
        port=1, cert_file=tmp_path / "c", key_file=tmp_path / "k", scram_users={"alice": PASSWORD}
    )
    assert PASSWORD not in repr(listener)
    for users in ({"alice": "a,b"}, {"al=ce": "pw"}, {"alice": ""}, {}):
        with pytest.raises(ValueError, match=r"SCRAM user|at least one user"):
            SecuredListener(
                port=1, cert_file=tmp_path / "c", key_file=tmp_path / "k", scram_users=users
            )
    with pytest.raises(ValueError, match="mtls_port needs ca_file"):
        SecuredListener(
            port=1,
            cert_file=tmp_path / "c",
            key_file=tmp_path / "k",
            scram_users={"alice": "pw"},
            mtls_port=2,
        )


def test_a_secured_node_adds_listeners_and_a_pem_keystore(tmp_path: Path) -> None:
    cert = write(
        tmp_path / "server.pem", "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n"
    )
    key = write(
        tmp_path / "server.key", "-----BEGIN PRIVATE KEY-----\nBB==\n-----END PRIVATE KEY-----\n"
    )
    ca = write(tmp_path / "ca.pem", cert.read_text())
    plain = KafkaNode(home=tmp_path / "plain", bootstrap="127.0.0.1:19092")
    plain._write_config()
    node = KafkaNode(
        home=tmp_path / "secured",
        bootstrap="127.0.0.1:19092",
        secured=SecuredListener(
            port=19094,
            mtls_port=19095,
            cert_file=cert,
            key_file=key,
            ca_file=ca,
            scram_users={"alice": PASSWORD},
        ),
    )
    node._write_config()
    lines = node.config.read_text().splitlines()
    keystore = node.dir / "server-keystore.pem"
    assert (
        "listeners=PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093,"
        "SASL_SSL://127.0.0.1:19094,SSL://127.0.0.1:19095" in lines
    )
    assert (
        "advertised.listeners=PLAINTEXT://127.0.0.1:19092,SASL_SSL://127.0.0.1:19094,"
        "SSL://127.0.0.1:19095" in lines
    )
    assert (
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,"
        "SASL_SSL:SASL_SSL,SSL:SSL" in lines
    )
    assert "inter.broker.listener.name=PLAINTEXT" in lines
    assert f"ssl.keystore.location={keystore}" in lines
    assert f"ssl.truststore.location={ca}" in lines
    assert "listener.name.ssl.ssl.client.auth=required" in lines
    assert keystore.read_text() == key.read_text() + cert.read_text()
    assert keystore.stat().st_mode & 0o077 == 0
    assert PASSWORD not in node.config.read_text()
    # The plaintext node's config is the secured one minus the secured parts.
    secured_only = ("SASL_SSL", "ssl.", "sasl.", "listener.name.")
    expected = [line.split(",SASL_SSL")[0] for line in lines if not line.startswith(secured_only)]
    plain_text = plain.config.read_text().replace(str(plain.dir), str(node.dir))
    assert plain_text.splitlines() == expected
