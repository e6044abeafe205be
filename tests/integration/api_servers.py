"""What the ``api_factory`` and ``api`` fixtures (tests/integration/conftest.py) give a
test: the real API server (``create_app`` + ``HttpServer`` on an ephemeral port) without a
database, over a blob directory of the test's own; and the shape every JSON error has.

Tests whose API reads a database build their own (``api_reads.read_api``,
``pipelines.start_api``) and name their fixture ``api`` too, overriding this one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from ingest.api.app import ReadinessCheck
from ingest.api.blobstore import DEFAULT_MAX_BLOB_BYTES, BlobStore

__all__ = ["API_TOKEN", "BLOB", "Api", "ApiFactory", "error_of"]

API_TOKEN = "t0ken-for-tests"  # noqa: S105 - a test credential
BLOB = "/v1/blobs/"


@dataclass(frozen=True)
class Api:
    url: str
    store: BlobStore

    def blob_url(self, digest: str) -> str:
        return f"{self.url}{BLOB}{digest}"


class ApiFactory(Protocol):
    def __call__(
        self,
        *,
        token: str | None = None,
        max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES,
        blob_root: Path | None = None,
        readiness_checks: Sequence[ReadinessCheck] = (),
        readiness_timeout_s: float = 2.0,
    ) -> Awaitable[Api]: ...


async def error_of(response: aiohttp.ClientResponse) -> dict[str, Any]:
    """The ``error`` object of a JSON error answer, checked for its documented shape."""
    assert response.content_type == "application/json"
    body = await response.json()
    assert set(body) == {"error"}
    assert body["error"]["status"] == response.status
    assert isinstance(body["error"]["message"], str)
    assert "Traceback" not in body["error"]["message"]
    error: dict[str, Any] = body["error"]
    return error
