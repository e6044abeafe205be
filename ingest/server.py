"""The one aiohttp server wrapper: an application served on host:port until stopped.

Embedded with ``AppRunner`` + ``TCPSite`` (as faust's aiohttp driver does), with
idempotent ``start``/``stop`` and ``async with``, so a service can stop HTTP first inside
its exit stack, and tests can bind port 0 and read the real port back (``port``). The API
(``ingest/api/app.py``) and the ingest worker's ``/metrics`` (``ingest/worker/metrics.py``)
both serve through it.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Final, Self

from aiohttp import web

__all__ = ["DEFAULT_SHUTDOWN_TIMEOUT_S", "HttpServer"]

logger = logging.getLogger(__name__)

DEFAULT_SHUTDOWN_TIMEOUT_S: Final = 10.0


class HttpServer:
    """Serves ``app`` on ``host:port`` (0: a free port) until stopped."""

    def __init__(
        self,
        app: web.Application,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        shutdown_timeout_s: float = DEFAULT_SHUTDOWN_TIMEOUT_S,
        name: str = "HTTP",
        access_log: bool = True,
    ) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._shutdown_timeout_s = shutdown_timeout_s
        self._name = name
        self._access_log = access_log
        self._runner: web.AppRunner | None = None

    def __repr__(self) -> str:
        return f"HttpServer(name={self._name!r}, host={self._host!r}, port={self.port})"

    @property
    def port(self) -> int:
        """The bound port once started (the real one when constructed with 0)."""
        if self._runner is not None and self._runner.addresses:
            return int(self._runner.addresses[0][1])
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        if self._runner is not None:
            return
        if self._access_log:
            runner = web.AppRunner(
                self._app, handle_signals=False, shutdown_timeout=self._shutdown_timeout_s
            )
        else:
            runner = web.AppRunner(
                self._app, handle_signals=False, shutdown_timeout=self._shutdown_timeout_s,
                access_log=None,
            )
        await runner.setup()
        try:
            await web.TCPSite(runner, self._host, self._port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        logger.info("%s listening on %s", self._name, self.url)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
