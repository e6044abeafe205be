"""The API's limits and path handling, through its real server with raw HTTP/1.1 requests.

Requests are written byte for byte on a socket (no client library normalises ``..`` or
re-quotes a path), against an API over a real database holding one run whose artifacts
have hostile but legal names, and a blob store whose parent directory holds a secret
file. Every answer is checked for what a user would see: a 4xx (JSON when the app
answers; aiohttp's own parser answers over-long request lines and headers in plain
text), never a 5xx, never the bytes of a file outside the blob store.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest
from prometheus_client import CollectorRegistry

from ingest.api.app import create_app
from ingest.api.blobstore import BlobStore
from ingest.bench.events import EventFactory
from ingest.bench.read import store_events
from ingest.server import HttpServer
from ingest.settings import Secret
from tests.integration.helpers import NewDb, run_id

pytestmark = pytest.mark.integration

MAX_BLOB_BYTES = 64 * 1024
#: aiohttp's default bound of the request line and of each header line.
MAX_LINE_BYTES = 8190


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def error(self) -> str:
        """The message of a JSON error answer, after checking its shape."""
        assert self.headers.get("content-type", "").startswith("application/json"), self
        document = json.loads(self.body)
        assert set(document) == {"error"}, document
        assert document["error"]["status"] == self.status
        message: str = document["error"]["message"]
        assert "Traceback" not in message
        return message


@dataclass
class LimitsApi:
    host: str
    port: int
    blobs: BlobStore
    run: str
    secret: bytes
    secret_path: Path
    files: dict[str, bytes] = field(default_factory=dict)

    async def request(
        self,
        target: str,
        *,
        method: str = "GET",
        headers: Sequence[tuple[str, str]] = (),
        body: bytes | None = None,
    ) -> Answer:
        """One request with ``target`` sent exactly as given; the whole answer."""
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in headers]
        lines.append("Connection: close")
        framed = {k.lower() for k, _ in headers} & {"content-length", "transfer-encoding"}
        if body is not None and not framed:
            lines.append(f"Content-Length: {len(body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            writer.write(head + (body or b""))
            await writer.drain()
            async with asyncio.timeout(20):
                return await read_answer(reader)
        finally:
            # Abort: a body the server refused unread would otherwise keep us flushing.
            writer.transport.abort()

    def file_target(self, raw_name: str) -> str:
        return f"/v1/runs/{self.run}/files/{raw_name}"


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    """One response, read as far as its framing says (not to EOF: after answering early,
    aiohttp keeps the connection open a while to drain a body it did not read)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").strip().split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            body += (await reader.readexactly(size + 2))[:-2]
        await reader.readuntil(b"\r\n")
    else:
        body = await reader.read()
    return Answer(status, headers, body)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


#: Legal artifact names that look like traversal, quoting or markup to a careless reader.
HOSTILE_FILES = {
    "outputs/model.pkl": b"\x80\x04model" * 100,
    "%2e%2e/x": b"percent-dot-dot, literally",
    "..a/b..": b"dots inside parts",
    "a b/c#d?.txt": b"space, hash, question mark",
    "q'uote\"/`tick`;--.txt": b"quotes",
    "ünï/😀\u202egnp.exe": b"unicode with a right-to-left override",
    "<script>alert(1)</script>.html": b"<p>markup</p>",
}


@pytest.fixture
async def limits_api(new_db: NewDb, tmp_path: Path) -> AsyncIterator[LimitsApi]:
    dsn = await new_db()
    secret = b"secret outside the blob store " + os.urandom(8).hex().encode()
    secret_path = tmp_path / "secret.txt"
    secret_path.write_bytes(secret)
    blobs = BlobStore(root=tmp_path / "blobs", max_blob_bytes=MAX_BLOB_BYTES)
    rid = run_id("limits")
    f = EventFactory(rid, experiment="limits")
    events = [f.lifecycle("Running")]
    for name, data in HOSTILE_FILES.items():
        await blobs.put(sha(data), _chunks(data))
        events.append(f.artifact(name, sha(data), len(data)))
    await store_events(dsn, events)
    app = create_app(blob_store=blobs, registry=CollectorRegistry(), db_dsn=Secret(dsn))
    async with HttpServer(app, host="127.0.0.1", port=0) as server:
        yield LimitsApi(
            "127.0.0.1", server.port, blobs, rid, secret, secret_path, dict(HOSTILE_FILES)
        )


def assert_safe(api: LimitsApi, answer: Answer, what: str) -> None:
    """Never a server error, never the secret file's bytes."""
    assert answer.status < 500, (what, answer)
    assert api.secret not in answer.body, what


# ---- the file download route ---------------------------------------------------------------


