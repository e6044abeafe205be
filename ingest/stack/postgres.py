"""The stack's own PostgreSQL 15 cluster (TimescaleDB when the extension is installed).

Debian's ``postgresql-15`` server binaries are used; ``up`` installs them with apt-get when
they are missing and it runs as root. The cluster is the project's own, never the
system's ``main`` cluster: ``initdb`` into a data directory we own, ``runstream`` as the
superuser, trust authentication on 127.0.0.1 only (a development stack; point
``RUNSTREAM_DB`` at a real server for anything else, which skips all of this).

PostgreSQL refuses to run as root. As a normal user the data lives in
``<home>/stack/postgres``; as root it lives in ``/var/lib/runstream/<id>`` owned by the
``postgres`` OS user (created by the Debian package), with ``<id>`` derived from the home
so separate homes get separate clusters, and every server command runs via ``runuser``.
"""

from __future__ import annotations

import asyncio
import glob
import hashlib
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from ingest.db.maintenance import Storage, read_storage
from ingest.stack.procs import StackError, port_open, progress

__all__ = ["LocalPostgres", "PostgresStatus", "postgres_status"]

PG_MAJOR = 15
DATABASE = "runstream"
USER = "runstream"
TIMEOUT_S = 5.0


def find_bindir() -> Path | None:
    preferred = Path(f"/usr/lib/postgresql/{PG_MAJOR}/bin")
    if (preferred / "pg_ctl").exists():
        return preferred
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    return Path(found[0]).parent if found else None


def apt_install(packages: list[str]) -> None:
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        raise StackError(
            f"PostgreSQL {PG_MAJOR} is not installed. Install it with "
            f"`sudo apt-get install -y {' '.join(packages)}`, or set RUNSTREAM_DB to an "
            "existing server"
        )
    progress(f"installing {' '.join(packages)} with apt-get (first run only)…")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in ([apt, "update", "-q"], [apt, "install", "-y", "-q", *packages]):
        result = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)  # noqa: S603
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-10:])
            raise StackError(f"`{' '.join(argv)}` failed:\n{tail}")


