"""Operational endpoints: ``/healthz``, ``/readyz``, ``/metrics``, ``/v1/openapi.json``.

``/healthz`` answers 200 whenever the event loop does: it is the liveness probe and
checks nothing else, so a database outage never gets the process restarted. ``/readyz``
runs every readiness check concurrently, each under a timeout, and answers 503 unless
all pass; it names the failing checks but not their errors (it needs no token, so
paths and hostnames stay in the log, not in the answer). A *degraded* check (TimescaleDB
maintenance, ``ingest/api/maintenance.py``) never makes it 503: when every readiness
check passes and one says degraded, the answer is 200 with status ``degraded``, the check
``degraded`` and a short ``degraded`` list of what (job kinds, never errors).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler

from ingest.api.http import RouteSpec
from ingest.api.openapi import OPENAPI_PATH

logger = logging.getLogger(__name__)

DEFAULT_READINESS_TIMEOUT_S: Final = 2.0

_STATUS_CONTENT: Final = {
    "application/json": {
        "schema": {
            "type": "object",
            "required": ["status"],
            "properties": {
                "status": {"type": "string"},
                "checks": {"type": "object", "additionalProperties": {"type": "string"}},
                "degraded": {"type": "array", "items": {"type": "string"}},
            },
        }
    }
}


@dataclass(frozen=True, slots=True)
class ReadinessCheck:
    """A named dependency probe: returns when reachable, raises when not."""

    name: str
    probe: Callable[[], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class DegradedCheck:
    """A named health probe that never makes ``/readyz`` fail: it returns what is degraded
    (empty: nothing), or None when it cannot tell (reported as ``unknown``)."""

    name: str
    probe: Callable[[], Awaitable[list[str] | None]]


class SystemRoutes:
    def __init__(
        self,
        *,
        registry: CollectorRegistry,
        readiness_checks: Sequence[ReadinessCheck],
        readiness_timeout_s: float = DEFAULT_READINESS_TIMEOUT_S,
        openapi: Callable[[], dict[str, Any]],
        before_scrape: Sequence[Callable[[], Awaitable[None]]] = (),
        degraded_checks: Sequence[DegradedCheck] = (),
    ) -> None:
        names = [c.name for c in readiness_checks] + [c.name for c in degraded_checks]
        if len(set(names)) != len(names):
            raise ValueError(f"readiness check names must be unique: {names}")
        self._checks = tuple(readiness_checks)
        self._degraded_checks = tuple(degraded_checks)
        self._timeout_s = readiness_timeout_s
        self._metrics_handler = make_aiohttp_handler(registry)
        self._openapi = openapi
        self._before_scrape = tuple(before_scrape)

    def specs(self) -> list[RouteSpec]:
        return [
            RouteSpec(
                method="GET",
                path="/healthz",
                handler=self.healthz,
                operation_id="healthz",
                summary="Liveness: the process is serving requests.",
                responses={200: "Alive."},
                response_content={200: _STATUS_CONTENT},
                public=True,
            ),
            RouteSpec(
                method="GET",
                path="/readyz",
                handler=self.readyz,
                operation_id="readyz",
                summary="Readiness: every dependency (blob directory, database) is reachable; "
                "status 'degraded' (still 200) when TimescaleDB maintenance is not running "
                "as it should.",
                responses={200: "Ready (or degraded).", 503: "A dependency is unreachable."},
                response_content={200: _STATUS_CONTENT, 503: _STATUS_CONTENT},
                public=True,
            ),
            RouteSpec(
                method="GET",
                path="/metrics",
                handler=self.metrics,
                operation_id="metrics",
                summary="Prometheus metrics (text exposition or OpenMetrics).",
                responses={200: "Metrics."},
                response_content={200: {"text/plain": {"schema": {"type": "string"}}}},
            ),
            RouteSpec(
                method="GET",
                path=OPENAPI_PATH,
                handler=self.openapi,
                operation_id="openapi",
                summary="This document.",
                responses={200: "OpenAPI 3.1 document."},
                response_content={200: {"application/json": {"schema": {"type": "object"}}}},
            ),
        ]

    async def healthz(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.StreamResponse:
        results = await asyncio.gather(*(self._run_check(check) for check in self._checks))
        checks = {
            check.name: ("ok" if ok else "failed")
            for check, ok in zip(self._checks, results, strict=True)
        }
        ready = all(results)
        body: dict[str, Any] = {"status": "ready" if ready else "not ready", "checks": checks}
        if self._degraded_checks:
            found = await asyncio.gather(*(self._run_degraded(c) for c in self._degraded_checks))
            degraded: list[str] = []
            for check, what in zip(self._degraded_checks, found, strict=True):
                checks[check.name] = "unknown" if what is None else (
                    "degraded" if what else "ok")
                degraded += what or []
            if degraded:
                body["degraded"] = degraded
                if ready:
                    body["status"] = "degraded"
        return web.json_response(body, status=200 if ready else 503)

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        # Gauges read from elsewhere (the database's queues) are refreshed first.
        for refresh in self._before_scrape:
            await refresh()
        return await self._metrics_handler(request)

    async def openapi(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self._openapi())

    async def _run_degraded(self, check: DegradedCheck) -> list[str] | None:
        try:
            async with asyncio.timeout(self._timeout_s):
                return await check.probe()
        except Exception:  # TimeoutError too: unknown, and the other checks say why
            logger.warning("health check %s failed", check.name, exc_info=True)
            return None

    async def _run_check(self, check: ReadinessCheck) -> bool:
        try:
            async with asyncio.timeout(self._timeout_s):
                await check.probe()
        except TimeoutError:
            logger.warning("readiness check %s timed out after %.1fs", check.name, self._timeout_s)
            return False
        except Exception:
            logger.warning("readiness check %s failed", check.name, exc_info=True)
            return False
        return True
