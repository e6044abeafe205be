"""The SDK's one HTTP client (``ApiClient``), blocking, on ``urllib`` (no dependency).

Every HTTP call of the SDK goes through it: reads (``get_json``, ``pages``, ``download``),
the event stream of ``wait_for_completion`` (``request``) and artifact uploads
(``put_file``, from the uploader thread and ``runstream sync``). It builds the URLs, sends
``Authorization: Bearer <token>`` when the workspace has a token (the token never appears
in a message or ``repr``) and ``X-Runstream-Workspace: <name>`` (with a token scoped to
several workspaces the API records an upload for that one), applies the timeout, and maps
failures into the SDK's error tree (see ``_errors``):

- an error status → ``ApiError(status, message)`` with the server's own message from its
  ``{"error": {"status", "message"}}`` body; 404 → ``NotFoundError``; ``retriable`` for
  5xx, 408 and 429;
- no response (refused, reset, timed out) → ``ApiError(None, …, retriable=True)``;
- a 2xx body that is not the JSON object the endpoint promises → ``ApiError(status, …)``.

Paths are built from quoted segments (``segment``): a run id or metric name can hold any
character without changing which route it reaches. Artifact names keep their '/'
(relative POSIX paths, served by the ``{name:.+}`` route).

JSON has no NaN or ±Infinity, so the API writes them as the strings "NaN", "Infinity",
"-Infinity" in value positions, and a string value that is literally one of those three
words as the object ``{"str": "NaN"}``; ``decode_non_finite`` turns both back (a float, a
string). Apply it to values, never to a document whose keys are names: a metric named
"str" whose value is NaN is ``{"str": "NaN"}`` in the metrics dict.

Answers are parsed with ``orjson`` when it is installed (``pip install 'runstream[fast]'``):
a run's whole metrics dict is mostly floats, and the standard library's parser spends
about 0.6 s on 1,000,000 of them where orjson takes a tenth of that. Same result types.
"""

from __future__ import annotations

import http.client
import io
import json
import math
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, BinaryIO, Final
from urllib.parse import quote

from ._errors import ApiError, NotFoundError


def _json_loader() -> Callable[[bytes], Any]:
    """orjson's parser when installed (an optional accelerator), else the stdlib's."""
    try:
        from orjson import loads
    except ImportError:  # pragma: no cover - depends on the environment
        return json.loads
    return loads


_loads = _json_loader()

#: Longest error body read to find the server's message.
MAX_ERROR_BODY_BYTES: Final = 64 * 1024
#: Names the workspace a request is for (the API's ``WORKSPACE_HEADER``).
WORKSPACE_HEADER: Final = "X-Runstream-Workspace"
NON_FINITE: Final[dict[str, float]] = {
    "NaN": math.nan,
    "Infinity": math.inf,
    "-Infinity": -math.inf,
}
_CONTAINERS: Final = (list, dict)
#: The key of ``{"str": "NaN"}``: a string value spelled like a non-finite float.
ESCAPED_STR: Final = "str"
#: Element types of a list that needs no decoding.
_PLAIN: Final = frozenset({float, int, bool, type(None)})

Params = Sequence[tuple[str, str]]


def segment(value: str) -> str:
    """One path segment, every reserved character quoted ('/' too)."""
    return quote(value, safe="")


def file_path(name: str) -> str:
    """An artifact name (relative POSIX path) quoted segment by segment."""
    return quote(name, safe="/")


def query_string(params: Params) -> str:
    return "&".join(f"{quote(key, safe='')}={quote(value, safe='')}" for key, value in params)


def decode_non_finite(value: Any) -> Any:
    """A value of a decoded JSON answer with "NaN"/"Infinity"/"-Infinity" as floats and
    ``{"str": s}`` as the string ``s`` (see the module doc), at any depth.

    Keys are left alone. Works in place on what ``json.loads`` returned. A list of
    numbers only (the bulk of a metrics answer) is recognised from its set of element
    types and kept as it is; other lists take one comprehension, not a call per element.
    """
    kind = type(value)
    if kind is str:
        return NON_FINITE.get(value, value)
    if kind is list:
        if _PLAIN.issuperset(map(type, value)):
            return value
        return [
            NON_FINITE.get(v, v)
            if type(v) is str
            else (decode_non_finite(v) if isinstance(v, _CONTAINERS) else v)
            for v in value
        ]
    if kind is dict:
        if len(value) == 1 and type(value.get(ESCAPED_STR)) is str:
            return value[ESCAPED_STR]  # a string spelled like a non-finite float
        return {k: decode_non_finite(v) for k, v in value.items()}
    return value


def _server_message(body: bytes, fallback: str) -> str:
    try:
        document = json.loads(body)
        message = document["error"]["message"]
    except (ValueError, TypeError, KeyError):
        text = body.decode("utf-8", "replace").strip()
        return text[:500] or fallback
    return str(message)


