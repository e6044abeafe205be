"""/v1/openapi.json holds against the live server: schemathesis generates requests for
every documented operation from the document itself and checks that no answer is a 5xx
and that each conforms (status code, content type, body schema).

The server runs on a database holding real runs (``build_world``), and the path
parameters are drawn half from those runs' ids and names and half from anything the
schema allows, so the endpoints answer with data, not only 404s. Streaming endpoints
(Server-Sent Events never end) are left to their own tests. Generation is bounded and
deterministic (derandomized, no example database, no shrinking).
"""

from __future__ import annotations

import asyncio
import copy
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from prometheus_client import CollectorRegistry
from schemathesis.core.result import Ok

from ingest.api.app import create_app
from ingest.api.blobstore import BlobStore
from ingest.server import HttpServer
from ingest.settings import Secret
from tests.integration.api_reads import World, build_world, sha
from tests.integration.helpers import NewDb

MAX_EXAMPLES = 25
CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
]


@pytest.fixture
async def world(new_db: NewDb, tmp_path: Path) -> tuple[str, World]:
    dsn = await new_db()
    return dsn, await build_world(dsn, BlobStore(root=tmp_path / "blobs"))


@pytest.fixture
def server_url(world: tuple[str, World], tmp_path: Path) -> Iterator[str]:
    """The API in a thread of its own: the test itself is synchronous (schemathesis
    calls with ``requests``), so the server needs an event loop that keeps running."""
    dsn, _ = world
    urls: queue.Queue[str] = queue.Queue()
    stop: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    async def serve() -> None:
        app = create_app(blob_store=BlobStore(root=tmp_path / "blobs"),
                         registry=CollectorRegistry(),
                         db_dsn=Secret(dsn))
        done = asyncio.Event()
        stop.append((asyncio.get_running_loop(), done))
        async with HttpServer(app, port=0) as server:
            urls.put(server.url)
            await done.wait()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    try:
        yield urls.get(timeout=30)
    finally:
        loop, done = stop[0]
        loop.call_soon_threadsafe(done.set)
        thread.join(timeout=30)


def seeded(document: dict[str, Any], world: World) -> dict[str, Any]:
    """The document with path (and some query) parameters limited to real values (and
    one unknown each), so that requests reach the data behind the endpoints."""
    real = {
        "run_id": [*world.all_runs, "exp_1_unknown"],
        "target": ["gpu", "cpu", "tpu"],
        "sha256": [sha(data) for data in world.files.values()],
        "experiment": ["alpha", "beta", "gamma"],
        "compute_target": ["gpu", "cpu"],
        "parent_run_id": [world.parent],
        "order_by": ["metric:loss", "created_at", "metric:nope"],
        "tag": ["selected", "selected:yes", "baseline"],
    }
    names = {"/files/": [*world.files, "missing.bin"],
             "/metrics/": ["loss", "alpha", "accuracies", "missing"]}
    for path, operations in document["paths"].items():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                values = real.get(parameter["name"])
                if parameter["name"] == "name" and parameter["in"] == "path":
                    values = next((v for k, v in names.items() if k in path), None)
                if values is None:
                    continue
                if parameter["schema"].get("type") == "string":
                    parameter["schema"] = {"type": "string", "enum": values}
                elif parameter["schema"].get("type") == "array":
                    parameter["schema"]["items"] = {"type": "string", "enum": values}
    return document


def check_operations(server_url: str, document: dict[str, Any]) -> list[str]:
    """Run schemathesis on every operation but the streams; the failures, described."""
    schema = schemathesis.openapi.from_dict(document)
    failures: list[str] = []
    tested = 0
    for result in schema.get_all_operations():
        if not isinstance(result, Ok):
            failures.append(f"the document has an operation schemathesis cannot use: {result}")
            continue
        operation = result.ok()
        if operation.path.endswith("/events"):
            continue  # Server-Sent Events: a stream that does not end
        tested += 1

        @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                  phases=[Phase.explicit, Phase.generate], print_blob=False,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def check(case: Any) -> None:
            case.call_and_validate(base_url=server_url, checks=CHECKS, timeout=30)

        try:
            check()
        except Exception as exc:  # noqa: BLE001 - every operation's failure is reported
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert tested >= 20
    return failures


def test_every_operation_conforms_to_the_document(
    server_url: str, world: tuple[str, World]
) -> None:
    document = requests.get(f"{server_url}/v1/openapi.json", timeout=10).json()
    failures = check_operations(server_url, seeded(copy.deepcopy(document), world[1]))
    failures += check_operations(server_url, document)
    assert not failures, "\n\n".join(failures)


def test_the_document_covers_the_read_routes(server_url: str) -> None:
    document = requests.get(f"{server_url}/v1/openapi.json", timeout=10).json()
    assert {
        "/v1/experiments", "/v1/runs", "/v1/runs/{run_id}", "/v1/runs/{run_id}/children",
        "/v1/runs/{run_id}/files", "/v1/runs/{run_id}/files/{name}", "/v1/runs/{run_id}/logs",
        "/v1/runs/{run_id}/metrics", "/v1/runs/{run_id}/metrics/{name}", "/v1/compute",
        "/v1/compute/{target}",
    } <= document["paths"].keys()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert operation["responses"], (method, path)
