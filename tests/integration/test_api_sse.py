"""Live updates (Server-Sent Events) through the real server, with real PostgreSQL behind
it and the real batch write (``Store.write_batch``, or ``runstream ingest`` processes fed by
the SDK) committing the data. Each test has its own database.

Latency is measured from the moment ``write_batch`` returned (the COMMIT is done) to the
moment the client parsed the event; tests assert that delivery happened and only bound
it generously (``DELIVERY_BOUND_S``); ``-s`` shows the figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from ingest.api.app import create_app
from ingest.api.blobstore import BlobStore
from ingest.api.routes.events import StreamOptions
from ingest.bench.events import EventFactory, packed_series
from ingest.db.notices import APPLICATION_NAME
from ingest.server import HttpServer
from ingest.settings import Secret
from ingest.worker.store import Batch, Store
from producer import Experiment
from tests.integration.api_servers import API_TOKEN, error_of
from tests.integration.helpers import NewDb, decoded, fetch, no_dlq, run_id, wait_for
from tests.integration.pipelines import Pipeline, workspace

pytestmark = pytest.mark.integration

#: Generous: the target is 1 s; the bound only catches "never" or "by polling at best".
DELIVERY_BOUND_S = 5.0


# -- the server and the writer --------------------------------------------------------------


@dataclass
class LiveApi:
    url: str
    dsn: str
    store: Store
    server: HttpServer
    token: str | None = None

    async def commit(self, *events: dict[str, Any]) -> float:
        """Write one batch exactly as a worker does; the time its COMMIT returned."""
        await self.store.write_batch(Batch("t", "g", events=decoded(*events)),
                                     send_dead_letters=no_dlq)
        return time.time()

    def events_url(self, run: str, query: str = "") -> str:
        return f"{self.url}/v1/runs/{run}/events{query}"

    async def metric(self, http: aiohttp.ClientSession, name: str,
                     **labels: str) -> float:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with http.get(f"{self.url}/metrics", headers=headers) as r:
            text = await r.text()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v
                                               for k, v in labels.items()):
                    return sample.value
        return 0.0


class LiveApiFactory(Protocol):
    def __call__(self, *, token: str | None = None,
                 options: StreamOptions | None = None) -> Awaitable[LiveApi]: ...


@pytest.fixture
async def live_api_factory(new_db: NewDb,
                           tmp_path: Path) -> AsyncIterator[LiveApiFactory]:
    async with contextlib.AsyncExitStack() as stack:
        dsn = await new_db()

        async def start(*, token: str | None = None,
                        options: StreamOptions | None = None) -> LiveApi:
            app = create_app(blob_store=BlobStore(root=tmp_path / "blobs"),
                             registry=CollectorRegistry(),
                             token=None if token is None else Secret(token),
                             db_dsn=Secret(dsn), stream_options=options)
            server = await stack.enter_async_context(HttpServer(app, port=0))
            store = await stack.enter_async_context(Store(dsn=dsn))
            return LiveApi(url=server.url, dsn=dsn, store=store, server=server, token=token)

        yield start


@pytest.fixture
async def live_api(live_api_factory: LiveApiFactory) -> LiveApi:
    return await live_api_factory()


# -- the client side ------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    event: str
    data: Any
    id: str | None
    at: float


class EventStream:
    """Parses a text/event-stream response as it arrives (WHATWG field rules)."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.comments: list[str] = []
        self.last_id: str | None = None

    async def next(self, timeout_s: float = 10.0) -> Received | None:
        """The next event, or None when the server ended the stream."""
        event, data, event_id = "message", list[str](), None
        async with asyncio.timeout(timeout_s):
            while True:
                raw = await self.response.content.readline()
                if not raw:
                    return None
                line = raw.decode().rstrip("\n")
                if not line:
                    if data:
                        if event_id is not None:
                            self.last_id = event_id
                        return Received(event, json.loads("\n".join(data)), event_id,
                                        time.time())
                    event, data, event_id = "message", [], None
                    continue
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if not name:
                    self.comments.append(value)
                elif name == "event":
                    event = value
                elif name == "data":
                    data.append(value)
                elif name == "id":
                    event_id = value

    async def take(self, n: int, kind: str | None = None,
                   timeout_s: float = 10.0) -> list[Received]:
        out: list[Received] = []
        while len(out) < n:
            got = await self.next(timeout_s)
            assert got is not None, f"stream ended after {len(out)} of {n} events"
            if kind is None or got.event == kind:
                out.append(got)
        return out


