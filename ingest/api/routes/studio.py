"""The studio: the web app's files, and the browser's login (``POST /studio/login``).

The studio is a single-page app built by Vite from ``studio/`` into the package data
``ingest/api/studio_dist/`` (``index.html`` and ``assets/`` of content-hashed files,
built with base ``/studio/``); the wheel carries it, so it works offline — nothing is
fetched from elsewhere at run time. It is served by the API process, on the same origin
as ``/v1``, so the app needs no CORS:

- ``/`` and the app's own paths (``/experiments/{name}``, ``/runs/{run_id}``,
  ``/compute``, ``/compute/{target}``, ``/models``, ``/models/{name}``): ``index.html``
  with ``Cache-Control: no-cache`` (and an ETag), so a new build shows at the next load;
  the app routes in the browser. Every page has a URL to share.
- ``/studio/assets/{file}``: the built files, ``immutable`` for a year (their names
  change with their content), by a content type chosen from the extension. A file name
  is one path segment of plain characters, so nothing outside ``assets/`` is reachable.
- Without a build (a checkout where ``npm run build`` never ran) the pages answer 503
  with an HTML page saying how to build it; the rest of the API is unaffected.

These routes are public: the files hold no data (the app reads everything from ``/v1``
with the browser's token), and a browser must be able to load the login page.

Auth for the browser (``auth.py`` enforces it): ``EventSource`` cannot send an
``Authorization`` header, so with tokens configured the app asks for one and
``POST /studio/login`` checks it against the API's token table and keeps it in the
HttpOnly, SameSite=Strict cookie ``runstream_token`` (Secure over https);
``POST /studio/logout`` removes it; ``GET /studio/session`` tells the app whether auth is
on and what its cookie grants. The studio's sign-in form posts ``token`` and ``next`` (the
page it was on) and is sent back there (303; ``?login_failed=1`` when refused; only paths
of this origin, so no open redirect); a JSON login gets the session or a 403. Login and
logout from another origin are refused (403), as is every other cookie-authenticated
write (``auth.same_origin``).

The HTML carries a Content-Security-Policy that allows only this origin (scripts,
styles, fetches, images; ``data:``/``blob:`` images for exports) and no framing, so a
page elsewhere cannot overlay the Cancel button (clickjacking).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Collection
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from aiohttp import hdrs, web

from ingest.api.auth import (
    ADMIN,
    TOKEN_COOKIE,
    Grant,
    TokenTable,
    bearer_token,
    cleared_cookie,
    cookie_token,
    cookie_value,
    same_origin,
)
from ingest.api.http import RouteSpec

__all__ = ["ASSETS_PATH", "BUILD_COMMAND", "SPA_PATHS", "StudioRoutes", "default_dist"]

#: Vite's ``base``: every built file is served under it.
STUDIO_BASE: Final = "/studio/"
ASSETS_PATH: Final = "/studio/assets/{file}"
#: The app's pages; each answers ``index.html`` and the app routes in the browser.
SPA_PATHS: Final = ("/", "/experiments/{name}", "/runs/{run_id}", "/compute",
                    "/compute/{target}", "/models", "/models/{name}")
BUILD_COMMAND: Final = "cd studio && npm ci && npm run build"
#: A browser keeps its login this long (the token's own lifetime is the operator's).
COOKIE_MAX_AGE_S: Final = 7 * 24 * 3600
#: Most a login body may hold (a token is far shorter).
MAX_LOGIN_BYTES: Final = 16 * 1024

_ASSET_NAME: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}")
_CONTENT_TYPES: Final = {
    ".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css",
    ".html": "text/html", ".json": "application/json", ".map": "application/json",
    ".webmanifest": "application/manifest+json", ".txt": "text/plain",
    ".svg": "image/svg+xml", ".png": "image/png", ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg", ".gif": "image/gif", ".webp": "image/webp", ".avif": "image/avif",
    ".ico": "image/x-icon", ".woff": "font/woff", ".woff2": "font/woff2", ".ttf": "font/ttf",
    ".otf": "font/otf", ".wasm": "application/wasm",
}  # fmt: skip
_TEXT_TYPES: Final = frozenset({"text/javascript", "text/css", "text/html", "application/json",
                                "application/manifest+json", "text/plain", "image/svg+xml"})
_COMPRESS_FROM_BYTES: Final = 1024
_IMMUTABLE: Final = "public, max-age=31536000, immutable"
_PAGE_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; "
        "worker-src 'self' blob:; object-src 'none'; base-uri 'self'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

_NOT_BUILT_PAGE: Final = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Runstream studio is not built</title>
<style>
body {{ font: 16px/1.5 system-ui, sans-serif; max-width: 42rem; margin: 4rem auto;
       padding: 0 1rem; color: #1f2328; }}
pre {{ background: #f6f8fa; padding: 0.75rem 1rem; border-radius: 6px; }}
</style>
</head>
<body>
<h1>The Runstream studio is not built</h1>
<p>This API serves the studio (the web app for experiments, runs and compute targets)
from the package data <code>ingest/api/studio_dist/</code>, and this installation has
none. Build it from a checkout of Runstream (Node.js and npm needed):</p>
<pre>{BUILD_COMMAND}</pre>
<p>then reload this page; the API needs no restart. Everything else works without it:
the HTTP API is documented at <a href="/v1/openapi.json">/v1/openapi.json</a>.</p>
</body>
</html>
"""

