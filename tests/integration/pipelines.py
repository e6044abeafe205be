"""What the ``pipeline`` and ``read_pipeline`` fixtures (tests/integration/conftest.py) give
a test: one test's private slice of the stack, and the helpers that go with it.

- ``Pipeline``: topic, database, consumer group and a ``runstream ingest`` process;
  ``drained()`` waits until the worker has stored every message now on the topic (its
  stored offsets, committed with the rows, cover the topic's end offsets).
- ``ReadPipeline``: the same plus an API server of the test's own (in-process, on an
  ephemeral port, over the test's database and blob directory, with ``READ_TOKEN``) and a
  home for each SDK process.

The SDK's calls block (urllib, flush), so tests run them in worker threads (``call``)
while in-process servers run on the test's event loop.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry

from ingest.api.app import create_app
from ingest.api.blobstore import BlobStore
from ingest.api.emitter import StatusEmitter
from ingest.api.routes.jobs import JobTiming
from ingest.server import HttpServer
from ingest.settings import Secret
from ingest.stack.kafka import topic_ends
from producer import Workspace
from tests.integration.helpers import WorkerProcess, fetch, stored_offsets_reach, wait_for

__all__ = ["READ_TOKEN", "Pipeline", "ReadPipeline", "call", "mismatch", "start_api",
           "workspace"]

T = TypeVar("T")
READ_TOKEN = "read-side-token"  # noqa: S105 - a test credential


@dataclass
class Pipeline:
    """One test's private slice of the stack: topic, database, group, worker process."""

    bootstrap: str
    api_url: str
    topic: str
    dsn: str
    group: str
    worker: WorkerProcess

    async def drained(self, timeout_s: float = 60.0) -> None:
        """Wait until the worker has stored (rows and offsets) every message now on the topic."""
        ends = await topic_ends(self.bootstrap, self.topic)
        await wait_for(stored_offsets_reach(self.dsn, self.topic, self.group, ends),
                       timeout_s=timeout_s, what=f"the worker to store {ends} ({self.topic})")

    async def rows(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return await fetch(self.dsn, sql, *args)

    async def run_script(self, script: str, *, run_id: str, cwd: Path,
                         timeout_s: float = 180.0) -> subprocess.CompletedProcess[str]:
        """Run ``python -c script`` as a training job of run ``run_id`` on this pipeline
        (``RUNSTREAM_HOME`` is ``cwd/home``); raises unless it exits 0."""
        env = {**os.environ, "RUNSTREAM_KAFKA": self.bootstrap, "RUNSTREAM_TOPIC": self.topic,
               "RUNSTREAM_API": self.api_url, "RUNSTREAM_RUN_ID": run_id,
               "RUNSTREAM_HOME": str(cwd / "home")}

        def launch() -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-c", script], cwd=cwd, env=env,
                                  capture_output=True, text=True, timeout=timeout_s,
                                  check=False)

        done = await asyncio.to_thread(launch)
        assert done.returncode == 0, done.stderr
        return done


def workspace(p: Pipeline, home: Path) -> Workspace:
    return Workspace(kafka_bootstrap=p.bootstrap, api_url=p.api_url, home=home, topic=p.topic)


@dataclass
class ReadPipeline(Pipeline):
    """The pipeline plus the test's own API server and a home for each SDK process."""

    home: Path = Path()
    api_registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def workspace(self, name: str = "sdk", *, token: str = READ_TOKEN) -> Workspace:
        return Workspace(
            kafka_bootstrap=self.bootstrap,
            api_url=self.api_url,
            home=self.home / name,
            topic=self.topic,
            token=token,
        )

    def write_config(self, folder: Path) -> None:
        """``folder/.azureml/config.json`` as ``Workspace.from_config()`` finds it, for this
        pipeline (Azure's coordinates plus Runstream's endpoints and token)."""
        azureml = folder / ".azureml"
        azureml.mkdir(parents=True)
        (azureml / "config.json").write_text(json.dumps({
            "subscription_id": "00000000-0000-0000-0000-000000000000",
            "resource_group": "rg",
            "workspace_name": "default",
            "location": "local",
            "api_url": self.api_url,
            "kafka_bootstrap": self.bootstrap,
            "topic": self.topic,
            "home": str(folder / "home"),
            "token": READ_TOKEN,
        }))

    def env(self, name: str) -> dict[str, str]:
        return {
            **os.environ,
            "RUNSTREAM_KAFKA": self.bootstrap,
            "RUNSTREAM_TOPIC": self.topic,
            "RUNSTREAM_API": self.api_url,
            "RUNSTREAM_TOKEN": READ_TOKEN,
            "RUNSTREAM_HOME": str(self.home / name),
        }


async def start_api(
    exits: AsyncExitStack, *, dsn: str, blob_root: Path, token: str, registry: CollectorRegistry,
    bootstrap: str | None = None, topic: str | None = None, job_timing: JobTiming | None = None,
) -> str:
    """The real API over ``dsn`` and ``blob_root``, on an ephemeral port; its URL. With
    ``bootstrap`` and ``topic`` it sends the status events it decides (cancel, agent lost)
    to that topic, as a deployed API does."""
    emitter = None
    if bootstrap is not None and topic is not None:
        emitter = StatusEmitter(kafka_bootstrap=bootstrap, topic=topic,
                                home=blob_root.parent / "api-producer")
    app = create_app(
        blob_store=BlobStore(root=blob_root),
        registry=registry,
        token=Secret(token),
        db_dsn=Secret(dsn),
        status_emitter=emitter,
        job_timing=job_timing,
    )
    server = await exits.enter_async_context(HttpServer(app, host="127.0.0.1", port=0))
    return server.url


async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """A blocking SDK call, in a worker thread."""
    return await asyncio.to_thread(fn, *args, **kwargs)


def mismatch(got: object, want: object, path: str = "") -> str | None:
    """Where ``got`` differs from ``want``: deep, NaN equals NaN, types must match (1 is not
    1.0 or True); None when they are the same."""
    if isinstance(got, dict) and isinstance(want, dict):
        if list(got) != list(want) and set(got) != set(want):
            return f"{path or 'top'}: keys {sorted(got)} != {sorted(want)}"
        return next((m for k in want if (m := mismatch(got[k], want[k], f"{path}/{k}"))), None)
    if isinstance(got, list) and isinstance(want, list):
        if len(got) != len(want):
            return f"{path}: {len(got)} items, not {len(want)}"
        pairs = enumerate(zip(got, want, strict=True))
        return next((m for i, (g, w) in pairs if (m := mismatch(g, w, f"{path}[{i}]"))), None)
    if isinstance(got, float) and isinstance(want, float) and math.isnan(got) and math.isnan(want):
        return None
    if type(got) is type(want) and got == want:
        return None
    return f"{path}: {got!r} ({type(got).__name__}) != {want!r} ({type(want).__name__})"
