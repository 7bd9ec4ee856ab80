"""The page with two toy models served side by side (see tests/test_multimodel.py): a model selector, and
a side-by-side view with the models' rank agreement. Playwright drives Debian's chromium, as in
tests/test_page.py."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from werkzeug.serving import make_server

from conftest import draw_shape
from test_multimodel import OTHER, other_toy  # noqa: F401  (the fixture)
from test_page import _choose, sync_api

from indexer.engine import Engine
from indexer.settings import Settings
from service import create_app
from service.state import AUTO_EMBED_LIMIT

pytestmark = pytest.mark.browser


@pytest.fixture
def url(other_toy: Path, toy_loader: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:  # noqa: F811
    monkeypatch.setenv("CLIP_GAZE_BACKEND", "torch")
    monkeypatch.setenv("CLIP_GAZE_MODELS", f"toy,clip-gaze-toy:{other_toy}")
    settings = Settings.from_env()
    engine = Engine.from_settings(settings, loader=toy_loader, auto_embed_limit=AUTO_EMBED_LIMIT)
    engine.vocabularies()
    server = make_server("127.0.0.1", 0, create_app(settings, engine=engine), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()


def test_the_page_reads_with_the_model_chosen_and_side_by_side(page, url, tmp_path: Path):  # noqa: F811
    picture = tmp_path / "red-circle.png"
    draw_shape("red", "circle", size=256).save(picture)
    page.goto(url)
    select = page.locator("#model-select")
    sync_api.expect(select).to_be_visible()
    assert select.locator("option").all_inner_texts() == ["toy (default)", OTHER]
    select.select_option(OTHER)
    sync_api.expect(page.locator("#model-name")).to_have_text(OTHER)
    sync_api.expect(page.locator("#model-caveat")).to_be_visible()  # the perturbed toy is a test instrument too
    with page.expect_response("**/v1/analyze") as reading:
        _choose(page, picture)
    sync_api.expect(page.locator(".chart .bar").first).to_be_visible()
    assert reading.value.json()["model"]["pretrained"] == "toy-b.safetensors"  # read by the model chosen

    page.locator("input[name=mode][value=compare]").check()
    page.fill("#phrases", "a red circle\na blue square\na green star\na red shape")
    page.locator("#side-by-side").check()
    sync_api.expect(page.locator("#side-explain")).to_be_visible()
    page.click("#run")
    side = page.locator(".chart.side")
    sync_api.expect(side).to_have_count(1)
    sync_api.expect(side.locator(".column")).to_have_count(2)
    assert side.locator(".column h4").all_inner_texts() == ["toy", OTHER]
    sync_api.expect(side.locator(".agreement")).to_contain_text("Spearman's ρ")
    sync_api.expect(side.locator(".agreement")).to_contain_text("top-4 overlap")
    assert side.locator(".column").nth(1).locator(".bar").count() == 4
    side.locator(".column").nth(1).locator(".bar").first.click()  # its map, under that model
    sync_api.expect(page.locator("#map-caption")).to_contain_text(f"under {OTHER}")
    page.screenshot(path=str(Path(__file__).parents[1] / "test-artifacts" / "25c-side-by-side.png"), full_page=True)