@contextlib.asynccontextmanager
async def subscribe(http: aiohttp.ClientSession, url: str,
                    headers: dict[str, str] | None = None) -> AsyncIterator[EventStream]:
    async with http.get(url, headers=headers) as response:
        assert response.status == 200, await response.text()
        assert response.content_type == "text/event-stream"
        assert response.headers["Cache-Control"] == "no-cache"
        yield EventStream(response)


def delivered_within_bound(label: str, committed_at: float, received: list[Received]) -> None:
    delays = [r.at - committed_at for r in received]
    print(f"{label}: commit→receipt {min(delays) * 1e3:.1f}..{max(delays) * 1e3:.1f} ms "
          f"({len(delays)} events)")
    assert max(delays) < DELIVERY_BOUND_S


async def started_run(api: LiveApi, *, target: str | None = None,
                      status: str = "Running") -> EventFactory:
    f = EventFactory(run_id("sse"), experiment="sse")
    await api.commit(f.lifecycle(status, display_name="live", compute_target=target))
    return f


# -- runs ----------------------------------------------------------------------------------


async def test_points_logs_and_status_arrive_after_commit_in_order(
    live_api: LiveApi, http: aiohttp.ClientSession
) -> None:
    f = await started_run(live_api)
    async with subscribe(http, live_api.events_url(f.run_id)) as stream:
        (first,) = await stream.take(1)
        assert (first.event, first.data["run_id"], first.data["status"]) == (
            "status", f.run_id, "Running")
        assert set(first.data["status_times"]) == {
            "NotStarted", "Queued", "Preparing", "Running", "Finalizing", "CancelRequested",
            "Completed", "Failed", "Canceled"}
        assert first.data["status_times"]["Running"] is not None

        committed = await live_api.commit(
            f.metrics(packed_series("loss", [0.5, 0.25, float("nan"), 3, True, "warm"])),
            f.log_lines("stdout", ["epoch 1", "epoch 2"]))
        got = await stream.take(8)
        delivered_within_bound("points+logs", committed, got)
        points = [g for g in got if g.event == "point"]
        assert [(p.data["name"], p.data["step"], p.data["value"], p.data["rank"])
                for p in points] == [
            ("loss", 0, 0.5, 0), ("loss", 1, 0.25, 0), ("loss", 2, "NaN", 0), ("loss", 3, 3, 0),
            ("loss", 4, True, 0), ("loss", 5, "warm", 0)]
        assert [(g.event, g.data["line"]) for g in got if g.event == "log"] == [
            ("log", "epoch 1"), ("log", "epoch 2")]
        assert all(p.data["time"].endswith("+00:00") for p in got)
        assert all(g.id for g in got)

        committed = await live_api.commit(f.log_lines("stderr", ["done"]),
                                          f.lifecycle("Completed"))
        log, status = await stream.take(2)
        delivered_within_bound("log+status", committed, [log, status])
        # Lines committed before (or with) a status change come first.
        assert (log.event, log.data["stream"], log.data["line"]) == ("log", "stderr", "done")
        assert (status.event, status.data["status"]) == ("status", "Completed")
        assert status.data["status_times"]["Completed"] is not None


async def test_a_run_streams_its_own_points_in_order_across_many_batches(
    live_api: LiveApi, http: aiohttp.ClientSession
) -> None:
    f, other = await started_run(live_api), await started_run(live_api)
    rank1 = EventFactory(f.run_id, experiment="sse", rank=1)
    async with subscribe(http, live_api.events_url(f.run_id, "?types=point")) as stream:
        for batch in range(20):
            steps = range(batch * 10, batch * 10 + 10)
            await live_api.commit(
                other.metrics(packed_series("loss", [-1.0] * 10, steps=steps)),
                f.metrics(packed_series("loss", [float(s) for s in steps], steps=steps)),
                f.metrics(packed_series("acc", [s / 1000 for s in steps], steps=steps)),
                rank1.metrics(packed_series("loss", [s + 0.5 for s in steps], steps=steps)))
        got = await stream.take(600)
    assert {g.event for g in got} == {"point"}
    expected: dict[tuple[str, int], Callable[[int], float]] = {
        ("loss", 0): float, ("acc", 0): lambda s: s / 1000, ("loss", 1): lambda s: s + 0.5}
    for (name, rank), value in expected.items():
        series = [g.data for g in got if g.data["name"] == name and g.data["rank"] == rank]
        assert [p["step"] for p in series] == list(range(200))  # each producer in its order
        assert [p["value"] for p in series] == [value(s) for s in range(200)]
    assert len({g.id for g in got}) == 600


