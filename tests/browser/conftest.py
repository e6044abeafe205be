"""Fixtures of the studio's browser tests: a real headless Chromium (Debian's ``chromium``,
installed by deploy/prereqs.sh) driven by Playwright for Python with ``executable_path``
(Playwright downloads no browser), against the real pipeline: SDK → Kafka → worker →
PostgreSQL → API, whose process serves the studio.

- ``read_pipeline`` (and what it builds on) is tests/integration/conftest.py's, imported
  here so the browser tests use the very same private topic, database, worker and API
  (token ``READ_TOKEN``) as the integration tests;
- ``chromium``: the browser's path; the tests skip, saying why, only when it is absent;
- ``browser``: one Chromium for the session;
- ``studio_page``: a fresh browser context and page for the test, which lets no request
  leave 127.0.0.1 (anything else is aborted and recorded; the test fails at its end if
  anything was, or if a script on the page threw);
- ``built_studio``: the tests of the app's pages need the Vite build (``make setup``
  makes it); without one they fail saying how, or skip while the studio's sources are
  not in the checkout at all.

Helpers (``screenshot``, ``log_in``) are in tests/browser/helpers.py; the screenshots'
folder is named at the end of the session.

Every test here is marked ``browser`` and ``integration`` (it needs the stack).
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Browser, Request, Route, ViewportSize, async_playwright

from tests.browser.helpers import SCREENSHOTS, Guard, StudioPage, studio_built, taken

# The integration tests' fixtures, reused by name (tests/integration/conftest.py).
from tests.integration.conftest import (  # noqa: F401 - fixtures
    http,
    new_db,
    pipeline,
    read_pipeline,
    worker_procs,
)

CHROMIUM_CANDIDATES = ("chromium", "/usr/bin/chromium", "chromium-browser")
#: Where the studio's pages and screenshots are drawn (a laptop screen).
VIEWPORT: ViewportSize = {"width": 1440, "height": 900}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.integration)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if taken:
        terminalreporter.write_line(
            f"studio screenshots: {len(taken)} PNG files in {SCREENSHOTS}")


@pytest.fixture(scope="session")
def chromium() -> str:
    """The Chromium executable (Debian's package); the test skips, saying so, without it."""
    for candidate in CHROMIUM_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    pytest.skip("Debian's chromium is not installed (deploy/prereqs.sh installs it as root: "
                "apt-get install -y chromium)")


@pytest.fixture(scope="session")
async def browser(chromium: str) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=chromium, headless=True,
            # No GPU, no first-run UI, and no phoning home (nothing may leave 127.0.0.1).
            args=["--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"],
        )
        try:
            yield launched
        finally:
            await launched.close()


def _local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("data", "blob", "about") or parts.hostname == "127.0.0.1"


@pytest.fixture
async def studio_page(browser: Browser) -> AsyncIterator[StudioPage]:
    """A page in a fresh context (no cookies) that may reach 127.0.0.1 only."""
    guard = Guard()
    context = await browser.new_context(viewport=VIEWPORT, device_scale_factor=1,
                                        locale="en-US", timezone_id="UTC")

    async def only_local(route: Route, request: Request) -> None:
        if _local(request.url):
            await route.continue_()
        else:
            guard.blocked.append(request.url)
            await route.abort("blockedbyclient")

    await context.route("**/*", only_local)
    context.on("request", lambda request: guard.requested.append(request.url))
    page = await context.new_page()
    page.on("pageerror", lambda error: guard.page_errors.append(str(error)))
    page.on("console", lambda message: guard.console_errors.append(message.text)
            if message.type == "error" else None)
    try:
        yield StudioPage(page, context, guard)
    finally:
        await context.close()
    if guard.console_errors:
        print("console errors on the page:", *guard.console_errors, sep="\n  ")
    assert guard.blocked == [], "requests tried to leave 127.0.0.1"
    assert guard.page_errors == [], "a script on the page threw"


@pytest.fixture
def built_studio() -> None:
    """The app's pages need its Vite build in ingest/api/studio_dist/."""
    if studio_built():
        return
    pytest.fail("the studio is not built (ingest/api/studio_dist/index.html is missing): "
                "cd studio && npm ci && npm run build")
