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
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from ingest.api.http import route_label
from ingest.settings import Secret

__all__ = [
    "ADMIN",
    "WORKSPACE_HEADER",
    "Grant",
    "TokenTable",
    "acting_workspace",
    "auth_middleware",
    "bearer_token",
    "grant_of",
]

#: Names the workspace a blob upload belongs to when the token grants several.
WORKSPACE_HEADER: Final = "X-Runstream-Workspace"

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
) -> Middleware:
    """Resolve the bearer token to a ``Grant``; 401/403/404 as the module docstring says.

    ``run_workspace(run_id)`` gives a run's workspace (None: no such run); without it
    (no database) no route addresses runs. ``run_target(run_id)`` gives the compute
    target a run was submitted to (None: not submitted), for agent tokens.
    """

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if route_label(request) in public_routes:
            return await handler(request)
        presented = bearer_token(request.headers.get(hdrs.AUTHORIZATION))
        if presented is None:
            raise web.HTTPUnauthorized(
                text="missing bearer token",
                headers={hdrs.WWW_AUTHENTICATE: 'Bearer realm="runstream"'},
            )
        grant = tokens.grant(presented)
        if grant is None:
            raise web.HTTPForbidden(text="invalid bearer token")
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