async def test_failed_status_carries_the_error(
    live_api: LiveApi, http: aiohttp.ClientSession
) -> None:
    f = await started_run(live_api)
    async with subscribe(http, live_api.events_url(f.run_id, "?types=status")) as stream:
        await stream.take(1)
        committed = await live_api.commit(f.metrics(packed_series("x", [1.0])),
                                          f.lifecycle("Failed", error="CUDA out of memory"))
        (failed,) = await stream.take(1)
        delivered_within_bound("status", committed, [failed])
        assert (failed.event, failed.data["status"], failed.data["error"]) == (
            "status", "Failed", "CUDA out of memory")


async def test_resume_with_last_event_id_continues_exactly(
    live_api: LiveApi, http: aiohttp.ClientSession
) -> None:
    f = await started_run(live_api)
    async with subscribe(http, live_api.events_url(f.run_id)) as stream:
        await stream.take(1, "status")
        await live_api.commit(f.metrics(packed_series("m", [float(i) for i in range(10)])),
                              f.log_lines("stdout", [f"line {i}" for i in range(4)]))
        # Stop mid-transaction, mid-series: after the 5th point. The lines may come before
        # the points (a round already past its points when the commit landed reads them),
        # so whatever arrived is counted, not assumed.
        first: list[Received] = []
        while [g.event for g in first].count("point") < 5:
            got = await stream.next(10.0)
            assert got is not None, "stream ended"
            first.append(got)
    assert [g.data["step"] for g in first if g.event == "point"] == [0, 1, 2, 3, 4]
    await live_api.commit(f.metrics(packed_series("m", [10.0, 11.0], steps=[10, 11])))

    async with subscribe(http, live_api.events_url(f.run_id),
                         headers={"Last-Event-ID": first[-1].id or ""}) as stream:
        status = await stream.take(1)
        rest = await stream.take(12 + 4 - len(first))
    assert status[0].event == "status"
    both = first + rest  # every point and line once, each kind in its order
    assert [g.data["step"] for g in both if g.event == "point"] == list(range(12))
    assert [g.data["line"] for g in both if g.event == "log"] == [f"line {i}" for i in range(4)]
    assert [g.data["step"] for g in rest if g.event == "point"] == [5, 6, 7, 8, 9, 10, 11]

    # From the beginning, with the query parameter (for clients that cannot set headers).
    async with subscribe(http, live_api.events_url(f.run_id, "?last_event_id=0_0&types=log")
                         ) as stream:
        assert [g.data["line"] for g in await stream.take(4, "log")] == [
            f"line {i}" for i in range(4)]


async def test_keepalive_comments_while_quiet(
    live_api_factory: LiveApiFactory, http: aiohttp.ClientSession
) -> None:
    api = await live_api_factory(options=StreamOptions(keepalive_s=0.3))
    f = await started_run(api)
    async with subscribe(http, api.events_url(f.run_id)) as stream:
        await stream.take(1)
        with contextlib.suppress(TimeoutError):
            await stream.next(timeout_s=1.2)
        assert len(stream.comments) >= 2


async def test_streams_are_counted_but_not_timed_as_requests(
    live_api: LiveApi, http: aiohttp.ClientSession
) -> None:
    f = await started_run(live_api)
    async with subscribe(http, live_api.events_url(f.run_id)) as stream:
        await stream.take(1)
    async with http.get(f"{live_api.url}/v1/runs/{f.run_id}") as r:
        assert r.status == 200
    route = 'route="/v1/runs/{run_id}/events"'
    exposition = ""

    async def stream_counted() -> bool:  # once the server noticed the client left
        nonlocal exposition
        async with http.get(f"{live_api.url}/metrics") as r:
            exposition = await r.text()
        return any(line.startswith("runstream_http_requests_total{") and route in line
                   for line in exposition.splitlines())

    await wait_for(stream_counted, timeout_s=30, what="the stream to end")
    timed = [line for line in exposition.splitlines()
             if line.startswith("runstream_http_request_seconds_count{")]
    assert timed
    assert not any(route in line for line in timed)  # a stream lasts as long as its client


