"""Helpers of the read-API tests (test_api_read_*.py, test_api_schemathesis.py).

Data goes in the way a worker writes it: events built with ``EventFactory``, encoded and
decoded with the real codec, committed by ``ingest.worker.store.Store.write_batch``
(``ingest.bench.read.store_events``). The API is
the real server (``create_app`` + ``HttpServer`` on an ephemeral port) on that database.

``build_world`` stores a small, fixed set of runs that exercises every endpoint: two
experiments, a finished/failed/running/queued run on two compute targets, a parent with
children, tags, properties, metrics of every shape, artifacts whose bytes are in the blob
store, and log lines.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry

from ingest.api.app import create_app
from ingest.api.blobstore import BlobStore
from ingest.bench.events import EventFactory, packed_series
from ingest.bench.read import store_events
from ingest.server import HttpServer
from ingest.settings import Secret
from tests.integration.helpers import run_id

HOUR_US = 3600 * 1_000_000


@dataclass(frozen=True)
class ReadApi:
    url: str
    blobs: BlobStore
    registry: CollectorRegistry
    token: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {} if self.token is None else {"Authorization": f"Bearer {self.token}"}


@contextlib.asynccontextmanager
async def read_api(
    dsn: str, blob_root: Path, *, token: str | None = None, public_url: str | None = None
) -> AsyncIterator[ReadApi]:
    """The real API server on ``dsn`` (auth on when ``token`` is given)."""
    blobs = BlobStore(root=blob_root)
    registry = CollectorRegistry()
    app = create_app(
        blob_store=blobs, registry=registry, token=None if token is None else Secret(token),
        db_dsn=Secret(dsn), public_url=public_url,
    )
    async with HttpServer(app, host="127.0.0.1", port=0) as server:
        yield ReadApi(url=server.url, blobs=blobs, registry=registry, token=token)


async def get_json(http: aiohttp.ClientSession, url: str, *, status: int = 200,
                   headers: dict[str, str] | None = None) -> Any:
    async with http.get(url, headers=headers) as r:
        body = await r.text()
        assert r.status == status, (url, r.status, body[:500])
        assert r.content_type == "application/json", (url, r.content_type)
        return await r.json()


async def error_message(http: aiohttp.ClientSession, url: str, status: int) -> str:
    """The message of an error answer, after checking its shape."""
    body = await get_json(http, url, status=status)
    assert set(body) == {"error"}, body
    assert body["error"]["status"] == status
    message: str = body["error"]["message"]
    assert "Traceback" not in message
    return message


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class World:
    """Ids of what ``build_world`` stored."""

    finished: str
    failed: str
    parent: str
    children: list[str]
    queued: str
    other_experiment: str
    files: dict[str, bytes] = field(default_factory=dict)
    experiment: str = "alpha"
    start_us: int = 0

    @property
    def all_runs(self) -> list[str]:
        return [self.finished, self.failed, self.parent, *self.children, self.queued,
                self.other_experiment]


async def build_world(dsn: str, blobs: BlobStore) -> World:
    """Store the fixed data set (see the module docstring); runs are created one second
    apart, oldest first: finished, failed, parent, children, queued, other_experiment."""
    t0 = time.time_ns() // 1000 - 2 * HOUR_US
    world = World(
        finished=run_id("alpha"), failed=run_id("alpha"), parent=run_id("alpha"),
        children=[run_id("alpha"), run_id("alpha")], queued=run_id("alpha"),
        other_experiment=run_id("beta"), start_us=t0,
    )
    events: list[dict[str, Any]] = []
    sec = 1_000_000

    def factory(rid: str) -> EventFactory:
        return EventFactory(rid, experiment=rid.split("_")[0])

    # finished: Completed on gpu; tags, metrics of every shape, files, logs.
    f = factory(world.finished)
    t = t0
    events += [
        f.lifecycle("Queued", compute_target="gpu", display_name="ridge",
                    properties={"alpha": "0.5"}, ts_us=t),
        f.lifecycle("Running", ts_us=t + 10 * sec),
        f.tag("selected", "yes", ts_us=t + 11 * sec),
        f.tag("baseline", ts_us=t + 11 * sec),
        f.metrics(packed_series("loss", [0.9, 0.5, 0.25, 0.125], steps=[0, 1, 2, 3],
                                times_us=[t + 12 * sec + i for i in range(4)]),
                  packed_series("alpha", [0.5], steps=[0], times_us=[t + 12 * sec]),
                  ts_us=t + 12 * sec),
        f.list_value("accuracies", [0.6, 0.7, 0.87], ts_us=t + 13 * sec),
        f.row("Y over X", {"x": 1, "y": 0.4}, ts_us=t + 14 * sec),
        f.row("Y over X", {"x": 2, "y": 0.8}, ts_us=t + 15 * sec),
        f.table("Sine", {"angle": [0.0, 1.5], "sine": [0.0, 0.997]}, ts_us=t + 16 * sec),
        f.log_lines("stdout", ["epoch 1", "epoch 2"], ts_us=t + 17 * sec),
        f.log_lines("stderr", ["warning: slow"], ts_us=t + 18 * sec),
    ]
    for name, data, content_type in (
        ("outputs/model.pkl", b"\x80\x04weights" * 1000, "application/octet-stream"),
        ("notes/readme.txt", b"hello runstream\n", "text/plain"),
    ):
        await blobs.put(sha(data), _chunks(data))
        world.files[name] = data
        events.append(f.artifact(name, sha(data), len(data), content_type=content_type,
                                 ts_us=t + 19 * sec))
    # It ended a minute ago: it counts in its target's completed_1h.
    now = time.time_ns() // 1000
    events += [f.lifecycle("Finalizing", ts_us=now - 61 * sec),
               f.lifecycle("Completed", ts_us=now - 60 * sec)]

    # failed: on gpu, a worse final loss, a spike; Failed with an error.
    f = factory(world.failed)
    t = t0 + 1 * sec
    events += [
        f.lifecycle("Queued", compute_target="gpu", ts_us=t),
        f.lifecycle("Running", ts_us=t + 30 * sec),
        f.tag("selected", "no", ts_us=t + 31 * sec),
        f.metrics(packed_series("loss", [0.8, 1e6, 0.6], steps=[0, 1, 2],
                                times_us=[t + 32 * sec + i for i in range(3)]),
                  ts_us=t + 32 * sec),
        f.lifecycle("Failed", error="CUDA out of memory", ts_us=t + 40 * sec),
    ]

    # parent (Running on cpu, heartbeats) with two children.
    f = factory(world.parent)
    t = t0 + 2 * sec
    events += [
        f.lifecycle("Running", compute_target="cpu", ts_us=t),
        f.metrics(packed_series("loss", [0.3], steps=[0], times_us=[t + sec]), ts_us=t + sec),
        f.heartbeat(dropped_events=3, ts_us=time.time_ns() // 1000),
    ]
    for i, child in enumerate(world.children):
        c = factory(child)
        tc = t0 + (3 + i) * sec
        events += [
            c.lifecycle("Running", parent_run_id=world.parent, compute_target="cpu",
                        display_name=f"fold-{i}", ts_us=tc),
            c.metrics(packed_series("mse", [3.1 - i], steps=[0], times_us=[tc + 1]),
                      ts_us=tc + 1),
            c.lifecycle("Completed", ts_us=tc + 2 * sec),
        ]

    # queued on gpu, no metrics.
    f = factory(world.queued)
    events.append(f.lifecycle("Queued", compute_target="gpu", ts_us=t0 + 5 * sec))
    # another experiment.
    f = factory(world.other_experiment)
    events += [f.lifecycle("Running", ts_us=t0 + 6 * sec),
               f.lifecycle("Completed", ts_us=t0 + 7 * sec)]

    await store_events(dsn, events)
    return world


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data