async def test_hostile_but_legal_names_download_their_own_bytes(limits_api: LimitsApi) -> None:
    for name, data in limits_api.files.items():
        answer = await limits_api.request(limits_api.file_target(quote(name, safe="/")))
        assert (answer.status, answer.body) == (200, data), name
        assert answer.headers["etag"] == f'"{sha(data)}"'
    listing = await limits_api.request(f"/v1/runs/{limits_api.run}/files")
    assert sorted(f["name"] for f in json.loads(listing.body)["files"]) == sorted(HOSTILE_FILES)


async def test_traversal_absolute_and_nul_paths_are_4xx_and_never_leave_the_blob_store(
    limits_api: LimitsApi,
) -> None:
    secret = quote(str(limits_api.secret_path), safe="/")
    up = "../" * 12
    raw_names = [
        f"{up}secret.txt",
        "../../../../../../etc/passwd",
        "..%2f..%2f..%2f..%2fsecret.txt",
        "..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "%2e%2e/%2e%2e/%2e%2e/%2e%2e/secret.txt",
        "%2E%2E%2F%2E%2E%2F%2E%2E%2Fsecret.txt",
        "%252e%252e%252fsecret.txt",  # double-quoted: the literal name "%2e%2e%2fsecret.txt"
        "..%5c..%5c..%5csecret.txt",
        "outputs/..%2f..%2f..%2f..%2fsecret.txt",
        "outputs/model.pkl/../../../../secret.txt",
        f"/{secret.lstrip('/')}",  # files//tmp/...: an absolute path
        f"%2F{secret.lstrip('/')}",
        "/etc/passwd",
        "%00",
        "outputs/model.pkl%00",
        "outputs%00/model.pkl",
        "outputs/model.pkl%00.txt",
        "%C0%AE%C0%AE/secret.txt",  # overlong UTF-8 for '.'
        "%ff%fe",
    ]
    for raw_name in raw_names:
        answer = await limits_api.request(limits_api.file_target(raw_name))
        assert_safe(limits_api, answer, raw_name)
        assert 400 <= answer.status < 500, (raw_name, answer)
        answer.error()


async def test_the_blob_route_takes_only_digests(limits_api: LimitsApi) -> None:
    model = sha(HOSTILE_FILES["outputs/model.pkl"])
    targets = [
        "/v1/blobs/../../secret.txt",
        "/v1/blobs/..%2f..%2fsecret.txt",
        "/v1/blobs/%2e%2e%2f%2e%2e%2fsecret.txt",
        f"/v1/blobs/{model[:2]}%2f{model[2:4]}%2f{model}",
        f"/v1/blobs/{model}%00",
        f"/v1/blobs/{model.upper()}",
        f"/v1/blobs/{sha(limits_api.secret)}",  # a digest, but of bytes never uploaded
        "/v1/blobs/%00",
    ]
    for target in targets:
        answer = await limits_api.request(target)
        assert_safe(limits_api, answer, target)
        assert answer.status in (400, 404), (target, answer)
        answer.error()
    answer = await limits_api.request(f"/v1/blobs/{model}")
    assert (answer.status, answer.body) == (200, HOSTILE_FILES["outputs/model.pkl"])


async def test_a_stored_content_type_no_header_can_carry_is_not_a_server_error(
    new_db: NewDb, tmp_path: Path
) -> None:
    dsn = await new_db()
    blobs = BlobStore(root=tmp_path / "blobs")
    data = b"bytes of a file with a broken content type"
    await blobs.put(sha(data), _chunks(data))
    rid = run_id("ctype")
    f = EventFactory(rid, experiment="ctype")
    bad = f.artifact("a.txt", sha(data), len(data), content_type="text/plain\r\nX-Injected: 1")
    await store_events(dsn, [f.lifecycle("Running"), bad])
    app = create_app(blob_store=blobs, registry=CollectorRegistry(), db_dsn=Secret(dsn))
    async with HttpServer(app, host="127.0.0.1", port=0) as server:
        api = LimitsApi("127.0.0.1", server.port, blobs, rid, b"", tmp_path)
        answer = await api.request(api.file_target("a.txt"))
    assert "x-injected" not in answer.headers
    assert (answer.status, answer.body) == (200, data)
    assert answer.headers["content-type"] == "application/octet-stream"
    assert answer.headers["x-content-type-options"] == "nosniff"


# ---- blob uploads: size and digest -----------------------------------------------------------


