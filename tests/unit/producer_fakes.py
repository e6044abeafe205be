"""Stand-ins for the SDK's two seams, shared by the producer unit tests.

``MemoryKafka`` replaces only the Kafka transport behind the background sender (the
buffer, batching, codec, sequencing, spool and replay stay real); ``FakeApi`` stands in
for ``urllib.request.urlopen`` (the API client's injected seam) and answers from canned
routes. Integration tests use the real broker and the real API instead.
"""

from __future__ import annotations

import asyncio
import email.message
import io
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from producer import KafkaUnavailableError, ProducerOptions, Workspace
from producer._transport import KafkaTransport
from schemas.codec import Codec

API = "http://api.test:8470"


Answer = tuple[int, Any] | tuple[int, Any, str]


CODEC = Codec()


UNREACHABLE_API = "http://127.0.0.1:9"  # nothing listens: uploads stay staged


class FakeResponse(io.BytesIO):
    def __init__(self, status: int, body: bytes, content_type: str) -> None:
        super().__init__(body)
        self.status = status
        self.headers = email.message.Message()
        self.headers["Content-Type"] = content_type


class FakeApi:
    """``urlopen`` answering ``routes[path](params)`` → (status, JSON-able | bytes[, type])."""

    def __init__(self, routes: dict[str, Callable[[list[tuple[str, str]]], Answer]]) -> None:
        self.routes = routes
        self.requests: list[urllib.request.Request] = []
        self.timeouts: list[float] = []

    def __call__(self, request: urllib.request.Request, timeout: float) -> FakeResponse:
        self.requests.append(request)
        self.timeouts.append(timeout)
        parts = urlsplit(request.full_url)
        handler = self.routes.get(parts.path)
        if handler is None:
            answer: Answer = (404, {"error": {"status": 404, "message": "no such route"}})
        else:
            answer = handler(parse_qsl(parts.query, keep_blank_values=True))
        status, body = answer[0], answer[1]
        content_type = answer[2] if len(answer) == 3 else "application/json"
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        if status >= 400:
            headers = email.message.Message()
            headers["Content-Type"] = content_type
            raise urllib.error.HTTPError(
                request.full_url, status, "Reason", headers, io.BytesIO(raw)
            )
        return FakeResponse(status, raw, content_type)


def ok(body: Any) -> Callable[[list[tuple[str, str]]], Answer]:
    return lambda params: (200, body)


class MemoryKafka(KafkaTransport):
    """Acknowledges at once and records what was delivered.

    ``down`` makes start/send fail like an unreachable broker; ``hold`` keeps acks
    pending until ``release()``, like a slow broker.
    """

    def __init__(self) -> None:
        super().__init__(
            bootstrap="memory",
            topic="memory",
            compression="lz4",
            max_message_bytes=1 << 20,
            batch_bytes=1 << 18,
            request_timeout_ms=1000,
            client_id="test",
        )
        self.delivered: list[tuple[bytes, bytes]] = []
        self.down = False
        self.hold = False
        self._held: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[Any], bytes, bytes]] = []
        self._lock = threading.Lock()

    async def start(self) -> None:
        if self.down:
            raise KafkaUnavailableError("memory broker is down", retriable=True)

    async def send(self, key: bytes, value: bytes) -> asyncio.Future[Any]:
        if self.down:
            raise KafkaUnavailableError("memory broker is down", retriable=True)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        with self._lock:
            if self.hold:
                self._held.append((loop, fut, key, value))
                return fut
            self.delivered.append((key, value))
        fut.set_result(None)
        return fut

    def release(self) -> None:
        with self._lock:
            self.hold = False
            held, self._held = self._held, []
            for loop, fut, key, value in held:
                self.delivered.append((key, value))
                loop.call_soon_threadsafe(fut.set_result, None)

    async def stop(self, timeout_s: float = 30.0) -> None:
        return None

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [CODEC.decode(value) for _, value in self.delivered]


class MemoryWorkspace(Workspace):
    """A workspace whose every Kafka producer is ``kafka``."""

    def __init__(self, kafka: MemoryKafka, **kwargs: Any) -> None:
        super().__init__(kafka_transport=lambda client_id: kafka, **kwargs)
        self.kafka = kafka


class FakeWorkspace(Workspace):
    """A workspace whose API is ``fake`` and whose broker (if a run opens) is in memory."""

    def __init__(self, fake: FakeApi, kafka: MemoryKafka | None = None, **kwargs: Any) -> None:
        kafka = kafka or MemoryKafka()
        super().__init__(
            api_url=API, urlopen=fake, kafka_transport=lambda client_id: kafka, **kwargs
        )
        self.fake = fake
        self.kafka = kafka


def options(**over: Any) -> ProducerOptions:
    base: dict[str, Any] = {"linger_ms": 5, "heartbeat_interval_s": 3600.0, "send_block_s": 0.2}
    base.update(over)
    return ProducerOptions(**base)


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def of_kind(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e["payload"][1] for e in events if e["payload"][0] == kind]


def run_details(run_id: str, status: str = "Running", **over: Any) -> dict[str, Any]:
    """A RunDetails document as the API answers it."""
    base: dict[str, Any] = {
        "run_id": run_id, "experiment": "exp", "workspace": "default", "parent_run_id": None,
        "display_name": None, "status": status, "compute_target": "local", "tags": {},
        "properties": {}, "portal_url": f"{API}/v1/runs/{run_id}", "error": None,
    }
    base.update(over)
    return base
