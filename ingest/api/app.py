"""The HTTP API: the application factory and ``runstream api``.

``create_app`` composes route modules (each a list of ``RouteSpec``) with the shared
middlewares (metrics → errors → auth; see ``http.py``). A new resource is a module in
``routes/`` with its own ``specs()``, listed here; the router,
``/v1/openapi.json``, metrics labels and auth follow from the specs.

``run_api`` serves it with ``ingest.server.HttpServer`` (the one aiohttp server wrapper)
until SIGTERM.

Body limits: blob uploads are streamed against the blob store's own limit
(``max_blob_bytes``); any other body read whole is capped by ``max_request_bytes``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from importlib import metadata
from typing import Any, Final
from urllib.parse import urlsplit

from aiohttp import web
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
)

from ingest.api.auth import TokenTable, auth_middleware
from ingest.api.blobstore import DEFAULT_MAX_BLOB_BYTES, BlobStore
from ingest.api.emitter import StatusEmitter
from ingest.api.http import (
    HttpMetrics,
    RouteSpec,
    error_middleware,
)
from ingest.api.maintenance import MaintenanceHealth
from ingest.api.openapi import build_openapi
from ingest.api.routes.blobs import BlobRoutes
from ingest.api.routes.compute import ComputeRoutes, QueueGaugeRefresher
from ingest.api.routes.events import LiveUpdates, StreamOptions
from ingest.api.routes.jobs import JobReaper, JobRoutes, JobTiming
from ingest.api.routes.metrics import MetricRoutes
from ingest.api.routes.models import ModelRoutes
from ingest.api.routes.registry import RegistryRoutes
from ingest.api.routes.runs import RunRoutes
from ingest.api.routes.studio import StudioRoutes
from ingest.api.routes.system import (
    DEFAULT_READINESS_TIMEOUT_S,
    DegradedCheck,
    ReadinessCheck,
    SystemRoutes,
)
from ingest.db.jobs import JobStore
from ingest.db.reads import DatabaseUnavailableError, ReadStore
from ingest.server import DEFAULT_SHUTDOWN_TIMEOUT_S, HttpServer
from ingest.settings import Secret, Settings

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_MAX_REQUEST_BYTES",
    "DEFAULT_PORT",
    "ReadinessCheck",
    "create_app",
    "listen_address",
    "run_api",
]

logger = logging.getLogger(__name__)

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8470
DEFAULT_MAX_REQUEST_BYTES: Final = 1024 * 1024

SPECS_KEY: Final = web.AppKey("runstream_route_specs", tuple[RouteSpec, ...])


def create_app(
    *,
    blob_store: BlobStore,
    registry: CollectorRegistry,
    token: Secret | None = None,
    workspace_tokens: Mapping[str, Sequence[Secret]] | None = None,
    agent_tokens: Mapping[str, Sequence[Secret]] | None = None,
    readiness_checks: Sequence[ReadinessCheck] = (),
    readiness_timeout_s: float = DEFAULT_READINESS_TIMEOUT_S,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    db_dsn: Secret | None = None,
    stream_options: StreamOptions | None = None,
    public_url: str | None = None,
    status_emitter: StatusEmitter | None = None,
    job_timing: JobTiming | None = None,
) -> web.Application:
    """Build the API application.

    ``token`` is the admin token, ``workspace_tokens`` grant one workspace each,
    ``agent_tokens`` serve one compute target each (``ingest/api/auth.py``); with none,
    auth is off. ``readiness_checks`` are added to
    the blob directory's own check. ``db_dsn`` enables the database-backed routes (live
    updates, ``routes/events.py``; runs, metrics, compute targets and the model registry,
    ``routes/runs.py``/``metrics.py``/``compute.py``/``models.py``, whose pool opens with
    the app and adds a ``database`` readiness check); ``stream_options``
    tunes their timing (tests). ``public_url`` is the base of ``portal_url`` (default:
    the request's own origin). Metrics are registered on ``registry``; one registry
    serves one app (a second would collide). With ``db_dsn`` the app also serves
    submitted runs and their agents (``routes/jobs.py``) and expires their leases in the
    background; ``status_emitter`` sends the status events the API decides (canceled,
    agent lost, requeued) — without one those decisions change only the queue (tests);
    ``job_timing`` sets the lease length and poll wait (tests shorten them). The studio
    (``routes/studio.py``: the web app at ``/``, its files, the browser's login) is always
    served; ``public_url``'s origin also counts as the API's own for its cookie.
    """
    tokens = TokenTable(admin=token, workspaces=workspace_tokens, agents=agent_tokens)
    specs: list[RouteSpec] = []

    def openapi() -> dict[str, Any]:
        # Reads ``specs`` at request time, when every route module has been added.
        return build_openapi(specs, version=_version(), auth_enabled=tokens.enabled)

    checks = [ReadinessCheck("blobs", blob_store.check_writable)]
    reads = ReadStore(dsn=db_dsn.value) if db_dsn else None
    jobs = JobStore(dsn=db_dsn.value) if db_dsn else None
    gauges = None
    maintenance = None
    if reads is not None:
        checks.append(ReadinessCheck("database", reads.ping))
        gauges = QueueGaugeRefresher(reads=reads, registry=registry, jobs=jobs)
        maintenance = MaintenanceHealth(reads=reads, registry=registry)
    system = SystemRoutes(
        registry=registry,
        readiness_checks=[*checks, *readiness_checks],
        readiness_timeout_s=readiness_timeout_s,
        openapi=openapi,
        before_scrape=() if gauges is None or maintenance is None
        else (gauges.refresh, maintenance.refresh),
        degraded_checks=() if maintenance is None
        else (DegradedCheck("maintenance", maintenance.degraded),),
    )
    specs += system.specs()
    specs += BlobRoutes(store=blob_store, registry=registry).specs()
    if reads is not None:
        metric_routes = MetricRoutes(reads=reads)
        specs += RunRoutes(reads=reads, blob_store=blob_store, public_url=public_url,
                           summarize=metric_routes.series_summaries).specs()
        specs += metric_routes.specs()
        specs += ComputeRoutes(reads=reads, jobs=jobs).specs()
        specs += ModelRoutes(reads=reads, blob_store=blob_store).specs()
    specs += RegistryRoutes().specs()
    trusted_origins = () if public_url is None else (public_url,)
    specs += StudioRoutes(tokens=tokens, trusted_origins=trusted_origins).specs()
    live = None
    if db_dsn and reads is not None and jobs is not None:
        live = LiveUpdates(dsn=db_dsn, reads=reads, registry=registry, options=stream_options)
        specs += live.specs()
        specs += JobRoutes(jobs=jobs, blob_store=blob_store, listener=live.listener,
                           emitter=status_emitter, timing=job_timing).specs()

    middlewares = [
        HttpMetrics(registry).middleware(),
        error_middleware(unavailable=(DatabaseUnavailableError,)),
    ]
    if tokens.enabled:
        public = {spec.path for spec in specs if spec.public}
        run_workspace = None if reads is None else reads.run_workspace
        run_target = None if jobs is None else jobs.run_target
        middlewares.append(auth_middleware(tokens, public_routes=public,
                                           run_workspace=run_workspace, run_target=run_target,
                                           trusted_origins=trusted_origins))

    app = web.Application(middlewares=middlewares, client_max_size=max_request_bytes)
    for spec in specs:
        app.router.add_route(
            spec.method, spec.path, spec.handler, expect_handler=spec.expect_handler
        )
    app[SPECS_KEY] = tuple(specs)
    if live is not None:
        live.install(app)
    if reads is not None:
        app.cleanup_ctx.append(_started(reads))
    if jobs is not None and live is not None:
        app.cleanup_ctx.append(_started(jobs))
        app.cleanup_ctx.append(JobReaper(
            jobs=jobs, emitter=status_emitter,
            interval_s=(job_timing or JobTiming()).reap_interval_s).lifetime())
    if status_emitter is not None:
        app.cleanup_ctx.append(_closing(status_emitter))
    app.cleanup_ctx.append(_sweeping(blob_store))
    return app


def _sweeping(blobs: BlobStore) -> Callable[[web.Application], AsyncIterator[None]]:
    """Remove the temp files of uploads killed mid-way, in the background, once."""

    async def sweep() -> None:
        try:
            removed = await asyncio.to_thread(blobs.sweep_temp)
        except OSError as exc:
            logger.warning("cannot sweep stale upload temp files: %s", exc)
            return
        if removed:
            logger.info("removed %d stale upload temp files from the blob store", removed)

    async def context(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(sweep(), name="blob-temp-sweep")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return context


def _started(pool: ReadStore | JobStore) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        await pool.start()
        yield
        await pool.stop()

    return context


def _closing(emitter: StatusEmitter) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        yield
        await asyncio.to_thread(emitter.close)

    return context


def listen_address(api_url: str) -> tuple[str, int]:
    """Host and port to bind so that ``RUNSTREAM_API`` reaches this server.

    ``http://127.0.0.1:8470`` → ("127.0.0.1", 8470); no port → 8470; no host → 127.0.0.1.
    """
    parts = urlsplit(api_url if "//" in api_url else f"//{api_url}")
    return parts.hostname or DEFAULT_HOST, parts.port or DEFAULT_PORT


def default_registry() -> CollectorRegistry:
    """A fresh registry carrying the process, platform and GC collectors."""
    registry = CollectorRegistry()
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    return registry


async def run_api(
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES,
    registry: CollectorRegistry | None = None,
    stop: asyncio.Event | None = None,
    shutdown_timeout_s: float = DEFAULT_SHUTDOWN_TIMEOUT_S,
    dsn: str | None = None,
) -> None:
    """Serve the API until SIGTERM, ``stop`` being set, or cancellation (Ctrl-C).

    host/port default to those of ``settings.api_url``; blobs live in
    ``settings.home / "blobs"``; auth is on when ``settings.token`` or
    ``settings.workspace_tokens`` is set.
    ``dsn`` is the PostgreSQL the /v1 queries and live updates read (default:
    ``settings.db_dsn``; neither: those routes are not served). ``portal_url`` of a run
    is based on ``settings.api_url``.
    """
    default_host, default_port = listen_address(settings.api_url)
    host = default_host if host is None else host
    port = default_port if port is None else port
    stop = asyncio.Event() if stop is None else stop
    blob_store = BlobStore(root=settings.home / "blobs", max_blob_bytes=max_blob_bytes)
    app = create_app(
        blob_store=blob_store,
        registry=default_registry() if registry is None else registry,
        token=settings.token,
        workspace_tokens=settings.workspace_tokens,
        agent_tokens=settings.agent_tokens,
        db_dsn=Secret(dsn) if dsn else settings.db_dsn,
        public_url=settings.api_url,
        status_emitter=StatusEmitter(
            kafka_bootstrap=settings.kafka_bootstrap, topic=settings.topic,
            home=settings.home / "api-producer", kafka_security=settings.kafka_security),
    )
    if (not settings.token and not settings.workspace_tokens and not settings.agent_tokens
            and not _is_loopback(host)):
        logger.warning(
            "API on %s:%s without RUNSTREAM_TOKEN, RUNSTREAM_WORKSPACE_TOKENS or "
            "RUNSTREAM_AGENT_TOKENS: anyone can "
            "read and upload",
            host,
            port,
        )
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        async with HttpServer(app, host=host, port=port, shutdown_timeout_s=shutdown_timeout_s,
                              name="API"):
            await stop.wait()
            logger.info("API stopping")
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGTERM)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _version() -> str:
    try:
        return metadata.version("runstream")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def route_specs(app: web.Application) -> tuple[RouteSpec, ...]:
    """The specs an app was built from (tests compare them with the router)."""
    return app[SPECS_KEY]
