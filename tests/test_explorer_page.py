"""The explorer page in headless Chromium (Playwright) over a toy collection: colour by a phrase, a
facet that filters the map and the other facets' counts, search, a lasso and a box selection exported, a
picture's panel with its explanation map, a shared URL reopened to the same view, a narrow layout.
Screenshots land in test-artifacts/; with CLIP_GAZE_SCREENSHOT_UPDATE=1 the README's is written too."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from browser import ARTIFACTS, CHROMIUM
from conftest import create, draw_shape
from indexer.collections.local import Collections
from indexer.explore.explorer import Explorer
from indexer.schema import parse
from indexer.schema.collections import AddSources, CreateCollection
from indexer.settings import Settings
from service import create_app

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("umap")]  # one worker compiles UMAP (test_explorer.py)

if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (apt-get install -y chromium): browser tests skipped", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")

ROOT = Path(__file__).parents[1]
README_SHOT = ROOT / "docs" / "explorer.png"
sync_api.expect.set_options(timeout=30_000)
VIEWPORT = {"width": 1400, "height": 900}  # the page fixture's (conftest.py)
COLOURS = ("red", "blue", "green", "yellow")
SHAPES = ("circle", "square", "triangle", "star")


@pytest.fixture
def url(engine, tmp_path):
    engine.vocabularies()
    create(engine, "shapes", [f"a {c} {s}" for c in COLOURS for s in SHAPES])
    root = tmp_path / "scans"
    root.mkdir()
    rows = ["image,external_id,colour,shape,background"]
    i = 0
    for background in ("white", "black"):
        for c in COLOURS:
            for s in SHAPES[:3]:
                draw_shape(c, s, size=180, background=background).save(root / f"{i:02d}.png")
                rows.append(f"{i:02d}.png,OBJ-{i:02d},{c},{s},{background}")
                i += 1
    (root / "objects.csv").write_text("\n".join(rows) + "\n")
    collections = Collections(engine)
    collections.create(parse(CreateCollection, {"name": "museum", "description": "shapes, as a museum"}))
    collections.add("museum", parse(AddSources, {"sources": [str(root / "objects.csv")]}))
    Explorer(collections).map("museum", wait=True)  # the layout stored, as its job would
    app = create_app(Settings.from_env(), engine=engine)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()


def facet_counts(page, title: str) -> dict[str, int]:
    facet = page.locator(".facet", has=page.locator("h3", has_text=title))
    return {b.locator(".label").inner_text(): int(b.locator(".count").inner_text()) for b in facet.locator(".facet-item").all()}


def on_screen(page, point: dict) -> tuple[float, float]:
    """Where the page draws a map point, in the canvas's pixels (the view's zoom and centre from the URL)."""
    zoom, cx, cy = (float(v) for v in page.evaluate("new URLSearchParams(location.search).get('zoom')").split(","))
    w, h = page.evaluate("[document.getElementById('map').width, document.getElementById('map').height]")
    side = min(w, h) * zoom
    return w / 2 + (point["x"] - cx) * side, h / 2 + (point["y"] - cy) * side


def lasso(page, polygon: list[tuple[float, float]]) -> None:
    """Shift and drag through the corners of `polygon` (in the canvas's pixels)."""
    box = page.locator("#map").bounding_box()
    w, h = page.evaluate("[document.getElementById('map').width, document.getElementById('map').height]")
    at = [(box["x"] + x * box["width"] / w, box["y"] + y * box["height"] / h) for x, y in polygon]
    page.keyboard.down("Shift")
    page.mouse.move(*at[0])
    page.mouse.down()
    for x, y in at[1:]:
        page.mouse.move(x, y, steps=4)
    page.mouse.up()
    page.keyboard.up("Shift")


def in_polygon(point: tuple[float, float], polygon: list[tuple[float, float]]) -> bool:
    """Even-odd rule: a ray from the point crosses the closed polygon's edges an odd number of times."""
    x, y = point
    odd = False
    for (xa, ya), (xb, yb) in zip(polygon, polygon[-1:] + polygon[:-1]):
        if (ya > y) != (yb > y) and x < xa + (y - ya) * (xb - xa) / (yb - ya):
            odd = not odd
    return odd


def test_explore_a_collection_colour_facet_search_select_export_panel_and_reopen(page, url):
    expect = sync_api.expect
    # `/` lists the collections, with links
    maps: list[str] = []
    page.on("request", lambda r: maps.append(r.url) if "/map" in r.url else None)
    page.goto(url)
    page.get_by_role("link", name="museum").click()
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    expect(page.locator("#map")).to_have_attribute("data-kept", "24")
    # the map read as Arrow: its compact form (index, x, y) first, then the points' identities
    assert [u.split("?", 1)[1] for u in maps] == ["format=arrow&fields=index,x,y", "format=arrow&fields=sha256,external_id"]
    page.select_option("#vocab", "shapes")
    expect(page.locator("#legend")).to_contain_text("best phrase of shapes (of 16)")

    # colour by a phrase's probability within the vocabulary: a legend with the scale
    page.get_by_label("a phrase's probability").check()
    page.select_option("#phrase", "a red circle")
    expect(page.locator("#legend")).to_contain_text("Probability of “a red circle” within shapes (softmax over 16 phrases)")
    expect(page.locator(".ramp")).to_be_visible()

    # a metadata column's facet, then a click on a vocabulary facet: the map and the other counts change
    page.fill("#facet-column", "background")
    page.locator("#facet-column").dispatch_event("change")
    expect(page.locator(".facet h3", has_text="Column background")).to_be_visible()
    assert facet_counts(page, "Column background") == {"white": 12, "black": 12}
    page.locator("#controls").evaluate("e => { e.scrollTop = 0; }")
    page.screenshot(path=str(ARTIFACTS / "explorer-0-colour.png"))
    if os.environ.get("CLIP_GAZE_SCREENSHOT_UPDATE") == "1":  # the README's picture
        README_SHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(README_SHOT))
    best = facet_counts(page, "Best phrase of shapes")
    assert sum(best.values()) == 24
    first = page.locator(".facet", has=page.locator("h3", has_text="Best phrase of shapes")).locator(".facet-item").first
    label, count = first.locator(".label").inner_text(), int(first.locator(".count").inner_text())
    first.click()
    expect(page.locator(".filter")).to_have_text(f"top:shapes={label} ×")
    expect(page.locator("#map")).to_have_attribute("data-kept", str(count))
    expect(page.locator(".facet-item[aria-pressed=true]")).to_have_count(1)
    assert sum(facet_counts(page, "Column background").values()) == count
    page.screenshot(path=str(ARTIFACTS / "explorer-1-facet.png"))

    # search by phrase with a cut-off: a grid, highlighted on the map
    page.fill("#q", "a red circle")
    page.fill("#min-cosine", "0.3")
    page.click("#search-form button[type=submit]")
    expect(page.locator("#hits .hit").first).to_be_visible()
    hits = page.locator("#hits .hit").count()
    expect(page.locator("#map")).to_have_attribute("data-hits", str(hits))
    expect(page.locator(".hits-count")).to_contain_text("cosine ≥ 0.3")

    # a lasso: the pictures the filter keeps inside the polygon drawn, as computed here
    page.get_by_label("a lasso").check()
    points = page.evaluate("() => fetch('/v1/collections/museum/map').then(r => r.json())")["points"]
    read = page.evaluate("data.points.map((p, i) => [p.sha256, p.external_id, p.x, p.y, row(i)])")  # from the Arrow
    assert [r[:2] for r in read] == [[p["sha256"], p["external_id"]] for p in points]
    assert [r[2:4] for r in read] == [[pytest.approx(p["x"], abs=1e-5), pytest.approx(p["y"], abs=1e-5)] for p in points]
    assert [r[4] for r in read] == list(range(len(points)))  # every picture placed: point i is picture i
    where = f"top:shapes={label}"
    kept = set(page.evaluate("w => fetch('/v1/collections/museum/scores?vocabulary=shapes&where=' + encodeURIComponent(w))"
                             ".then(r => r.json())", where)["index"])
    assert len(kept) == count
    cx, cy = on_screen(page, points[min(kept)])  # a concave polygon about a picture the filter keeps
    polygon = [(cx + dx, cy + dy) for dx, dy in ((-90, -70), (100, -50), (25, 5), (80, 90), (-70, 60))]
    lasso(page, polygon)
    inside = [i for i in kept if in_polygon(on_screen(page, points[i]), polygon)]
    assert inside
    expect(page.locator("#selection-count")).to_have_text(f"{len(inside)} pictures selected.")
    page.screenshot(path=str(ARTIFACTS / "explorer-1-lasso.png"))
    page.get_by_label("a box").check()

    # a box over the whole map selects every picture the filter keeps; exported as CSV and JSON
    box = page.locator("#map").bounding_box()
    page.keyboard.down("Shift")
    page.mouse.move(box["x"] + 2, box["y"] + 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] - 2, box["y"] + box["height"] - 2, steps=5)
    page.mouse.up()
    page.keyboard.up("Shift")
    expect(page.locator("#selection-count")).to_have_text(f"{count} pictures selected.")
    with page.expect_download() as dl:
        page.click("#export-csv")
    lines = Path(dl.value.path()).read_text().splitlines()
    assert lines[0] == "external_id,source,sha256,vocabulary,softmax_over,top_phrase,top_probability,phrase,probability"
    assert len(lines) == count + 1 and all(f",shapes,16,{label}," in line for line in lines[1:])
    with page.expect_download() as dl:
        page.click("#export-json")
    rows = json.loads(Path(dl.value.path()).read_text())
    assert len(rows) == count and all(r["external_id"].startswith("OBJ-") and r["source"] for r in rows)

    # a picture's panel: its image, metadata, top phrases with their shares, its explanation map on demand
    page.locator("#hits .hit").first.click()
    expect(page.locator("#panel")).to_be_visible()
    expect(page.locator("#panel-results h3").first).to_have_text("shapes: relative to 16 phrases")
    expect(page.locator("#panel-meta")).to_contain_text("background")
    page.click("#explain")
    expect(page.locator("#explain-image")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "explorer-2-panel.png"))

    # the URL holds the view: reopened, it is the same view
    shared = page.url
    assert "colour=phrase" in shared and "where=" in shared and "sel=" in shared and "pic=" in shared
    page.goto("about:blank")
    page.goto(shared)
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    expect(page.get_by_label("a phrase's probability")).to_be_checked()
    expect(page.locator("#phrase")).to_have_value("a red circle")
    expect(page.locator(".filter")).to_have_text(f"top:shapes={label} ×")
    expect(page.locator("#map")).to_have_attribute("data-kept", str(count))
    expect(page.locator("#selection-count")).to_have_text(f"{count} pictures selected.")
    expect(page.locator("#q")).to_have_value("a red circle")
    expect(page.locator("#panel")).to_be_visible()

    # keyboard: the map takes focus, zooms and pans; Enter opens the picture nearest the centre
    page.locator("#map").focus()
    page.keyboard.press("+")
    page.keyboard.press("ArrowLeft")
    assert "zoom=1.500" in page.url
    page.keyboard.press("Enter")
    expect(page.locator("#panel")).to_be_visible()

    # a narrow screen: one column
    page.set_viewport_size({"width": 420, "height": 900})
    page.screenshot(path=str(ARTIFACTS / "explorer-3-narrow.png"), full_page=True)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 440


def test_the_page_says_so_when_the_map_is_being_computed_and_shows_it_when_done(page, engine, tmp_path):
    collections = Collections(engine)
    collections.create(parse(CreateCollection, {"name": "fresh"}))
    root = tmp_path / "few"
    root.mkdir()
    for i, c in enumerate(COLOURS):
        draw_shape(c, "star").save(root / f"{i}.png")
    collections.add("fresh", parse(AddSources, {"sources": [str(root)]}))
    app = create_app(Settings.from_env(), engine=engine)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        page.goto(f"http://127.0.0.1:{server.server_port}/collections/fresh")
        sync_api.expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=120_000)
        sync_api.expect(page.locator("#map")).to_have_attribute("data-kept", "4")
        sync_api.expect(page.locator("#status")).to_contain_text("4 pictures, umap")
    finally:
        server.shutdown()
