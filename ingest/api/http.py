"""HTTP plumbing shared by every route module: route specs, JSON errors, middlewares.

Route modules (``ingest/api/routes/*.py``: ``blobs.py``, ``system.py``, ``runs.py``…) describe
each endpoint once as a ``RouteSpec``: method, path template, handler and its OpenAPI
operation. ``api.create_app`` registers exactly those specs on the router and builds
``/v1/openapi.json`` from the same list, so the document cannot drift from the handlers.

Middlewares, outermost first:

- ``metrics``: counts every request and times it, labelled by the *route template*
  (``/v1/blobs/{sha256}``), never by the concrete path, so a digest or run id can never
  become a label value; unmatched requests share the label ``unmatched``.
- ``errors``: every error leaves as ``{"error": {"status": N, "message": "..."}}`` with
  the same status and headers (``Allow``, ``WWW-Authenticate``) aiohttp would have sent;
  an unexpected exception is logged with its traceback and answered with a plain 500.
- ``auth`` (only with tokens configured): ``ingest/api/auth.py``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import CollectorRegistry, Counter, Histogram

logger = logging.getLogger(__name__)

UNMATCHED_ROUTE: Final = "unmatched"
EVENT_STREAM: Final = "text/event-stream"
#: Methods kept as metric label values; anything else is counted as "other".
KNOWN_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
LATENCY_BUCKETS_S: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip

RouteHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, kw_only=True)
class RouteSpec:
    """One endpoint: what the router serves and what OpenAPI documents."""

    method: str
    path: str
    handler: RouteHandler
    operation_id: str
    summary: str
    #: status code → description (OpenAPI ``responses``; error bodies added by ``openapi``).
    responses: Mapping[int, str]
    #: status code → OpenAPI ``content`` of a success response.
    response_content: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)
    #: Extra OpenAPI operation fields (parameters, requestBody, …).
    extra: Mapping[str, Any] = field(default_factory=dict)
    #: Component schemas (``#/components/schemas/<name>``) the operation references.
    schemas: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: Reachable without a token (liveness/readiness probes).
    public: bool = False
    #: aiohttp ``expect_handler`` for ``Expect: 100-continue`` (None = aiohttp default).
    expect_handler: Callable[[web.Request], Awaitable[web.StreamResponse | None]] | None = None


def error_body(status: int, message: str) -> dict[str, Any]:
    return {"error": {"status": status, "message": message}}


def json_error(
    status: int, message: str, *, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.json_response(error_body(status, message), status=status, headers=headers)


def route_label(request: web.BaseRequest) -> str:
    """The route template a request matched, e.g. ``/v1/blobs/{sha256}``."""
    match_info = getattr(request, "match_info", None)
    if match_info is None or match_info.http_exception is not None:
        return UNMATCHED_ROUTE
    resource = match_info.route.resource
    return UNMATCHED_ROUTE if resource is None else resource.canonical


def method_label(method: str) -> str:
    return method if method in KNOWN_METHODS else "other"


class HttpMetrics:
    """Request count and latency by route template (faust-style: injected registry)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "runstream_http_requests",
            "HTTP requests answered by the API, by route template, method and status.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "runstream_http_request_seconds",
            "Time from request routing to the handler's response, by route template "
            "(Server-Sent Event streams are counted, not timed: they last as long as the "
            "client listens; see runstream_sse_streams).",
            ["route"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )

    def middleware(self) -> Middleware:
        @web.middleware
        async def metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
            started = time.perf_counter()
            status = 499  # client went away before an answer (nginx's convention)
            timed = True
            try:
                response = await handler(request)
                status = response.status
                timed = response.content_type != EVENT_STREAM
                return response
            except web.HTTPException as exc:
                status = exc.status
                raise
            except Exception:
                status = 500
                raise
            finally:
                route = route_label(request)
                if timed:
                    self.latency.labels(route).observe(time.perf_counter() - started)
                self.requests.labels(route, method_label(request.method), str(status)).inc()

        return metrics


def error_middleware(unavailable: tuple[type[Exception], ...] = ()) -> Middleware:
    """JSON errors; exceptions of the ``unavailable`` types (a dependency is down) are
    answered 503 with a Retry-After instead of 500."""

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return _json_from_http_exception(exc)
        except unavailable as exc:
            logger.warning("%s %s: %s", request.method, route_label(request), exc)
            return json_error(503, "a dependency is unavailable; retry later",
                              headers={hdrs.RETRY_AFTER: "1"})
        except Exception:
            logger.exception("unhandled error in %s %s", request.method, route_label(request))
            return json_error(500, "internal server error")
        if isinstance(response, web.HTTPException) and response.status >= 400:
            return _json_from_http_exception(response)
        return response

    return errors


def _json_from_http_exception(exc: web.HTTPException) -> web.Response:
    keep = {
        name: value
        for name, value in exc.headers.items()
        if name not in (hdrs.CONTENT_TYPE, hdrs.CONTENT_LENGTH)
    }
    # aiohttp's default texts look like "404: Not Found"; keep only the message.
    message = exc.text or exc.reason
    prefix = f"{exc.status}: "
    if message.startswith(prefix):
        message = message[len(prefix) :]
    return json_error(exc.status, message or exc.reason, headers=keep)
