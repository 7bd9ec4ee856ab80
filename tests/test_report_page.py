"""The evaluation report opens from disk in a real browser (Debian's chromium, headless, through
Playwright) with every plot and thumbnail embedded. The screenshot lands in test-artifacts/."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import create
from test_evaluate import TERMS, Counting, _draw, _engine
from indexer.collections.local import Collections
from indexer.evaluate.run import evaluate
from indexer.schema import parse
from indexer.schema.collections import AddSources, CreateCollection
from indexer.scoring.softmax import normalise

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (apt-get install -y chromium): browser tests skipped", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")

ARTIFACTS = Path(__file__).parents[1] / "test-artifacts"


@pytest.fixture
def report(toy, tmp_path) -> Path:
    """A report with the correction: the toy model with a modality gap and a planted hub phrase
    ('a shape'), so the plain figures are poor and the corrected ones good; one unreadable picture and
    one label the vocabulary lacks."""
    pictures = _draw(tmp_path / "pictures", per_class=2, seed=11)
    _draw(tmp_path / "reference", per_class=3, seed=12)
    (tmp_path / "pictures" / "broken.png").write_text("not a picture")
    labels = tmp_path / "labels.csv"
    labels.write_text("image,label\n" + "".join(f"pictures/{n},{c} {s}\n" for n, c, s in pictures)
                      + "pictures/broken.png,red circle\n" + f"pictures/{pictures[0][0]},blue blob\n", encoding="utf-8")
    gap = np.random.default_rng(0).normal(size=toy.dim).astype(np.float32)
    engine = _engine(tmp_path / "home", Counting(toy, gap / np.linalg.norm(gap)))
    Collections(engine).create(parse(CreateCollection, {"name": "museum"}))
    Collections(engine).add("museum", parse(AddSources, {"sources": [str(tmp_path / "reference")]}))
    row = engine.images.get("museum")
    reference = np.concatenate([c.matrix for c in engine.images.vectors(row.id, engine.model_key)])
    engine.store.put_embeddings(engine.model_key, ["a shape"], normalise(reference.mean(axis=0))[None, :])
    create(engine, "shapes", TERMS + ["shape"], template="a {}")
    ev = evaluate(engine, labels, "shapes", relative_to="museum", resamples=200, report_dir=tmp_path / "report")
    assert ev.report and ev.failed == 1 and ev.relative is not None
    return tmp_path / "report" / "report.html"


def test_the_report_opens_from_disk_with_everything_embedded(report):
    ARTIFACTS.mkdir(exist_ok=True)
    requests: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"],
        )
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.on("request", lambda r: requests.append(r.url))
        page.goto(report.as_uri())
        sync_api.expect(page.get_by_role("heading", name="Does CLIP agree with the labels?")).to_be_visible()
        sync_api.expect(page.locator("#figures-table")).to_contain_text("top-1 accuracy")
        sync_api.expect(page.locator("#figures-table")).to_contain_text("after the correction")
        images = page.locator("img")
        assert images.count() >= 5  # confusion matrices, reliability diagram, recall, thumbnails
        widths = page.eval_on_selector_all("img", "els => els.map(e => e.complete ? e.naturalWidth : 0)")
        assert all(w > 0 for w in widths), widths  # every image decoded from its data: URL
        sync_api.expect(page.locator("#missing")).to_contain_text("blue blob")
        sync_api.expect(page.locator("#errors")).to_contain_text("broken.png")
        page.screenshot(path=str(ARTIFACTS / "evaluate-report.png"), full_page=True)
        context.close()
        browser.close()
    assert requests and all(u.startswith(("file://", "data:")) for u in requests), requests  # nothing fetched
