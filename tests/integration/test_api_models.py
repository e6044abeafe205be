"""The model registry (/v1/models…, ingest/api/routes/models.py) through the real server,
on a database whose runs and artifacts went in through the real store write path.

Two workspaces: ``vision`` holds a run with a model file, a model folder and a few other
files; ``nlp`` a run with one file. Tokens: admin, one per workspace, one for both.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from ingest.api.app import create_app
from ingest.api.blobstore import BlobStore
from ingest.bench.events import EventFactory
from ingest.bench.read import store_events
from ingest.server import HttpServer
from ingest.settings import Secret
from tests.integration.api_reads import get_json, sha
from tests.integration.helpers import NewDb, fetch, run_id

pytestmark = pytest.mark.integration

ADMIN = "models-admin-token"
VISION = "models-vision-token"
NLP = "models-nlp-token"
BOTH = "models-both-token"

VISION_FILES = {
    "outputs/ridge_0.40.pkl": b"\x80\x04ridge weights" * 500,
    "outputs/model/a.bin": bytes(range(256)) * 64,
    "outputs/model/b.json": b'{"alpha": 0.4}\n',
    "outputs/modelx.txt": b"not in the folder outputs/model\n",
    "notes.txt": b"hello\n",
}
NLP_FILES = {"outputs/tokenizer.json": b'{"vocab": 30000}\n'}


@dataclass(frozen=True)
class Registry:
    url: str
    blobs: BlobStore
    dsn: str
    vision_run: str
    nlp_run: str


@pytest.fixture
async def registry(new_db: NewDb, tmp_path: Path) -> AsyncIterator[Registry]:
    dsn = await new_db()
    blobs = BlobStore(root=tmp_path / "blobs")
    vision, nlp = run_id("sweep"), run_id("bert")
    now = time.time_ns() // 1000
    events: list[dict[str, Any]] = []
    for rid, workspace, files in ((vision, "vision", VISION_FILES), (nlp, "nlp", NLP_FILES)):
        f = EventFactory(rid, experiment=rid.split("_")[0], workspace=workspace)
        events.append(f.lifecycle("Running", ts_us=now - 10_000_000))
        for name, data in files.items():
            await blobs.put(sha(data), _chunks(data))
            events.append(f.artifact(name, sha(data), len(data), ts_us=now - 5_000_000))
    await store_events(dsn, events)
    app = create_app(
        blob_store=blobs, registry=CollectorRegistry(), token=Secret(ADMIN),
        workspace_tokens={"vision": (Secret(VISION), Secret(BOTH)),
                          "nlp": (Secret(NLP), Secret(BOTH))},
        db_dsn=Secret(dsn),
    )
    async with HttpServer(app, host="127.0.0.1", port=0) as server:
        yield Registry(server.url, blobs, dsn, vision, nlp)


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


def bearer(token: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **headers}


async def register(http: aiohttp.ClientSession, reg: Registry, token: str = ADMIN,
                   **body: Any) -> tuple[int, dict[str, Any]]:
    """POST /v1/models (a fresh registration_id unless given); (status, JSON answer)."""
    body.setdefault("registration_id", str(uuid.uuid4()))
    async with http.post(f"{reg.url}/v1/models", json=body, headers=bearer(token)) as r:
        assert r.content_type == "application/json"
        answer: dict[str, Any] = await r.json()
        if r.status == 201:
            assert r.headers["Location"] == answer["url"]
        return r.status, answer


async def refused(http: aiohttp.ClientSession, reg: Registry, status: int,
                  token: str = ADMIN, **body: Any) -> str:
    """The message of a registration answered with ``status``."""
    got, answer = await register(http, reg, token, **body)
    assert got == status, answer
    assert answer["error"]["status"] == status
    message: str = answer["error"]["message"]
    return message


async def get(http: aiohttp.ClientSession, reg: Registry, path: str, token: str = ADMIN,
              *, status: int = 200, **params: str | int) -> Any:
    query = f"?{urlencode(params)}" if params else ""
    return await get_json(http, f"{reg.url}{path}{query}", status=status, headers=bearer(token))


async def all_models(http: aiohttp.ClientSession, reg: Registry, token: str = ADMIN,
                     **params: str | int) -> list[dict[str, Any]]:
    """Every model of /v1/models with ``params``, walking the pages."""
    out: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(100):
        query = urlencode(params if cursor is None else {**params, "cursor": cursor})
        page = await get_json(http, f"{reg.url}/v1/models?{query}", headers=bearer(token))
        out += page["models"]
        cursor = page["next_cursor"]
        if cursor is None:
            return out
    raise AssertionError("pagination never ended")


# -- registering from a run ----------------------------------------------------------------


async def test_register_one_file_of_a_run(http: aiohttp.ClientSession, registry: Registry) -> None:
    status, model = await register(http, registry, name="ridge", run_id=registry.vision_run,
                                   path="./outputs/ridge_0.40.pkl", tags={"alpha": "0.40"},
                                   properties={"mse": "3100.2"}, description="Ridge, \u03b1=0.40")
    assert status == 201, model
    data = VISION_FILES["outputs/ridge_0.40.pkl"]
    assert model == {
        "id": "ridge:1", "name": "ridge", "version": 1, "workspace": "vision",
        "run_id": registry.vision_run, "experiment": "sweep", "path": "outputs/ridge_0.40.pkl",
        "files": [{"name": "ridge_0.40.pkl", "sha256": sha(data), "size_bytes": len(data)}],
        "tags": {"alpha": "0.40"}, "properties": {"mse": "3100.2"},
        "description": "Ridge, \u03b1=0.40", "created_at": model["created_at"],
        "url": "/v1/models/ridge/versions/1",
    }
    assert model["created_at"].endswith("+00:00")
    latest = await get(http, registry, "/v1/models/ridge", workspace="vision")
    assert latest == model
    assert await get(http, registry, "/v1/models/ridge/versions/1", VISION) == model


async def test_register_a_folder_of_a_run(http: aiohttp.ClientSession, registry: Registry) -> None:
    status, model = await register(http, registry, VISION, name="ensemble",
                                   run_id=registry.vision_run, path="outputs/model/")
    assert status == 201, model
    # Every file under outputs/model/ (not outputs/modelx.txt), relative to outputs/.
    assert model["path"] == "outputs/model"
    assert model["files"] == [
        {"name": f"model/{leaf}", "sha256": sha(data), "size_bytes": len(data)}
        for leaf, data in (("a.bin", VISION_FILES["outputs/model/a.bin"]),
                           ("b.json", VISION_FILES["outputs/model/b.json"]))
    ]
    status, top = await register(http, registry, name="notes", run_id=registry.vision_run,
                                 path="notes.txt")
    assert status == 201
    assert [f["name"] for f in top["files"]] == ["notes.txt"]


async def test_versions_count_up_per_name_and_workspace(
    http: aiohttp.ClientSession, registry: Registry
) -> None:
    for expected in (1, 2, 3):
        status, model = await register(http, registry, name="ridge",
                                       run_id=registry.vision_run, path="outputs/ridge_0.40.pkl")
        assert (status, model["version"], model["id"]) == (201, expected, f"ridge:{expected}")
    # Another workspace's model of the same name starts at 1.
    status, other = await register(http, registry, NLP, name="ridge", run_id=registry.nlp_run,
                                   path="outputs/tokenizer.json")
    assert (status, other["version"], other["workspace"]) == (201, 1, "nlp")
    assert (await get(http, registry, "/v1/models/ridge", VISION))["version"] == 3
    assert (await get(http, registry, "/v1/models/ridge", NLP))["version"] == 1
    two = await get(http, registry, "/v1/models/ridge/versions/2", BOTH, workspace="vision")
    assert (two["version"], two["workspace"]) == (2, "vision")


async def test_concurrent_registrations_get_every_version_once(
    http: aiohttp.ClientSession, registry: Registry
) -> None:
    answers = await asyncio.gather(*(
        register(http, registry, VISION, name="race", run_id=registry.vision_run,
                 path="outputs/model")
        for _ in range(20)
    ))
    assert [status for status, _ in answers] == [201] * 20, answers
    assert sorted(model["version"] for _, model in answers) == list(range(1, 21))
    listed = await all_models(http, registry, VISION, name="race", limit=7)
    assert [m["version"] for m in listed] == list(range(20, 0, -1))


async def test_a_repeated_registration_id_returns_the_first_registration(
    http: aiohttp.ClientSession, registry: Registry
) -> None:
    rid = str(uuid.uuid4())
    status, first = await register(http, registry, VISION, name="ridge", registration_id=rid,
                                   run_id=registry.vision_run, path="outputs/ridge_0.40.pkl")
    assert status == 201
    status, again = await register(http, registry, VISION, name="ridge", registration_id=rid,
                                   run_id=registry.vision_run, path="outputs/ridge_0.40.pkl")
    assert (status, again) == (200, first)
    # Retries racing each other still make one version.
    retried = str(uuid.uuid4())
    answers = await asyncio.gather(*(
        register(http, registry, VISION, name="ridge", registration_id=retried,
                 run_id=registry.vision_run, path="outputs/model")
        for _ in range(6)
    ))
    assert sorted(status for status, _ in answers) == [200] * 5 + [201]
    assert {model["version"] for _, model in answers} == {2}
    assert [m["version"] for m in await all_models(http, registry, name="ridge")] == [2, 1]
    # The same id for another model, or from another workspace, is a conflict, not a leak.
    message = await refused(http, registry, 409, VISION, name="other", registration_id=rid,
                            run_id=registry.vision_run, path="notes.txt")
    assert message == f"registration_id {rid} registered another model"
    await refused(http, registry, 409, NLP, name="ridge", registration_id=rid,
                  run_id=registry.nlp_run, path="outputs/tokenizer.json")


async def test_a_path_matching_no_file_lists_the_runs_files(
    http: aiohttp.ClientSession, registry: Registry
) -> None:
    message = await refused(http, registry, 400, name="ridge", run_id=registry.vision_run,
                            path="outputs/ridge_0.50.pkl")
    assert message == (
        f"could not locate path 'outputs/ridge_0.50.pkl' in the files of run "
        f"{registry.vision_run!r}: [" + ", ".join(repr(n) for n in sorted(VISION_FILES)) + "]"
    )
    # A prefix of a name is not a folder.
    message = await refused(http, registry, 400, name="ridge", run_id=registry.vision_run,
                            path="outputs/mod")
    assert "could not locate path 'outputs/mod'" in message
    message = await refused(http, registry, 400, name="ridge", run_id=registry.vision_run,
                            path="outputs/../notes.txt")
    assert message.startswith("field 'path' must stay inside the run's files")
    assert await all_models(http, registry) == []


async def test_another_workspaces_run_is_missing_for_a_workspace_token(
    http: aiohttp.ClientSession, registry: Registry
) -> None:
    for token, theirs in ((VISION, registry.nlp_run), (NLP, registry.vision_run)):
        message = await refused(http, registry, 404, token, name="stolen", run_id=theirs,
                                path="outputs")
        assert message == f"no run {theirs!r}"  # as for /v1/runs/{id}, and a missing run
        async with http.get(f"{registry.url}/v1/runs/{theirs}", headers=bearer(token)) as r:
            assert (r.status, (await r.json())["error"]["message"]) == (404, message)
    message = await refused(http, registry, 404, name="x", run_id="sweep_1_missing",
                            path="outputs")
    assert message == "no run 'sweep_1_missing'"
    status, model = await register(http, registry, BOTH, name="bert",
                                   run_id=registry.nlp_run, path="outputs")
    assert (status, model["workspace"], model["experiment"]) == (201, "nlp", "bert")
    assert [f["name"] for f in model["files"]] == ["outputs/tokenizer.json"]
    message = await refused(http, registry, 400, name="bert", run_id=registry.nlp_run,
                            path="outputs", workspace="vision")
    assert "is in workspace 'nlp'" in message
    assert await all_models(http, registry, VISION) == []


# -- registering local files ----------------------------------------------------------------


async def put_blob(http: aiohttp.ClientSession, reg: Registry, token: str, data: bytes,
                   **headers: str) -> str:
    async with http.put(f"{reg.url}/v1/blobs/{sha(data)}", data=data,
                        headers=bearer(token, **headers)) as r:
        assert r.status in (200, 201), await r.text()
    return sha(data)


async def test_local_files_must_be_blobs_the_workspace_uploaded(
    http: aiohttp.ClientSession, registry: Registry
) -> None:
    mine, theirs = b"vision's local model" * 100, b"nlp's local model" * 100
    await put_blob(http, registry, VISION, mine)
    await put_blob(http, registry, NLP, theirs)
    status, model = await register(
        http, registry, VISION, name="local", path="/home/me/model",
        files=[{"name": "model/w.bin", "sha256": sha(mine), "size_bytes": len(mine)}],
    )
    assert status == 201, model
    assert (model["workspace"], model["run_id"], model["experiment"]) == ("vision", None, None)
    assert model["files"] == [{"name": "model/w.bin", "sha256": sha(mine),
                               "size_bytes": len(mine)}]
    # Bytes only nlp uploaded are not vision's, even though the store has them.
    message = await refused(http, registry, 400, VISION, name="local", path="m",
                            files=[{"name": "w.bin", "sha256": sha(theirs)}])
    assert message == (f"file 'w.bin': no blob with sha256 {sha(theirs)} was uploaded by "
                       f"workspace 'vision'; upload it first with PUT /v1/blobs/{sha(theirs)}")
    message = await refused(http, registry, 400, VISION, name="local", path="m",
                            files=[{"name": "w.bin", "sha256": sha(mine), "size_bytes": 1}])
    assert message == (f"file 'w.bin': size_bytes is 1, but blob {sha(mine)} has "
                       f"{len(mine)} bytes")
    # The two-workspace token names one (field or header), else it is asked to.
    await put_blob(http, registry, BOTH, theirs, **{"X-Runstream-Workspace": "vision"})
    status, named = await register(http, registry, BOTH, name="local", path="m",
                                   workspace="vision", files=[{"name": "w.bin",
                                                               "sha256": sha(theirs)}])
    assert (status, named["version"], named["workspace"]) == (201, 2, "vision")
    message = await refused(http, registry, 400, BOTH, name="local", path="m",
                            files=[{"name": "w.bin", "sha256": sha(theirs)}])
    assert "this token grants several workspaces" in message
    message = await refused(http, registry, 403, NLP, name="local", path="m",
                            workspace="vision", files=[{"name": "w.bin", "sha256": sha(mine)}])
    assert message == "this token does not grant workspace 'vision'"
    # The admin token may use any stored blob; its models go to 'default' unless named.
    status, admin = await register(http, registry, ADMIN, name="local", path="m",
                                   files=[{"name": "w.bin", "sha256": sha(theirs)}])
    assert (status, admin["workspace"], admin["version"]) == (201, "default", 1)
    missing = hashlib.sha256(b"never uploaded").hexdigest()
    message = await refused(http, registry, 400, ADMIN, name="local", path="m",
                            files=[{"name": "w.bin", "sha256": missing}])
    assert message.startswith(f"file 'w.bin': no blob with sha256 {missing} was uploaded;")


# -- reading ---------------------------------------------------------------------------------


async def test_lists_latest_filters_and_pages(
    http: aiohttp.ClientSession, registry: Registry
) -> None:
    made: list[dict[str, Any]] = []
    for name in ("a", "b", "a", "c", "a", "b"):
        status, model = await register(http, registry, VISION, name=name,
                                       run_id=registry.vision_run, path="notes.txt")
        assert status == 201
        made.append(model)
    status, nlp_model = await register(http, registry, NLP, name="a", run_id=registry.nlp_run,
                                       path="outputs/tokenizer.json")
    assert status == 201
    newest_first = [(m["name"], m["version"]) for m in reversed(made)]
    for limit in (1, 2, 5, 100):
        listed = await all_models(http, registry, VISION, limit=limit)
        assert [(m["name"], m["version"]) for m in listed] == newest_first, limit
        assert listed == list(reversed(made))
    assert [(m["name"], m["version"]) for m in
            await all_models(http, registry, VISION, latest="true", limit=1)] == [
        ("b", 2), ("a", 3), ("c", 1)]
    assert [m["version"] for m in await all_models(http, registry, VISION, name="a")] == [
        3, 2, 1]
    assert await all_models(http, registry, NLP) == [nlp_model]
    assert len(await all_models(http, registry, ADMIN, run_id=registry.vision_run)) == 6
    assert await all_models(http, registry, BOTH, run_id=registry.nlp_run) == [nlp_model]
    assert len(await all_models(http, registry, BOTH, latest="true")) == 4
    assert await all_models(http, registry, ADMIN, workspace="nlp") == [nlp_model]
    body = await get(http, registry, "/v1/models", VISION, status=403, workspace="nlp")
    assert body["error"]["message"] == "this token does not grant workspace 'nlp'"
    body = await get(http, registry, "/v1/models", status=400, latest="yes")
    assert body["error"]["message"] == "parameter 'latest' must be true or false, got 'yes'"
    body = await get(http, registry, "/v1/models", status=400, cursor="bm9wZQ")
    assert body["error"]["message"].startswith("parameter 'cursor' is not a cursor")


async def test_missing_models_and_versions_are_404(
    http: aiohttp.ClientSession, registry: Registry
) -> None:
    status, _ = await register(http, registry, VISION, name="ridge",
                               run_id=registry.vision_run, path="notes.txt")
    assert status == 201
    for path, message in (
        ("/v1/models/nope", "no model 'nope'"),
        ("/v1/models/nope/versions/1", "no model 'nope'"),
        ("/v1/models/ridge/versions/2", "no version 2 of model 'ridge'"),
        ("/v1/models/ridge/versions/0", "no version 0 of model 'ridge'"),
        ("/v1/models/ridge/versions/x", "no version x of model 'ridge'"),
        ("/v1/models/ridge/versions/\u00b2", "no version \u00b2 of model 'ridge'"),
        ("/v1/models/ridge/versions/99999999999", "no version 99999999999 of model 'ridge'"),
        ("/v1/models/ridge/versions/1/files/other.txt",
         "version 1 of model 'ridge' has no file 'other.txt'"),
    ):
        body = await get(http, registry, path, VISION, status=404)
        assert body["error"]["message"] == message, path
    # Another workspace's model is not there for this token (nor for the admin's default).
    body = await get(http, registry, "/v1/models/ridge", NLP, status=404)
    assert body["error"]["message"] == "no model 'ridge'"
    await get(http, registry, "/v1/models/ridge", ADMIN, status=404)
    await get(http, registry, "/v1/models/ridge", NLP, status=403, workspace="vision")
    await get(http, registry, "/v1/models/ridge", BOTH, status=400)


async def test_download_a_models_files(http: aiohttp.ClientSession, registry: Registry) -> None:
    status, model = await register(http, registry, VISION, name="ensemble",
                                   run_id=registry.vision_run, path="outputs/model")
    assert status == 201
    for f in model["files"]:
        url = f"{registry.url}{model['url']}/files/{f['name']}"
        async with http.get(url, headers=bearer(VISION)) as r:
            data = await r.read()
            assert r.status == 200, data[:200]
            assert r.headers["Content-Type"] == "application/octet-stream"
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            assert "sandbox" in r.headers["Content-Security-Policy"]
            assert r.headers["ETag"] == f'"{f["sha256"]}"'
        assert (hashlib.sha256(data).hexdigest(), len(data)) == (f["sha256"], f["size_bytes"])
        assert data == VISION_FILES[f"outputs/{f['name']}"]
    async with http.get(f"{registry.url}{model['url']}/files/model/a.bin",
                        headers=bearer(NLP)) as r:
        assert r.status == 404
    # Prometheus labels are route templates, never a model's name or file.
    async with http.get(f"{registry.url}/metrics", headers=bearer(ADMIN)) as r:
        metrics = await r.text()
    assert 'route="/v1/models/{name}/versions/{version}/files/{file_name}"' in metrics
    assert 'route="/v1/models"' in metrics
    assert "ensemble" not in metrics
    assert "a.bin" not in metrics


async def test_bad_fields_are_400_naming_the_field(
    http: aiohttp.ClientSession, registry: Registry
) -> None:
    run = {"run_id": registry.vision_run, "path": "notes.txt"}
    for body, field in (
        ({"name": "-ridge", **run}, "'name'"),
        ({"name": "ridge model", **run}, "'name'"),
        ({"name": "r" * 256, **run}, "'name'"),
        ({"name": "ridgé", **run}, "'name'"),
        ({"name": "ridge", "run_id": registry.vision_run}, "'path'"),
        ({"name": "ridge", **run, "registration_id": "nope"}, "'registration_id'"),
        ({"name": "ridge", **run, "tags": {"a": 1}}, "'tags'"),
        ({"name": "ridge", **run, "tags": ["a"]}, "'tags'"),
        ({"name": "ridge", **run, "properties": {str(i): "v" for i in range(101)}},
         "'properties'"),
        ({"name": "ridge", **run, "properties": {"big": "x" * 8193}}, "'properties.big'"),
        ({"name": "ridge", **run, "description": "d" * 8193}, "'description'"),
        ({"name": "ridge", **run, "description": 5}, "'description'"),
        ({"name": "ridge", **run, "tag": {}}, "'tag'"),
        ({"name": "ridge", "path": "m"}, "'files'"),
        ({"name": "ridge", **run, "files": []}, "'files'"),
        ({"name": "ridge", "path": "m", "files": [{"name": "../w", "sha256": "0" * 64}]},
         "'files[0].name'"),
        ({"name": "ridge", "path": "m", "files": [{"name": "w", "sha256": "ABC"}]},
         "'files[0].sha256'"),
        ({"name": "ridge", "path": "m", "files": [{"name": "w", "sha256": "0" * 64,
                                                   "size_bytes": -1}]},
         "'files[0].size_bytes'"),
        ({"name": "ridge", "path": "m", "files": [{"name": "w", "sha256": "0" * 64}] * 2},
         "'files'"),
        ({"name": "ridge", "path": "m\x00", "files": [{"name": "w", "sha256": "0" * 64}]},
         "'path'"),
    ):
        message = await refused(http, registry, 400, **body)
        assert field in message, (body, message)
    async with http.post(f"{registry.url}/v1/models", data=b"[1, 2",
                         headers=bearer(ADMIN)) as r:
        assert r.status == 400
        assert (await r.json())["error"]["message"] == "the body must be a JSON object"
    assert await all_models(http, registry) == []


async def test_the_models_view_is_public(registry: Registry, http: aiohttp.ClientSession) -> None:
    status, _ = await register(http, registry, VISION, name="ridge",
                               run_id=registry.vision_run, path="outputs/ridge_0.40.pkl")
    assert status == 201
    rows = await fetch(registry.dsn, "SELECT * FROM runstream.models")
    assert len(rows) == 1
    assert list(rows[0]) == ["workspace", "name", "version", "run_id", "experiment", "path",
                             "files", "tags", "properties", "description", "created_at"]
    assert (rows[0]["name"], rows[0]["version"], rows[0]["run_id"]) == (
        "ridge", 1, registry.vision_run)
