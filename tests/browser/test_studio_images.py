"""Images over time on the run page (issue 15, item 7), in headless Chromium: images logged
through the SDK at several steps (arrays encoded as PNG, a matplotlib figure) show per
image name, the newest step first, with previous/next buttons, a slider and — for a few
steps — a strip of thumbnails to go through the steps; which step is shown is judged from
the drawn pixels.

Fixtures: tests/browser/conftest.py (``studio_page``, ``read_pipeline``, ``built_studio``).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image
from playwright.async_api import Locator, expect

from producer import Experiment, Run
from tests.browser.helpers import StudioPage, log_in, screenshot
from tests.integration.pipelines import READ_TOKEN, ReadPipeline, call

pytestmark = pytest.mark.usefixtures("built_studio")

#: The colour of the disc in ``samples`` at each step (the background is dark grey).
COLOURS = {0: (220, 40, 40), 10: (40, 180, 60), 20: (50, 90, 220)}
MASK_STEPS = 20


def disc(step: int) -> NDArray[np.uint8]:
    """64x64 RGB: a disc of the step's colour, growing with the step, on dark grey."""
    y, x = np.mgrid[0:64, 0:64]
    image = np.full((64, 64, 3), 40, dtype=np.uint8)
    image[(x - 31.5) ** 2 + (y - 31.5) ** 2 <= (12 + step) ** 2] = COLOURS[step]
    return image


def mask(step: int) -> NDArray[np.float64]:
    """16x16 floats in [0, 1]: stripes that move one pixel a step."""
    x = np.tile(np.arange(16), (16, 1))
    return ((x + step) % 16).astype(np.float64) / 15.0


async def centre(img: Locator) -> tuple[int, int, int]:
    """The colour drawn at the middle of an <img> once it has loaded."""
    await expect(img).to_have_js_property("complete", True)
    await img.page.wait_for_function("el => el.complete && el.naturalWidth > 0",
                                     arg=await img.element_handle())
    shot = Image.open(io.BytesIO(await img.screenshot())).convert("RGB")
    r, g, b = shot.getpixel((shot.width // 2, shot.height // 2))  # type: ignore[misc]
    return r, g, b


def near(got: tuple[int, int, int], want: tuple[int, int, int]) -> bool:
    return all(abs(a - b) <= 12 for a, b in zip(got, want, strict=True))


async def test_the_run_page_shows_each_image_step_by_step(
        studio_page: StudioPage, read_pipeline: ReadPipeline) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    def log() -> Run:
        ws = read_pipeline.workspace()
        run = Experiment(ws, "browser-images").start_logging(display_name="images over time")
        for step in COLOURS:
            run.log_image("samples", disc(step), step=step)
        for step in range(MASK_STEPS):
            run.log_image("mask", mask(step))  # steps 0, 1, 2… by themselves
        for epochs in (10, 40):
            figure = Figure(figsize=(4, 3))
            xs = np.arange(epochs)
            figure.add_subplot().plot(xs, 1 / (1 + xs))
            run.log_image("loss_curve", plot=figure, step=epochs)
        run.complete()
        run.flush(30.0)  # the images' bytes too
        run.get_file_names()  # waits until the API has stored what this process sent
        return run

    run = await call(log)
    page, url = studio_page.page, read_pipeline.api_url
    await log_in(page, url, READ_TOKEN)
    await page.goto(f"{url}/runs/{run.id}?tab=metrics")
    await expect(page.get_by_role("heading", name="images over time")).to_be_visible()
    await expect(page.get_by_role("heading", name="Images (3, 25 steps)")).to_be_visible()

    # samples: the newest step first, then "previous" and the strip go back through them.
    samples = page.locator('figure[data-image="samples"]')
    view = samples.locator(".image-steps-view img")
    await expect(samples).to_have_attribute("data-step", "20")
    await expect(samples.locator("figcaption")).to_contain_text("step 20")
    await expect(samples.locator("figcaption")).to_contain_text("3 of 3")
    assert near(await centre(view), COLOURS[20])
    await samples.get_by_role("button", name="Previous step of samples").click()
    await expect(samples).to_have_attribute("data-step", "10")
    await expect(view).to_have_attribute("src", f"/v1/runs/{run.id}/files/samples/step_10.png")
    assert near(await centre(view), COLOURS[10])
    strip = samples.locator(".image-strip-item")
    await expect(strip).to_have_count(3)
    await strip.first.click()
    await expect(samples).to_have_attribute("data-step", "0")
    await expect(samples.get_by_role("button", name="Previous step of samples")).to_be_disabled()
    assert near(await centre(view), COLOURS[0])
    await samples.get_by_role("button", name="Next step of samples").click()
    await expect(samples).to_have_attribute("data-step", "10")

    # mask: 20 steps, logged without a step; the slider goes through them (no strip).
    masks = page.locator('figure[data-image="mask"]')
    await expect(masks).to_have_attribute("data-step", str(MASK_STEPS - 1))
    await expect(masks.locator(".image-strip")).to_have_count(0)
    slider = masks.get_by_role("slider", name="Step of mask")
    await slider.fill("4")
    await expect(masks).to_have_attribute("data-step", "4")
    await expect(slider).to_have_attribute("aria-valuetext", "step 4")
    await expect(masks.locator("figcaption")).to_contain_text("step 4")
    await expect(masks.locator("figcaption")).to_contain_text("5 of 20")

    # loss_curve: a matplotlib figure at two steps, each its own file.
    curves = page.locator('figure[data-image="loss_curve"]')
    await expect(curves).to_have_attribute("data-step", "40")
    await expect(curves.locator(".image-strip-item")).to_have_count(2)
    await curves.get_by_role("button", name="Show step 10 of loss_curve").click()
    await expect(curves).to_have_attribute("data-step", "10")
    await expect(curves.locator(".image-steps-view img")).to_have_js_property("complete", True)
    await expect(samples.locator(".image-steps-view img")).to_have_js_property("complete", True)

    heading = page.get_by_role("heading", name="Images (3, 25 steps)")
    card = page.locator("section.card", has=heading)
    await card.scroll_into_view_if_needed()
    await screenshot(page, "studio-run-images")
