"""Headless Chromium for the page tests (Playwright over Debian's chromium): `chromium_page(viewport)`
opens one page in a fresh browser, downloads accepted, with the pages' 30 s default timeout; the
`page` fixture of conftest.py uses it, sized by the test module's `VIEWPORT` (1280×900 without one)."""

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
def chromium_page(viewport: dict[str, int] | None = None) -> Iterator[Any]:
    from playwright import sync_api

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context(viewport=viewport or VIEWPORT, accept_downloads=True)
        try:
            pg = context.new_page()
            pg.set_default_timeout(30_000)
            yield pg
        finally:
            context.close()
            browser.close()
