"""Back into a museum's systems: IIIF annotation pages (from files and from a IIIF server on loopback),
clip-gaze's JSON-LD context, the wide CSV, people's reviews and `evaluate --from-reviews`."""

from __future__ import annotations

import contextlib
import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from annotation_pages import problems
from conftest import create, draw_shape, encode
from iiif_server import QuietHandler, serving
from indexer.collections.local import Collections
from indexer.engine import Engine
from indexer.interop.annotations import Annotator, Request, pages
from indexer.interop.context import CONTEXT_PATH, context_document
from indexer.interop.regions import on_target, placed
from indexer.interop.wide import write_wide
from indexer.schema import parse
from indexer.schema.collections import AddSources, CreateCollection
from indexer.settings import Settings
from service import create_app

TOKEN = "museum-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BASE = "http://clip-gaze.example"
SHAPES = {"red-circle": ("red", "circle"), "blue-square": ("blue", "square"), "green-triangle": ("green", "triangle")}
URIS = {"a red circle": "http://vocab.example/red-circle", "a blue square": "urn:example:blue-square"}


def shapes_vocabulary(engine: Engine) -> None:
    phrases: list[Any] = []
    for colour in ("red", "blue", "green", "yellow"):
        for shape in ("circle", "square", "triangle"):
            term = f"a {colour} {shape}"
            phrases.append({"term": term, "external_id": URIS[term]} if term in URIS else
                           {"term": term, "external_id": "LOCAL-7"} if term == "a green triangle" else term)
    create(engine, "shapes", phrases)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "scans"
    root.mkdir()
    for name, (colour, shape) in SHAPES.items():
        draw_shape(colour, shape, size=128).save(root / f"{name}.png")
    (root / "objects.csv").write_text("image,external_id\nred-circle.png,=HYPERLINK(\"http://evil.example\")\n"
                                      "blue-square.png,OBJ-2\ngreen-triangle.png,https://museum.example/objects/3\n")
    return root


@pytest.fixture
def filled(engine: Engine, folder: Path) -> Collections:
    shapes_vocabulary(engine)
    collections = Collections(engine)
    collections.create(parse(CreateCollection, {"name": "demo"}))
    collections.add("demo", parse(AddSources, {"sources": [str(folder / "objects.csv")]}))
    return collections


def annotated(collections: Collections, **request: Any) -> dict[str | None, dict[str, Any]]:
    return pages(Annotator(collections, "demo", Request(vocabularies=("shapes",), **request), BASE, every=True))


def test_a_page_of_files_is_iiif_presentation_3_and_holds_analyzes_scores(filled: Collections):
    found = annotated(filled, top_k=3)
    assert list(found) == [None]  # no manifest: one page
    page = found[None]
    assert problems(page) == []
    assert page["id"] == f"{BASE}/v1/collections/demo/annotations?vocabularies=shapes&top_k=3"
    assert page["@context"] == [BASE + CONTEXT_PATH, "http://iiif.io/api/presentation/3/context.json"]
    rows = {(r.source, r.phrase): r for r in filled.analyze("demo", ["shapes"], 3)}
    assert len(page["items"]) == len(rows) == 9
    by_id: dict[str, str] = {}
    for a in page["items"]:
        source = a["target"]["source"]
        score = a["score"]
        match = [r for (s, p), r in rows.items() if p == score["phrase"] and r.sha256 in source["id"] + source.get("identifier", "")
                 or (p == score["phrase"] and r.external_id == source.get("identifier"))]
        assert match, a
        row = match[0]
        assert (score["probability"], score["rank"], score["softmax_over"], score["vocabulary"], a["body"][0]["value"]) == \
            (row.probability, row.rank, row.softmax_over, "shapes", row.term)
        assert f"all {row.softmax_over} phrases of the vocabulary shapes" in score["statement"]
        by_id[a["id"]] = row.source
        assert "/scans/" not in json.dumps(a)  # never a server path
        uri = URIS.get(row.term)
        assert a["motivation"] == ("classifying" if uri else "tagging")
        assert a["body"][1:] == ([{"type": "SpecificResource", "source": uri, "purpose": "classifying"}] if uri else [])
    targets = {a["target"]["source"]["id"] for a in page["items"]}
    assert "https://museum.example/objects/3" in targets  # an external id that is a URI
    assert any(t.startswith(f"{BASE}/v1/collections/demo/pictures/") for t in targets)  # else the picture's record
    again = annotated(filled, top_k=3)[None]
    assert [a["id"] for a in again["items"]] == [a["id"] for a in page["items"]]  # stable ids
    assert len(by_id) == 9
    few = annotated(filled, top_k=3, min_probability=0.5)[None]["items"]
    assert 0 < len(few) < 9 and all(a["score"]["probability"] >= 0.5 for a in few)