def shared_buffers_mb() -> int:
    """An eighth of the machine's memory, within 256 MB..2 GB: PostgreSQL's advice for a
    server of its own is a quarter; this one shares the machine with Kafka, the workers
    and the training jobs. Ingest's working set is the newest pages of the dedup keys'
    and the series' indexes, small; reads of stored series and run lists, and a day of
    dedup keys (``runstream bench dedup``: 6.7 M keys, a 270 MB index), want more."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 256
    return max(256, min(2048, total // 8 >> 20))


@dataclass(frozen=True)
class PostgresStatus:
    ok: bool
    timescaledb: str | None
    error: str | None = None
    #: What the metric tables really are and how the TimescaleDB jobs fare (issue 13).
    storage: Storage | None = None


async def postgres_status(dsn: str) -> PostgresStatus:
    try:
        conn = await asyncpg.connect(dsn, timeout=TIMEOUT_S)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return PostgresStatus(ok=False, timescaledb=None, error=f"{type(exc).__name__}: {exc}")
    try:
        storage = await read_storage(conn)
        return PostgresStatus(ok=True, timescaledb=storage.timescaledb, storage=storage)
    finally:
        await conn.close()


class LocalPostgres:
    """The project's own cluster on 127.0.0.1:``port``; ``start``/``stop`` are idempotent."""

    def __init__(self, *, home: Path, port: int) -> None:
        self.home = home
        self.port = port
        self.as_root = os.geteuid() == 0
        if self.as_root:
            key = hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:12]
            self.dir = Path("/var/lib/runstream") / key
        else:
            self.dir = home / "stack" / "postgres"
        self.data = self.dir / "data"
        self.log_file = self.dir / "postgres.log"

    @property
    def dsn(self) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{DATABASE}"

    def _run(self, argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        if self.as_root:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        result = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
        if check and result.returncode != 0:
            raise StackError(f"`{' '.join(argv)}` failed:\n{result.stdout}{result.stderr}")
        return result

    def _bindir(self, *, install: bool) -> Path:
        bindir = find_bindir()
        if bindir is None and install:
            apt_install([f"postgresql-{PG_MAJOR}", "postgresql-contrib"])
            bindir = find_bindir()
        if bindir is None:
            raise StackError(f"PostgreSQL {PG_MAJOR} server binaries not found")
        return bindir

    def timescaledb_available(self, bindir: Path) -> bool:
        pg_config = bindir / "pg_config"
        if not pg_config.exists():
            return False
        result = subprocess.run(  # noqa: S603 - fixed argv
            [str(pg_config), "--pkglibdir"], capture_output=True, text=True, check=False
        )
        libdir = Path(result.stdout.strip())
        return result.returncode == 0 and any(libdir.glob("timescaledb*.so"))

    def running(self) -> bool:
        bindir = find_bindir()
        if bindir is None or not (self.data / "PG_VERSION").exists():
            return False
        return (
            self._run(
                [str(bindir / "pg_ctl"), "status", "-D", str(self.data)], check=False
            ).returncode
            == 0
        )

    def _init(self, bindir: Path) -> None:
        if (self.data / "PG_VERSION").exists():
            return
        progress(f"initialising a PostgreSQL {PG_MAJOR} cluster in {self.data}…")
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.as_root:
            try:
                pg = pwd.getpwnam("postgres")
            except KeyError as exc:
                raise StackError(
                    "the `postgres` OS user is missing; reinstall postgresql-15"
                ) from exc
            os.chown(self.dir, pg.pw_uid, pg.pw_gid)
        self._run(
            [str(bindir / "initdb"), "-D", str(self.data), "-U", USER, "--auth=trust",
             "-E", "UTF8", "--locale=C.UTF-8"]
        )  # fmt: skip

    def _configure(self, bindir: Path) -> bool:
        """Write runstream.conf; returns True when its content changed."""
        preload = "timescaledb" if self.timescaledb_available(bindir) else ""
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.dir}'",
            "shared_preload_libraries": f"'{preload}'",
            "max_connections": "200",
            "shared_buffers": f"'{shared_buffers_mb()}MB'",
            "max_wal_size": "'2GB'",
            "timescaledb.telemetry_level": "off" if preload else "",
        }
        lines = [f"{k} = {v}" for k, v in settings.items() if v]
        conf = self.data / "runstream.conf"
        body = "# written by runstream up; edits are overwritten\n" + "\n".join(lines) + "\n"
        main_conf = self.data / "postgresql.conf"
        include = "include_if_exists = 'runstream.conf'"
        text = self._read(main_conf)
        if include not in text:
            self._write(main_conf, text + f"\n{include}\n")
        if conf.exists() and self._read(conf) == body:
            return False
        self._write(conf, body)
        return True

    def _read(self, path: Path) -> str:
        return path.read_text()

    def _write(self, path: Path, text: str) -> None:
        path.write_text(text)
        if self.as_root:
            pg = pwd.getpwnam("postgres")
            os.chown(path, pg.pw_uid, pg.pw_gid)

    def start(self) -> bool:
        """Install if needed, init, configure, start and create the database.

        Returns True when this call started the server.
        """
        bindir = self._bindir(install=True)
        self._init(bindir)
        changed = self._configure(bindir)
        started = False
        if changed and self.running():
            # e.g. TimescaleDB was installed since: shared_preload_libraries needs a restart.
            progress("PostgreSQL settings changed; restarting it…")
            self._run(
                [str(bindir / "pg_ctl"), "restart", "-D", str(self.data), "-m", "fast",
                 "-l", str(self.log_file), "-w", "-t", "60"]
            )  # fmt: skip
        if not self.running():
            if port_open("127.0.0.1", self.port):
                raise StackError(
                    f"port {self.port} is taken by a server runstream did not start; set "
                    "RUNSTREAM_PG_PORT to a free port or RUNSTREAM_DB to use that server"
                )
            progress(f"starting PostgreSQL on 127.0.0.1:{self.port}…")
            self._run(
                [str(bindir / "pg_ctl"), "start", "-D", str(self.data), "-l", str(self.log_file),
                 "-w", "-t", "60"]
            )  # fmt: skip
            started = True
        asyncio.run(self._create_database(with_timescaledb=self.timescaledb_available(bindir)))
        return started

    async def _create_database(self, *, with_timescaledb: bool) -> None:
        admin_dsn = f"postgresql://{USER}@127.0.0.1:{self.port}/postgres"
        conn = await asyncpg.connect(admin_dsn, timeout=TIMEOUT_S)
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE)
            if not exists:
                await conn.execute(f'CREATE DATABASE "{DATABASE}"')
        finally:
            await conn.close()
        if with_timescaledb:
            conn = await asyncpg.connect(self.dsn, timeout=TIMEOUT_S)
            try:
                await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            finally:
                await conn.close()

    def stop(self) -> bool:
        bindir = find_bindir()
        if bindir is None or not self.running():
            return False
        self._run([str(bindir / "pg_ctl"), "stop", "-D", str(self.data), "-m", "fast", "-w"])
        return True
