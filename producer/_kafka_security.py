"""How Kafka clients authenticate and encrypt: TLS, mutual TLS and SASL (SCRAM, PLAIN).

``KafkaSecurity.from_env`` reads the ``RUNSTREAM_KAFKA_*`` variables (``ENV_VARS``) once,
through ``EnvReader``, at the edge (the SDK's ``Workspace.from_env``, the CLI's
``Settings.from_env``); every place that builds an aiokafka client (SDK sender, ingest
consumer and dead-letter producer, the stack's admin helpers) spreads ``client_kwargs()``
into it. The default is PLAINTEXT with no extra arguments, exactly as before.

The password and the key password are ``Secret``: never in ``repr``/``str``, and no
message built here contains them (they are scrubbed from what the broker says, too).

aiokafka reports a refused login or a failed TLS handshake only as "Unable to bootstrap"
(the cause goes to its log). Around a client's ``start()``,
``security.explain_failures(bootstrap)`` opens one connection the same way
(``security.diagnose``) to find out why, and raises ``KafkaSecurityError`` with the
reason in words when the security setup is to blame (wrong credentials, untrusted or
mismatched certificate, a TLS client on a plaintext port); a broker that is simply down
keeps aiokafka's own error.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from aiokafka.conn import collect_hosts, create_conn
from aiokafka.errors import (
    IllegalSaslStateError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)

from ._env import EnvReader
from ._errors import ConfigError
from ._secret import Secret

__all__ = [
    "ENV_VARS",
    "MECHANISMS",
    "PROTOCOLS",
    "KafkaSecurity",
    "KafkaSecurityError",
    "Secret",
    "security_failure",
]

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN")
DEFAULT_MECHANISM = "SCRAM-SHA-512"

PROTOCOL_VAR = "RUNSTREAM_KAFKA_SECURITY_PROTOCOL"
MECHANISM_VAR = "RUNSTREAM_KAFKA_SASL_MECHANISM"
USERNAME_VAR = "RUNSTREAM_KAFKA_USERNAME"
PASSWORD_VAR = "RUNSTREAM_KAFKA_PASSWORD"  # noqa: S105 - a variable name, not a password
CA_FILE_VAR = "RUNSTREAM_KAFKA_CA_FILE"
CERT_FILE_VAR = "RUNSTREAM_KAFKA_CERT_FILE"
KEY_FILE_VAR = "RUNSTREAM_KAFKA_KEY_FILE"
KEY_PASSWORD_VAR = "RUNSTREAM_KAFKA_KEY_PASSWORD"  # noqa: S105 - a variable name
CHECK_HOSTNAME_VAR = "RUNSTREAM_KAFKA_SSL_CHECK_HOSTNAME"

#: Every variable ``from_env`` reads, with a one-line meaning (for help texts).
ENV_VARS: Mapping[str, str] = {
    PROTOCOL_VAR: f"{' | '.join(PROTOCOLS)} (default PLAINTEXT)",
    MECHANISM_VAR: f"{' | '.join(MECHANISMS)} (default {DEFAULT_MECHANISM})",
    USERNAME_VAR: "SASL user name",
    PASSWORD_VAR: "SASL password (never logged)",
    CA_FILE_VAR: "PEM CA(s) to check the broker's certificate with (default: the system's)",
    CERT_FILE_VAR: "PEM client certificate for mutual TLS (with RUNSTREAM_KAFKA_KEY_FILE)",
    KEY_FILE_VAR: "PEM private key of the client certificate",
    KEY_PASSWORD_VAR: "password of an encrypted RUNSTREAM_KAFKA_KEY_FILE",
    CHECK_HOSTNAME_VAR: "0 skips checking the host name in the broker's certificate",
}

PROBE_TIMEOUT_S = 5.0


def _no_secret() -> Secret:
    return Secret("")


class KafkaSecurityError(KafkaConnectionError):  # type: ignore[misc]
    """The broker refused this client's credentials or TLS setup; the message says which.

    A ``KafkaConnectionError``, so code that handles aiokafka's failure to connect still
    does; ``str()`` is the reason alone (never a password).
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "Kafka security setup refused"


