"""A real IIIF viewer shows clip-gaze's annotations: Mirador (vendored from its npm package, pinned:
tests/vendor/mirador/) in headless Chromium, on a manifest served from loopback whose canvases name
clip-gaze's annotation page, finds each canvas's top term on that canvas and not on the other.
The screenshots are kept in test-artifacts/."""

from __future__ import annotations

import hashlib
import shutil
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from werkzeug.serving import make_server

from indexer.collections.local import Collections
from indexer.engine import Engine
from indexer.schema import parse
from indexer.schema.collections import AddSources, CreateCollection
from indexer.settings import Settings
from service import create_app
from test_annotations import Museum, needs_manifests, shapes_vocabulary

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (apt-get install -y chromium): browser tests skipped", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")

MIRADOR = Path(__file__).parent / "vendor" / "mirador" / "mirador.min.js"
MIRADOR_SHA256 = "43caefc0eb119c8152e573a028c78c8b8a0497da20055358104c273fe2b98eac"  # mirador 3.4.3's dist/mirador.min.js
ARTIFACTS = Path(__file__).parents[1] / "test-artifacts"

PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>Mirador</title></head>
<body style="margin:0"><div id="viewer" style="position:absolute;top:0;left:0;right:0;bottom:0"></div>
<script src="/mirador.min.js"></script>
<script>
  Mirador.viewer({
    id: "viewer",
    windows: [{manifestId: "MANIFEST", canvasIndex: 0}],
    window: {allowClose: false, sideBarOpenByDefault: true, defaultSideBarPanel: "annotations"},
    annotations: {filteredMotivations: ["oa:commenting", "oa:tagging", "commenting", "tagging", "classifying"]},
    workspaceControlPanel: {enabled: false},
  });
</script></body></html>"""


@needs_manifests
def test_mirador_shows_each_canvas_its_top_term(toy_loader: Any, monkeypatch: pytest.MonkeyPatch):
    assert hashlib.sha256(MIRADOR.read_bytes()).hexdigest() == MIRADOR_SHA256, "the vendored Mirador is not the pinned one"
    server = __import__("http.server").server.ThreadingHTTPServer(("127.0.0.1", 0), Museum)
    Museum.port = server.server_port
    threading.Thread(target=server.serve_forever, daemon=True).start()
    museum = f"http://127.0.0.1:{server.server_port}"
    monkeypatch.setenv("CLIP_GAZE_FETCH_ALLOW", museum.removeprefix("http://"))
    engine = Engine.from_settings(Settings.from_env(), loader=toy_loader, batch_window_ms=2)
    shapes_vocabulary(engine)
    collections = Collections(engine)
    collections.create(parse(CreateCollection, {"name": "demo"}))
    assert collections.add("demo", parse(AddSources, {"sources": [f"{museum}/m1.json"]})).added == 2
    service = make_server("127.0.0.1", 0, create_app(Settings.from_env(), engine=engine), threaded=True)
    threading.Thread(target=service.serve_forever, daemon=True).start()
    manifest = f"{museum}/m1.json"
    pages = f"http://127.0.0.1:{service.server_port}/v1/collections/demo/annotations?vocabularies=shapes&top_k=1&regions=true"
    Museum.annotations = {name: f"{pages}&manifest={quote(manifest, safe='')}&canvas={quote(f'{museum}/canvas/{name}', safe='')}"
                          for name in ("red-circle", "blue-square")}  # each canvas names clip-gaze's page of it
    Museum.files = {"mirador.min.js": (MIRADOR.read_bytes(), "application/javascript"),
                    "index.html": (PAGE.replace("MANIFEST", manifest).encode(), "text/html")}
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--no-first-run",
                                                                        "--disable-background-networking"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(60_000)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{museum}/index.html")
            sync_api.expect(page.get_by_text("a red circle").first).to_be_visible(timeout=60_000)  # canvas 1: its top term
            assert page.get_by_text("a blue square").count() == 0  # not canvas 2's
            page.get_by_text("a red circle").first.click()  # selected: Mirador draws its region (xywh=) on the canvas
            page.wait_for_timeout(1500)  # the picture's tiles drawn, for the screenshot
            page.screenshot(path=str(ARTIFACTS / "mirador-canvas-1.png"))
            page.get_by_role("button", name="Next item").first.click()
            sync_api.expect(page.get_by_text("a blue square").first).to_be_visible(timeout=60_000)
            assert page.get_by_text("a red circle").count() == 0
            page.get_by_text("a blue square").first.click()
            page.wait_for_timeout(1500)
            page.screenshot(path=str(ARTIFACTS / "mirador-canvas-2.png"))
            assert not errors, errors
            browser.close()
    finally:
        service.shutdown()
        server.shutdown()
        server.server_close()
        Museum.annotations = {}
        Museum.files = {}
