"""The page on a closed service (issue 23, 7): it asks for a key when the service answers 401, and with a
key it was given it loads and reads as on an open one (Playwright and Debian's chromium, as tests/test_page.py)."""

from __future__ import annotations

import threading

import pytest
from browser import ARTIFACTS
from test_page import sync_api
from werkzeug.serving import make_server

from indexer.settings import Settings
from indexer.store.keys import KeyStore
from service import create_app

pytestmark = pytest.mark.browser


@pytest.fixture
def closed(engine, monkeypatch):
    monkeypatch.setenv("CLIP_GAZE_ANONYMOUS", "none")
    engine.vocabularies()
    _, secret = KeyStore(engine.store).create("visitor", ["read", "analyze"])
    server = make_server("127.0.0.1", 0, create_app(Settings.from_env(), engine=engine), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/", secret
    server.shutdown()


def test_the_page_asks_for_a_key_on_401_and_loads_with_it(page, closed):  # noqa: F811
    url, secret = closed
    page.goto(url)
    form = page.locator("#key-form")
    sync_api.expect(form).to_be_visible()
    sync_api.expect(page.locator("#key-reason")).to_contain_text("needs an API key")
    sync_api.expect(page.locator("#key")).to_be_focused()
    page.fill("#key", "cgk_000000000000_" + "A" * 43)  # a key the service does not accept: asked again
    page.click("#key-form button")
    sync_api.expect(form).to_be_visible()
    sync_api.expect(page.locator("#key-reason")).to_contain_text("not accepted")
    page.fill("#key", secret)
    page.click("#key-form button")
    sync_api.expect(form).to_be_hidden()
    sync_api.expect(page.locator("#model-name")).to_contain_text("toy")
    sync_api.expect(page.locator("#vocab-list input[value=movements]")).to_be_checked()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "page-with-key.png"))
    assert secret not in page.url
