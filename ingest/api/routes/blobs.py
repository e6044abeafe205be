"""``/v1/blobs/{sha256}``: upload (PUT), download (GET) and probe (HEAD) of artifact bytes.

Upload answers: 201 stored, 200 already stored, 400 malformed digest / digest mismatch /
truncated body, 413 over the store's size limit. A declared ``Content-Length`` over the
limit is refused before reading; a chunked body is refused as soon as the running count
crosses it. Clients that send ``Expect: 100-continue`` get their answer *before* sending
the body whenever it is already known (bad digest, too large, blob exists), so
re-uploading an existing artifact costs one round trip and no bytes. The ``100 Continue``
is sent from the handler rather than aiohttp's expect hook, because that hook runs
outside the middlewares (no auth, no metrics, no JSON errors): the route's expect hook
only rejects unknown ``Expect`` values.

With a workspace-scoped token (``ingest/api/auth.py``) an upload is also recorded for
its workspace, and probe/download by digest answer 404 unless that workspace uploaded
the bytes itself: a digest is not a capability across workspaces. Such an upload always
sends its body (the bytes are verified before the claim), except when its own workspace
already holds the blob.

Download streams the file from the executor with an exact ``Content-Length`` and a
strong ``ETag`` equal to the digest (blobs never change), honouring ``If-None-Match``.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import AsyncIterator
from typing import Any, Final

from aiohttp import HttpVersion11, hdrs, http_exceptions, web
from prometheus_client import CollectorRegistry, Counter

from ingest.api.auth import acting_workspace, grant_of
from ingest.api.blobstore import (
    BlobInfo,
    BlobNotFoundError,
    BlobStore,
    BlobTooLargeError,
    DigestMismatchError,
    InvalidDigestError,
    is_valid_digest,
)
from ingest.api.http import RouteSpec, json_error

logger = logging.getLogger(__name__)

BLOB_PATH: Final = "/v1/blobs/{sha256}"
READ_CHUNK_BYTES: Final = 256 * 1024
#: Reading the request body in pieces this large at most.
RECEIVE_CHUNK_BYTES: Final = 256 * 1024
OCTET_STREAM: Final = "application/octet-stream"

_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_OUT_OF_SPACE: Final = frozenset({errno.ENOSPC, errno.EDQUOT})

_DIGEST_PARAM: Final = {
    "name": "sha256",
    "in": "path",
    "required": True,
    "description": "SHA-256 of the blob's bytes, 64 lowercase hex characters.",
    "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
}
_BLOB_CONTENT: Final = {OCTET_STREAM: {"schema": {"type": "string", "format": "binary"}}}
_PUT_RESULT_CONTENT: Final = {
    "application/json": {
        "schema": {
            "type": "object",
            "required": ["sha256", "size_bytes", "created"],
            "properties": {
                "sha256": {"type": "string"},
                "size_bytes": {"type": "integer"},
                "created": {"type": "boolean"},
            },
        }
    }
}


class BlobRoutes:
    """Handlers bound to one BlobStore, plus their upload outcome counters."""

    def __init__(self, *, store: BlobStore, registry: CollectorRegistry) -> None:
        self._store = store
        self._uploads = Counter(
            "runstream_blob_uploads",
            "Blob uploads by outcome (created, exists, mismatch, too_large, invalid, incomplete, "
            "no_space).",
            ["outcome"],
            registry=registry,
        )
        self._received = Counter(
            "runstream_blob_received_bytes",
            "Bytes of blobs newly stored.",
            registry=registry,
        )

    def specs(self) -> list[RouteSpec]:
        params: dict[str, Any] = {"parameters": [_DIGEST_PARAM]}
        return [
            RouteSpec(
                method="PUT",
                path=BLOB_PATH,
                handler=self.put,
                operation_id="putBlob",
                summary="Store bytes under their SHA-256 (idempotent).",
                responses={
                    200: "Already stored; nothing written.",
                    201: "Stored.",
                    400: "Malformed digest, digest mismatch or truncated body.",
                    413: f"Larger than the limit ({self._store.max_blob_bytes} bytes).",
                    507: "The blob store is out of space; retry later.",
                },
                response_content={200: _PUT_RESULT_CONTENT, 201: _PUT_RESULT_CONTENT},
                extra={**params, "requestBody": {"required": True, "content": _BLOB_CONTENT}},
                expect_handler=_defer_continue,
            ),
            RouteSpec(
                method="GET",
                path=BLOB_PATH,
                handler=self.get,
                operation_id="getBlob",
                summary="Download a blob.",
                responses={
                    200: "The blob's bytes.",
                    304: "Not modified (If-None-Match matched).",
                    400: "Malformed digest.",
                    404: "No such blob.",
                },
                response_content={200: _BLOB_CONTENT},
                extra=params,
            ),
            RouteSpec(
                method="HEAD",
                path=BLOB_PATH,
                handler=self.get,
                operation_id="headBlob",
                summary="Whether a blob exists, and its size (Content-Length).",
                responses={200: "Exists.", 400: "Malformed digest.", 404: "No such blob."},
                extra=params,
            ),
        ]

    async def put(self, request: web.Request) -> web.StreamResponse:
        digest = request.match_info["sha256"]
        if not is_valid_digest(digest):
            self._uploads.labels("invalid").inc()
            return _bad_digest(digest)
        # An admin upload is claimed by nobody.
        workspace = None if grant_of(request).admin else acting_workspace(
            request, agents_may=True)
        limit = self._store.max_blob_bytes
        declared = request.content_length
        if declared is not None and declared > limit and not _is_encoded(request):
            self._uploads.labels("too_large").inc()
            return _too_large(limit)
        held = workspace is None or await asyncio.to_thread(
            self._store.claimed, digest, (workspace,)
        )
        if _wants_continue(request):
            info = await asyncio.to_thread(self._store.stat, digest) if held else None
            if info is not None:
                self._uploads.labels("exists").inc()
                return _put_result(digest, info.size_bytes, created=False)
            await _send_continue(request)

        try:
            result = await self._store.put(digest, _body_chunks(request))
        except BlobTooLargeError:
            self._uploads.labels("too_large").inc()
            return _too_large(limit)
        except DigestMismatchError as exc:
            self._uploads.labels("mismatch").inc()
            return json_error(400, str(exc))
        except (ConnectionError, http_exceptions.HttpProcessingError) as exc:
            self._uploads.labels("incomplete").inc()
            return json_error(400, f"request body incomplete: {exc}")
        except OSError as exc:
            if exc.errno not in _OUT_OF_SPACE:
                raise
            # Retriable for the client (the SDK keeps the bytes spooled); not our bug.
            logger.error("blob store out of space: %s", exc)
            self._uploads.labels("no_space").inc()
            return json_error(507, "blob store is out of space")
        if workspace is not None and not held:
            await asyncio.to_thread(self._store.claim, digest, workspace)
        if result.created:
            self._uploads.labels("created").inc()
            self._received.inc(result.size_bytes)
        else:
            self._uploads.labels("exists").inc()
        # A workspace's first upload of bytes another workspace sent reads as "created":
        # whether anyone else holds them is not this token's business.
        return _put_result(digest, result.size_bytes, created=result.created or not held)

    async def get(self, request: web.Request) -> web.StreamResponse:
        digest = request.match_info["sha256"]
        if not is_valid_digest(digest):
            return _bad_digest(digest)
        granted = grant_of(request).workspaces
        info = await asyncio.to_thread(self._store.stat, digest)
        if (
            info is not None
            and granted is not None
            and not await asyncio.to_thread(self._store.claimed, digest, granted)
        ):
            info = None
        if info is None:
            return json_error(404, str(BlobNotFoundError(digest)))
        etag = f'"{digest}"'
        headers = {hdrs.ETAG: etag, hdrs.CACHE_CONTROL: "private, max-age=31536000, immutable"}
        if _etag_listed(request.headers.get(hdrs.IF_NONE_MATCH), etag):
            return web.Response(status=304, headers=headers)
        response = web.StreamResponse(headers=headers)
        response.content_type = OCTET_STREAM
        response.content_length = info.size_bytes
        if request.method == hdrs.METH_HEAD:
            return response
        await response.prepare(request)
        try:
            await send_blob(response, info)
        except ConnectionError:
            # The client went away mid-download; nothing left to answer.
            response.force_close()
            return response
        await response.write_eof()
        return response


async def _defer_continue(request: web.Request) -> web.StreamResponse | None:
    """Send nothing yet: ``put`` decides between an early answer and ``100 Continue``."""
    expect = request.headers.get(hdrs.EXPECT, "")
    if expect.lower() != "100-continue":
        return json_error(417, f"unsupported Expect header: {expect[:80]!r}")
    return None


def _wants_continue(request: web.Request) -> bool:
    return (
        request.version == HttpVersion11
        and request.headers.get(hdrs.EXPECT, "").lower() == "100-continue"
    )


async def _send_continue(request: web.Request) -> None:
    await request.writer.write(_CONTINUE)
    # As aiohttp's own expect handler does: the interim line is not part of the response.
    request.writer.output_size = 0


async def _body_chunks(request: web.Request) -> AsyncIterator[bytes]:
    async for chunk in request.content.iter_chunked(RECEIVE_CHUNK_BYTES):
        yield chunk


async def send_blob(response: web.StreamResponse, info: BlobInfo) -> None:
    """Write a stored blob's bytes to a prepared response (every route that serves bytes)."""
    remaining = info.size_bytes
    with await asyncio.to_thread(info.path.open, "rb") as source:
        while remaining > 0:
            chunk = await asyncio.to_thread(source.read, min(READ_CHUNK_BYTES, remaining))
            if not chunk:
                # The file shrank under us (it never should: blobs are immutable). Close
                # the connection so the client sees a short body instead of a hang.
                response.force_close()
                return
            remaining -= len(chunk)
            await response.write(chunk)


def _is_encoded(request: web.Request) -> bool:
    # With Content-Encoding the declared length is the compressed size; the limit applies
    # to the decoded bytes, which the streaming count checks.
    return bool(request.headers.get(hdrs.CONTENT_ENCODING, "identity").lower() != "identity")


def _etag_listed(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    candidates = {part.strip().removeprefix("W/") for part in if_none_match.split(",")}
    return "*" in candidates or etag in candidates


def _put_result(digest: str, size_bytes: int, *, created: bool) -> web.Response:
    return web.json_response(
        {"sha256": digest, "size_bytes": size_bytes, "created": created},
        status=201 if created else 200,
    )


def _bad_digest(digest: str) -> web.Response:
    return json_error(400, str(InvalidDigestError(digest)))


def _too_large(limit: int) -> web.Response:
    return json_error(413, str(BlobTooLargeError(limit_bytes=limit)))