_HTML: Final = {"text/html": {"schema": {"type": "string"}}}
_SESSION_SCHEMA: Final = {
    "type": "object",
    "required": ["auth", "authenticated", "workspaces"],
    "properties": {
        "auth": {"type": "boolean", "description": "Whether the API asks for tokens."},
        "authenticated": {"type": "boolean",
                          "description": "Whether this browser's cookie holds a valid token "
                                         "(always true when auth is off)."},
        "workspaces": {"type": ["array", "null"], "items": {"type": "string"},
                       "description": "The workspaces it grants; null: all of them."},
    },
}
_SESSION: Final = {"application/json": {"schema": {"$ref": "#/components/schemas/StudioSession"}}}
_LOGIN_BODY: Final = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {
                "type": "object", "required": ["token"],
                "properties": {"token": {"type": "string", "minLength": 1}}}},
            "application/x-www-form-urlencoded": {"schema": {
                "type": "object", "required": ["token"],
                "properties": {"token": {"type": "string", "minLength": 1},
                               "next": {"type": "string",
                                        "description": "The studio page to go back to."}}}},
        },
    }
}


def _path_parameter(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string", "minLength": 1}}


def default_dist() -> Traversable:
    """The built studio in the installed package (it may not exist: no build)."""
    return resources.files("ingest.api").joinpath("studio_dist")


class StudioRoutes:
    """The studio's pages, files and login. ``dist`` is the built app (tests give a
    folder of their own); ``tokens`` the API's token table; ``trusted_origins`` URLs whose
    origin counts as the API's own besides the request's (the public URL)."""

    def __init__(self, *, tokens: TokenTable, dist: Traversable | None = None,
                 trusted_origins: Collection[str] = ()) -> None:
        self._tokens = tokens
        self._dist = default_dist() if dist is None else dist
        self._trusted = tuple(trusted_origins)

    def specs(self) -> list[RouteSpec]:
        page_parameters = {
            "/experiments/{name}": [_path_parameter("name", "The experiment's name.")],
            "/runs/{run_id}": [_path_parameter("run_id", "The run's id.")],
            "/compute/{target}": [_path_parameter("target", "The compute target's name.")],
            "/models/{name}": [_path_parameter("name", "The model's name.")],
        }
        specs = [
            RouteSpec(
                method="GET", path=path, handler=self.page,
                operation_id="studioPage" + _operation_suffix(path),
                summary=f"The studio's page {path} (the web app's index.html; no data).",
                responses={200: "The app's HTML (Cache-Control: no-cache).",
                           304: "Not modified (If-None-Match).",
                           503: "The studio is not built: an HTML page saying how."},
                response_content={200: _HTML, 503: _HTML},
                extra={"parameters": page_parameters[path]} if path in page_parameters else {},
                public=True,
            )
            for path in SPA_PATHS
        ]
        specs += [
            RouteSpec(
                method="GET", path=ASSETS_PATH, handler=self.asset,
                operation_id="studioAsset",
                summary="A built file of the studio (script, style, font, image), cached "
                "as immutable: its name changes with its content.",
                responses={200: "The file (Content-Type from its extension).",
                           404: "No such file."},
                response_content={200: {"*/*": {"schema": {"type": "string",
                                                           "format": "binary"}}}},
                extra={"parameters": [_path_parameter("file", "The file's name.")]},
                public=True,
            ),
            RouteSpec(
                method="GET", path="/studio/session", handler=self.session,
                operation_id="studioSession",
                summary="Whether the API asks for tokens, and what this browser's cookie "
                "(or bearer token) grants.",
                responses={200: "The session."},
                response_content={200: _SESSION},
                schemas={"StudioSession": _SESSION_SCHEMA},
                public=True,
            ),
            RouteSpec(
                method="POST", path="/studio/login", handler=self.login,
                operation_id="studioLogin",
                summary="Check a token (JSON or form field 'token') and keep it in the "
                "HttpOnly, SameSite=Strict cookie runstream_token for the studio.",
                responses={200: "Logged in (JSON: the session); the cookie is set.",
                           303: "From the studio's form: back to its page 'next' (this "
                                "origin's), with the cookie, or with ?login_failed=1 when "
                                "the token was refused.",
                           400: "No token in the body.",
                           403: "An invalid token (JSON), or a request from another origin.",
                           413: "The body is too large."},
                response_content={200: _SESSION},
                extra=_LOGIN_BODY,
                public=True,
            ),
            RouteSpec(
                method="POST", path="/studio/logout", handler=self.logout,
                operation_id="studioLogout",
                summary="Remove the studio's cookie.",
                responses={204: "Logged out.", 403: "A request from another origin."},
                public=True,
            ),
        ]
        return specs

    # --- pages and files ----------------------------------------------------------------

    async def page(self, request: web.Request) -> web.StreamResponse:
        index = self._dist.joinpath("index.html")
        body = await asyncio.to_thread(_read_if_file, index)
        if body is None:
            return web.Response(status=503, text=_NOT_BUILT_PAGE, content_type="text/html",
                                charset="utf-8",
                                headers={hdrs.CACHE_CONTROL: "no-store", **_PAGE_HEADERS})
        etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
        headers = {hdrs.CACHE_CONTROL: "no-cache", hdrs.ETAG: etag, **_PAGE_HEADERS}
        if _matches(request.headers.get(hdrs.IF_NONE_MATCH), etag):
            return web.Response(status=304, headers=headers)
        return _file_response(request, body, "text/html", headers)

    async def asset(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["file"]
        body = None
        if _ASSET_NAME.fullmatch(name) and ".." not in name:
            body = await asyncio.to_thread(
                _read_if_file, self._dist.joinpath("assets").joinpath(name))
        if body is None:
            raise web.HTTPNotFound(text=f"no studio file {name[:80]!r}")
        return _file_response(request, body, _content_type(name), {
            hdrs.CACHE_CONTROL: _IMMUTABLE, "X-Content-Type-Options": "nosniff"})

    # --- the browser's token ------------------------------------------------------------

    async def session(self, request: web.Request) -> web.StreamResponse:
        grant = self._grant(request)
        return _session_response(self._tokens.enabled, grant)

    async def login(self, request: web.Request) -> web.StreamResponse:
        self._same_origin_or_403(request)
        form = _is_form(request)
        token, next_path = await _presented_token(request, form=form)
        grant = self._tokens.grant(token) if self._tokens.enabled else ADMIN
        if grant is None and not form:
            raise web.HTTPForbidden(text="invalid token")
        response: web.StreamResponse
        if form:
            # The studio's sign-in form: back to the page it was shown on, with
            # ?login_failed=1 when the token was refused (the form says so).
            response = web.Response(status=303, headers={
                hdrs.LOCATION: _with_login_failed(next_path, failed=grant is None)})
        else:
            response = _session_response(self._tokens.enabled, grant)
        response.headers[hdrs.CACHE_CONTROL] = "no-store"
        if self._tokens.enabled and grant is not None:
            response.set_cookie(TOKEN_COOKIE, cookie_value(token), path="/", httponly=True,
                                samesite="Strict", secure=self._secure(request),
                                max_age=COOKIE_MAX_AGE_S)
        return response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        self._same_origin_or_403(request)
        return web.Response(status=204, headers={hdrs.SET_COOKIE: cleared_cookie(),
                                                 hdrs.CACHE_CONTROL: "no-store"})

    def _grant(self, request: web.Request) -> Grant | None:
        """What the request's bearer header, else its cookie, grants (ADMIN: auth off)."""
        if not self._tokens.enabled:
            return ADMIN
        authorization = request.headers.get(hdrs.AUTHORIZATION)
        presented = (bearer_token(authorization) if authorization is not None
                     else cookie_token(request))
        return None if presented is None else self._tokens.grant(presented)

    def _same_origin_or_403(self, request: web.Request) -> None:
        # A request without Origin and Sec-Fetch-Site is not from a browser page (curl, a
        # script): nothing to forge there. A browser always sends one of them on a POST.
        from_browser = (hdrs.ORIGIN in request.headers
                        or "Sec-Fetch-Site" in request.headers)
        if from_browser and not same_origin(request, self._trusted):
            raise web.HTTPForbidden(text="cross-site request refused: log in from the "
                                    "studio's own origin")

    def _secure(self, request: web.Request) -> bool:
        return request.secure or any(url.lower().startswith("https://") for url in self._trusted)


def _operation_suffix(path: str) -> str:
    words = [part.strip("{}") for part in path.split("/") if part]
    return "".join(w.title().replace("_", "") for w in words) or "Home"


def _read_if_file(path: Traversable) -> bytes | None:
    try:
        return path.read_bytes() if path.is_file() else None
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None


def _content_type(name: str) -> str:
    dot = name.rfind(".")
    return _CONTENT_TYPES.get(name[dot:].lower(), "application/octet-stream") if dot > 0 \
        else "application/octet-stream"


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    candidates = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in candidates or etag in candidates


def _file_response(request: web.Request, body: bytes, content_type: str,
                   headers: dict[str, str]) -> web.Response:
    charset = "utf-8" if content_type in _TEXT_TYPES else None
    response = web.Response(body=body, content_type=content_type, charset=charset,
                            headers=headers)
    if content_type in _TEXT_TYPES and len(body) >= _COMPRESS_FROM_BYTES:
        response.enable_compression()  # only when the request's Accept-Encoding allows
    return response


def _session_response(auth: bool, grant: Grant | None) -> web.Response:
    document = {
        "auth": auth,
        "authenticated": grant is not None,
        "workspaces": None if grant is None or grant.admin else sorted(grant.workspaces or ()),
    }
    return web.json_response(document, headers={hdrs.CACHE_CONTROL: "no-store"})


def _is_form(request: web.Request) -> bool:
    return request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data")


async def _presented_token(request: web.Request, *, form: bool) -> tuple[str, str]:
    """The token of a login body, and (a form's) ``next`` page: a path of this origin."""
    if request.content_length is not None and request.content_length > MAX_LOGIN_BYTES:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_LOGIN_BYTES,
                                            actual_size=request.content_length)
    token: object = None
    next_path: object = "/"
    if form:
        fields = await request.post()
        token = fields.get("token")
        next_path = fields.get("next", "/")
    else:
        raw = await request.read()
        if len(raw) > MAX_LOGIN_BYTES:
            raise web.HTTPRequestEntityTooLarge(max_size=MAX_LOGIN_BYTES, actual_size=len(raw))
        try:
            document = json.loads(raw)
        except (UnicodeDecodeError, ValueError):
            raise web.HTTPBadRequest(text="send the token as JSON {\"token\": \"…\"} or as "
                                     "the form field 'token'") from None
        if isinstance(document, dict):
            token = document.get("token")
    if not isinstance(token, str) or not token:
        raise web.HTTPBadRequest(text="no token: send JSON {\"token\": \"…\"} or the form "
                                 "field 'token'")
    return token, _local_path(next_path)


def _local_path(value: object) -> str:
    """``value`` if it is a path on this origin (``/runs/x?tab=logs``), else ``/``: never
    another host (``//evil.example``, ``/\\evil.example``, ``https://…``) — no open redirect."""
    if (not isinstance(value, str) or not value.startswith("/") or value.startswith("//")
            or len(value) > 2048 or any(c == "\\" or ord(c) < 0x20 or ord(c) == 0x7F
                                        for c in value)):
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return "/"
    return value


def _with_login_failed(path: str, *, failed: bool) -> str:
    """``path`` with ``login_failed=1`` in its query when ``failed``, without it otherwise."""
    parts = urlsplit(path)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
             if k != "login_failed"]
    if failed:
        query.append(("login_failed", "1"))
    return urlunsplit(("", "", parts.path, urlencode(query), ""))
