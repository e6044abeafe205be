"""Bearer tokens and what they grant: every workspace (the admin token) or some of them.

Configuration (``ingest/settings.py``): ``RUNSTREAM_TOKEN`` is the admin token;
``RUNSTREAM_WORKSPACE_TOKENS`` maps workspaces to tokens that grant only them;
``RUNSTREAM_AGENT_TOKENS`` maps compute targets to the tokens of the agents serving them.
With none, auth is off (``api.run_api`` warns when such an API listens beyond loopback).

An agent token grants its targets, not workspaces: the agent routes of those targets
(``routes/jobs.py``), and every ``/v1/runs/{run_id}`` route of a run submitted to one of
them — the agent reads the snapshot, the script it runs reads and logs into its own run
with the same token — plus blob uploads for any workspace (the outputs of the runs it
runs; uploads never reveal other bytes). It lists and reads nothing else.

A request's token resolves to a ``Grant``, kept on the request for handlers
(``grant_of``). How the grant is enforced:

- No ``Authorization`` header: 401 with ``WWW-Authenticate``; a token nobody configured:
  403. Health probes (``public`` routes) are exempt; unknown paths need a token too, so
  404/405 answers do not reveal which paths exist.
- Tokens are compared in constant time: the presented token and every configured one
  are hashed (SHA-256) and every digest is compared with ``hmac.compare_digest``, with
  no early exit, so neither the position of a differing byte, nor the length of a
  configured token, nor which entry matched shows in the timing.
- Routes under ``/v1/runs/{run_id}``: the run's workspace must be granted, else 404
  ``no run '…'`` — the same answer as for a run that does not exist, so a token for
  workspace A cannot even learn which run ids exist in B. Checked here, once, for every
  such route, so a new route cannot forget it.
- Lists (``/v1/runs``, ``/v1/experiments``, a compute target's active runs) are filtered to
  the granted workspaces by their handlers; asking for another workspace is a 403.
- Blobs: ``PUT /v1/blobs/{sha256}`` with a scoped token records the blob for the
  workspace (``X-Runstream-Workspace`` names it when the token grants several); GET/HEAD
  answer 404 unless one of the granted workspaces uploaded those bytes itself, so a
  digest cannot be used to probe another workspace's files.
- Compute targets' queue counts, ``/metrics``, the schema registry and the OpenAPI
  document are cluster-wide and readable with any valid token.

The studio (``routes/studio.py``) is a browser app, and ``EventSource`` cannot send an
``Authorization`` header, so a browser may present its token in the cookie
``runstream_token`` instead (HttpOnly, SameSite=Strict; set by ``POST /studio/login``
after checking the token against this same table). The cookie is read only when the
request has no ``Authorization`` header, and grants exactly what the token grants. A
cookie whose token is no longer configured is a 401 that clears it (the studio asks
again). Because a browser attaches cookies by itself, a state-changing request (anything
but GET/HEAD/OPTIONS) authenticated by the cookie must show it comes from the API's own
origin — ``Sec-Fetch-Site: same-origin``, or, from a browser that does not send that
header, an ``Origin`` equal to the request's own origin or to the configured public URL's
— else 403. SameSite=Strict alone is not enough: another port of the same host (a
notebook server on localhost:8888) is the same *site*. Requests with a bearer header
(the SDK, agents) are unaffected.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from ingest.api.http import route_label
from ingest.settings import Secret

__all__ = [
    "ADMIN",
    "SAFE_METHODS",
    "TOKEN_COOKIE",
    "WORKSPACE_HEADER",
    "Grant",
    "TokenTable",
    "acting_workspace",
    "auth_middleware",
    "bearer_token",
    "cleared_cookie",
    "cookie_token",
    "cookie_value",
    "grant_of",
    "origin_of",
    "same_origin",
]

#: Names the workspace a blob upload belongs to when the token grants several.
WORKSPACE_HEADER: Final = "X-Runstream-Workspace"

#: The studio's cookie holding a browser's token (``routes/studio.py`` sets it).
TOKEN_COOKIE: Final = "runstream_token"  # noqa: S105 - a cookie name
#: Methods that change nothing: a cookie-authenticated request of another method must
#: come from the API's own origin.
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})

RunWorkspace = Callable[[str], Awaitable[str | None]]
RunTarget = Callable[[str], Awaitable[str | None]]


@dataclass(frozen=True, slots=True)
class Grant:
    """The workspaces a request may read and write; ``workspaces`` None means all.
    ``targets``: the compute targets an agent token serves."""

    workspaces: frozenset[str] | None
    targets: frozenset[str] = frozenset()

    @property
    def admin(self) -> bool:
        return self.workspaces is None

    def allows(self, workspace: str) -> bool:
        return self.workspaces is None or workspace in self.workspaces

    def sorted(self) -> tuple[str, ...] | None:
        """The granted workspaces in order (an SQL parameter); None for all."""
        return None if self.workspaces is None else tuple(sorted(self.workspaces))


#: Everything: the admin token, or auth switched off.
ADMIN: Final = Grant(None)
_GRANT_KEY: Final = web.RequestKey("runstream_grant", Grant)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenTable:
    """The configured tokens, kept only as SHA-256 digests; never shown in ``repr``."""

    def __init__(
        self,
        *,
        admin: Secret | None = None,
        workspaces: Mapping[str, Sequence[Secret]] | None = None,
        agents: Mapping[str, Sequence[Secret]] | None = None,
        compare: Callable[[bytes, bytes], bool] = hmac.compare_digest,
    ) -> None:
        """``compare`` compares two digests in constant time (tests count its calls)."""
        self._compare = compare
        entries: list[tuple[bytes, str | None, str | None]] = []
        if admin:
            entries.append((_digest(admin.value), None, None))
        for workspace, tokens in (workspaces or {}).items():
            entries.extend((_digest(t.value), workspace, None) for t in tokens if t)
        for target, tokens in (agents or {}).items():
            entries.extend((_digest(t.value), None, target) for t in tokens if t)
        self._entries = tuple(entries)

    def __repr__(self) -> str:
        return f"TokenTable({len(self._entries)} tokens)"

    @property
    def enabled(self) -> bool:
        return bool(self._entries)

    def grant(self, presented: str) -> Grant | None:
        """What ``presented`` grants, or None for a token nobody configured."""
        digest = _digest(presented)
        admin = False
        workspaces: set[str] = set()
        targets: set[str] = set()
        for expected, workspace, target in self._entries:
            # Every entry is compared (no early exit), each in constant time.
            if self._compare(digest, expected):
                if workspace is not None:
                    workspaces.add(workspace)
                elif target is not None:
                    targets.add(target)
                else:
                    admin = True
        if admin:
            return ADMIN
        if not workspaces and not targets:
            return None
        return Grant(frozenset(workspaces), frozenset(targets))


def bearer_token(authorization: str | None) -> str | None:
    """The credentials of an ``Authorization: Bearer …`` header, else None."""
    if not authorization:
        return None
    scheme, _, credentials = authorization.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() != "bearer" or not credentials:
        return None
    return credentials


def cookie_value(token: str) -> str:
    """The ``runstream_token`` cookie's value for ``token``: URL-safe base64 (unpadded), so
    that any token — quotes, semicolons, spaces, non-ASCII — survives as a cookie."""
    return base64.urlsafe_b64encode(token.encode()).decode("ascii").rstrip("=")


def cleared_cookie() -> str:
    """A ``Set-Cookie`` value that removes the ``runstream_token`` cookie."""
    return (f'{TOKEN_COOKIE}=""; expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; '
            "Path=/; HttpOnly; SameSite=Strict")


def cookie_token(request: web.BaseRequest) -> str | None:
    """The token a request's ``runstream_token`` cookie holds; None without one. A cookie
    that does not decode gives ``""``, which no table grants."""
    value = request.cookies.get(TOKEN_COOKIE)
    if value is None:
        return None
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return ""


def origin_of(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an origin or URL, default ports filled in; None if it has
    none (``null``, garbage)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port or (443 if scheme == "https" else 80)


def same_origin(request: web.BaseRequest, trusted: Collection[str] = ()) -> bool:
    """Whether the browser says this request comes from the API's own origin:
    ``Sec-Fetch-Site: same-origin`` (set by the browser, not by page scripts), or — from a
    browser that sends no ``Sec-Fetch-Site`` — an ``Origin`` equal to the request's own
    (scheme and Host) or to one of ``trusted`` (the configured public URL, for a proxy
    that changes the Host or terminates TLS). No header at all: False."""
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None:
        return fetch_site.strip().lower() == "same-origin"
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is None:
        return False
    presented = origin_of(origin)
    if presented is None:
        return False
    own = origin_of(f"{request.scheme}://{request.host}")
    return presented == own or any(presented == origin_of(url) for url in trusted)


def grant_of(request: web.Request) -> Grant:
    """The request's grant (``ADMIN`` when auth is off)."""
    grant: Grant = request.get(_GRANT_KEY, ADMIN)
    return grant


