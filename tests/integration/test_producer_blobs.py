"""Artifact bytes through the real API server (ingest.api.app on an ephemeral port).

The SDK's uploader thread uses blocking urllib; the server runs on the test's event loop,
so every blocking SDK call (flush, close, sync) runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
from pathlib import Path

import pytest

from producer import Experiment, Workspace, sync
from producer._blobs import list_staged
from tests.helpers import StackInfo, TopicFactory
from tests.integration.api_servers import ApiFactory

pytestmark = pytest.mark.integration

TOKEN = "producer-test-token"  # noqa: S105 - a test credential


async def test_files_and_images_reach_the_blob_store(
    api_factory: ApiFactory, stack: StackInfo, topic_factory: TopicFactory, tmp_path: Path
) -> None:
    api = await api_factory(token=TOKEN)
    url, store = api.url, api.store
    topic = await topic_factory(partitions=1)
    ws = Workspace(
        kafka_bootstrap=stack.kafka_bootstrap,
        topic=topic,
        home=tmp_path / "client",
        api_url=url,
        token=TOKEN,
    )
    model = tmp_path / "model.pkl"
    model.write_bytes(b"\x80\x04 model bytes" * 10_000)
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    (outputs / "metrics.json").write_bytes(b'{"mse": 3.1}')

    def train() -> None:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.figure import Figure

        with Experiment(ws, "blobs").start_logging(outputs_dir=outputs) as run:
            run.upload_file("model.pkl", model)
            run.upload_file("raw.bin", io.BytesIO(b"streamed"))
            figure = Figure()
            figure.add_subplot().plot([0, 1], [1, 0])
            run.log_image("ROC", plot=figure)
        run.flush(30.0)  # waits for the uploads as well
        ws.close(10.0)

    await asyncio.to_thread(train)

    for data in (model.read_bytes(), b"streamed", b'{"mse": 3.1}'):
        assert await store.read_bytes(hashlib.sha256(data).hexdigest()) == data
    assert list_staged(ws.blob_dir) == []
    assert ws.stats().blobs_uploaded == 4


async def test_blobs_wait_on_disk_while_the_api_is_down_then_sync_uploads_them(
    api_factory: ApiFactory, stack: StackInfo, topic_factory: TopicFactory, tmp_path: Path,
    closed_port: int,
) -> None:
    api = await api_factory(token=TOKEN)
    url, store = api.url, api.store
    topic = await topic_factory(partitions=1)
    home = tmp_path / "client"
    down = Workspace(
        kafka_bootstrap=stack.kafka_bootstrap,
        topic=topic,
        home=home,
        api_url=f"http://127.0.0.1:{closed_port}",
        token=TOKEN,
    )
    payload = b"checkpoint" * 50_000

    def train() -> None:
        with Experiment(down, "blobs").start_logging(outputs_dir=None) as run:
            run.upload_file("outputs/ckpt.bin", io.BytesIO(payload))
        down.close(5.0)

    await asyncio.to_thread(train)
    digest = hashlib.sha256(payload).hexdigest()
    assert [p.name for p in list_staged(down.blob_dir)] == [digest]
    assert not await store.exists(digest)

    up = Workspace(
        kafka_bootstrap=stack.kafka_bootstrap, topic=topic, home=home, api_url=url, token=TOKEN
    )
    result = await asyncio.to_thread(sync, up)

    assert result.complete
    assert (result.blobs_uploaded, result.events_sent) == (1, 0)
    assert await store.read_bytes(digest) == payload
    assert list_staged(up.blob_dir) == []


async def test_a_wrong_token_keeps_the_bytes_for_later(
    api_factory: ApiFactory, tmp_path: Path
) -> None:
    api = await api_factory(token=TOKEN)
    url, store = api.url, api.store
    staged = Workspace(api_url=url, token="wrong", home=tmp_path)  # noqa: S106
    staged.blob_dir.mkdir(parents=True)
    digest = hashlib.sha256(b"kept").hexdigest()
    (staged.blob_dir / digest).write_bytes(b"kept")

    result = await asyncio.to_thread(sync, staged)

    assert not result.complete
    assert result.blobs_remaining == 1
    assert "HTTP 403" in result.errors[0]
    assert (staged.blob_dir / digest).read_bytes() == b"kept"
    assert not await store.exists(digest)