def test_regions_give_the_peak_cell_on_the_shape(filled: Collections):
    page = annotated(filled, top_k=1, regions=True)[None]
    assert problems(page) == []
    for a in page["items"]:
        value = a["target"]["selector"]["value"]
        x, y, w, h = (int(v) for v in value.removeprefix("xywh=").split(","))
        assert 0 <= x and 0 <= y and x + w <= 128 and y + h <= 128 and w > 0 and h > 0
        cx, cy = x + w / 2, y + h / 2
        assert 16 <= cx <= 112 and 16 <= cy <= 112, value  # the shape is drawn in the middle half: near it


def test_placement_on_part_of_a_canvas_scales_into_that_part():
    assert placed("http://x/canvas/1#xywh=1000,500,2000,1000") == (1000.0, 500.0, 2000.0, 1000.0)
    assert placed("http://x/canvas/1") is None
    assert on_target((10, 20, 30, 40), 200, 100, None) == "xywh=10,20,30,40"
    assert on_target((10, 20, 30, 40), 200, 100, (1000, 500, 2000, 1000)) == "xywh=1100,700,300,400"


def test_reviews_come_back_in_analyze_rows_annotations_and_evaluate(filled: Collections, folder: Path, engine: Engine):
    app = create_app(Settings.from_env(api_tokens=(TOKEN,)), engine=filled.engine)
    client = app.test_client()
    rows = {r.external_id: r for r in filled.analyze("demo", ["shapes"], 1)}
    blue = rows["OBJ-2"]
    url = f"/v1/collections/demo/pictures/{blue.sha256}/review"
    got = client.post(url, json={"vocabulary": "shapes", "phrase": blue.phrase, "verdict": "accepted", "note": "yes"}, headers=AUTH)
    assert got.status_code == 200, got.json
    assert got.json["review"] | {"reviewed_at": None} == {
        "collection": "demo", "sha256": blue.sha256, "vocabulary": "shapes", "term": blue.term, "phrase": blue.phrase,
        "verdict": "accepted", "note": "yes", "reviewed_at": None}
    red = rows['=HYPERLINK("http://evil.example")']
    assert client.post(f"/v1/collections/demo/pictures/{red.sha256}/review", json={
        "vocabulary": "shapes", "phrase": red.term, "verdict": "rejected"}, headers=AUTH).status_code == 200
    # bad input: the JSON error, nothing stored
    for body, status, code in [({"vocabulary": "shapes", "phrase": "a purple star", "verdict": "accepted"}, 422, "unknown_phrase"),
                               ({"vocabulary": "nope", "phrase": "x", "verdict": "accepted"}, 422, "unknown_vocabulary"),
                               ({"vocabulary": "shapes", "phrase": "a red circle", "verdict": "maybe"}, 400, None)]:
        bad = client.post(url, json=body, headers=AUTH)
        assert (bad.status_code, bad.json["ok"]) == (status, False), bad.json
        assert code is None or bad.json["code"] == code
    assert client.post(f"/v1/collections/demo/pictures/{'0' * 64}/review", json={
        "vocabulary": "shapes", "phrase": "a red circle", "verdict": "accepted"}, headers=AUTH).json["code"] == "unknown_picture"
    assert client.post("/v1/collections/demo/pictures/xyz/review", json={}, headers=AUTH).json["code"] == "invalid_sha256"
    assert client.post(url, json={"vocabulary": "shapes", "phrase": "a red circle", "verdict": "accepted"}).status_code == 401
    assert client.post("/v1/collections/nope/pictures/" + "0" * 64 + "/review", json={
        "vocabulary": "shapes", "phrase": "a red circle", "verdict": "accepted"}, headers=AUTH).status_code == 404

    verdicts = {(r.external_id, r.term): r.verdict for r in filled.analyze("demo", ["shapes"], 3)}
    assert verdicts[("OBJ-2", blue.term)] == "accepted"
    assert verdicts[(red.external_id, red.term)] == "rejected"
    assert sum(v is not None for v in verdicts.values()) == 2

    page = annotated(filled, top_k=3)[None]
    assert problems(page) == []
    terms = {(a["target"]["source"].get("identifier"), a["body"][0]["value"]): a for a in page["items"]}
    accepted = terms[("OBJ-2", blue.term)]
    assert accepted["motivation"] == "classifying" and accepted["body"][0]["purpose"] == "classifying"
    assert accepted["review"]["verdict"] == "accepted" and accepted["review"]["note"] == "yes"
    assert (red.external_id, red.term) not in terms  # rejected: left out
    assert len(page["items"]) == 8

    from indexer.evaluate.labels import from_reviews
    from indexer.evaluate.run import evaluate

    for p in folder.glob("*.png"):
        p.unlink()  # the stored embeddings are used: nothing is read again
    answer = evaluate(engine, from_reviews(engine.images, "demo", "shapes"), "shapes", resamples=0)
    assert (answer.evaluated, answer.failed, answer.labels) == (1, 0, "reviews:demo")
    assert answer.predictions[0].labels == [blue.term] and answer.predictions[0].correct is True


