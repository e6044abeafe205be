"""The API through its real server on 127.0.0.1 (ephemeral port), with aiohttp's client."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from ingest.api.app import ReadinessCheck, create_app, run_api
from ingest.api.blobstore import TEMP_MAX_AGE_S, TEMP_PREFIX, TEMP_SUFFIX, BlobStore
from ingest.api.http import error_middleware
from ingest.server import HttpServer
from ingest.settings import Secret, Settings
from tests.integration.api_servers import API_TOKEN, BLOB, Api, ApiFactory, error_of
from tests.integration.helpers import logged_url

pytestmark = pytest.mark.integration

def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def files_under(root: Path) -> list[Path]:
    if not root.exists():
        return []
    return sorted(Path(d) / f for d, _, names in os.walk(root) for f in names)


async def one_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Poll a filesystem condition (there is no event to wait on)."""
    for _ in range(int(timeout_s / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    pytest.fail("condition not reached in time")


# -- blobs ------------------------------------------------------------------------------


async def test_upload_then_download_round_trip(api: Api, http: aiohttp.ClientSession) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)  # several write buffers and read chunks
    digest = sha(data)

    async with http.put(api.blob_url(digest), data=io.BytesIO(data)) as r:
        assert r.status == 201
        assert await r.json() == {"sha256": digest, "size_bytes": len(data), "created": True}

    async with http.get(api.blob_url(digest)) as r:
        assert r.status == 200
        assert r.headers["Content-Length"] == str(len(data))
        assert r.headers["Content-Type"] == "application/octet-stream"
        assert r.headers["ETag"] == f'"{digest}"'
        assert await r.read() == data

    async with http.head(api.blob_url(digest)) as r:
        assert r.status == 200
        assert r.headers["Content-Length"] == str(len(data))
        assert await r.read() == b""

    async with http.get(api.blob_url(digest), headers={"If-None-Match": f'"{digest}"'}) as r:
        assert r.status == 304

    stored = api.store.root / digest[:2] / digest[2:4] / digest
    assert files_under(api.store.root) == [stored]
    assert stored.read_bytes() == data


async def test_chunked_upload_of_unknown_length(api: Api, http: aiohttp.ClientSession) -> None:
    parts = [os.urandom(100_000) for _ in range(15)]
    data = b"".join(parts)

    async def body() -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    async with http.put(api.blob_url(sha(data)), data=body()) as r:
        assert r.status == 201
    assert await api.store.read_bytes(sha(data)) == data


async def test_empty_blob(api: Api, http: aiohttp.ClientSession) -> None:
    async with http.put(api.blob_url(sha(b"")), data=b"") as r:
        assert r.status == 201
    async with http.get(api.blob_url(sha(b""))) as r:
        assert r.status == 200
        assert await r.read() == b""


async def test_reupload_is_idempotent(api: Api, http: aiohttp.ClientSession) -> None:
    data = b"model weights"
    statuses = []
    for _ in range(2):
        async with http.put(api.blob_url(sha(data)), data=data) as r:
            statuses.append(r.status)
            assert (await r.json())["size_bytes"] == len(data)
    # With Expect: 100-continue the server answers before the body is sent.
    async with http.put(api.blob_url(sha(data)), data=data, expect100=True) as r:
        statuses.append(r.status)
        assert (await r.json())["created"] is False
    assert statuses == [201, 200, 200]
    assert len(files_under(api.store.root)) == 1


async def test_expect_continue_upload_of_a_new_blob(api: Api, http: aiohttp.ClientSession) -> None:
    data = b"fresh bytes"
    async with http.put(api.blob_url(sha(data)), data=data, expect100=True) as r:
        assert r.status == 201
    assert await api.store.read_bytes(sha(data)) == data


async def test_digest_mismatch_is_400_and_stores_nothing(
    api: Api, http: aiohttp.ClientSession
) -> None:
    claimed = sha(b"what the client meant")
    async with http.put(api.blob_url(claimed), data=b"what it sent") as r:
        assert r.status == 400
        assert sha(b"what it sent") in (await error_of(r))["message"]
    assert files_under(api.store.root) == []
    async with http.get(api.blob_url(claimed)) as r:
        assert r.status == 404


async def test_declared_oversize_is_413_and_stores_nothing(
    api_factory: ApiFactory, http: aiohttp.ClientSession
) -> None:
    api = await api_factory(max_blob_bytes=1024)
    exactly = b"x" * 1024
    async with http.put(api.blob_url(sha(exactly)), data=exactly) as r:
        assert r.status == 201
    over = b"y" * 1025
    async with http.put(api.blob_url(sha(over)), data=over) as r:
        assert r.status == 413
        assert "1024" in (await error_of(r))["message"]
    assert files_under(api.store.root) == [api.store.path_for(sha(exactly))]


async def test_oversize_stream_is_refused_before_it_ends(
    api_factory: ApiFactory, http: aiohttp.ClientSession
) -> None:
    api = await api_factory(max_blob_bytes=64 * 1024)
    body_may_end = asyncio.Event()

    async def endless_until_told() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield b"z" * 16 * 1024
        # 128 KiB sent, twice the limit; the answer must come while we wait here.
        await body_may_end.wait()

    async with asyncio.timeout(10):
        async with http.put(api.blob_url("0" * 64), data=endless_until_told()) as r:
            assert not body_may_end.is_set()
            assert r.status == 413
            await error_of(r)
            body_may_end.set()
    assert files_under(api.store.root) == []


@pytest.mark.parametrize(
    "digest",
    ["ABCDEF" + "0" * 58, "0" * 63, "0" * 65, "x" * 64, "not-a-digest"],
)
async def test_malformed_digest_is_400(api: Api, http: aiohttp.ClientSession, digest: str) -> None:
    async with http.put(api.blob_url(digest), data=b"abc") as r:
        assert r.status == 400
        assert "64 lowercase hex" in (await error_of(r))["message"]
    async with http.get(api.blob_url(digest)) as r:
        assert r.status == 400
    assert files_under(api.store.root) == []


async def test_missing_blob_is_404_json(api: Api, http: aiohttp.ClientSession) -> None:
    async with http.get(api.blob_url("a" * 64)) as r:
        assert r.status == 404
        await error_of(r)
    async with http.head(api.blob_url("a" * 64)) as r:
        assert r.status == 404


async def test_client_vanishing_mid_upload_leaves_nothing(api: Api) -> None:
    digest = sha(b"never completes")
    reader, writer = await asyncio.open_connection("127.0.0.1", int(api.url.rsplit(":", 1)[1]))
    writer.write(
        f"PUT {BLOB}{digest} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n".encode()
        + b"a" * 10_000
    )
    await writer.drain()
    await wait_until(
        lambda: any(p.name.startswith(TEMP_PREFIX) for p in files_under(api.store.root))
    )
    writer.close()
    await writer.wait_closed()
    await wait_until(lambda: not files_under(api.store.root))
    assert await reader.read() == b""


async def test_concurrent_uploads(api: Api, http: aiohttp.ClientSession) -> None:
    blobs = [os.urandom(200_000) for _ in range(6)]

    async def put(data: bytes) -> int:
        async with http.put(api.blob_url(sha(data)), data=data) as r:
            return r.status

    statuses = await asyncio.gather(*(put(b) for b in [*blobs, *blobs]))
    assert set(statuses) <= {200, 201}
    assert sorted(files_under(api.store.root)) == sorted(api.store.path_for(sha(b)) for b in blobs)
    for data in blobs:
        assert await api.store.read_bytes(sha(data)) == data


# -- errors, auth ---------------------------------------------------------------------


async def test_unknown_route_is_404_json(api: Api, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{api.url}/v1/nope") as r:
        assert r.status == 404
        assert (await error_of(r))["message"] == "Not Found"


async def test_wrong_method_is_405_json_with_allow(api: Api, http: aiohttp.ClientSession) -> None:
    async with http.delete(api.blob_url("a" * 64)) as r:
        assert r.status == 405
        await error_of(r)
        assert set(r.headers["Allow"].split(",")) == {"GET", "HEAD", "PUT"}
    async with http.post(f"{api.url}/healthz") as r:
        assert r.status == 405
        await error_of(r)


async def test_unexpected_error_is_500_json_without_traceback(
    http: aiohttp.ClientSession,
) -> None:
    async def broken(request: web.Request) -> web.StreamResponse:
        raise RuntimeError("secret internals")

    app = web.Application(middlewares=[error_middleware()])
    app.router.add_get("/broken", broken)
    async with HttpServer(app, port=0) as server, http.get(f"{server.url}/broken") as r:
        assert r.status == 500
        assert "secret internals" not in (await error_of(r))["message"]


async def test_auth_on(api_factory: ApiFactory, http: aiohttp.ClientSession) -> None:
    api = await api_factory(token=API_TOKEN)
    data = b"guarded"
    good = {"Authorization": f"Bearer {API_TOKEN}"}
    bad = {"Authorization": "Bearer nope"}

    async with http.put(api.blob_url(sha(data)), data=data) as r:
        assert r.status == 401
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        await error_of(r)
    async with http.put(api.blob_url(sha(data)), data=data, headers=bad) as r:
        assert r.status == 403
        await error_of(r)
    assert files_under(api.store.root) == []
    async with http.put(api.blob_url(sha(data)), data=data, headers=good) as r:
        assert r.status == 201
    async with http.get(api.blob_url(sha(data))) as r:
        assert r.status == 401
    async with http.get(api.blob_url(sha(data)), headers=good) as r:
        assert await r.read() == data

    for path in ("/metrics", "/v1/openapi.json", "/v1/nope"):
        async with http.get(api.url + path) as r:
            assert r.status == 401, path
    async with http.get(f"{api.url}/v1/nope", headers=good) as r:
        assert r.status == 404
    for path in ("/healthz", "/readyz"):
        async with http.get(api.url + path) as r:
            assert r.status == 200, path


async def test_auth_off_needs_no_header(api: Api, http: aiohttp.ClientSession) -> None:
    async with http.put(api.blob_url(sha(b"open")), data=b"open") as r:
        assert r.status == 201
    async with http.get(f"{api.url}/metrics") as r:
        assert r.status == 200


# -- probes, metrics, openapi -----------------------------------------------------------


async def test_healthz_and_readyz(api: Api, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{api.url}/healthz") as r:
        assert r.status == 200
        assert await r.json() == {"status": "ok"}
    async with http.get(f"{api.url}/readyz") as r:
        assert r.status == 200
        assert await r.json() == {"status": "ready", "checks": {"blobs": "ok"}}


async def test_readyz_fails_when_blob_dir_is_not_writable(
    api_factory: ApiFactory, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    not_a_dir = tmp_path / "occupied"
    not_a_dir.write_bytes(b"a file where the blob directory should be")
    api = await api_factory(blob_root=not_a_dir)
    async with http.get(f"{api.url}/readyz") as r:
        assert r.status == 503
        body = await r.json()
        assert body["checks"] == {"blobs": "failed"}
        assert str(tmp_path) not in json.dumps(body)
    async with http.get(f"{api.url}/healthz") as r:
        assert r.status == 200


async def test_readyz_runs_extra_checks_with_a_timeout(
    api_factory: ApiFactory, http: aiohttp.ClientSession
) -> None:
    async def reachable() -> None:
        return None

    async def hangs() -> None:
        await asyncio.sleep(3600)

    async def refuses() -> None:
        raise ConnectionRefusedError("db down")

    api = await api_factory(
        readiness_checks=[
            ReadinessCheck("db", reachable),
            ReadinessCheck("kafka", hangs),
            ReadinessCheck("cache", refuses),
        ],
        readiness_timeout_s=0.2,
    )
    async with asyncio.timeout(5), http.get(f"{api.url}/readyz") as r:
        assert r.status == 503
        assert (await r.json())["checks"] == {
            "blobs": "ok",
            "db": "ok",
            "kafka": "failed",
            "cache": "failed",
        }


async def test_metrics_label_by_route_template_never_by_digest(
    api: Api, http: aiohttp.ClientSession
) -> None:
    data = b"count me"
    digest = sha(data)
    async with http.put(api.blob_url(digest), data=data) as r:
        assert r.status == 201
    async with http.get(api.blob_url(digest)) as r:
        await r.read()
    async with http.get(f"{api.url}/no/such/{digest}") as r:
        assert r.status == 404

    async with http.get(f"{api.url}/metrics") as r:
        assert r.status == 200
        assert r.content_type == "text/plain"
        text = await r.text()
    assert digest not in text
    assert "/no/such" not in text
    assert (
        'runstream_http_requests_total{method="PUT",route="/v1/blobs/{sha256}",status="201"} 1.0'
        in text
    )
    assert (
        'runstream_http_requests_total{method="GET",route="/v1/blobs/{sha256}",status="200"} 1.0'
        in text
    )
    assert 'runstream_http_requests_total{method="GET",route="unmatched",status="404"} 1.0' in text
    assert 'runstream_http_request_seconds_count{route="/v1/blobs/{sha256}"} 2.0' in text
    assert 'runstream_blob_uploads_total{outcome="created"} 1.0' in text
    assert f"runstream_blob_received_bytes_total {float(len(data))}" in text


async def test_openapi_document_is_served(api: Api, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{api.url}/v1/openapi.json") as r:
        assert r.status == 200
        doc = await r.json()
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]["/v1/blobs/{sha256}"]) == {"get", "head", "put"}
    assert {"/healthz", "/readyz", "/metrics", "/v1/openapi.json"} <= doc["paths"].keys()


async def test_stale_upload_temp_files_are_swept_when_the_api_starts(tmp_path: Path) -> None:
    store = BlobStore(root=tmp_path / "blobs")
    data = b"kept"
    await store.put(sha(data), one_chunk(data))
    shard = store.path_for(sha(data)).parent
    stale = shard / f"{TEMP_PREFIX}killed{TEMP_SUFFIX}"
    fresh = shard / f"{TEMP_PREFIX}live{TEMP_SUFFIX}"
    for temp in (stale, fresh):
        temp.write_bytes(b"half an upload")
    hour_ago = time.time() - TEMP_MAX_AGE_S - 60
    os.utime(stale, (hour_ago, hour_ago))
    elsewhere = tmp_path / "blobs" / "not-a-shard" / f"{TEMP_PREFIX}x{TEMP_SUFFIX}"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(b"")
    os.utime(elsewhere, (hour_ago, hour_ago))

    app = create_app(blob_store=store, registry=CollectorRegistry())
    async with HttpServer(app, host="127.0.0.1", port=0):
        for _ in range(100):
            if not stale.exists():
                break
            await asyncio.sleep(0.05)
    assert not stale.exists()
    assert fresh.exists()  # an upload in progress keeps its file
    assert elsewhere.exists()  # only the blob store's own shard directories are swept
    assert await store.read_bytes(sha(data)) == data
    assert store.sweep_temp() == 0
    assert store.sweep_temp(older_than_s=-1) == 1  # the fresh one, once it is old enough


async def test_server_start_and_stop_are_idempotent() -> None:
    app = create_app(blob_store=BlobStore(root=Path("/nonexistent")), registry=CollectorRegistry())
    server = HttpServer(app, port=0)
    await server.start()
    await server.start()
    port = server.port
    assert port != 0
    async with aiohttp.ClientSession() as http, http.get(f"{server.url}/healthz") as r:
        assert r.status == 200
    await server.stop()
    await server.stop()
    with pytest.raises(aiohttp.ClientConnectionError):
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/healthz"):
            pass


async def test_run_api_serves_settings_home_and_token_until_stopped(
    tmp_path: Path, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ingest.server")
    settings = Settings(home=tmp_path, token=Secret(API_TOKEN))
    stop = asyncio.Event()
    # Port 0: the server binds a free port itself and logs which one it got.
    task = asyncio.create_task(run_api(settings, port=0, max_blob_bytes=16, stop=stop))
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    try:
        url = await logged_url(caplog, "API", task)
        await wait_for_http(http, f"{url}/healthz")
        async with http.put(f"{url}{BLOB}{sha(b'tiny')}", data=b"tiny", headers=auth) as r:
            assert r.status == 201
        async with http.put(f"{url}{BLOB}{sha(b'x' * 17)}", data=b"x" * 17, headers=auth) as r:
            assert r.status == 413
        async with http.get(f"{url}/metrics") as r:
            assert r.status == 401
        async with http.get(f"{url}/metrics", headers=auth) as r:
            assert "process_resident_memory_bytes" in await r.text()
    finally:
        stop.set()
        async with asyncio.timeout(10):
            await task
    assert files_under(tmp_path / "blobs") == [
        BlobStore(root=tmp_path / "blobs").path_for(sha(b"tiny"))
    ]
    with pytest.raises(aiohttp.ClientConnectionError):
        async with http.get(f"{url}/healthz"):
            pass


async def wait_for_http(http: aiohttp.ClientSession, url: str, timeout_s: float = 5.0) -> None:
    for _ in range(int(timeout_s / 0.02)):
        try:
            async with http.get(url) as r:
                if r.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.02)
    pytest.fail(f"{url} never answered")
