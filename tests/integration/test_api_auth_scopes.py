"""Workspace-scoped API tokens against the real server and PostgreSQL (ingest/api/auth.py).

Two workspaces, ``vision`` and ``nlp``, each with a run on the shared compute target
``gpu`` (metrics, a file, log lines). Tokens: an admin token, one per workspace, and one
that grants both. A token for one workspace must not read (runs, lists, files, metrics,
live events, blobs by digest) or write (blob claims) the other; without a token: 401,
with an unknown one: 403.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from ingest.api.app import create_app
from ingest.api.blobstore import BlobStore
from ingest.bench.events import EventFactory, packed_series
from ingest.bench.read import store_events
from ingest.server import HttpServer
from ingest.settings import Secret
from producer import BlobUploadError
from producer._blobs import put_blob
from tests.integration.helpers import NewDb, run_id
from tests.reliability import SECURITY, Reliability

pytestmark = pytest.mark.integration

ADMIN_TOKEN = "admin-token-0123456789"  # noqa: S105 - test credentials
VISION_TOKEN = "vision-token-abcdef"  # noqa: S105
NLP_TOKEN = "nlp-token-ghijkl"  # noqa: S105
BOTH_TOKEN = "both-token-mnopqr"  # noqa: S105
SECRET_FILE = b"vision's private weights\n" * 50


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Scoped:
    def __init__(self, url: str, vision_run: str, nlp_run: str) -> None:
        self.url = url
        self.vision_run = vision_run
        self.nlp_run = nlp_run


@contextlib.asynccontextmanager
async def scoped_api(dsn: str, blob_root: Path) -> AsyncIterator[Scoped]:
    blobs = BlobStore(root=blob_root)
    vision, nlp = run_id("alpha"), run_id("beta")
    events: list[dict[str, Any]] = []
    now = time.time_ns() // 1000
    for rid, workspace in ((vision, "vision"), (nlp, "nlp")):
        f = EventFactory(rid, experiment=rid.split("_")[0], workspace=workspace)
        data = SECRET_FILE if workspace == "vision" else b"nlp notes\n"
        await blobs.put(sha(data), _chunks(data))
        events += [
            f.lifecycle("Running", compute_target="gpu", ts_us=now - 10_000_000),
            f.metrics(packed_series("loss", [0.5, 0.25], steps=[0, 1]), ts_us=now - 9_000_000),
            f.artifact("outputs/model.bin", sha(data), len(data), ts_us=now - 8_000_000),
            f.log_lines("stdout", [f"hello from {workspace}"], ts_us=now - 7_000_000),
            f.tag("team", workspace, ts_us=now - 6_000_000),
        ]
    await store_events(dsn, events)
    app = create_app(
        blob_store=blobs,
        registry=CollectorRegistry(),
        token=Secret(ADMIN_TOKEN),
        workspace_tokens={
            "vision": (Secret(VISION_TOKEN), Secret(BOTH_TOKEN)),
            "nlp": (Secret(NLP_TOKEN), Secret(BOTH_TOKEN)),
        },
        db_dsn=Secret(dsn),
    )
    async with HttpServer(app, host="127.0.0.1", port=0) as server:
        yield Scoped(server.url, vision, nlp)


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


@pytest.fixture
async def api(new_db: NewDb, tmp_path: Path) -> AsyncIterator[Scoped]:
    async with scoped_api(await new_db(), tmp_path / "blobs") as a:
        yield a


async def answer(
    http: aiohttp.ClientSession, method: str, url: str, token: str | None, **kw: Any
) -> tuple[int, Any]:
    headers = {**kw.pop("headers", {}), **({} if token is None else bearer(token))}
    async with http.request(method, url, headers=headers, **kw) as r:
        if r.content_type == "application/json":
            return r.status, await r.json()
        return r.status, await r.read()


RUN_ROUTES = ["", "/children", "/files", "/files/outputs/model.bin", "/logs", "/metrics",
              "/metrics/loss", "/events"]  # fmt: skip


async def test_no_token_is_401_and_unknown_token_is_403(
    http: aiohttp.ClientSession, api: Scoped
) -> None:
    digest = sha(SECRET_FILE)
    paths = ["/v1/runs", "/v1/experiments", "/v1/compute", "/v1/compute/gpu", "/metrics",
             "/v1/openapi.json", f"/v1/blobs/{digest}", "/v1/runs/nope", "/no/such/path",
             *(f"/v1/runs/{api.vision_run}{suffix}" for suffix in RUN_ROUTES)]  # fmt: skip
    for path in paths:
        async with http.get(api.url + path) as r:
            assert r.status == 401, path
            assert r.headers["WWW-Authenticate"] == 'Bearer realm="runstream"'
            assert (await r.json())["error"]["message"] == "missing bearer token"
        for wrong in ("nope", VISION_TOKEN + "x", VISION_TOKEN[:-1], f"{ADMIN_TOKEN}."):
            async with http.get(api.url + path, headers=bearer(wrong)) as r:
                assert r.status == 403, (path, wrong)
                assert (await r.json())["error"]["message"] == "invalid bearer token"
        async with http.get(api.url + path, headers={"Authorization": f"Basic {ADMIN_TOKEN}"}) as r:
            assert r.status == 401, path
    status, _ = await answer(http, "PUT", f"{api.url}/v1/blobs/{sha(b'x')}", None, data=b"x")
    assert status == 401
    status, _ = await answer(http, "PUT", f"{api.url}/v1/blobs/{sha(b'x')}", "bad", data=b"x")
    assert status == 403
    for probe in ("/healthz", "/readyz"):
        async with http.get(api.url + probe) as r:
            assert r.status == 200, probe


async def test_a_workspace_token_reads_only_its_workspace(
    http: aiohttp.ClientSession, api: Scoped, reliability: Reliability
) -> None:
    crossing = 0  # requests with one workspace's token for the other's data
    for token, mine, theirs, workspace in (
        (VISION_TOKEN, api.vision_run, api.nlp_run, "vision"),
        (NLP_TOKEN, api.nlp_run, api.vision_run, "nlp"),
    ):
        status, runs = await answer(http, "GET", f"{api.url}/v1/runs", token)
        assert status == 200
        assert [r["run_id"] for r in runs["runs"]] == [mine]
        status, exps = await answer(http, "GET", f"{api.url}/v1/experiments", token)
        assert [(e["name"], e["workspace"]) for e in exps["experiments"]] == [
            (mine.split("_")[0], workspace)
        ]
        other = "nlp" if workspace == "vision" else "vision"
        status, body = await answer(http, "GET", f"{api.url}/v1/runs?workspace={other}", token)
        assert status == 403
        assert body["error"]["message"] == f"this token does not grant workspace {other!r}"
        status, gpu = await answer(http, "GET", f"{api.url}/v1/compute/gpu", token)
        assert status == 200
        assert gpu["running"] == 2  # queue counts are cluster-wide
        assert [r["run_id"] for r in gpu["active_runs"]] == [mine]
        for suffix in RUN_ROUTES:
            crossing += 1
            status, body = await answer(http, "GET", f"{api.url}/v1/runs/{theirs}{suffix}", token)
            assert status == 404, suffix
            # The same answer as for a run that does not exist.
            assert body["error"]["message"] == f"no run {theirs!r}", suffix
            if suffix != "/events":  # a stream: checked below
                status, _ = await answer(http, "GET", f"{api.url}/v1/runs/{mine}{suffix}", token)
                assert status == 200, suffix
        async with http.get(f"{api.url}/v1/runs/{mine}/events", headers=bearer(token)) as r:
            assert r.status == 200
            assert r.content_type == "text/event-stream"
        status, tags = await answer(http, "GET", f"{api.url}/v1/runs/{mine}", token)
        assert tags["tags"] == {"team": workspace}
        status, missing = await answer(http, "GET", f"{api.url}/v1/runs/exp_1_nope", token)
        assert (status, missing["error"]["message"]) == (404, "no run 'exp_1_nope'")
        # Many runs' series at once: the other's run is missing exactly like a missing one.
        crossing += 1
        status, many = await answer(
            http, "GET", f"{api.url}/v1/series?name=loss&run_id={theirs}&run_id={mine}"
            "&run_id=exp_1_nope", token)
        assert status == 200
        got = many["series"]
        assert [s["run_id"] for s in got] == [theirs, mine, "exp_1_nope"]
        assert got[0] == {"run_id": theirs, "name": "loss", "missing": f"no run {theirs!r}"}
        assert [p["value"] for p in got[1]["points"]] == [0.5, 0.25]
        assert got[2] == {"run_id": "exp_1_nope", "name": "loss",
                          "missing": "no run 'exp_1_nope'"}
    reliability.record(
        guarantee="a token for workspace A cannot read B: B's runs answer 404 exactly like "
        "missing ones, lists are filtered, asking for B is 403",
        faults=f"{crossing} cross-workspace requests on every /v1/runs/{{id}} route (SSE too) "
        "and /v1/series, plus lists, experiments, compute targets and ?workspace= of the other",
        section=SECURITY,
        notes="0 answered with the other workspace's data (every one asserted)",
    )


async def test_admin_and_two_workspace_tokens_read_both(
    http: aiohttp.ClientSession, api: Scoped
) -> None:
    for token in (ADMIN_TOKEN, BOTH_TOKEN):
        status, runs = await answer(http, "GET", f"{api.url}/v1/runs", token)
        assert status == 200
        assert {r["run_id"] for r in runs["runs"]} == {api.vision_run, api.nlp_run}
        status, gpu = await answer(http, "GET", f"{api.url}/v1/compute/gpu", token)
        assert {r["run_id"] for r in gpu["active_runs"]} == {api.vision_run, api.nlp_run}
        for rid in (api.vision_run, api.nlp_run):
            path = f"/v1/runs/{rid}/files/outputs/model.bin"
            status, _ = await answer(http, "GET", api.url + path, token)
            assert status == 200


async def test_a_digest_is_not_a_capability_across_workspaces(
    http: aiohttp.ClientSession, api: Scoped
) -> None:
    digest = sha(SECRET_FILE)
    blob = f"{api.url}/v1/blobs/{digest}"
    # The admin stored it (via build); no workspace has sent these bytes itself yet.
    for method in ("GET", "HEAD"):
        status, _ = await answer(http, method, blob, NLP_TOKEN)
        assert status == 404, method
    assert (await answer(http, "GET", blob, ADMIN_TOKEN))[0] == 200
    # vision uploads the bytes: for vision they are new, and then readable by digest.
    status, body = await answer(http, "PUT", blob, VISION_TOKEN, data=SECRET_FILE)
    assert (status, body["created"]) == (201, True)
    status, data = await answer(http, "GET", blob, VISION_TOKEN)
    assert (status, data) == (200, SECRET_FILE)
    status, _ = await answer(http, "PUT", blob, VISION_TOKEN, data=SECRET_FILE)
    assert status == 200
    # nlp still cannot probe them; an Expect: 100-continue upload must send the body
    # (no early "exists"), and a wrong body is refused without a claim.
    assert (await answer(http, "HEAD", blob, NLP_TOKEN))[0] == 404
    status, _ = await answer(http, "PUT", blob, NLP_TOKEN, data=b"guess")
    assert status == 400
    assert (await answer(http, "GET", blob, NLP_TOKEN))[0] == 404
    status, body = await answer(http, "PUT", blob, NLP_TOKEN, data=SECRET_FILE, expect100=True)
    assert (status, body["created"]) == (201, True)
    assert (await answer(http, "GET", blob, NLP_TOKEN))[1] == SECRET_FILE
    # Naming another workspace is refused; a token of two workspaces must name one.
    other = sha(b"other bytes")
    status, body = await answer(http, "PUT", f"{api.url}/v1/blobs/{other}", NLP_TOKEN,
                                data=b"other bytes", headers={"X-Runstream-Workspace": "vision"})
    assert status == 403
    assert body["error"]["message"] == "this token does not grant workspace 'vision'"
    status, body = await answer(http, "PUT", f"{api.url}/v1/blobs/{other}", BOTH_TOKEN,
                                data=b"other bytes")
    assert status == 400
    assert "X-Runstream-Workspace" in body["error"]["message"]
    status, _ = await answer(http, "PUT", f"{api.url}/v1/blobs/{other}", BOTH_TOKEN,
                             data=b"other bytes", headers={"X-Runstream-Workspace": "nlp"})
    assert status == 201
    assert (await answer(http, "GET", f"{api.url}/v1/blobs/{other}", NLP_TOKEN))[0] == 200
    assert (await answer(http, "GET", f"{api.url}/v1/blobs/{other}", VISION_TOKEN))[0] == 404


async def test_the_sdk_names_its_workspace_on_uploads(api: Scoped, tmp_path: Path) -> None:
    data = b"sdk bytes for nlp"
    staged = tmp_path / sha(data)
    staged.write_bytes(data)

    def upload(workspace: str) -> int:
        return put_blob(api.url, sha(data), staged, token=BOTH_TOKEN, timeout_s=10,
                        workspace=workspace)  # fmt: skip

    with pytest.raises(BlobUploadError) as refused:
        await asyncio.to_thread(upload, "")
    assert refused.value.status == 400
    assert await asyncio.to_thread(upload, "nlp") == 201
    async with aiohttp.ClientSession() as http:
        assert (await answer(http, "GET", f"{api.url}/v1/blobs/{sha(data)}", NLP_TOKEN))[1] == data
        status, _ = await answer(http, "GET", f"{api.url}/v1/blobs/{sha(data)}", VISION_TOKEN)
        assert status == 404
