"""Headless Chromium for the page tests (Playwright over Debian's chromium): the `page`
fixture of conftest.py opens each test's page (`new_page`: downloads accepted, the pages' 30 s default
timeout) in a fresh context of one browser a test module (`chromium`: a launch costs seconds), sized by
the module's `VIEWPORT` (1280×900 without one)."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).parents[1] / "test-artifacts"  # screenshots kept from the page tests
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1280, "height": 900}


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """Headless Chromium, launched once (the page fixture keeps one a test module)."""
    from playwright import sync_api

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def new_page(browser: Any, viewport: dict[str, int] | None = None) -> Iterator[Any]:
    """A page in a fresh context of `browser` (no cookies, storage or cache of another test)."""
    context = browser.new_context(viewport=viewport or VIEWPORT, accept_downloads=True)
    try:
        pg = context.new_page()
        pg.set_default_timeout(30_000)
        yield pg
    finally:
        context.close()

