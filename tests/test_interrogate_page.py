"""The page's Prompt panel, in a real browser (as tests/test_page.py): the prompt, its copy button, each
part with its gain, and a part's map through /v1/explain."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import draw_shape
from indexer.schema import CreateVocabulary
from test_page import sync_api, url  # noqa: F401  (the fixture url; page is conftest's)
from test_interrogate import WORDS

pytestmark = pytest.mark.browser


def test_the_prompt_panel(page, url, engine, tmp_path: Path):  # noqa: F811
    engine.create_vocabulary(CreateVocabulary(name="toy-world", phrases=WORDS))
    picture = tmp_path / "red-circle.png"
    draw_shape("red", "circle", 128, "white").save(picture)
    page.goto(url)
    sync_api.expect(page.locator("#model-name")).to_contain_text("toy")
    sync_api.expect(page.locator("#vocab-list input[value=toy-world]")).to_be_visible()
    page.evaluate("document.querySelectorAll('#vocab-list input').forEach((i) => { i.checked = false; })")
    page.locator("#vocab-list input[value=toy-world]").check()
    page.set_input_files("#file", str(picture))
    sync_api.expect(page.locator("#results")).to_have_attribute("aria-busy", "false")
    page.select_option("#prompt-mode", "best")
    page.get_by_role("button", name="Write the prompt").click()
    sync_api.expect(page.locator("#prompt-text")).to_contain_text("a red circle")
    sync_api.expect(page.locator("#prompt-summary")).to_contain_text("cosine")
    parts = page.locator("#prompt-parts .part")
    assert parts.count() >= 1 and "+" in parts.first.inner_text()
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.get_by_role("button", name="Copy").click()
    sync_api.expect(page.locator("#prompt-status")).to_contain_text("Cop")
    parts.first.click()
    sync_api.expect(page.locator("#map-panel")).to_be_visible()
    sync_api.expect(page.locator("#map-caption")).to_contain_text("gain")
    sync_api.expect(parts.first).to_have_attribute("aria-current", "true")
    page.screenshot(path=str(Path(__file__).parents[1] / "test-artifacts" / "20-prompt.png"), full_page=True)