def _http_error(exc: urllib.error.HTTPError, what: str) -> ApiError:
    try:
        body = exc.read(MAX_ERROR_BODY_BYTES)
    except (OSError, http.client.HTTPException):
        body = b""
    finally:
        exc.close()
    message = _server_message(body, str(exc.reason))
    if exc.code == 404:
        return NotFoundError(404, message, what=what, retriable=False)
    retriable = exc.code >= 500 or exc.code in (408, 429)
    return ApiError(exc.code, message, what=what, retriable=retriable)


class ApiClient:
    """Requests against ``api_url``; safe to share between threads (no shared state).

    ``urlopen`` (default ``urllib.request.urlopen``, same signature) is the seam unit tests
    replace.
    """

    def __init__(
        self,
        *,
        api_url: str,
        token: str,
        timeout_s: float,
        workspace: str = "",
        urlopen: Callable[..., Any] | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self._token = token
        self.timeout_s = timeout_s
        self.workspace = workspace
        self._urlopen = urlopen or urllib.request.urlopen

    def __repr__(self) -> str:
        return (
            f"ApiClient(api_url={self.api_url!r}, workspace={self.workspace!r}, "
            f"timeout_s={self.timeout_s:g})"
        )

    def url(self, path: str, params: Params = ()) -> str:
        """``path`` must already be quoted (see ``segment``/``file_path``)."""
        query = query_string(params)
        return f"{self.api_url}{path}?{query}" if query else f"{self.api_url}{path}"

    def request(
        self,
        method: str,
        path: str,
        params: Params = (),
        *,
        body: IO[bytes] | BinaryIO | None = None,
        accept: str = "application/json",
        timeout_s: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> http.client.HTTPResponse:
        """Send one request and return the open response (2xx); the caller closes it."""
        all_headers = {"Accept": accept, **(headers or {})}
        if self._token:
            all_headers["Authorization"] = f"Bearer {self._token}"
        if self.workspace:
            all_headers[WORKSPACE_HEADER] = self.workspace
        what = f"{method} {path}"
        # The scheme is checked to be http(s) when the Workspace is built.
        request = urllib.request.Request(  # noqa: S310
            self.url(path, params), data=body, headers=all_headers, method=method
        )
        try:
            response: http.client.HTTPResponse = self._urlopen(
                request, timeout=self.timeout_s if timeout_s is None else timeout_s
            )
        except urllib.error.HTTPError as exc:
            raise _http_error(exc, what) from exc
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise ApiError(None, f"{self.api_url}: {reason}", what=what, retriable=True) from exc
        return response

    def get_json(self, path: str, params: Params = ()) -> dict[str, Any]:
        """GET a JSON object (the shape of every ``/v1`` answer)."""
        with self.request("GET", path, params) as response:
            return self._json_answer(response, f"GET {path}")

    def post_json(self, path: str, document: Any) -> dict[str, Any]:
        """POST a JSON document; the JSON object answered (2xx)."""
        body = json.dumps(document).encode()
        headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
        with self.request("POST", path, body=io.BytesIO(body), headers=headers) as response:
            return self._json_answer(response, f"POST {path}")

    @staticmethod
    def _json_answer(response: http.client.HTTPResponse, what: str) -> dict[str, Any]:
        """The JSON object of an open 2xx response (every ``/v1`` answer is one)."""
        try:
            body = response.read()
        except (http.client.HTTPException, OSError) as exc:
            raise ApiError(None, f"reading the answer: {exc}", what=what, retriable=True) from exc
        status = int(response.status)
        try:
            document = _loads(body)
        except ValueError as exc:
            raise ApiError(
                status, f"answer is not JSON: {exc}", what=what, retriable=False
            ) from exc
        if not isinstance(document, dict):
            raise ApiError(
                status,
                f"answer is a JSON {type(document).__name__}, not an object",
                what=what,
                retriable=False,
            )
        return document

    def pages(self, path: str, params: Params, key: str) -> Iterator[dict[str, Any]]:
        """Every item of ``key`` across pages, following ``next_cursor`` lazily."""
        cursor: str | None = None
        while True:
            page_params = [*params, ("cursor", cursor)] if cursor is not None else list(params)
            page = self.get_json(path, page_params)
            items = page.get(key)
            if not isinstance(items, list):
                raise ApiError(
                    200, f"answer has no {key!r} list", what=f"GET {path}", retriable=False
                )
            yield from items
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def download(self, path: str, out: IO[bytes] | BinaryIO) -> int:
        """Stream a GET's body into ``out``; returns the number of bytes written."""
        with self.request("GET", path, accept="*/*") as response:
            try:
                before = out.tell()
                shutil.copyfileobj(response, out, 1 << 20)
                return out.tell() - before
            except (http.client.HTTPException, ConnectionError, TimeoutError) as exc:
                raise ApiError(
                    None, f"download interrupted: {exc}", what=f"GET {path}", retriable=True
                ) from exc

    def put_file(self, path: str, file: Path, *, timeout_s: float | None = None) -> int:
        """PUT the bytes of ``file``; returns the status (2xx).

        ``FileNotFoundError`` if ``file`` is gone; every other failure is an ``ApiError``.
        """
        size = file.stat().st_size
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        with (
            file.open("rb") as body,
            self.request("PUT", path, body=body, timeout_s=timeout_s, headers=headers) as response,
        ):
            return int(response.status)
