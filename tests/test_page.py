"""The web page, in a real browser: Playwright drives Debian's chromium (headless) against the app
served on a loopback port with the toy model. Screenshots land in test-artifacts/."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from browser import ARTIFACTS, CHROMIUM
from conftest import draw_shape
from indexer.settings import Settings
from service import create_app

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("page")]  # one server and browser, on one worker

if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (apt-get install -y chromium): browser tests skipped", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")

sync_api.expect.set_options(timeout=30_000)  # as the pages' default: a loaded 2-core machine is slow, not broken
TOKEN = "page-token"


@pytest.fixture
def url(engine, monkeypatch):
    monkeypatch.setenv("CLIP_GAZE_API_TOKENS", TOKEN)
    engine.vocabularies()  # as a served worker's warm-up does: the built-in lists are in the store before the page asks
    app = create_app(Settings.from_env(), engine=engine)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()


def test_upload_charts_compare_custom_vocabulary_and_errors(page, url, tmp_path: Path):
    picture = tmp_path / "red-circle.png"
    draw_shape("red", "circle", size=256).save(picture)
    page.goto(url)
    sync_api.expect(page.locator("#model-name")).to_contain_text("toy")
    sync_api.expect(page.locator("#vocab-list input[value=movements]")).to_be_checked()  # the default set
    sync_api.expect(page.locator("#vocab-list input[value=ci-flavors]")).not_to_be_checked()

    # upload → charts
    page.set_input_files("#file", str(picture))
    sync_api.expect(page.locator(".chart").first).to_be_visible()
    movements = page.locator(".chart", has=page.get_by_role("heading", name="movements"))
    sync_api.expect(movements.locator(".relative")).to_have_text("Relative to 193 phrases; the best 5 shown.")
    assert movements.locator(".bar").count() == 5
    first_bar = movements.locator(".bar").first
    first_bar.focus()
    sync_api.expect(first_bar.locator(".detail")).to_be_visible()  # cosine and logit on focus
    assert "cosine" in first_bar.get_attribute("aria-label") and "logit" in first_bar.get_attribute("aria-label")
    sync_api.expect(page.locator("#results")).to_have_attribute("aria-busy", "false")
    sync_api.expect(page.locator("#busy")).to_be_hidden()
    sync_api.expect(page.locator("#model-status")).to_have_text("")  # the model is loaded now: no "(loading)"
    page.screenshot(path=str(ARTIFACTS / "1-analyze.png"), full_page=True)

    # export JSON and CSV
    with page.expect_download() as dl:
        page.click("#export-json")
    exported = json.loads(Path(dl.value.path()).read_text())
    assert exported["results"]["movements"]["softmax_over"] == 193
    with page.expect_download() as dl:
        page.click("#export-csv")
    csv = Path(dl.value.path()).read_text().splitlines()
    assert csv[0] == "vocabulary,softmax_over,rank,phrase,term,probability,cosine,logit,external_id"
    assert any(line.startswith("movements,193,1,") for line in csv)

    # compare mode: a chart over exactly the phrases typed
    page.get_by_label("My own phrases (compare)").check()
    page.fill("#phrases", "a blue square\na red circle\na green star")
    page.click("#run")
    chart = page.locator(".chart", has=page.get_by_role("heading", name="Your phrases"))
    sync_api.expect(chart.locator(".relative")).to_have_text("Relative to 3 phrases.")
    sync_api.expect(chart.locator(".bar .phrase").first).to_have_text("a red circle")
    page.screenshot(path=str(ARTIFACTS / "2-compare.png"), full_page=True)

    # create a custom vocabulary, then analyse with it
    page.fill("#token", TOKEN)
    page.fill("#new-name", "shapes")
    page.fill("#new-terms", "a red circle,SH-1\na blue square,SH-2\na yellow star,SH-3")
    page.check("#new-csv")
    page.click("#create-form button[type=submit]")
    sync_api.expect(page.locator("#manage-ok")).to_have_text("Created shapes with 3 phrases.")
    page.get_by_label("Vocabularies", exact=True).check()
    for value in page.locator("#vocab-list input:checked").evaluate_all("els => els.map(e => e.value)"):
        page.uncheck(f"#vocab-list input[value='{value}']")
    page.check("#vocab-list input[value=shapes]")
    page.click("#run")
    shapes = page.locator(".chart", has=page.get_by_role("heading", name="shapes"))
    sync_api.expect(shapes.locator(".relative")).to_have_text("Relative to 3 phrases.")
    sync_api.expect(shapes.locator(".bar .phrase").first).to_have_text("a red circle")
    assert "id SH-1" in shapes.locator(".bar").first.get_attribute("aria-label")
    page.screenshot(path=str(ARTIFACTS / "3-custom-vocabulary.png"), full_page=True)

    # add and remove phrases
    custom = page.locator(".custom", has=page.get_by_role("heading", name="shapes"))
    custom.get_by_label("Add terms, one per line").fill("a green triangle")
    custom.get_by_role("button", name="Add").click()
    sync_api.expect(page.locator("#manage-ok")).to_have_text("shapes: 1 added, 0 already there.")
    custom = page.locator(".custom", has=page.get_by_role("heading", name="shapes"))
    custom.get_by_label("Remove terms, one per line").fill("a yellow star")
    custom.get_by_role("button", name="Remove").click()
    sync_api.expect(page.locator("#manage-ok")).to_have_text("shapes: 1 removed.")

    # errors appear inline, in plain words
    page.fill("#token", "wrong")
    page.fill("#new-name", "other")
    page.fill("#new-terms", "x")
    page.click("#create-form button[type=submit]")
    sync_api.expect(page.locator("#manage-error")).to_contain_text("An API key is needed: this key is not accepted")
    page.fill("#token", "")  # a key the page holds goes with every request (issue 23): the wrong one goes
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not really a PNG")
    page.get_by_label("Vocabularies", exact=True).check()
    page.set_input_files("#file", str(broken))
    sync_api.expect(page.locator("#reading-error")).to_contain_text("is not an image")  # in the results, in place of the charts
    page.screenshot(path=str(ARTIFACTS / "4-error.png"), full_page=True)

    # delete, with the confirmation accepted
    page.fill("#token", TOKEN)
    page.once("dialog", lambda d: d.accept())
    page.locator(".custom", has=page.get_by_role("heading", name="shapes")).get_by_role("button", name="Delete shapes").click()
    sync_api.expect(page.locator("#manage-ok")).to_have_text("Deleted shapes.")
    sync_api.expect(page.locator("#vocab-list input[value=shapes]")).to_have_count(0)


def test_keyboard_and_narrow_screen(page, url):
    page.set_viewport_size({"width": 375, "height": 800})
    # A listener turns Playwright's file-chooser interception on now: `expect_file_chooser` alone turns
    # it on asynchronously, and an Enter pressed in between opens the headless native dialog instead.
    page.on("filechooser", lambda chooser: None)
    page.goto(url)
    sync_api.expect(page.locator("#model-name")).to_contain_text("toy")
    sync_api.expect(page.locator("#vocab-list input").first).to_be_visible()  # the page has settled
    page.keyboard.press("Tab")  # the skip link first
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "drop"
    with page.expect_file_chooser() as chooser:
        page.keyboard.press("Enter")
    assert chooser.value is not None
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # no sideways scrolling
    for control in ("#file", "#top-k", "#phrases", "#token", "#new-name", "#new-terms", "#new-file"):
        assert page.locator(control).evaluate("el => el.labels.length > 0 || !!el.getAttribute('aria-label')"), control
    page.screenshot(path=str(ARTIFACTS / "5-narrow.png"), full_page=True)


def _choose(page, path: Path) -> None:
    """Choose a picture (once the vocabularies have loaded) and wait until the reading it starts has finished."""
    sync_api.expect(page.locator("#vocab-list input").first).to_be_visible()
    page.set_input_files("#file", str(path))
    sync_api.expect(page.locator("#results")).to_have_attribute("aria-busy", "false")
    sync_api.expect(page.locator("#busy")).to_be_hidden()


def test_toy_model_carries_a_plain_caveat_other_models_do_not(page, url, tmp_path: Path):
    picture = tmp_path / "red-circle.png"
    draw_shape("red", "circle", size=256).save(picture)
    page.goto(url)
    sync_api.expect(page.locator("#model-name")).to_contain_text("toy")
    caveat = page.locator("#model-caveat")
    sync_api.expect(caveat).to_be_visible()  # on the page itself, not in a tooltip
    for words in ("test instrument", "not an art model", "circle, square, triangle or star", "light or dark background",
                  "mean nothing", "vit-b-32"):
        sync_api.expect(caveat).to_contain_text(words)
    _choose(page, picture)
    sync_api.expect(page.locator(".chart").first).to_be_visible()
    # near the results: inside the results section, above the first chart
    assert page.locator("#results #model-caveat").count() == 1
    assert caveat.bounding_box()["y"] < page.locator(".chart").first.bounding_box()["y"]
    page.screenshot(path=str(ARTIFACTS / "6-toy-caveat.png"))

    # any other model: no caveat
    other = {"ok": True, "model": {"preset": "vit-b-32", "arch": "ViT-B-32", "pretrained": "openai", "logit_scale": 100.0},
             "models": []}
    page.route("**/v1/models", lambda route: route.fulfill(json=other))
    page.reload()
    sync_api.expect(page.locator("#model-name")).to_have_text("vit-b-32 (ViT-B-32)")
    sync_api.expect(page.locator("#model-caveat")).to_be_hidden()
    page.screenshot(path=str(ARTIFACTS / "6-other-model-no-caveat.png"))


IN_VIEW = """sel => { const r = document.querySelector(sel).getBoundingClientRect();
                       return r.top >= 0 && r.bottom <= window.innerHeight; }"""
# Resolves once the page has stopped scrolling (the same scroll position for five animation frames).
SCROLL_SETTLED = """() => new Promise(resolve => {
  let last = -1, still = 0;
  const tick = () => { if (scrollY === last) { if (++still >= 5) return resolve(scrollY); } else { still = 0; last = scrollY; }
                       requestAnimationFrame(tick); };
  tick();
})"""


def test_narrow_screen_brings_the_results_into_view(page, url, tmp_path: Path):
    picture = tmp_path / "red-circle.png"
    draw_shape("red", "circle", size=256).save(picture)
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(url)
    sync_api.expect(page.locator("#vocab-list input").first).to_be_visible()  # the page has settled
    page.set_input_files("#file", str(picture))
    sync_api.expect(page.locator(".chart").first).to_be_visible()
    # the first chart's heading and first bar end up on screen (smooth scrolling may take a moment)
    page.wait_for_function(f"() => ({IN_VIEW})('.chart h3') && ({IN_VIEW})('.chart .bar')", timeout=5_000)
    page.evaluate(SCROLL_SETTLED)
    assert page.evaluate(f"({IN_VIEW})('.chart h3') && ({IN_VIEW})('.chart .bar')")
    page.screenshot(path=str(ARTIFACTS / "7-narrow-results-in-view.png"))  # what the person sees, not the full page
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")

    # with reduced motion the jump is immediate: in view as soon as the reading is over
    page.emulate_media(reduced_motion="reduce")
    page.evaluate("window.scrollTo(0, 0)")
    page.click("#run")
    sync_api.expect(page.locator("#results")).to_have_attribute("aria-busy", "false")
    assert page.evaluate(f"({IN_VIEW})('.chart .bar')")


def test_failed_reading_shows_in_the_results_and_resets_the_picture(page, url, tmp_path: Path):
    good = tmp_path / "red-circle.png"
    draw_shape("red", "circle", size=256).save(good)
    page.goto(url)
    help_text = page.locator("#drop-help").inner_text()
    _choose(page, good)
    sync_api.expect(page.locator(".chart").first).to_be_visible()

    bad = tmp_path / "picture.png"  # a PNG by its name and MIME type, not by its content
    bad.write_bytes(b"this is not really a PNG")
    _choose(page, bad)
    alert = page.locator("#results").get_by_role("alert")
    sync_api.expect(alert).to_contain_text("picture.png is not an image")
    sync_api.expect(alert).to_be_in_viewport()
    sync_api.expect(page.locator(".chart")).to_have_count(0)  # the earlier picture's charts are gone
    sync_api.expect(page.locator("#results")).not_to_contain_text("Choose a picture to begin")
    sync_api.expect(page.locator("#export-json")).to_be_disabled()
    sync_api.expect(page.locator("#export-csv")).to_be_disabled()
    sync_api.expect(page.locator("#preview")).to_be_hidden()  # no broken image
    sync_api.expect(page.locator("#drop-help")).to_have_text(help_text)
    sync_api.expect(page.locator("#run")).to_be_disabled()
    assert page.locator("#picture-panel").get_by_role("alert").count() == 0  # not at the bottom of the left column
    page.screenshot(path=str(ARTIFACTS / "8-failed-reading.png"), full_page=True)

    # a good picture again: charts back, the error gone
    _choose(page, good)
    sync_api.expect(page.locator(".chart").first).to_be_visible()
    sync_api.expect(alert).to_have_text("")
    sync_api.expect(page.locator("#preview")).to_be_visible()


SMALL_BARS = {
    "ok": True,
    "model": {"preset": "toy", "arch": "clip-gaze-toy", "pretrained": "packaged", "logit_scale": 21.3},
    "image": {"sha256": "0" * 64, "width": 256, "height": 256, "format": "PNG"},
    "results": {"movements": {"softmax_over": 193, "matches": [
        {"phrase": f"phrase {i} movement", "term": f"phrase {i}", "probability": p, "cosine": 0.3 - i / 100,
         "logit": 6.0 - i / 10, "external_id": None, "metadata": {}}
        for i, p in enumerate([0.62, 0.21, 0.08, 0.03, 0.01])]}},
    "timing_ms": 1.0,
}

# How much of a bar's fill a person sees: its box, and whether its left edge, middle and right edge are
# the fill itself (not covered by the phrase, the percentage or anything else).
VISIBLE_FILL = """bar => {
  const fill = bar.querySelector('.fill');
  const r = fill.getBoundingClientRect();
  const y = r.top + r.height / 2;
  const xs = [r.left + 0.5, r.left + r.width / 2, r.right - 0.5];
  const style = getComputedStyle(fill);
  const labels = [...bar.querySelectorAll('.phrase, .pct')].map(e => e.getBoundingClientRect());
  const overlaps = labels.some(l => l.left < r.right && r.left < l.right && l.top < r.bottom && r.top < l.bottom);
  return { width: r.width, height: r.height, uncovered: xs.every(x => document.elementFromPoint(x, y) === fill),
           overlaps, opacity: Number(style.opacity), colour: style.backgroundColor };
}"""


@pytest.mark.parametrize("width", [1280, 390])
def test_small_bars_stay_visible(page, url, tmp_path: Path, width: int):
    picture = tmp_path / "red-circle.png"
    draw_shape("red", "circle", size=256).save(picture)
    page.route("**/v1/analyze", lambda route: route.fulfill(json=SMALL_BARS))  # probabilities of 62, 21, 8, 3 and 1 %
    page.set_viewport_size({"width": width, "height": 844})
    page.goto(url)
    sync_api.expect(page.locator("#vocab-list input").first).to_be_visible()
    _choose(page, picture)
    bars = page.locator(".chart .bar")
    sync_api.expect(bars).to_have_count(5)
    widths = []
    for i, p in enumerate([0.62, 0.21, 0.08, 0.03, 0.01]):
        bars.nth(i).scroll_into_view_if_needed()
        seen = bars.nth(i).evaluate(VISIBLE_FILL)
        widths.append(seen["width"])
        assert seen["width"] >= 4 and seen["height"] >= 4, (p, seen)
        assert seen["uncovered"] and not seen["overlaps"], (p, seen)
        assert seen["opacity"] >= 0.8 and seen["colour"] not in ("rgba(0, 0, 0, 0)", "transparent"), (p, seen)
    assert widths == sorted(widths, reverse=True) and widths[0] > 10 * widths[-1] / 2  # still proportional
    page.locator(".chart").first.screenshot(path=str(ARTIFACTS / f"9-small-bars-{width}.png"))


def _two_shapes(path: Path) -> None:
    """A wide picture (so the model's centre crop leaves a frame): a red circle and a blue square."""
    from PIL import Image

    picture = Image.new("RGB", (360, 240), "white")
    picture.paste(draw_shape("red", "circle", 160), (50, 40))
    picture.paste(draw_shape("blue", "square", 160), (170, 40))
    picture.save(path)


COLOURED = """() => { const c = document.querySelector('#map-canvas'); const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let red = 0, blue = 0; for (let i = 0; i < d.length; i += 4) { if (d[i] > d[i + 2] + 60) red++; if (d[i + 2] > d[i] + 60) blue++; }
  return { red, blue, width: c.width, height: c.height }; }"""


def test_selecting_a_bar_shows_its_map_and_a_contrast(page, url, tmp_path: Path):
    picture = tmp_path / "two-shapes.png"
    _two_shapes(picture)
    page.goto(url)
    sync_api.expect(page.locator("#model-name")).to_contain_text("toy")
    sync_api.expect(page.locator("#vocab-list input").first).to_be_visible()  # the page has settled
    page.get_by_label("My own phrases (compare)").check()
    page.fill("#phrases", "a red circle\na blue square\na green star")
    page.set_input_files("#file", str(picture))
    sync_api.expect(page.locator("#results")).to_have_attribute("aria-busy", "false")
    chart = page.locator(".chart", has=page.get_by_role("heading", name="Your phrases"))
    sync_api.expect(chart.locator(".bar")).to_have_count(3)
    sync_api.expect(page.locator("#map-panel")).to_be_hidden()

    # the mouse: the first bar's map over the picture
    first = chart.locator(".bar").first
    first_phrase = first.locator(".phrase").inner_text()
    first.click()
    sync_api.expect(first).to_have_attribute("aria-current", "true")
    panel = page.locator("#map-panel")
    sync_api.expect(panel).to_be_visible()
    sync_api.expect(page.locator("#map-caption")).to_contain_text("Raised most")
    sync_api.expect(page.locator("#map-caption")).to_contain_text(first_phrase)
    label = page.locator("#map-canvas").get_attribute("aria-label")
    assert "8 by 8 cells" in label and first_phrase in label and "Red raises the share" in label
    seen = page.evaluate(COLOURED)
    assert seen["width"] == round(seen["height"] * 360 / 240) and seen["red"] + seen["blue"] > 100, seen  # the map is drawn
    page.screenshot(path=str(ARTIFACTS / "10-map.png"), full_page=True)

    # the keyboard: focus another bar and press Enter
    second = chart.locator(".bar").nth(1)
    second_phrase = second.locator(".phrase").inner_text()
    second.focus()
    page.keyboard.press("Enter")
    sync_api.expect(page.locator("#map-caption")).to_contain_text(second_phrase)
    sync_api.expect(second).to_have_attribute("aria-current", "true")
    assert first.get_attribute("aria-current") is None

    # "rather than": the selected phrase against one typed
    page.keyboard.press("Space")  # Space selects too
    page.fill("#versus", "a green circle")
    page.get_by_role("button", name="Contrast").click()
    sync_api.expect(page.locator("#map-title")).to_have_text(f"Why “{second_phrase}” rather than “a green circle”")
    sync_api.expect(page.locator("#map-caption")).to_contain_text("logit difference")
    page.screenshot(path=str(ARTIFACTS / "11-contrast.png"), full_page=True)

    # a vocabulary's bar, on a narrow screen: no sideways scrolling
    page.set_viewport_size({"width": 390, "height": 844})
    page.get_by_label("Vocabularies", exact=True).check()
    page.click("#run")
    sync_api.expect(page.locator("#results")).to_have_attribute("aria-busy", "false")
    sync_api.expect(page.locator("#map-panel")).to_be_hidden()  # a new reading closes the old map
    qualities = page.locator(".chart", has=page.get_by_role("heading", name="qualities"))
    qualities.locator(".bar").first.click()
    sync_api.expect(page.locator("#map-caption")).to_contain_text("(qualities)")
    sync_api.expect(page.locator("#map-caption")).to_contain_text("Raised most")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.locator("#map-panel").screenshot(path=str(ARTIFACTS / "12-map-narrow.png"))


def test_the_pages_csv_export_writes_no_cell_a_spreadsheet_would_run(page, url):
    page.goto(url)
    sync_api.expect(page.locator("#model-name")).to_contain_text("toy")
    formula = '=HYPERLINK("http://evil.example/","click")'
    csv = page.evaluate("""(formula) => toCsv({results: {v: {softmax_over: 2, matches: [
        {phrase: formula, term: "+1", probability: 0.75, cosine: -0.25, logit: -25, external_id: "@SUM(A1)"},
        {phrase: "\\tx", term: "-2", probability: 0.25, cosine: 0.5, logit: 50, external_id: "\\r=1"}]}}})""", formula)
    lines = csv.split("\n")
    assert lines[1] == """v,2,1,"'=HYPERLINK(""http://evil.example/"",""click"")",'+1,0.75,-0.25,-25,'@SUM(A1)"""
    assert lines[2] == "v,2,2,'\tx,'-2,0.25,0.5,50,\"'\r=1\""  # numbers, negative ones too, stay numbers