async def test_a_blob_over_the_limit_is_413_with_a_json_message_and_nothing_stored(
    limits_api: LimitsApi,
) -> None:
    over = os.urandom(MAX_BLOB_BYTES + 1)
    target = f"/v1/blobs/{sha(over)}"
    declared = await limits_api.request(target, method="PUT", body=over)
    assert declared.status == 413
    assert str(MAX_BLOB_BYTES) in declared.error()

    chunked = b"".join(
        b"%x\r\n%s\r\n" % (len(part), part)
        for part in (over[i : i + 8192] for i in range(0, len(over), 8192))
    )
    streamed = await limits_api.request(
        target,
        method="PUT",
        headers=[("Transfer-Encoding", "chunked")],
        body=chunked + b"0\r\n\r\n",
    )
    assert streamed.status == 413
    assert str(MAX_BLOB_BYTES) in streamed.error()

    # Asked first: the answer comes before any of the body is sent.
    early = await limits_api.request(
        target,
        method="PUT",
        headers=[("Content-Length", str(len(over))), ("Expect", "100-continue")],
        body=b"",
    )
    assert early.status == 413
    early.error()

    assert limits_api.blobs.stat(sha(over)) is None
    exactly = os.urandom(MAX_BLOB_BYTES)
    stored = await limits_api.request(f"/v1/blobs/{sha(exactly)}", method="PUT", body=exactly)
    assert stored.status == 201


async def test_a_wrong_digest_is_400_and_nothing_stored(limits_api: LimitsApi) -> None:
    claimed = sha(b"what the client meant")
    answer = await limits_api.request(f"/v1/blobs/{claimed}", method="PUT", body=b"what it sent")
    assert answer.status == 400
    assert sha(b"what it sent") in answer.error()
    assert limits_api.blobs.stat(claimed) is None
    assert limits_api.blobs.stat(sha(b"what it sent")) is None


async def test_bodies_on_routes_that_take_none_are_refused_unread(limits_api: LimitsApi) -> None:
    # Twice the 1 MiB request limit is announced and none of it sent: the answer cannot
    # wait for the body. (Sent whole, it would be refused the same, and aiohttp would keep
    # the connection up to 10 s to drain it.)
    announced = [("Content-Length", str(2 << 20))]
    for method, target in (
        ("POST", "/v1/runs"),
        ("PUT", f"/v1/runs/{limits_api.run}"),
        ("POST", limits_api.file_target("outputs/model.pkl")),
        ("PUT", "/v1/compute/cpu"),
    ):
        answer = await limits_api.request(target, method=method, headers=announced, body=b"")
        assert answer.status == 405, (method, target, answer)
        answer.error()


# ---- over-long requests ----------------------------------------------------------------------


async def test_request_lines_and_headers_past_the_parser_limit_are_400(
    limits_api: LimitsApi,
) -> None:
    long_query = await limits_api.request("/v1/runs?experiment=" + "e" * MAX_LINE_BYTES)
    assert long_query.status == 400
    long_path = await limits_api.request(limits_api.file_target("f" * MAX_LINE_BYTES))
    assert long_path.status == 400
    long_header = await limits_api.request("/v1/runs", headers=[("X-Long", "h" * 9000)])
    assert long_header.status == 400
    for answer in (long_query, long_path, long_header):
        assert_safe(limits_api, answer, "over-long")


async def test_over_long_query_parameters(limits_api: LimitsApi) -> None:
    runs, logs = "/v1/runs", f"/v1/runs/{limits_api.run}/logs"
    series = f"/v1/runs/{limits_api.run}/metrics/loss"
    refused = [
        (runs, "limit", "9" * 4000),
        (runs, "cursor", "A" * 5000),
        (runs, "created_after", "2" * 4000),
        (runs, "status", "S" * 4000),
        (runs, "order", "a" * 4000),
        (runs, "order_by", "x" * 4000),
        (runs, "experiment", "e%00"),
        (logs, "after", "A" * 5000),
        (series, "max_points", "9" * 4000),
        (series, "rank", "1" * 4000),
        (series, "step_min", "-" + "1" * 4000),
    ]
    for path, name, value in refused:
        answer = await limits_api.request(f"{path}?{name}={value}")
        assert_safe(limits_api, answer, name)
        assert answer.status == 400, (path, name, answer)
        assert repr(name) in answer.error()
    # Longer than any stored name can be (names are at most 1024 UTF-8 bytes): they match
    # nothing, which is an answer, not an error.
    for name in ("experiment", "tag", "compute_target", "parent_run_id", "workspace"):
        answer = await limits_api.request(f"{runs}?{name}={'x' * 7000}")
        assert (answer.status, json.loads(answer.body)["runs"]) == (200, []), name
    answer = await limits_api.request(f"{runs}?order_by=metric:{'m' * 7000}")
    assert answer.status == 200
    assert [r["run_id"] for r in json.loads(answer.body)["runs"]] == [limits_api.run]


async def test_over_long_path_names_are_404(limits_api: LimitsApi) -> None:
    for target in (
        f"/v1/runs/{'r' * 7000}",
        f"/v1/runs/{limits_api.run}/metrics/{'m' * 7000}",
        limits_api.file_target("f" * 7000),
    ):
        answer = await limits_api.request(target)
        assert answer.status == 404, (target[:60], answer)
        answer.error()
