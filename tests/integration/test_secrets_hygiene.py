"""Secrets never appear in logs, reprs or error messages.

The services run as an operator runs them (``runstream -v ingest``, ``runstream -v api``:
debug logging, every library's too) with a PostgreSQL password in ``RUNSTREAM_DB``, an
admin token and workspace tokens. A training job logs through them with its token, then
requests with wrong tokens, near-miss tokens and unknown runs, a failing database URL
and failing CLI commands produce every error we can provoke. Everything those processes
wrote and every answer they gave is searched for each secret. (The Kafka password is
covered the same way in test_kafka_security.py, against a broker that asks for it.)
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import pytest

from ingest.settings import Settings
from producer import Experiment, Workspace
from tests.helpers import StackInfo, TopicFactory
from tests.integration.helpers import NewDb, fetch, listening_url, runstream, wait_for
from tests.reliability import SECURITY, Reliability

pytestmark = pytest.mark.integration

#: As written in the DSN (percent-encoded) and as the driver decodes it.
PG_PASSWORD = "pg-S3cret%2Fwith%25chars"  # noqa: S105 - test credentials
PG_PASSWORD_DECODED = "pg-S3cret/with%chars"  # noqa: S105
ADMIN_TOKEN = "adm-T0ken-9f8e7d"  # noqa: S105
VISION_TOKEN = "vis-T0ken-1a2b3c"  # noqa: S105
SECRETS = (PG_PASSWORD, PG_PASSWORD_DECODED, ADMIN_TOKEN, VISION_TOKEN)


def with_password(dsn: str) -> str:
    """The DSN with a password (the local cluster trusts 127.0.0.1, so any works)."""
    parts = urlsplit(dsn)
    user_host = parts.netloc.split("@", 1)
    user, host = user_host if len(user_host) == 2 else ("runstream", user_host[0])
    user = user.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:{PG_PASSWORD}@{host}"))


def assert_clean(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} leaked in {where}"
    # A near-miss presented token is a secret too (someone's typo of a real one).
    assert VISION_TOKEN[:-1] not in text, f"a presented token leaked in {where}"


class Service:
    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ingest.cli", "-v", *args],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.log.read_text(errors="replace")


@pytest.fixture
def services() -> Iterator[list[Service]]:
    started: list[Service] = []
    yield started
    for service in started:
        service.stop()


async def test_services_never_log_or_answer_secrets(
    stack: StackInfo,
    topic_factory: TopicFactory,
    new_db: NewDb,
    tmp_path: Path,
    services: list[Service],
    reliability: Reliability,
) -> None:
    topic = await topic_factory(partitions=2)
    dsn = with_password(await new_db())
    env = {
        **os.environ,
        "RUNSTREAM_KAFKA": stack.kafka_bootstrap,
        "RUNSTREAM_TOPIC": topic,
        "RUNSTREAM_DB": dsn,
        "RUNSTREAM_HOME": str(tmp_path / "home"),
        "RUNSTREAM_TOKEN": ADMIN_TOKEN,
        "RUNSTREAM_WORKSPACE_TOKENS": json.dumps({"vision": VISION_TOKEN}),
    }
    services.append(Service(["ingest", "--group", f"g-{topic}", "--metrics-port", "0"], env,
                            tmp_path / "ingest.log"))  # fmt: skip
    # Port 0: the API binds a free port itself and logs which one it got.
    services.append(Service(["api", "--port", "0"], env, tmp_path / "api.log"))
    answers: list[str] = []

    async def api_logged() -> bool:
        assert services[1].proc.poll() is None, services[1].log.read_text(errors="replace")
        return listening_url(services[1].log.read_text(errors="replace"), "API") is not None

    await wait_for(api_logged, timeout_s=30, what="the API to listen")
    api = listening_url(services[1].log.read_text(errors="replace"), "API")
    assert api is not None
    env["RUNSTREAM_API"] = api  # for `runstream status` below

    async with aiohttp.ClientSession() as http:

        async def api_up() -> bool:
            try:
                async with http.get(f"{api}/readyz") as r:
                    return r.status == 200
            except aiohttp.ClientError:
                return False

        await wait_for(api_up, timeout_s=30)

        # A training job in workspace "vision" with its token: metrics and a file.
        def train() -> str:
            ws = Workspace(name="vision", kafka_bootstrap=stack.kafka_bootstrap, topic=topic,
                           api_url=api, home=tmp_path / "sdk", token=VISION_TOKEN)  # fmt: skip
            answers.append(repr(ws))
            with Experiment(ws, "hygiene").start_logging(outputs_dir=None) as run:
                answers.append(repr(run))
                run.log("loss", 0.5)
                run.upload_file("outputs/notes.txt", io.BytesIO(b"notes\n"))
                rid = run.id
            ws.close(30)
            return rid

        rid = await asyncio.to_thread(train)

        async def stored() -> bool:
            rows = await fetch(dsn, "SELECT status FROM runstream.runs WHERE run_id = $1", rid)
            return bool(rows) and rows[0]["status"] == "Completed"

        await wait_for(stored, timeout_s=60)

        for token, path in (
            (None, "/v1/runs"),
            ("wrong", "/v1/runs"),
            (VISION_TOKEN[:-1], "/v1/runs"),  # a near miss
            (VISION_TOKEN + "x", f"/v1/runs/{rid}"),
            (VISION_TOKEN, f"/v1/runs/{rid}"),
            (VISION_TOKEN, "/v1/runs/exp_1_missing/metrics"),
            (VISION_TOKEN, "/v1/runs?workspace=nlp"),
            (VISION_TOKEN, "/v1/runs?limit=-1"),
            (ADMIN_TOKEN, "/metrics"),
            (ADMIN_TOKEN, "/v1/openapi.json"),
            (ADMIN_TOKEN, "/readyz"),
            (ADMIN_TOKEN, f"/v1/runs/{rid}/files/outputs/notes.txt"),
        ):
            headers = {} if token is None else {"Authorization": f"Bearer {token}"}
            async with http.get(api + path, headers=headers) as r:
                answers.append(f"{r.status} {dict(r.headers)} {await r.text()}")
        # The worker's metrics endpoint too.
        ingest_log = services[0].log.read_text(errors="replace")
        assert "Traceback" not in ingest_log

    outputs = {service.log.name: service.stop() for service in services}
    lines = sum(text.count("\n") for text in outputs.values())
    leaks = sum(secret in text for text in [*outputs.values(), *answers] for secret in SECRETS)
    reliability.record(
        guarantee="secrets never appear in logs, reprs or error messages",
        faults="worker and API at debug level with a PostgreSQL password, admin and workspace "
        f"tokens; {len(answers)} answers incl. wrong, near-miss and missing tokens; failing "
        "migrate (closed port, missing database) with and without -v",
        section=SECURITY,
        notes=f"{lines} log lines and {len(answers)} answers searched: {leaks} leaks",
    )
    for name, text in outputs.items():
        assert text.strip(), f"{name} wrote nothing: the test would prove nothing"
        assert_clean(text, name)
    for text in answers:
        assert_clean(text, "an answer")

    # Status and failing commands, with the same environment.
    status = runstream("status", "--json", env=env)
    assert_clean(status.stdout + status.stderr, "status")
    assert json.loads(status.stdout)["postgres"]["dsn"].count("***") == 1
    for broken in (dsn.replace(f":{urlsplit(dsn).port}/", ":1/"), dsn.rsplit("/", 1)[0] + "/nodb"):
        failed = runstream("-v", "migrate", env={**env, "RUNSTREAM_DB": broken})
        assert failed.returncode != 0
        assert "Traceback" in failed.stderr  # -v: the whole traceback, logged, redacted
        assert_clean(failed.stdout + failed.stderr, "migrate -v")
        failed = runstream("migrate", env={**env, "RUNSTREAM_DB": broken})
        assert failed.returncode == 1
        assert failed.stderr.startswith("runstream migrate: error: ")
        assert_clean(failed.stdout + failed.stderr, "migrate")
    assert_clean(repr(Settings.from_env(env)), "repr(Settings)")
