"""``runstream agent`` and ``runstream cancel`` as a user meets them: help, arguments, the
missing-extra message, and what ``cancel`` prints for each answer of the API."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from ingest.server import HttpServer

ROOT = Path(__file__).resolve().parents[2]


def runstream(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ingest.cli", *args], capture_output=True,
                          text=True, check=False, cwd=ROOT, env=env, timeout=120)


def test_agent_help_names_every_option() -> None:
    result = runstream("agent", "--help")
    assert result.returncode == 0
    for option in ("--target", "--slots", "--work-dir", "--grace-s", "--api"):
        assert option in result.stdout
    assert "--stack-home" not in result.stdout
    assert "a second: cancel them" in " ".join(result.stdout.split())


def test_agent_needs_a_target_and_positive_slots() -> None:
    assert runstream("agent").returncode == 2
    bad = runstream("agent", "--target", "t", "--slots", "0")
    assert bad.returncode == 2
    assert "must be at least 1" in bad.stderr


def test_agent_without_the_server_extra_says_which_to_install() -> None:
    code = ("import sys; sys.modules['aiohttp'] = None\n"
            "from ingest.cli.main import main\n"
            "sys.exit(main(['agent', '--target', 't']))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False, cwd=ROOT, timeout=60)
    assert result.returncode == 2
    assert "runstream agent: needs the 'server' extra (aiohttp is not installed): pip " \
           "install 'runstream[server]'" in result.stderr


def test_agent_refuses_an_api_that_is_not_http(tmp_path: Path) -> None:
    result = runstream("agent", "--target", "t", "--api", "ftp://x", "--work-dir",
                       str(tmp_path))
    assert result.returncode == 2
    assert "--api must be an http(s) URL" in result.stderr


@pytest.fixture
async def cancel_api() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []
    answers = {
        "queued-run": (200, {"run_id": "queued-run", "action": "canceled", "state": "canceled"}),
        "running-run": (200, {"run_id": "running-run", "action": "cancel_requested",
                              "state": "leased"}),
        "ended-run": (200, {"run_id": "ended-run", "action": "none", "state": "finished"}),
        "a/b c": (200, {"run_id": "a/b c", "action": "none", "state": "finished"}),
    }

    async def cancel(request: web.Request) -> web.Response:
        run_id = request.match_info["run_id"]
        seen.append({"run_id": run_id, "auth": request.headers.get("Authorization"),
                     "body": await request.read()})
        status, body = answers.get(run_id, (409, {"error": {
            "status": 409, "message": f"run {run_id!r} was not submitted to a compute target"}}))
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_post("/v1/runs/{run_id:.+}/cancel", cancel)
    async with HttpServer(app, host="127.0.0.1", port=0) as server:
        yield server.url, seen


async def test_cancel_prints_what_the_api_did(cancel_api: tuple[str, list[dict[str, Any]]],
                                              tmp_path: Path) -> None:
    url, seen = cancel_api
    env = {"PATH": "/usr/bin:/bin", "RUNSTREAM_API": url, "RUNSTREAM_TOKEN": "tok-123",
           "RUNSTREAM_HOME": str(tmp_path)}

    async def run(*args: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(runstream, *args, env=env)

    queued = await run("cancel", "queued-run")
    assert (queued.returncode, queued.stdout) == (
        0, "run queued-run: canceled (it was queued) (state: canceled)\n")
    running = await run("cancel", "running-run")
    assert running.stdout == ("run running-run: cancel requested: its agent stops it (SIGTERM, "
                              "a grace period, SIGKILL) and reports Canceled (state: leased)\n")
    ended = await run("cancel", "ended-run")
    assert ended.stdout == ("run ended-run: nothing to cancel: it has already ended "
                            "(state: finished)\n")
    as_json = await run("cancel", "--json", "a/b c")
    assert as_json.stdout == '{"action": "none", "run_id": "a/b c", "state": "finished"}\n'
    refused = await run("cancel", "started-by-hand")
    assert refused.returncode == 1
    assert refused.stderr == ("runstream cancel: error: 409: run 'started-by-hand' was not "
                              "submitted to a compute target\n")
    assert {s["auth"] for s in seen} == {"Bearer tok-123"}
    assert {s["body"] for s in seen} == {b""}
    assert "a/b c" in [s["run_id"] for s in seen]  # quoted as one path segment


def test_cancel_with_the_api_down(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "RUNSTREAM_API": "http://127.0.0.1:9",
           "RUNSTREAM_HOME": str(tmp_path)}
    result = runstream("cancel", "some-run", env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("runstream cancel: error: URLError")
