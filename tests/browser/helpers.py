"""Plain helpers of the browser tests (their fixtures are in tests/browser/conftest.py).

- ``StudioPage``/``Guard``: what the ``studio_page`` fixture gives: the page, its context,
  and what it tried (requests, refused requests, script errors);
- ``screenshot(page, name)``: a full-page PNG under ``SCREENSHOTS``
  (``tests/browser/screenshots/``, or ``RUNSTREAM_SCREENSHOTS``), named at the end of the
  session; the first one of a session clears the PNGs of the last;
- ``log_in(page, url, token)``: ``POST /studio/login`` from the page's browser context, as
  the studio's own origin, so the context holds the HttpOnly cookie;
- ``studio_built()``: whether the Vite build is in the package.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from playwright.async_api import BrowserContext, Page

__all__ = ["SCREENSHOTS", "Guard", "StudioPage", "log_in", "screenshot", "studio_built",
           "taken"]

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = Path(os.environ.get("RUNSTREAM_SCREENSHOTS")
                   or Path(__file__).parent / "screenshots")
#: The screenshots this session took, in order.
taken: list[Path] = []


@dataclass
class Guard:
    """What a page did that a test must not miss: requests that tried to leave
    127.0.0.1 (aborted), every URL it asked for, uncaught script errors, console errors."""

    blocked: list[str] = field(default_factory=list)
    requested: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)


@dataclass
class StudioPage:
    page: Page
    context: BrowserContext
    guard: Guard


def _screenshot_folder() -> None:
    if not taken and SCREENSHOTS.is_dir():
        for old in SCREENSHOTS.glob("*.png"):  # an old one must not pass for a new one
            old.unlink()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)


async def screenshot(page: Page, name: str) -> Path:
    """A full-page PNG of ``page`` as ``<SCREENSHOTS>/<name>.png``."""
    _screenshot_folder()
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    taken.append(path)
    return path


async def log_in(page: Page, url: str, token: str) -> None:
    """Log the page's browser context in as the studio does (``POST /studio/login``, from
    the studio's own origin); the context then holds the HttpOnly cookie."""
    response = await page.request.post(f"{url}/studio/login", data={"token": token},
                                       headers={"Origin": url})
    assert response.status == 200, await response.text()


def studio_built() -> bool:
    return (ROOT / "ingest" / "api" / "studio_dist" / "index.html").is_file()