def test_the_wide_csv_has_a_row_a_picture_equal_to_analyze_and_no_formula(filled: Collections, tmp_path: Path):
    out = tmp_path / "wide.csv"
    assert write_wide(filled, "demo", ["shapes", "movements"], out) == 3
    with out.open(encoding="utf-8", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0]) == ["external_id", "source", "shapes:term", "shapes:probability", "shapes:phrase_external_id",
                              "shapes:verdict", "movements:term", "movements:probability", "movements:phrase_external_id",
                              "movements:verdict"]
    top = {(r.source, r.vocabulary): r for r in filled.analyze("demo", ["shapes", "movements"], 1)}
    for row in table:
        for vocab in ("shapes", "movements"):
            want = top[(row["source"], vocab)]
            assert (row[f"{vocab}:term"], float(row[f"{vocab}:probability"])) == (want.term, want.probability)
    evil = next(r for r in table if "HYPERLINK" in r["external_id"])
    assert evil["external_id"].startswith("'=")  # shown as text, never run
    with pytest.raises(Exception, match="wide layout is a .csv"):
        write_wide(filled, "demo", ["shapes"], tmp_path / "wide.parquet")


def test_the_cli_writes_pages_reviews_and_the_wide_csv(run, folder: Path, tmp_path: Path, engine: Engine):
    shapes_vocabulary(engine)
    assert run("collection", "create", "demo").exit_code == 0
    assert run("collection", "add", "demo", str(folder / "objects.csv")).exit_code == 0
    got = run("collection", "review", "demo", "OBJ-2", "--vocab", "shapes", "--phrase", "a blue square",
              "--verdict", "accepted", "--json")
    assert got.exit_code == 0, got.output
    assert json.loads(got.output)["review"]["term"] == "a blue square"
    bad = run("collection", "review", "demo", "OBJ-2", "--vocab", "shapes", "--phrase", "a purple star", "--verdict", "accepted")
    assert bad.exit_code == 1 and bad.output.startswith("Error: ") and "neither a phrase nor a term" in bad.output
    out = tmp_path / "pages"
    got = run("collection", "annotations", "demo", "--vocab", "shapes", "-k", "2", "--out", str(out), "--json")
    assert got.exit_code == 0, got.output
    answer = json.loads(got.output)
    assert [p["annotations"] for p in answer["pages"]] == [6]
    page = json.loads((out / "pictures.json").read_text(encoding="utf-8"))
    assert problems(page) == [] and page["id"] == answer["pages"][0]["id"]
    assert page["id"].startswith("http://127.0.0.1:8000/v1/collections/demo/annotations?")
    wide = tmp_path / "wide.csv"
    got = run("collection", "analyze", "demo", "--vocab", "shapes", "--layout", "wide", "--out", str(wide))
    assert got.exit_code == 0, got.output
    assert "accepted" in wide.read_text(encoding="utf-8")
    got = run("evaluate", "--from-reviews", "demo", "--vocab", "shapes", "--resamples", "0", "--json")
    assert got.exit_code == 0, got.output
    assert json.loads(got.output)["evaluated"] == 1
    assert run("evaluate", "--vocab", "shapes").exit_code == 2  # neither labels nor reviews


