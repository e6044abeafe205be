"""``runstream up | down | status``: the local single-machine stack.

Components, in start order: Kafka (KRaft), PostgreSQL, then the runstream services
(ingest worker, API) as background processes of our own, and last one agent
(``runstream agent``) for the compute target ``local`` with ``LOCAL_AGENT_SLOTS`` slot,
so a script submitted to ``local`` runs out of the box (one at a time, as on one node;
start more agents, or one with more ``--slots``, for more). ``up`` is idempotent: what
runs is left alone, what is missing is started. ``down`` stops, in reverse order, exactly
the processes recorded under ``<home>/stack`` and nothing else (``down --purge`` then
removes the cluster's data: ``Stack.data_paths``); the agent first: SIGTERM
(it takes no new runs), a second SIGTERM after ``AGENT_DRAIN_S`` if runs are still going
(it cancels them: SIGTERM to their processes, SIGKILL after its grace period, status
Canceled), SIGKILL as a last resort. A component whose endpoint is external
(``RUNSTREAM_KAFKA`` not on loopback, ``RUNSTREAM_DB`` set) is only checked; so is a Kafka
that clients reach with TLS or SASL (the local broker is plaintext only).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingest.db.migrate import migrate
from ingest.settings import Settings, redact_dsn
from ingest.stack.kafka import KafkaNode, ensure_topics, kafka_healthy
from ingest.stack.postgres import LocalPostgres, postgres_status
from ingest.stack.procs import ManagedProcess, StackError, progress, wait_for

__all__ = ["Stack"]


@dataclass(frozen=True)
class ServiceSpec:
    """A runstream service run as ``python -m ingest.cli <command>`` by the stack."""

    name: str
    command: str
    #: URL answering 200 when the service is up.
    health_url: Callable[[Settings], str]

    def process(self, home: Path) -> ManagedProcess:
        # The pid file lives in this home, and the marker names it: never another home's.
        return ManagedProcess(
            self.name, home / "stack" / f"{self.name}.pid", f"--stack-home={home}"
        )


#: Started by ``up`` after Kafka and PostgreSQL, in this order; stopped in reverse.
SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("ingest", "ingest", lambda s: f"http://127.0.0.1:{s.metrics_port}/metrics"),
    ServiceSpec("api", "api", lambda s: f"{s.api_url}/healthz"),
)


#: The agent ``up`` starts: its compute target and slots (runs at once).
LOCAL_TARGET = "local"
LOCAL_AGENT_SLOTS = 1
#: ``down``: seconds the agent may take to finish its runs before they are canceled.
AGENT_DRAIN_S = 3.0


def agent_process(home: Path) -> ManagedProcess:
    return ManagedProcess("agent", home / "stack" / "agent.pid", f"--stack-home={home}")


def http_ok(url: str, *, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - our URL
            return bool(response.status == 200)
    except (OSError, ValueError):
        return False


class Stack:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.home
        self.kafka = KafkaNode(home=self.home, bootstrap=settings.kafka_bootstrap)
        #: Whether ``up`` starts the broker: on loopback, and reached in plaintext.
        self.kafka_managed = (
            self.kafka.managed and settings.kafka_security.security_protocol == "PLAINTEXT"
        )
        self.postgres = (
            None if settings.db_dsn else LocalPostgres(home=self.home, port=settings.pg_port)
        )

    @property
    def dsn(self) -> str:
        if self.postgres is None:
            return self.settings.db_dsn.value if self.settings.db_dsn else ""
        return self.postgres.dsn

    def up(self) -> dict[str, Any]:
        started_at = time.monotonic()
        self.home.mkdir(parents=True, exist_ok=True)
        if self.kafka_managed and not self.kafka.start():
            progress(f"Kafka already running on {self.settings.kafka_bootstrap}")
        created = asyncio.run(
            ensure_topics(
                self.settings.kafka_bootstrap,
                [self.settings.topic, self.settings.dlq_topic],
                partitions=self.settings.partitions,
                security=self.settings.kafka_security,
            )
        )
        if created:
            progress(f"created topics {', '.join(created)} ({self.settings.partitions} partitions)")
        if self.postgres is not None and not self.postgres.start():
            progress(f"PostgreSQL already running on 127.0.0.1:{self.settings.pg_port}")
        if SERVICES:
            applied = asyncio.run(migrate(self.dsn))
            if applied:
                progress(f"applied migrations {', '.join(map(str, applied))}")
        for spec in SERVICES:
            self._start_service(spec)
        self._start_agent()
        status = self.status()
        progress(f"stack ready in {time.monotonic() - started_at:.1f}s")
        return status

    def _start_service(self, spec: ServiceSpec) -> None:
        proc = spec.process(self.home)
        if proc.running():
            progress(f"{spec.name} already running")
            return
        argv = [sys.executable, "-m", "ingest.cli", spec.command, f"--stack-home={self.home}"]
        if self._healthy(spec):
            raise StackError(
                f"{spec.health_url(self.settings)} already answers, but not from the {spec.name} "
                "service of this stack; stop that server or choose another port "
                "(RUNSTREAM_API, RUNSTREAM_METRICS_PORT)"
            )
        progress(f"starting {spec.name}…")
        log_file = self.home / "stack" / f"{spec.name}.log"
        proc.spawn(argv, log_file=log_file)
        if not wait_for(lambda: not proc.running() or self._healthy(spec), timeout_s=30):
            proc.stop(timeout_s=5)
            raise StackError(f"{spec.name} did not become healthy in 30s; see {log_file}")
        if not proc.running():
            raise StackError(f"{spec.name} exited at start; see {log_file}")

    def _healthy(self, spec: ServiceSpec) -> bool:
        return http_ok(spec.health_url(self.settings))

    def _start_agent(self) -> None:
        proc = agent_process(self.home)
        if proc.running():
            progress("agent already running")
            return
        argv = [sys.executable, "-m", "ingest.cli", "agent", "--target", LOCAL_TARGET,
                "--slots", str(LOCAL_AGENT_SLOTS), f"--stack-home={self.home}"]
        progress(f"starting agent for compute target {LOCAL_TARGET!r}…")
        log_file = self.home / "stack" / "agent.log"
        proc.spawn(argv, log_file=log_file)
        if not wait_for(lambda: not proc.running() or self._agent_registered(proc), timeout_s=30):
            proc.stop(timeout_s=15)
            raise StackError(f"agent did not register with the API in 30s; see {log_file}")
        if not proc.running():
            raise StackError(f"agent exited at start; see {log_file}")

    def _agent_registered(self, proc: ManagedProcess) -> bool:
        """Whether the API lists our agent (by pid) as alive on the ``local`` target."""
        pid = proc.pid()
        if pid is None:
            return False
        headers = {}
        if self.settings.token.value:
            headers["Authorization"] = f"Bearer {self.settings.token.value}"
        url = f"{self.settings.api_url}/v1/compute/{LOCAL_TARGET}"
        request = urllib.request.Request(url, headers=headers)  # noqa: S310 - our URL
        try:
            with urllib.request.urlopen(request, timeout=2.0) as response:  # noqa: S310
                target = json.load(response)
        except (OSError, ValueError):
            return False
        return any(a.get("pid") == pid and a.get("alive") and a.get("hostname")
                   for a in target.get("agents") or [] if isinstance(a, dict))

    def down(self) -> list[str]:
        stopped = []
        if agent_process(self.home).stop(timeout_s=30, resignal_after_s=AGENT_DRAIN_S):
            stopped.append("agent")
        stopped += [s.name for s in reversed(SERVICES) if s.process(self.home).stop(timeout_s=30)]
        if self.postgres is not None and self.postgres.stop():
            stopped.append("postgres")
        if self.kafka.managed and self.kafka.stop():
            stopped.append("kafka")
        return stopped

    def data_paths(self) -> list[Path]:
        """What ``down --purge`` removes, those that exist: the stack's own PostgreSQL
        directory (data and log; as root in ``/var/lib/runstream/<id>``, outside the
        home), the local broker's Kafka log (``log.dirs``) and logs, the API's blob store
        and the services' logs. Kept: the Kafka jars, the SDK's spool (events not yet
        delivered) and the agent's working directories. External servers are not ours."""
        paths: list[Path] = []
        if self.postgres is not None:
            paths.append(self.postgres.dir)
        if self.kafka.managed:
            paths += [self.kafka.dir / "data", self.kafka.dir / "logs",
                      self.kafka.dir / "kafka.log"]
        paths.append(self.home / "blobs")
        paths += sorted((self.home / "stack").glob("*.log"))
        return [p for p in paths if p.exists() or p.is_symlink()]

    def purge(self) -> list[Path]:
        """Remove ``data_paths()`` once ``down`` has stopped everything; refuses, removing
        nothing, while one of the stack's processes still runs."""
        running = [name for name, proc in (("agent", agent_process(self.home)),
                                           *((s.name, s.process(self.home)) for s in SERVICES),
                                           ("kafka", self.kafka.process))
                   if proc.running()]
        if self.postgres is not None and self.postgres.running():
            running.append("postgres")
        if running:
            raise StackError(f"not purging: {', '.join(running)} still running")
        removed = []
        for path in self.data_paths():
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
        return removed

    def status(self) -> dict[str, Any]:
        out = asyncio.run(self._status())
        for spec in SERVICES:
            key = "url" if spec.name == "api" else "metrics_url"
            url = self.settings.api_url if spec.name == "api" else spec.health_url(self.settings)
            out[spec.name] = {"ok": self._healthy(spec), "managed": True, key: url}
        out["agent"] = self._agent_status()
        return out

    def _agent_status(self) -> dict[str, Any]:
        proc = agent_process(self.home)
        running = proc.running()
        registered = running and self._agent_registered(proc)
        info: dict[str, Any] = {
            "ok": registered,
            "managed": True,
            "url": f"{self.settings.api_url}/v1/compute/{LOCAL_TARGET}",
            "target": LOCAL_TARGET,
            "slots": LOCAL_AGENT_SLOTS,
        }
        if not running:
            info["error"] = "not running (runstream up starts it)"
        elif not registered:
            info["error"] = (f"running but not registered with the API; see "
                             f"{self.home / 'stack' / 'agent.log'}")
        return info

    async def _status(self) -> dict[str, Any]:
        bootstrap, security = self.settings.kafka_bootstrap, self.settings.kafka_security
        kafka_ok = await kafka_healthy(bootstrap, security=security)
        pg = await postgres_status(self.dsn)
        out: dict[str, Any] = {
            "kafka": {
                "bootstrap": self.settings.kafka_bootstrap,
                "ok": kafka_ok,
                "managed": self.kafka_managed,
                "topics": [self.settings.topic, self.settings.dlq_topic],
            },
            "postgres": {
                "dsn": redact_dsn(self.dsn),
                "ok": pg.ok,
                "timescaledb": pg.timescaledb,
                "mode": None,
                "managed": self.postgres is not None,
            },
        }
        if pg.storage is not None:
            # What the tables really are (not whether the extension is there), the
            # TimescaleDB jobs and what is degraded: ingest/db/maintenance.py.
            out["postgres"].update(pg.storage.as_json())
        if not kafka_ok and (failure := await security.diagnose(bootstrap)):
            out["kafka"]["error"] = str(failure)
        if pg.error:
            out["postgres"]["error"] = pg.error
        return out