async def test_openapi_documents_the_streams(live_api: LiveApi,
                                            http: aiohttp.ClientSession) -> None:
    async with http.get(f"{live_api.url}/v1/openapi.json") as r:
        paths = (await r.json())["paths"]
    for path in ("/v1/runs/{run_id}/events", "/v1/compute/{target}/events"):
        ok = paths[path]["get"]["responses"]["200"]
        assert list(ok["content"]) == ["text/event-stream"], path
    parameters = {p["name"] for p in paths["/v1/runs/{run_id}/events"]["get"]["parameters"]}
    assert parameters == {"run_id", "types", "Last-Event-ID", "last_event_id"}


async def test_bad_requests_are_refused_before_streaming(
    live_api: LiveApi, http: aiohttp.ClientSession
) -> None:
    f = await started_run(live_api, target="cpu")
    for url, status, words in (
        (live_api.events_url("nope_1_deadbeef"), 404, "nope_1_deadbeef"),
        (f"{live_api.url}/v1/compute/no-such-target/events", 404, "no-such-target"),
        (live_api.events_url(f.run_id, "?types=point,bogus"), 400, "types"),
        (live_api.events_url(f.run_id, "?last_event_id=yesterday"), 400, "last_event_id"),
    ):
        async with http.get(url) as r:
            assert r.status == status, url
            assert words in (await error_of(r))["message"]


async def test_a_target_named_only_by_an_agent_streams_from_empty(
    live_api: LiveApi, http: aiohttp.ClientSession
) -> None:
    """A target's page opened before its first run is stored (an agent registered, a run
    submitted but not yet ingested) goes live: its stream starts from the empty state."""
    async with http.post(f"{live_api.url}/v1/agents",
                         json={"agent_id": "a" * 32, "target": "fresh-gpu", "slots": 1}) as r:
        assert r.status in (200, 201), await r.text()
    async with subscribe(http, f"{live_api.url}/v1/compute/fresh-gpu/events") as s:
        (first,) = await s.take(1)
        assert first.event == "queue"
        state = first.data
        assert (state["compute_target"], state["queued"], state["running"]) == (
            "fresh-gpu", 0, 0)


async def test_auth_applies(live_api_factory: LiveApiFactory,
                            http: aiohttp.ClientSession) -> None:
    api = await live_api_factory(token=API_TOKEN)
    f = await started_run(api, target="cpu")
    for url in (api.events_url(f.run_id), f"{api.url}/v1/compute/cpu/events"):
        async with http.get(url) as r:
            assert r.status == 401
        async with http.get(url, headers={"Authorization": "Bearer wrong"}) as r:
            assert r.status == 403
        async with subscribe(http, url, headers={"Authorization": f"Bearer {API_TOKEN}"}) as s:
            assert (await s.take(1))[0].event in ("status", "queue")


# -- compute targets -----------------------------------------------------------------------


async def test_queue_events_follow_the_target_s_runs(
    live_api: LiveApi, http: aiohttp.ClientSession
) -> None:
    target = f"gpu-{uuid.uuid4().hex[:6]}"
    a = await started_run(live_api, target=target, status="Queued")
    url = f"{live_api.url}/v1/compute/{target}/events"
    async with subscribe(http, url) as stream:
        (first,) = await stream.take(1, "queue")
        assert set(first.data) == {
            "compute_target", "queued", "preparing", "running", "not_responding",
            "oldest_queued_age_s", "queue_wait_p50_s", "queue_wait_p95_s", "completed_1h",
            "failed_1h", "canceled_1h"}
        assert (first.data["compute_target"], first.data["queued"], first.data["running"]) == (
            target, 1, 0)

        b = EventFactory(run_id("sse"), experiment="sse")
        committed = await live_api.commit(b.lifecycle("Queued", compute_target=target))
        (two,) = await stream.take(1, "queue")
        delivered_within_bound("queue", committed, [two])
        assert two.data["queued"] == 2

        committed = await live_api.commit(a.lifecycle("Running"))  # no target in this event
        (moved,) = await stream.take(1, "queue")
        delivered_within_bound("queue", committed, [moved])
        assert (moved.data["queued"], moved.data["running"]) == (1, 1)
        assert moved.data["queue_wait_p50_s"] is not None

        await live_api.commit(a.metrics(packed_series("x", [1.0])))  # no queue change
        committed = await live_api.commit(a.lifecycle("Completed"), b.lifecycle("Canceled"))
        (done,) = await stream.take(1, "queue")
        delivered_within_bound("queue", committed, [done])
        assert (done.data["queued"], done.data["running"], done.data["completed_1h"],
                done.data["canceled_1h"]) == (0, 0, 1, 1)


