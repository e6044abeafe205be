"""The agent's HTTP calls to the API (the jobs contract's ``/v1/agents`` routes and the
snapshot download), over one aiohttp session, with the bearer token."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

__all__ = ["AgentApi", "AgentApiError"]

#: Seconds a call other than a poll or a download may take.
CALL_TIMEOUT_S = 30.0
CHUNK_BYTES = 1 << 20


class AgentApiError(Exception):
    """A call failed: ``status`` is the HTTP status (None when the API was not reached)
    and the message the API's error message (or the connection error)."""

    def __init__(self, status: int | None, message: str, *, what: str) -> None:
        super().__init__(f"{what}: {status or 'unreachable'}: {message}")
        self.status = status
        self.message = message
        self.what = what


def _segment(value: str) -> str:
    return quote(value, safe="")


class AgentApi:
    """``register``, ``poll``, ``finish``, ``delete`` and ``download_snapshot``; every
    failure is an ``AgentApiError``."""

    def __init__(self, session: aiohttp.ClientSession, api_url: str, token: str = "") -> None:
        self.session = session
        self.api_url = api_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def _call(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        timeout_s: float = CALL_TIMEOUT_S,
    ) -> Any:
        what = f"{method} {path}"
        try:
            async with self.session.request(
                method,
                self.api_url + path,
                json=body,
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as response:
                if response.status >= 400:
                    raise AgentApiError(response.status, await _error_message(response), what=what)
                if response.status == 204 or response.content_length == 0:
                    return None
                return await response.json(content_type=None)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            raise AgentApiError(None, f"{type(exc).__name__}: {exc}", what=what) from exc

    async def register(
        self, *, agent_id: str, target: str, slots: int, hostname: str, pid: int
    ) -> dict[str, Any]:
        body = {"agent_id": agent_id, "target": target, "slots": slots,
                "hostname": hostname, "pid": pid}
        answer: dict[str, Any] = await self._call("POST", "/v1/agents", body)
        return answer

    async def poll(
        self, agent_id: str, *, free: int, running: Sequence[str], wait_s: float
    ) -> dict[str, Any]:
        body = {"free": free, "running": list(running), "wait_s": wait_s}
        answer: dict[str, Any] = await self._call(
            "POST", f"/v1/agents/{_segment(agent_id)}/poll", body, timeout_s=wait_s + 10.0
        )
        return answer

    async def finish(
        self, agent_id: str, run_id: str, *, outcome: str, exit_code: int | None,
        error: str | None,
    ) -> dict[str, Any]:
        body = {"outcome": outcome, "exit_code": exit_code, "error": error}
        path = f"/v1/agents/{_segment(agent_id)}/runs/{_segment(run_id)}/finish"
        answer: dict[str, Any] = await self._call("POST", path, body)
        return answer

    async def delete(self, agent_id: str) -> None:
        await self._call("DELETE", f"/v1/agents/{_segment(agent_id)}")

    async def download_snapshot(
        self, run_id: str, path: Path, *, timeout_s: float = 600.0
    ) -> tuple[str, int]:
        """Write the run's snapshot zip to ``path``; its (sha256, size)."""
        what = f"GET /v1/runs/{run_id}/snapshot"
        digest = hashlib.sha256()
        size = 0
        try:
            async with self.session.get(
                f"{self.api_url}/v1/runs/{_segment(run_id)}/snapshot",
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as response:
                if response.status >= 400:
                    raise AgentApiError(response.status, await _error_message(response), what=what)
                with path.open("wb") as out:
                    async for chunk in response.content.iter_chunked(CHUNK_BYTES):
                        digest.update(chunk)
                        size += len(chunk)
                        await asyncio.to_thread(out.write, chunk)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise AgentApiError(None, f"{type(exc).__name__}: {exc}", what=what) from exc
        return digest.hexdigest(), size


async def _error_message(response: aiohttp.ClientResponse) -> str:
    try:
        body = await response.json(content_type=None)
        return str(body["error"]["message"])
    except (ValueError, KeyError, TypeError, aiohttp.ClientError):
        return response.reason or f"HTTP {response.status}"