# -- a IIIF server on loopback: manifests of canvases painted by Image API services ----------------------------
class Museum(QuietHandler):
    """Two v3 manifests (two canvases, one canvas) whose canvases are painted by Image API services of
    480×480 pictures, each answered at any region and size (as OpenSeadragon asks), with CORS."""

    cors = True
    annotations: dict[str, str] = {}  # canvas (its picture's name) → the annotation page it names
    files: dict[str, tuple[bytes, str]] = {}  # other files served: name → (body, content type)

    def do_GET(self) -> None:  # noqa: N802
        base = f"http://127.0.0.1:{self.port}"
        parts = self.path.split("?")[0].strip("/").split("/")
        if parts[0] in ("m1.json", "m2.json"):
            names = ["red-circle", "blue-square"] if parts[0] == "m1.json" else ["green-triangle"]
            return self._json(museum_manifest(base, parts[0], names, type(self).annotations))
        if len(parts) == 3 and parts[0] == "iiif" and parts[2] == "info.json" and parts[1] in SHAPES:
            return self._json({"@context": "http://iiif.io/api/image/3/context.json", "id": f"{base}/iiif/{parts[1]}",
                               "type": "ImageService3", "protocol": "http://iiif.io/api/image", "profile": "level1",
                               "width": 480, "height": 480})
        if len(parts) == 6 and parts[0] == "iiif" and parts[1] in SHAPES:
            return self._send(200, "image/jpeg", region(parts[1], parts[2], parts[3]))
        if parts[0] in type(self).files:
            body, ctype = type(self).files[parts[0]]
            return self._send(200, ctype, body)
        self._send(404, "text/plain", b"not here")

    def _json(self, doc: Any) -> None:
        self._send(200, "application/json", json.dumps(doc).encode())


def region(name: str, area: str, size: str) -> bytes:
    colour, shape = SHAPES[name]
    img = draw_shape(colour, shape, size=480)
    if area not in ("full", "max"):
        x, y, w, h = (int(v) for v in area.split(","))
        img = img.crop((x, y, x + w, y + h))
    size = size.lstrip("!^")
    if size not in ("full", "max"):
        w_text, _, h_text = size.partition(",")
        w = int(w_text) if w_text else round(img.width * int(h_text) / img.height)
        h = int(h_text) if h_text else round(img.height * w / img.width)
        img = img.resize((max(1, w), max(1, h)))
    return encode(img.convert("RGB"), "JPEG")


def museum_manifest(base: str, name: str, pictures: list[str], annotations: dict[str, str]) -> dict[str, Any]:
    def canvas(picture: str) -> dict[str, Any]:
        out = {"id": f"{base}/canvas/{picture}", "type": "Canvas", "label": {"en": [picture]}, "width": 480, "height": 480,
               "items": [{"id": f"{base}/page/{picture}", "type": "AnnotationPage", "items": [{
                   "id": f"{base}/paint/{picture}", "type": "Annotation", "motivation": "painting",
                   "target": f"{base}/canvas/{picture}",
                   "body": {"id": f"{base}/iiif/{picture}/full/max/0/default.jpg", "type": "Image", "format": "image/jpeg",
                            "width": 480, "height": 480,
                            "service": [{"id": f"{base}/iiif/{picture}", "type": "ImageService3", "profile": "level1"}]}}]}]}
        if picture in annotations:
            out["annotations"] = [{"id": annotations[picture], "type": "AnnotationPage"}]
        return out

    return {"@context": "http://iiif.io/api/presentation/3/context.json", "id": f"{base}/{name}", "type": "Manifest",
            "label": {"en": [f"Shapes {name}"]}, "items": [canvas(p) for p in pictures]}


def serving_museum() -> contextlib.AbstractContextManager[str]:
    return serving(Museum)