async def test_changes_no_commit_announces_are_seen_by_the_periodic_check(
    live_api_factory: LiveApiFactory, http: aiohttp.ClientSession
) -> None:
    api = await live_api_factory(options=StreamOptions(tick_s=0.3))
    await fetch(api.dsn, "UPDATE runstream_data.settings SET value = '2 seconds' "
                "WHERE key = 'not_responding_after'")
    f = await started_run(api, target="tpu")
    async with subscribe(http, api.events_url(f.run_id, "?types=status")) as run_stream, \
            subscribe(http, f"{api.url}/v1/compute/tpu/events") as queue_stream:
        (running,) = await run_stream.take(1)
        (queue,) = await queue_stream.take(1)
        assert (running.data["status"], queue.data["running"], queue.data["not_responding"]
                ) == ("Running", 1, 0)
        # No event for 2 s: the run stops responding, and nothing is committed to say so.
        (silent,) = await run_stream.take(1, timeout_s=10)
        (queue,) = await queue_stream.take(1, timeout_s=10)
        assert silent.data["status"] == "NotResponding"
        assert (queue.data["running"], queue.data["not_responding"]) == (1, 1)
        committed = await api.commit(f.heartbeat())
        (back,) = await run_stream.take(1)
        (queue,) = await queue_stream.take(1)
        delivered_within_bound("heartbeat", committed, [back, queue])
        assert back.data["status"] == "Running"
        assert queue.data["not_responding"] == 0


# -- flow control, disconnects, shutdown ---------------------------------------------------