def forbidden_workspace(workspace: str) -> web.HTTPForbidden:
    return web.HTTPForbidden(text=f"this token does not grant workspace {workspace[:80]!r}")


def acting_workspace(request: web.Request, named: str | None = None, *,
                     agents_may: bool = False) -> str | None:
    """The one workspace a write (or a read by name) acts in: ``named`` (given in the body
    or query), else the ``X-Runstream-Workspace`` header, else a scoped token's only
    workspace; None when an admin request names none. 403 when the token does not grant
    the named workspace (``agents_may``: an agent token may name any), 400 when a token
    granting several names none."""
    grant = grant_of(request)
    if named is None:
        named = request.headers.get(WORKSPACE_HEADER)
    if named is not None:
        if not grant.allows(named) and not (agents_may and grant.targets):
            raise forbidden_workspace(named)
        return named
    if grant.workspaces is None:
        return None
    if len(grant.workspaces) == 1:
        return next(iter(grant.workspaces))
    raise web.HTTPBadRequest(
        text=f"this token grants several workspaces; name one in the {WORKSPACE_HEADER} header"
    )


def auth_middleware(
    tokens: TokenTable,
    *,
    public_routes: Collection[str],
    run_workspace: RunWorkspace | None = None,
    run_target: RunTarget | None = None,
    trusted_origins: Collection[str] = (),
) -> Middleware:
    """Resolve the bearer token (or the studio's cookie) to a ``Grant``; 401/403/404 as
    the module docstring says.

    ``run_workspace(run_id)`` gives a run's workspace (None: no such run); without it
    (no database) no route addresses runs. ``run_target(run_id)`` gives the compute
    target a run was submitted to (None: not submitted), for agent tokens.
    ``trusted_origins``: URLs whose origin counts as the API's own for cookie-authenticated
    writes (the public URL), besides the request's own.
    """
    challenge = {hdrs.WWW_AUTHENTICATE: 'Bearer realm="runstream"'}

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if route_label(request) in public_routes:
            return await handler(request)
        authorization = request.headers.get(hdrs.AUTHORIZATION)
        presented = bearer_token(authorization)
        from_cookie = False
        if authorization is None:
            presented = cookie_token(request)
            from_cookie = presented is not None
        if presented is None:
            raise web.HTTPUnauthorized(text="missing bearer token", headers=challenge)
        grant = tokens.grant(presented)
        if grant is None and from_cookie:
            # A token revoked since the browser logged in: log in again.
            raise web.HTTPUnauthorized(
                text="the studio's token is no longer valid; log in again",
                headers={**challenge, hdrs.SET_COOKIE: cleared_cookie()})
        if grant is None:
            raise web.HTTPForbidden(text="invalid bearer token")
        if (from_cookie and request.method not in SAFE_METHODS
                and not same_origin(request, trusted_origins)):
            raise web.HTTPForbidden(
                text="cross-site request refused: a request authenticated by the studio's "
                "cookie that changes something must come from the studio's own origin "
                "(Origin or Sec-Fetch-Site header)")
        request[_GRANT_KEY] = grant
        run_id = request.match_info.get("run_id")
        if run_id is not None and not grant.admin and run_workspace is not None:
            workspace = await run_workspace(run_id)
            allowed = workspace is not None and grant.allows(workspace)
            if not allowed and grant.targets and run_target is not None:
                allowed = await run_target(run_id) in grant.targets
            if not allowed:
                raise web.HTTPNotFound(text=f"no run {run_id[:80]!r}")
        return await handler(request)

    return auth
