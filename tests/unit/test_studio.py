"""The studio's routes (ingest/api/routes/studio.py) and the browser's cookie in the auth
middleware (ingest/api/auth.py), through the real app (``create_app``) on a real port,
without a database: the studio's files come from a folder of the test's own, standing in
for the Vite build in ``ingest/api/studio_dist/``. What a workspace-scoped cookie reads
of real runs is tested in a browser (tests/browser/)."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from prometheus_client import CollectorRegistry
from yarl import URL

from ingest.api import auth
from ingest.api.app import create_app, route_specs
from ingest.api.blobstore import BlobStore
from ingest.api.openapi import build_openapi
from ingest.api.routes import studio
from ingest.server import HttpServer
from ingest.settings import Secret

ADMIN_TOKEN = "admin-token-0123456789"  # noqa: S105 - test credentials
VISION_TOKEN = "vision-token-abcdef"  # noqa: S105
ODD_TOKEN = 'semi;colon "quoted" spaced=équal,'  # noqa: S105

INDEX = (b'<!doctype html><html><head><script type="module" crossorigin '
         b'src="/studio/assets/index-3f2a1b.js"></script></head><body><div id="app"></div>'
         b"</body></html>\n")
SCRIPT = b"console.log('studio');\n" * 200  # large enough to be compressed
PAGES = ["/", "/experiments/diabetes", "/runs/diabetes_1795839693_928d6500", "/compute",
         "/compute/gpu-cluster", "/models", "/models/ridge"]

Serve = Callable[..., Awaitable[str]]


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    """A built studio as Vite lays it out, and a secret beside it that must stay unread."""
    root = tmp_path / "studio_dist"
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_bytes(INDEX)
    (root / "assets" / "index-3f2a1b.js").write_bytes(SCRIPT)
    (root / "assets" / "index-77aa00.css").write_text("body{margin:0}\n")
    (root / "assets" / "inter-latin-400.woff2").write_bytes(b"wOF2\x00\x01")
    (root / "assets" / "logo-1a2b.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    (root / "assets" / "data-9f9f.bin").write_bytes(b"\x00\x01")
    (root / "assets" / "nested").mkdir()
    (tmp_path / "secret.txt").write_text("not for the browser\n")
    return root


@pytest.fixture
async def serve(tmp_path: Path, dist: Path,
                monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Serve]:
    """``await serve(tokens=True, dist=..., public_url=...)`` → the URL of the real API."""
    async with contextlib.AsyncExitStack() as exits:

        async def start(*, tokens: bool = True, built: bool = True,
                        public_url: str | None = None) -> str:
            folder = dist if built else tmp_path / "no-build"
            monkeypatch.setattr(studio, "default_dist", lambda: folder)
            app = create_app(
                blob_store=BlobStore(root=tmp_path / "blobs"), registry=CollectorRegistry(),
                token=Secret(ADMIN_TOKEN) if tokens else None,
                workspace_tokens={"vision": (Secret(VISION_TOKEN), Secret(ODD_TOKEN))}
                if tokens else None,
                public_url=public_url,
            )
            server = await exits.enter_async_context(HttpServer(app, port=0, access_log=False))
            return server.url

        yield start


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # No cookie jar: each test says which cookie a request carries.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(),
                                     auto_decompress=False) as session:
        yield session


async def request(http: aiohttp.ClientSession, method: str, url: str | URL,
                  **kw: Any) -> tuple[aiohttp.ClientResponse, bytes]:
    async with http.request(method, url, allow_redirects=False, **kw) as r:
        return r, await r.read()


def cookie(token: str) -> dict[str, str]:
    return {"Cookie": f"{auth.TOKEN_COOKIE}={auth.cookie_value(token)}"}


async def login(http: aiohttp.ClientSession, url: str, token: str,
                **kw: Any) -> tuple[aiohttp.ClientResponse, bytes]:
    return await request(http, "POST", f"{url}/studio/login", json={"token": token}, **kw)


def set_cookie_of(response: aiohttp.ClientResponse) -> str:
    values = response.headers.getall("Set-Cookie", [])
    assert len(values) == 1, values
    return str(values[0])


# --- pages and files ---------------------------------------------------------------------


async def test_every_page_is_the_app_uncached_with_its_etag(
        serve: Serve, http: aiohttp.ClientSession) -> None:
    url = await serve()  # tokens configured: the app's files need none
    etag = f'"{hashlib.sha256(INDEX).hexdigest()[:32]}"'
    for page in PAGES:
        r, body = await request(http, "GET", url + page)
        assert (r.status, body) == (200, INDEX), page
        assert r.headers["Content-Type"] == "text/html; charset=utf-8"
        assert r.headers["Cache-Control"] == "no-cache"
        assert r.headers["ETag"] == etag
        csp = r.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert "connect-src 'self'" in csp  # no request may leave for a CDN
        assert r.headers["X-Frame-Options"] == "DENY"
        r, body = await request(http, "GET", url + page, headers={"If-None-Match": etag})
        assert (r.status, body) == (304, b""), page
    r, body = await request(http, "GET", url + "/", headers={"If-None-Match": '"stale"'})
    assert (r.status, body) == (200, INDEX)


async def test_a_new_build_shows_at_the_next_load(
        serve: Serve, http: aiohttp.ClientSession, dist: Path) -> None:
    url = await serve()
    (dist / "index.html").write_bytes(INDEX.replace(b"3f2a1b", b"4e5d6c"))
    _, body = await request(http, "GET", url + "/runs/x")
    assert b"index-4e5d6c.js" in body


async def test_assets_have_their_types_and_are_immutable(
        serve: Serve, http: aiohttp.ClientSession) -> None:
    url = await serve()
    expected = {
        "index-3f2a1b.js": "text/javascript; charset=utf-8",
        "index-77aa00.css": "text/css; charset=utf-8",
        "inter-latin-400.woff2": "font/woff2",
        "logo-1a2b.svg": "image/svg+xml; charset=utf-8",
        "data-9f9f.bin": "application/octet-stream",
    }
    for name, content_type in expected.items():
        r, body = await request(http, "GET", f"{url}/studio/assets/{name}")
        assert r.status == 200, name
        assert r.headers["Content-Type"] == content_type
        assert r.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert r.headers["X-Content-Type-Options"] == "nosniff"
    r, body = await request(http, "GET", f"{url}/studio/assets/index-3f2a1b.js",
                            headers={"Accept-Encoding": "gzip"})
    assert r.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(body) == SCRIPT
    r, body = await request(http, "GET", f"{url}/studio/assets/index-3f2a1b.js",
                            headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in r.headers
    assert body == SCRIPT


@pytest.mark.parametrize("path", [
    "/studio/assets/..%2Fsecret.txt", "/studio/assets/..%2F..%2Fsecret.txt",
    "/studio/assets/%2e%2e%2f%2e%2e%2fsecret.txt", "/studio/assets/..",
    "/studio/assets/.%2e", "/studio/assets/nested", "/studio/assets/missing-0000.js",
    "/studio/assets/%2Fetc%2Fpasswd", "/studio/assets/..%5c..%5csecret.txt",
    "/studio/assets/index-3f2a1b.js%00.css", "/studio/assets/../../secret.txt",
    "/studio/index.html", "/studio/assets/", "/studio/",
])  # fmt: skip
async def test_nothing_outside_the_assets_is_served(
        serve: Serve, http: aiohttp.ClientSession, path: str) -> None:
    url = await serve(tokens=False)
    r, body = await request(http, "GET", URL(url + path, encoded=True))
    assert r.status in (400, 404), (path, r.status)
    assert b"not for the browser" not in body
    assert b"<!doctype" not in body


@pytest.mark.parametrize("name", ["../secret.txt", "..", ".", "../../secret.txt", "/etc/passwd",
                                  "..\\secret.txt", "nested", "a/../../secret.txt", ".hidden",
                                  "index-3f2a1b.js\x00", "x" * 300])
async def test_the_asset_handler_refuses_names_that_leave_the_folder(
        dist: Path, name: str) -> None:
    (dist / "assets" / ".hidden").write_text("dot file")
    routes = studio.StudioRoutes(tokens=auth.TokenTable(), dist=dist)
    req = make_mocked_request("GET", "/studio/assets/x", match_info={"file": name})
    with pytest.raises(web.HTTPNotFound):
        await routes.asset(req)


async def test_without_a_build_the_pages_say_how_to_build_it(
        serve: Serve, http: aiohttp.ClientSession) -> None:
    url = await serve(built=False)
    for page in PAGES:
        r, body = await request(http, "GET", url + page)
        assert r.status == 503, page
        assert r.headers["Content-Type"] == "text/html; charset=utf-8"
        assert r.headers["Cache-Control"] == "no-store"
        assert studio.BUILD_COMMAND.encode() in body
        assert b"cd studio &amp;&amp;" not in body  # shown as typed, in a <pre>
    r, _ = await request(http, "GET", f"{url}/studio/assets/index-3f2a1b.js")
    assert r.status == 404
    r, _ = await request(http, "GET", f"{url}/healthz")
    assert r.status == 200


def test_the_build_is_read_from_the_package() -> None:
    folder = studio.default_dist()
    assert str(folder).replace("\\", "/").endswith("ingest/api/studio_dist")


# --- login, logout, session ---------------------------------------------------------------


async def test_login_checks_the_token_and_sets_an_httponly_strict_cookie(
        serve: Serve, http: aiohttp.ClientSession) -> None:
    url = await serve()
    r, body = await login(http, url, VISION_TOKEN)
    assert r.status == 200
    assert json.loads(body) == {"auth": True, "authenticated": True, "workspaces": ["vision"]}
    set_cookie = set_cookie_of(r)
    attributes = {part.strip().split("=")[0].lower() for part in set_cookie.split(";")}
    assert set_cookie.startswith(f"{auth.TOKEN_COOKIE}={auth.cookie_value(VISION_TOKEN)};")
    assert {"httponly", "samesite", "path", "max-age"} <= attributes
    assert "SameSite=Strict" in set_cookie
    assert "Path=/" in set_cookie
    assert "secure" not in attributes  # http: a Secure cookie would never come back
    assert r.headers["Cache-Control"] == "no-store"
    assert VISION_TOKEN not in set_cookie  # encoded, though not secret from its owner

    r, body = await login(http, url, ADMIN_TOKEN)
    assert json.loads(body) == {"auth": True, "authenticated": True, "workspaces": None}

    for bad in ("wrong-token", VISION_TOKEN + " ", VISION_TOKEN.upper()):
        r, body = await login(http, url, bad)
        assert r.status == 403, bad
        assert "Set-Cookie" not in r.headers
        assert json.loads(body)["error"]["message"] == "invalid token"


async def test_login_from_the_form_goes_back_to_its_page(
        serve: Serve, http: aiohttp.ClientSession) -> None:
    url = await serve()

    async def form(token: str, next_path: str | None) -> aiohttp.ClientResponse:
        fields = {"token": token} if next_path is None else {"token": token, "next": next_path}
        r, _ = await request(http, "POST", f"{url}/studio/login", data=fields,
                             headers={"Origin": url})
        assert r.status == 303
        return r

    r = await form(VISION_TOKEN, "/runs/diabetes_1_0a0b0c0d?tab=logs&login_failed=1")
    assert r.headers["Location"] == "/runs/diabetes_1_0a0b0c0d?tab=logs"
    assert "HttpOnly" in set_cookie_of(r)
    r = await form(VISION_TOKEN, None)
    assert r.headers["Location"] == "/"
    r = await form("nope", "/compute/gpu")
    assert r.headers["Location"] == "/compute/gpu?login_failed=1"
    assert "Set-Cookie" not in r.headers
    for elsewhere in ("//evil.example/x", "/\\evil.example", "https://evil.example/",
                      "evil.example", "/ok\r\nSet-Cookie: x=y", "", "/" + "a" * 3000):
        r = await form(VISION_TOKEN, elsewhere)
        assert r.headers["Location"] == "/", elsewhere


@pytest.mark.parametrize("body", [
    {"json": {}}, {"json": {"token": ""}}, {"json": {"token": 5}}, {"json": ["t"]},
    {"data": b"not json", "headers": {"Content-Type": "application/json"}},
    {"data": {"other": "x"}}, {"data": b"\xff\xfe", "headers": {"Content-Type": "text/plain"}},
])  # fmt: skip
async def test_login_without_a_token_is_400(
        serve: Serve, http: aiohttp.ClientSession, body: dict[str, Any]) -> None:
    url = await serve()
    r, answer = await request(http, "POST", f"{url}/studio/login", **body)
    assert r.status == 400
    assert "token" in json.loads(answer)["error"]["message"]


async def test_a_huge_login_body_is_413(serve: Serve, http: aiohttp.ClientSession) -> None:
    url = await serve()
    r, _ = await login(http, url, "x" * (studio.MAX_LOGIN_BYTES + 1))
    assert r.status == 413


async def test_login_and_logout_from_another_origin_are_refused(
        serve: Serve, http: aiohttp.ClientSession) -> None:
    url = await serve()
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"},
                    {"Origin": url.replace("127.0.0.1", "localhost")},
                    {"Sec-Fetch-Site": "same-site"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Origin": url, "Sec-Fetch-Site": "cross-site"}):
        r, _ = await login(http, url, VISION_TOKEN, headers=headers)
        assert r.status == 403, headers
        assert "Set-Cookie" not in r.headers
        r, _ = await request(http, "POST", f"{url}/studio/logout", headers=headers)
        assert r.status == 403, headers
    for headers in ({"Origin": url}, {"Sec-Fetch-Site": "same-origin"}, {}):
        r, _ = await login(http, url, VISION_TOKEN, headers=headers)
        assert r.status == 200, headers


async def test_the_cookie_is_secure_behind_an_https_public_url(
        serve: Serve, http: aiohttp.ClientSession) -> None:
    url = await serve(public_url="https://runstream.example")
    r, _ = await login(http, url, VISION_TOKEN, headers={"Origin": "https://runstream.example"})
    assert r.status == 200
    assert "Secure" in set_cookie_of(r)


async def test_logout_clears_the_cookie(serve: Serve, http: aiohttp.ClientSession) -> None:
    url = await serve()
    r, _ = await request(http, "POST", f"{url}/studio/logout", headers=cookie(VISION_TOKEN))
    assert r.status == 204
    cleared = set_cookie_of(r)
    assert cleared.startswith(f'{auth.TOKEN_COOKIE}="";')
    assert "Max-Age=0" in cleared
    assert "Path=/" in cleared


async def test_the_session_says_whether_auth_is_on_and_what_the_cookie_grants(
        serve: Serve, http: aiohttp.ClientSession) -> None:
    url = await serve()
    cases = [
        ({}, {"auth": True, "authenticated": False, "workspaces": None}),
        (cookie(VISION_TOKEN), {"auth": True, "authenticated": True, "workspaces": ["vision"]}),
        (cookie("revoked"), {"auth": True, "authenticated": False, "workspaces": None}),
        ({"Authorization": f"Bearer {ADMIN_TOKEN}"},
         {"auth": True, "authenticated": True, "workspaces": None}),
        ({"Authorization": "Bearer wrong", **cookie(VISION_TOKEN)},
         {"auth": True, "authenticated": False, "workspaces": None}),
    ]
    for headers, expected in cases:
        r, body = await request(http, "GET", f"{url}/studio/session", headers=headers)
        assert (r.status, json.loads(body)) == (200, expected), headers
    open_url = await serve(tokens=False)
    r, body = await request(http, "GET", f"{open_url}/studio/session")
    assert json.loads(body) == {"auth": False, "authenticated": True, "workspaces": None}
    r, body = await login(http, open_url, "anything")
    assert r.status == 200
    assert "Set-Cookie" not in r.headers  # nothing to keep: auth is off


# --- the cookie in the auth middleware ---------------------------------------------------


async def test_the_cookie_authenticates_reads_like_the_bearer_header(
        serve: Serve, http: aiohttp.ClientSession) -> None:
    url = await serve()
    openapi = f"{url}/v1/openapi.json"
    r, _ = await request(http, "GET", openapi)
    assert r.status == 401
    for token in (VISION_TOKEN, ADMIN_TOKEN, ODD_TOKEN):
        r, _ = await request(http, "GET", openapi, headers=cookie(token))
        assert r.status == 200, token
    # What login set is what the middleware reads back (an odd token survives as a cookie).
    r, _ = await login(http, url, ODD_TOKEN)
    value = set_cookie_of(r).split(";")[0]
    r, _ = await request(http, "GET", openapi, headers={"Cookie": value})
    assert r.status == 200


async def test_a_revoked_or_garbled_cookie_is_401_and_cleared(
        serve: Serve, http: aiohttp.ClientSession) -> None:
    url = await serve()
    for value in (auth.cookie_value("revoked"), "%%%not-base64", "", auth.cookie_value("")):
        r, body = await request(http, "GET", f"{url}/v1/openapi.json",
                                headers={"Cookie": f"{auth.TOKEN_COOKIE}={value}"})
        assert r.status == 401, value
        assert "log in again" in json.loads(body)["error"]["message"]
        assert "Max-Age=0" in set_cookie_of(r)
        assert r.headers["WWW-Authenticate"] == 'Bearer realm="runstream"'


async def test_an_authorization_header_wins_over_the_cookie(
        serve: Serve, http: aiohttp.ClientSession) -> None:
    url = await serve()
    for authorization, status in (("Bearer wrong", 403), ("Basic eDp5", 401),
                                  (f"Bearer {ADMIN_TOKEN}", 200)):
        r, _ = await request(http, "GET", f"{url}/v1/openapi.json",
                             headers={"Authorization": authorization, **cookie(VISION_TOKEN)})
        assert r.status == status, authorization


async def test_cookie_writes_must_come_from_the_same_origin(
        serve: Serve, http: aiohttp.ClientSession) -> None:
    url = await serve(public_url="https://runstream.example")
    data = b"bytes the studio never uploads, but a write all the same"
    blob = f"{url}/v1/blobs/{hashlib.sha256(data).hexdigest()}"
    refused = [{}, {"Origin": "http://evil.example"}, {"Origin": "null"},
               {"Origin": "http://127.0.0.1:1"}, {"Sec-Fetch-Site": "same-site"},
               {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "none"},
               {"Origin": url, "Sec-Fetch-Site": "cross-site"}]
    for headers in refused:
        r, body = await request(http, "PUT", blob, data=data,
                                headers={**cookie(VISION_TOKEN), **headers})
        assert r.status == 403, headers
        assert "cross-site request refused" in json.loads(body)["error"]["message"]
    allowed = [{"Origin": url}, {"Sec-Fetch-Site": "same-origin"},
               {"Origin": "https://runstream.example"},
               {"Origin": "https://runstream.example:443"},
               {"Origin": "http://evil.example", "Sec-Fetch-Site": "same-origin"}]
    for headers in allowed:
        r, _ = await request(http, "PUT", blob, data=data,
                             headers={**cookie(VISION_TOKEN), **headers})
        assert r.status in (200, 201), headers
    # Reads need no Origin; header-token writes (the SDK, agents) are unchanged.
    r, _ = await request(http, "GET", blob, headers=cookie(VISION_TOKEN))
    assert r.status == 200
    r, _ = await request(http, "PUT", blob, data=data,
                         headers={"Authorization": f"Bearer {VISION_TOKEN}",
                                  "Origin": "http://evil.example"})
    assert r.status in (200, 201)


@pytest.mark.parametrize(("host", "scheme", "origin", "fetch_site", "same"), [
    ("example.com", "http", "http://example.com", None, True),
    ("example.com", "http", "http://example.com:80", None, True),
    ("example.com:8470", "http", "http://EXAMPLE.com:8470", None, True),
    ("example.com:8470", "http", "http://example.com", None, False),
    ("example.com", "http", "https://example.com", None, False),
    ("example.com", "http", "http://example.com.evil.example", None, False),
    ("example.com", "http", "http://user@evil.example", None, False),
    ("example.com", "http", "http://example.com:notaport", None, False),
    ("example.com", "http", "null", None, False),
    ("example.com", "http", None, None, False),
    ("example.com", "http", None, "same-origin", True),
    ("example.com", "http", None, "Same-Origin", True),
    ("example.com", "http", "http://example.com", "same-site", False),
    ("proxy.internal:8470", "http", "https://runstream.example", None, True),
])  # fmt: skip
def test_same_origin(host: str, scheme: str, origin: str | None, fetch_site: str | None,
                     same: bool) -> None:
    headers = {"Host": host}
    if origin is not None:
        headers["Origin"] = origin
    if fetch_site is not None:
        headers["Sec-Fetch-Site"] = fetch_site
    req = make_mocked_request("POST", "/v1/runs/x/cancel", headers=headers)
    req = req.clone(scheme=scheme)
    assert auth.same_origin(req, ["https://runstream.example/"]) is same


def test_cookie_values_round_trip() -> None:
    for token in (VISION_TOKEN, ODD_TOKEN, "ü" * 3, "a", "ab", "abc"):
        value = auth.cookie_value(token)
        assert value.isascii()
        assert ";" not in value
        assert "=" not in value
        req = make_mocked_request("GET", "/", headers={"Cookie": f"{auth.TOKEN_COOKIE}={value}"})
        assert auth.cookie_token(req) == token
    assert auth.cookie_token(make_mocked_request("GET", "/")) is None


def test_openapi_documents_the_studio_as_public() -> None:
    app = create_app(blob_store=BlobStore(root=Path("/nonexistent/blobs")),
                     registry=CollectorRegistry(), token=Secret(ADMIN_TOKEN))
    doc = build_openapi(route_specs(app), version="test", auth_enabled=True)
    paths = {**dict.fromkeys(studio.SPA_PATHS, "get"), "/studio/assets/{file}": "get",
             "/studio/session": "get", "/studio/login": "post", "/studio/logout": "post"}
    for path, method in paths.items():
        operation = doc["paths"][path][method]
        assert operation["security"] == [], path
        assert "401" not in operation["responses"], path
    assert "text/html" in doc["paths"]["/"]["get"]["responses"]["503"]["content"]
    login_body = doc["paths"]["/studio/login"]["post"]["requestBody"]["content"]
    assert {"application/json", "application/x-www-form-urlencoded"} <= login_body.keys()


def test_routes_are_plain_aiohttp_routes() -> None:
    # A page path never shadows the API: /v1, /metrics, /healthz keep their handlers.
    app = create_app(blob_store=BlobStore(root=Path("/nonexistent/blobs")),
                     registry=CollectorRegistry())
    canonical = {r.resource.canonical for r in app.router.routes() if r.resource is not None}
    assert set(studio.SPA_PATHS) <= canonical
    assert {"/metrics", "/healthz", "/v1/openapi.json"} <= canonical