def stalled_client(url: str, path: str) -> socket.socket:
    """A client that asks for a stream and then never reads (tiny receive buffer)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect((host, int(port)))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    return sock


async def vanishing_client(url: str, path: str) -> None:
    """A client that reads the start of a stream and goes away without a word."""
    with stalled_client(url, path) as sock:
        head = await asyncio.to_thread(sock.recv, 4096)
        assert head.startswith(b"HTTP/1.1 200"), head


async def test_slow_and_vanishing_clients_do_not_hold_up_the_others(
    live_api_factory: LiveApiFactory, http: aiohttp.ClientSession
) -> None:
    api = await live_api_factory(options=StreamOptions(write_timeout_s=3.0))
    f = await started_run(api)
    stalled = stalled_client(api.url, f"/v1/runs/{f.run_id}/events")
    try:
        async with subscribe(http, api.events_url(f.run_id, "?types=point")) as healthy:
            await vanishing_client(api.url, f"/v1/runs/{f.run_id}/events")
            await wait_for(_streams(api, http, 2), timeout_s=10,
                           what="two open streams (healthy, stalled)")

            # ~10 MB of events: more than the stalled client's socket buffers hold (~4 MB).
            n_batches, per_batch = 3, 20_000
            started = time.time()
            for b in range(n_batches):
                steps = range(b * per_batch, (b + 1) * per_batch)
                await api.commit(f.metrics(packed_series("loss", [s / 7 for s in steps],
                                                         steps=steps)))
            committed = time.time()
            got = await healthy.take(n_batches * per_batch, timeout_s=60)
            print(f"healthy client: {len(got)} points in {got[-1].at - started:.2f} s "
                  f"(last {got[-1].at - committed:.2f} s after the last commit)")
            assert [g.data["step"] for g in got] == list(range(n_batches * per_batch))

            await wait_for(_closed(api, http, "slow_client", 1), timeout_s=30,
                           what="the stalled client to be dropped")
            await wait_for(_closed(api, http, "client_gone", 1), timeout_s=30,
                           what="the vanished client to be noticed")
            assert await api.metric(http, "runstream_sse_streams", kind="run") == 1
    finally:
        stalled.close()


def _streams(api: LiveApi, http: aiohttp.ClientSession,
             n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await api.metric(http, "runstream_sse_streams", kind="run") == n
    return check


def _closed(api: LiveApi, http: aiohttp.ClientSession, reason: str,
            n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await api.metric(http, "runstream_sse_closed_total", reason=reason) >= n
    return check


async def test_server_stop_ends_open_streams_promptly(
    live_api: LiveApi, http: aiohttp.ClientSession
) -> None:
    f = await started_run(live_api, target="cpu")
    stalled = stalled_client(live_api.url, f"/v1/runs/{f.run_id}/events")
    try:
        async with subscribe(http, live_api.events_url(f.run_id, "?types=status")
                             ) as run_stream, \
                subscribe(http, f"{live_api.url}/v1/compute/cpu/events") as queue_stream:
            await run_stream.take(1)
            await queue_stream.take(1)
            # A backlog the stalled client will never read: its stream blocks in a write.
            await live_api.commit(*(f.metrics(packed_series("x", [0.5] * 20_000))
                                    for _ in range(5)))
            await wait_for(_streams(live_api, http, 2), timeout_s=10, what="both run streams")
            await asyncio.sleep(0.5)
            started = time.monotonic()
            await live_api.server.stop()
            took = time.monotonic() - started
            print(f"HttpServer.stop with 3 open streams: {took * 1e3:.0f} ms")
            assert took < 5.0
            assert await run_stream.next(timeout_s=5) is None
            assert await queue_stream.next(timeout_s=5) is None
    finally:
        stalled.close()


async def test_streams_survive_the_listener_losing_its_connection(
    live_api: LiveApi, http: aiohttp.ClientSession
) -> None:
    f = await started_run(live_api)
    async with subscribe(http, live_api.events_url(f.run_id, "?types=point")) as stream:
        killed = await fetch(live_api.dsn, "SELECT pg_terminate_backend(pid) AS ok "
                             "FROM pg_stat_activity WHERE datname = current_database() "
                             "AND application_name = $1", APPLICATION_NAME)
        assert [k["ok"] for k in killed] == [True]
        for i in range(3):
            committed = await live_api.commit(f.metrics(packed_series("x", [float(i)],
                                                                      steps=[i])))
            (point,) = await stream.take(1)
            delivered_within_bound("after losing the listener", committed, [point])
            assert point.data["step"] == i
            await asyncio.sleep(0.5)

        async def listening_again() -> bool:
            return bool(await fetch(live_api.dsn, "SELECT 1 FROM pg_stat_activity "
                                    "WHERE datname = current_database() "
                                    "AND application_name = $1", APPLICATION_NAME))

        await wait_for(listening_again, timeout_s=10, what="the listener to reconnect")
        committed = await live_api.commit(f.metrics(packed_series("x", [9.0], steps=[9])))
        (point,) = await stream.take(1)
        delivered_within_bound("listener reconnected", committed, [point])


# -- the whole pipeline --------------------------------------------------------------------


async def test_sdk_to_worker_to_stream(
    pipeline: Pipeline, tmp_path: Path, http: aiohttp.ClientSession,
) -> None:
    """SDK → Kafka → ``runstream ingest`` process (NOTIFY at commit) → API → client."""
    app = create_app(blob_store=BlobStore(root=tmp_path / "blobs"),
                     registry=CollectorRegistry(), db_dsn=Secret(pipeline.dsn))
    async with HttpServer(app, port=0) as server:
        ws = workspace(pipeline, tmp_path / "sdk")
        run = await asyncio.to_thread(
            Experiment(ws, "live").start_logging, compute_target="cpu", outputs_dir=None)
        await asyncio.to_thread(ws.flush, 30.0)
        url = f"{server.url}/v1/runs/{run.id}/events"

        async def run_is_stored() -> bool:
            async with http.get(url) as r:
                return r.status == 200

        await wait_for(run_is_stored, timeout_s=60, what="the run to be stored")
        async with subscribe(http, url) as stream:
            (status,) = await stream.take(1)
            assert status.data["status"] == "Running"

            def train() -> None:
                for step in range(100):
                    run.log("loss", 1 / (step + 1))
                run.complete()
                ws.flush(30.0)

            logged = time.time()
            await asyncio.to_thread(train)
            got: list[Any] = []
            while not (got and got[-1].event == "status"
                       and got[-1].data["status"] == "Completed"):
                event = await stream.next(timeout_s=30)
                assert event is not None
                got.append(event)
        await asyncio.to_thread(ws.close, 10.0)
    points = [g.data for g in got if g.event == "point"]
    assert [(p["step"], p["value"]) for p in points] == [(s, 1 / (s + 1)) for s in range(100)]
    print(f"log call → SSE receipt through Kafka and a worker: "
          f"{(got[0].at - logged) * 1e3:.0f}..{(got[-1].at - logged) * 1e3:.0f} ms")
    assert got[-1].at - logged < 30