@pytest.fixture
def museum(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with serving_museum() as base:
        monkeypatch.setenv("CLIP_GAZE_FETCH_ALLOW", base.removeprefix("http://"))
        yield base


@pytest.fixture
def iiif_app(museum: str, toy_loader: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A service (with the toy model) whose collection `demo` holds both manifests' pictures."""
    from service.state import AUTO_EMBED_LIMIT

    monkeypatch.setenv("CLIP_GAZE_API_TOKENS", TOKEN)
    engine = Engine.from_settings(Settings.from_env(), loader=toy_loader, batch_window_ms=2, auto_embed_limit=AUTO_EMBED_LIMIT)
    shapes_vocabulary(engine)
    collections = Collections(engine)
    collections.create(parse(CreateCollection, {"name": "demo"}))
    report = collections.add("demo", parse(AddSources, {"sources": [f"{museum}/m1.json", f"{museum}/m2.json"]}))
    assert (report.added, report.failed) == (3, 0)
    return create_app(Settings.from_env(), engine=engine)


def manifest_column() -> bool:
    """Whether the store records the manifest a picture was read from (issue 22b's `manifest` column)."""
    from indexer.store.migrations import migrations

    return "007_sync_callbacks" in {m.name for m in migrations._migrations}  # type: ignore[attr-defined]


needs_manifests = pytest.mark.skipif(not manifest_column(), reason="needs the `manifest` and `image_service` columns of "
                                     "collection_images (issue 22b's migration 007), which pages per manifest group by")


@needs_manifests
def test_pages_per_manifest_target_canvases_over_the_api(iiif_app: Any, museum: str):
    client = iiif_app.test_client()
    got = client.get(f"/v1/collections/demo/annotations?vocabularies=shapes&top_k=2&manifest={museum}/m1.json&regions=true")
    assert got.status_code == 200, got.get_data(as_text=True)[:500]
    assert got.headers["Content-Type"].startswith("application/ld+json")
    assert got.headers["Access-Control-Allow-Origin"] == "*"
    page = json.loads(got.get_data(as_text=True))
    assert problems(page) == []
    assert page["id"] == ("http://localhost/v1/collections/demo/annotations?vocabularies=shapes&top_k=2&manifest="
                          + __import__("urllib.parse").parse.quote(f"{museum}/m1.json", safe="") + "&regions=true")
    canvases = {a["target"]["source"]["id"] for a in page["items"]}
    assert canvases == {f"{museum}/canvas/red-circle", f"{museum}/canvas/blue-square"}
    for a in page["items"]:
        assert a["target"]["source"]["partOf"] == [{"id": f"{museum}/m1.json", "type": "Manifest"}]
        x, y, w, h = (int(v) for v in a["target"]["selector"]["value"].removeprefix("xywh=").split(","))
        assert x + w <= 480 and y + h <= 480  # canvas coordinates: the canvas is the picture's 480×480
    best = {a["target"]["source"]["id"]: a["body"][0]["value"] for a in page["items"] if a["score"]["rank"] == 1}
    assert best == {f"{museum}/canvas/red-circle": "a red circle", f"{museum}/canvas/blue-square": "a blue square"}

    rest = json.loads(client.get("/v1/collections/demo/annotations?vocabularies=shapes").get_data(as_text=True))
    assert problems(rest) == [] and rest["items"] == []  # every picture came from a manifest
    assert [s["label"]["none"][0] for s in rest["seeAlso"]] == [f"{museum}/m1.json", f"{museum}/m2.json"]
    two = json.loads(client.get(rest["seeAlso"][1]["id"].removeprefix("http://localhost")).get_data(as_text=True))
    assert {a["body"][0]["value"] for a in two["items"] if a["score"]["rank"] == 1} == {"a green triangle"}

    one = client.get(f"/v1/collections/demo/annotations?vocabularies=shapes&top_k=1&manifest={museum}/m1.json"
                     f"&canvas={museum}/canvas/blue-square")
    assert [a["body"][0]["value"] for a in json.loads(one.get_data(as_text=True))["items"]] == ["a blue square"]
    as_json = client.get("/v1/collections/demo/annotations?vocabularies=shapes", headers={"Accept": "application/json"})
    assert as_json.headers["Content-Type"] == "application/json"
    for url, status, code in [(f"/v1/collections/demo/annotations?manifest={museum}/nope.json", 422, "unknown_manifest"),
                              ("/v1/collections/nope/annotations", 404, "unknown_collection"),
                              ("/v1/collections/demo/annotations?vocabularies=nope", 422, "unknown_vocabulary"),
                              ("/v1/collections/demo/annotations?top_k=0", 400, None),
                              (f"/v1/collections/demo/annotations?canvas={museum}/canvas/red-circle", 422, "unknown_canvas"),
                              ("/v1/collections/demo/annotations?min_probability=2", 400, None)]:
        bad = client.get(url)
        assert (bad.status_code, bad.json["ok"]) == (status, False), (url, bad.json)
        assert code is None or bad.json["code"] == code


def test_the_context_is_served_and_documents_every_term(iiif_app: Any):
    got = iiif_app.test_client().get(CONTEXT_PATH)
    assert got.status_code == 200 and got.headers["Access-Control-Allow-Origin"] == "*"
    doc = json.loads(got.get_data(as_text=True))
    assert doc == json.loads(json.dumps(context_document()))
    terms = doc["@context"]
    assert terms["probability"] == {"@id": "cg:probability", "@type": "xsd:double"} and terms["cg"] == "urn:clip-gaze:terms:"
    assert "not a confidence" in doc["terms"]["RelativeLikelihood"]
    page = annotated_keys()
    assert page <= set(terms) | {"type", "id"}, page - set(terms)
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    for term in doc["terms"]:
        assert f"`{term}`" in readme, f"the README's table of the context lacks {term}"


def annotated_keys() -> set[str]:
    """The keys of clip-gaze's own nodes (score, review, creator's model) that its context must define."""
    from annotation_pages import SCORE_KEYS

    return SCORE_KEYS | {"verdict", "note", "reviewed", "version", "model", "preset", "arch", "pretrained", "fingerprint",
                         "score", "review", "identifier"}
