"""Images over time (issue 15, item 7) through the real pipeline: ``log_image`` of arrays,
figures and files at several steps (SDK → Kafka → worker → PostgreSQL, bytes to the API's
blob store), read back through the API — each step its own file, listed with its image
name and step, its bytes the PNG that decodes to the very array logged."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from PIL import Image

from producer import Experiment, Run
from tests.integration.pipelines import READ_TOKEN, ReadPipeline, call

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {READ_TOKEN}"}


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, bytes, str]:
    async with http.get(url, headers=AUTH) as response:
        return response.status, await response.read(), response.content_type


async def test_every_step_of_an_image_is_stored_and_served_as_logged(
    read_pipeline: ReadPipeline, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    rng = np.random.default_rng(15)
    frames = {step: rng.integers(0, 256, size=(8, 12, 3), dtype=np.uint8)
              for step in (0, 50, 100)}
    masks = [rng.random((6, 6)) for _ in range(2)]  # floats in [0, 1), steps 0 and 1
    photo = tmp_path / "photo.jpeg"
    photo.write_bytes(b"\xff\xd8\xff\xe0" + rng.bytes(500))
    figure = Figure()
    figure.add_subplot().plot([0, 1, 2], [2, 0, 1])

    def train() -> Run:
        ws = read_pipeline.workspace()
        with Experiment(ws, "images").start_logging(outputs_dir=None) as run:
            for step, frame in frames.items():
                run.log_image("samples", frame, step=step)
            for mask in masks:
                run.log_image("mask", plot=mask)
            run.log_image("loss_curve", plot=figure)
            run.log_image("loss_curve", plot=figure)  # a newer image replaces none
            run.log_image("photo", path=photo, step=7)
        run.flush(30.0)  # the images' bytes too
        run.get_file_names()  # waits until the API has stored what this process sent
        return run

    run = await call(train)
    base = f"{read_pipeline.api_url}/v1/runs/{run.id}/files"
    status, body, _ = await get(http, base)
    assert status == 200, body
    files = {f["name"]: f for f in json.loads(body)["files"]}
    listed = {n: (f["kind"], f["image"], f["step"], f["content_type"]) for n, f in files.items()}
    assert listed == {
        "samples/step_0.png": ("IMAGE", "samples", 0, "image/png"),
        "samples/step_50.png": ("IMAGE", "samples", 50, "image/png"),
        "samples/step_100.png": ("IMAGE", "samples", 100, "image/png"),
        "mask/step_0.png": ("IMAGE", "mask", 0, "image/png"),
        "mask/step_1.png": ("IMAGE", "mask", 1, "image/png"),
        "loss_curve/step_0.png": ("IMAGE", "loss_curve", 0, "image/png"),
        "loss_curve/step_1.png": ("IMAGE", "loss_curve", 1, "image/png"),
        "photo/step_7.jpeg": ("IMAGE", "photo", 7, "image/jpeg"),
    }
    assert sorted(await call(run.get_file_names)) == sorted(files)

    def pixels(data: bytes) -> Any:
        image = Image.open(io.BytesIO(data))
        image.load()  # checks every chunk's CRC
        return np.asarray(image)

    for step, frame in frames.items():
        status, data, content_type = await get(http, f"{base}/samples/step_{step}.png")
        assert (status, content_type) == (200, "image/png")
        assert np.array_equal(pixels(data), frame), step
    for step, mask in enumerate(masks):
        _, data, _ = await get(http, f"{base}/mask/step_{step}.png")
        assert np.array_equal(pixels(data), np.rint(mask * 255).astype(np.uint8)), step
    _, data, _ = await get(http, f"{base}/loss_curve/step_1.png")
    assert pixels(data).shape[2] == 4  # matplotlib's RGBA figure
    _, data, content_type = await get(http, f"{base}/photo/step_7.jpeg")
    assert (data, content_type) == (photo.read_bytes(), "image/jpeg")
    downloaded = await call(run.download_file, "samples/step_50.png", tmp_path / "s50.png")
    assert np.array_equal(pixels(downloaded.read_bytes()), frames[50])