@dataclass(frozen=True, kw_only=True)
class KafkaSecurity:
    """Security settings shared by every Kafka client of a process; validated on creation.

    ``security_protocol`` PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL. SASL needs
    ``username`` and ``password``; TLS trusts ``ca_file`` (else the system's CAs) and,
    for mutual TLS, presents ``cert_file`` + ``key_file`` (``key_password`` if encrypted).
    """

    #: Every variable ``from_env`` reads, with a one-line meaning (for help texts).
    ENV_VARS: ClassVar[Mapping[str, str]] = ENV_VARS

    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = DEFAULT_MECHANISM
    username: str = ""
    password: Secret = field(default_factory=_no_secret)
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    key_password: Secret = field(default_factory=_no_secret)
    #: Whether the broker's certificate must name the host in the bootstrap address.
    check_hostname: bool = True

    def __post_init__(self) -> None:
        if self.security_protocol not in PROTOCOLS:
            raise ConfigError(
                PROTOCOL_VAR,
                f"must be one of {', '.join(PROTOCOLS)}, not {self.security_protocol!r}",
            )
        if self.sasl_mechanism not in MECHANISMS:
            raise ConfigError(
                MECHANISM_VAR,
                f"must be one of {', '.join(MECHANISMS)}, not {self.sasl_mechanism!r}",
            )
        if self.sasl and not (self.username and self.password):
            missing = USERNAME_VAR if not self.username else PASSWORD_VAR
            raise ConfigError(
                missing, f"{self.security_protocol} needs a user name and a password; it is not set"
            )
        if not self.sasl and (self.username or self.password):
            raise ConfigError(
                PROTOCOL_VAR,
                f"{USERNAME_VAR}/{PASSWORD_VAR} are set but the protocol is "
                f"{self.security_protocol}, which sends no credentials; use SASL_SSL "
                "(or SASL_PLAINTEXT)",
            )
        files = (self.ca_file, self.cert_file, self.key_file)
        if not self.tls and (any(f is not None for f in files) or self.key_password):
            raise ConfigError(
                PROTOCOL_VAR,
                f"TLS files are set but the protocol is {self.security_protocol}, which does "
                "not use TLS; use SSL or SASL_SSL",
            )
        if self.cert_file is not None and self.key_file is None:
            raise ConfigError(KEY_FILE_VAR, f"a client certificate ({CERT_FILE_VAR}) needs its key")
        if self.key_file is not None and self.cert_file is None:
            raise ConfigError(CERT_FILE_VAR, f"a client key ({KEY_FILE_VAR}) needs its certificate")
        if self.key_password and self.key_file is None:
            raise ConfigError(KEY_PASSWORD_VAR, f"is set but {KEY_FILE_VAR} is not")

    @property
    def sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> KafkaSecurity:
        """Read the ``RUNSTREAM_KAFKA_*`` security variables (see ``ENV_VARS``) once.

        With TLS, the files are read here too, so a missing or unusable file fails at
        start-up with the variable's name rather than at the first connection.
        """
        read = EnvReader(env)
        security = cls(
            security_protocol=read.text(PROTOCOL_VAR, "PLAINTEXT").upper(),
            sasl_mechanism=read.text(MECHANISM_VAR, DEFAULT_MECHANISM).upper(),
            username=read.text(USERNAME_VAR),
            password=read.secret(PASSWORD_VAR),
            ca_file=read.path(CA_FILE_VAR),
            cert_file=read.path(CERT_FILE_VAR),
            key_file=read.path(KEY_FILE_VAR),
            key_password=read.secret(KEY_PASSWORD_VAR),
            check_hostname=read.flag(CHECK_HOSTNAME_VAR, default=True),
        )
        if security.tls:
            security.ssl_context()
        return security

    def ssl_context(self) -> ssl.SSLContext:
        """A client context: verifies the broker (``ca_file`` or the system's CAs) and, with a
        client certificate, presents it. Raises ``ConfigError`` naming the unusable file."""
        for name, file in ((CA_FILE_VAR, self.ca_file), (CERT_FILE_VAR, self.cert_file),
                           (KEY_FILE_VAR, self.key_file)):  # fmt: skip
            if file is not None:
                _check_readable(name, file)
        try:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_file)
        except ssl.SSLError as exc:
            raise ConfigError(
                CA_FILE_VAR, f"{self.ca_file} holds no usable PEM certificate ({_ssl_reason(exc)})"
            ) from None
        context.check_hostname = self.check_hostname
        if self.cert_file is not None:
            key_password = self.key_password.value
            try:
                # A callable, so an encrypted key without a password fails instead of
                # OpenSSL prompting on the terminal.
                context.load_cert_chain(
                    self.cert_file, self.key_file, password=lambda: key_password
                )
            except ssl.SSLError as exc:
                raise ConfigError(
                    CERT_FILE_VAR,
                    f"cannot load the client certificate {self.cert_file} with the key "
                    f"{self.key_file} ({_ssl_reason(exc)}); they must be PEM, belong together, "
                    f"and an encrypted key needs {KEY_PASSWORD_VAR}",
                ) from None
        return context

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``AIOKafkaProducer``/``AIOKafkaConsumer``/``AIOKafkaAdminClient``.

        Holds the password in clear: pass it on, never log it. Builds a fresh SSL context
        (so a rotated certificate file is picked up by the next client).
        """
        kwargs: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.tls:
            kwargs["ssl_context"] = self.ssl_context()
        if self.sasl:
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.username
            kwargs["sasl_plain_password"] = self.password.value
        return kwargs

    def scrub(self, text: str) -> str:
        """``text`` with the passwords replaced by ``***`` (for messages from elsewhere)."""
        for secret in (self.password, self.key_password):
            if secret:
                text = text.replace(secret.value, "***")
        return text

    async def diagnose(
        self, bootstrap: str, *, timeout_s: float = PROBE_TIMEOUT_S
    ) -> KafkaSecurityError | None:
        """Open one connection to the first bootstrap server as a client would; the reason
        when this security setup is why it fails, else None (reachable, or simply down).

        PLAINTEXT clients are not probed: there is no security setup to blame.
        """
        return await security_failure(bootstrap, self, timeout_s=timeout_s)

    @asynccontextmanager
    async def explain_failures(self, bootstrap: str) -> AsyncIterator[None]:
        """Around a client's ``start()``: when it cannot connect and this security setup is
        why, raise ``KafkaSecurityError`` with the reason instead of "Unable to bootstrap"."""
        try:
            yield
        except KafkaConnectionError as exc:
            if isinstance(exc, KafkaSecurityError):
                raise
            failure = await self.diagnose(bootstrap)
            if failure is None:
                raise
            raise failure from exc


def _check_readable(name: str, file: Path) -> None:
    try:
        with file.open("rb"):
            pass
    except OSError as exc:
        raise ConfigError(name, f"cannot read {file}: {exc.strerror or exc}") from None


def _ssl_reason(exc: ssl.SSLError) -> str:
    return str(exc.reason or exc.strerror or exc)


async def security_failure(
    bootstrap: str, security: KafkaSecurity, *, timeout_s: float = PROBE_TIMEOUT_S
) -> KafkaSecurityError | None:
    """The probe behind ``KafkaSecurity.diagnose`` (see there)."""
    if security.security_protocol == "PLAINTEXT":
        return None
    hosts = collect_hosts(bootstrap, randomize=False)
    if not hosts:
        return None
    host, port, _ = hosts[0]
    where = f"Kafka at {host}:{port}"
    try:
        conn = await asyncio.wait_for(
            create_conn(
                host,
                port,
                client_id="runstream-probe",
                request_timeout_ms=int(timeout_s * 1000),
                **security.client_kwargs(),
            ),
            timeout_s,
        )
    except (SaslAuthenticationFailed, IllegalSaslStateError) as exc:
        said = _broker_message(exc)
        message = (
            f"{where} refused the {security.sasl_mechanism} login of user "
            f"{security.username!r}{f': {said}' if said else ''} (check {USERNAME_VAR} and "
            f"{PASSWORD_VAR})"
        )
    except UnsupportedSaslMechanismError as exc:
        message = f"{where} does not accept {security.sasl_mechanism}: {_broker_message(exc)}"
    except ssl.SSLCertVerificationError as exc:
        trusted = f"{CA_FILE_VAR}={security.ca_file}" if security.ca_file else "the system CAs"
        message = (
            f"TLS to {where} failed: the broker's certificate is not accepted "
            f"({exc.verify_message}); trusted: {trusted}"
        )
        if security.check_hostname and "hostname" in str(exc.verify_message).lower():
            message += f" ({CHECK_HOSTNAME_VAR}=0 skips the name check)"
    except ConnectionResetError:
        if not security.tls:
            return None
        message = (
            f"{where} closed the connection during the TLS handshake; is that port a TLS listener?"
        )
    except (KafkaError, OSError) as exc:
        # A TLS alert after the handshake (e.g. the broker rejects the client certificate)
        # surfaces as a closed connection caused by the SSLError.
        tls = _ssl_error_in(exc)
        if tls is None:
            return None
        reason = _ssl_reason(tls)
        message = f"TLS handshake with {where} failed ({reason})"
        if any(alert in reason.upper() for alert in _CLIENT_CERT_ALERTS):
            message += (
                f"; the broker wants a client certificate it trusts ({CERT_FILE_VAR}, "
                f"{KEY_FILE_VAR})"
            )
        elif "WRONG_VERSION_NUMBER" in reason.upper():
            message += "; is that port a TLS listener?"
    except TimeoutError:
        return None
    else:
        conn.close()
        return None
    return KafkaSecurityError(security.scrub(message))


_CLIENT_CERT_ALERTS = ("CERTIFICATE_REQUIRED", "BAD_CERTIFICATE", "UNKNOWN_CA")


def _ssl_error_in(exc: BaseException) -> ssl.SSLError | None:
    seen: BaseException | None = exc
    for _ in range(5):  # the error, its cause, their causes
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _broker_message(exc: KafkaError) -> str:
    return str(exc.args[0]) if exc.args and exc.args[0] else ""
