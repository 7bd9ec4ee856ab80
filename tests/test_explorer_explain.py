"""A collection picture's explanation map (GET …/pictures/<sha256>/explain): from its source read again
(a local file, a URL on loopback, a IIIF Image service asked at the model's size) when it can be, and then
equal to /v1/explain of that source; else from its stored thumbnail (the file gone or changed, the server
down), equal to /v1/explain of the thumbnail, and the answer says which and why."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from conftest import create, draw_shape, encode, service_engine
from iiif_server import QuietHandler, serving
from test_iiif_collections import IIIF
from test_iiif_collections import PICTURES as IIIF_PICTURES
from indexer.collections.local import Collections
from indexer.schema import parse
from indexer.schema.collections import AddSources, CreateCollection
from indexer.settings import Settings
from service import create_app

TOKEN = "s3cret-token"
PHRASES = [f"a {c} {s}" for c in ("red", "blue", "green") for s in ("circle", "square", "triangle")]


class Pictures(QuietHandler):
    """A table naming a picture, and the picture, over HTTP while `up`."""

    up = True
    bodies = {"/red.png": encode(draw_shape("red", "circle", size=300)), "/blue.png": encode(draw_shape("blue", "square", size=300))}

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/objects.csv":
            return self._send(200, "text/csv", b"image,external_id\nred.png,WEB-1\n")
        if type(self).up and self.path in self.bodies:
            return self._send(200, "image/png", self.bodies[self.path])
        self._send(503, "text/plain", b"down")


@pytest.fixture
def setup(clean_environ, toy_loader, monkeypatch, tmp_path):
    with serving(Pictures) as base:
        monkeypatch.setenv("CLIP_GAZE_FETCH_ALLOW", base.removeprefix("http://"))
        engine = service_engine(toy_loader, monkeypatch, TOKEN)
        create(engine, "shapes", PHRASES)
        root = tmp_path / "scans"
        root.mkdir()
        draw_shape("green", "triangle", size=300).save(root / "green.png")
        draw_shape("red", "square", size=300).save(root / "red-square.png")
        collections = Collections(engine)
        collections.create(parse(CreateCollection, {"name": "museum"}))
        report = collections.add("museum", parse(AddSources, {"sources": [str(root), f"{base}/objects.csv"]}))
        assert report.added == 3
        app = create_app(Settings.from_env(), engine=engine)
        Pictures.up = True
        yield app.test_client(), collections.view("museum").pictures, root
        Pictures.up = True


def explained(client, sha: str, **query) -> dict:
    resp = client.get(f"/v1/collections/museum/pictures/{sha}/explain", query_string={"vocabularies": "shapes", **query})
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def posted(client, data: bytes) -> dict:
    resp = client.post("/v1/explain", data={"image": (io.BytesIO(data), "p.png"), "vocabularies": "shapes", "top_k": "1"})
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def same_maps(a: dict, b: dict) -> bool:
    ma, mb = a["results"]["shapes"]["matches"][0], b["results"]["shapes"]["matches"][0]
    return ma["phrase"] == mb["phrase"] and ma["heatmap"] == mb["heatmap"] and a["grid"] == b["grid"]


def thumbnail(client, sha: str) -> bytes:
    return client.get(f"/v1/collections/museum/pictures/{sha}/thumbnail").data


def test_a_local_file_is_explained_from_itself_then_from_the_thumbnail_once_gone_or_changed(setup):
    client, pictures, root = setup
    green = next(p for p in pictures if p.source.endswith("green.png"))
    body = explained(client, green.sha256)
    assert body["explained_from"] == "source" and body["explained_note"] is None
    assert body["image"]["width"] == 300  # the picture itself, not its 256-px thumbnail
    assert same_maps(body, posted(client, (root / "green.png").read_bytes()))
    png = client.get(f"/v1/collections/museum/pictures/{green.sha256}/explain?vocabularies=shapes&format=png")
    assert png.mimetype == "image/png" and png.headers["X-Clip-Gaze-Explained-From"] == "source"
    assert Image.open(io.BytesIO(png.data)).size[0] > 0

    (root / "green.png").unlink()
    gone = explained(client, green.sha256)
    assert gone["explained_from"] == "thumbnail" and "no longer there" in gone["explained_note"]
    small = thumbnail(client, green.sha256)
    assert gone["image"]["width"] == Image.open(io.BytesIO(small)).width < 300 and same_maps(gone, posted(client, small))

    red = next(p for p in pictures if p.source.endswith("red-square.png"))
    draw_shape("blue", "circle", size=300).save(root / "red-square.png")  # another picture under its name
    changed = explained(client, red.sha256)
    assert changed["explained_from"] == "thumbnail" and "changed" in changed["explained_note"]


def test_a_url_is_fetched_again_and_a_source_that_cannot_be_read_falls_back(setup):
    client, pictures, _ = setup
    red = next(p for p in pictures if p.source.endswith("/red.png"))
    body = explained(client, red.sha256)
    assert body["explained_from"] == "source" and same_maps(body, posted(client, Pictures.bodies["/red.png"]))
    Pictures.up = False
    down = explained(client, red.sha256)
    assert down["explained_from"] == "thumbnail" and "could not be read" in down["explained_note"]
    png = client.get(f"/v1/collections/museum/pictures/{red.sha256}/explain?vocabularies=shapes&format=png")
    assert png.headers["X-Clip-Gaze-Explained-From"] == "thumbnail"


def test_bad_input_gets_the_json_error_body(setup):
    client, pictures, _ = setup
    sha = pictures[0].sha256
    for path, status, code in ((f"/v1/collections/museum/pictures/{'0' * 64}/explain", 404, "unknown_picture"),
                               (f"/v1/collections/nope/pictures/{sha}/explain", 404, "unknown_collection"),
                               (f"/v1/collections/museum/pictures/{sha}/explain?vocabularies=nope", 422, "unknown_vocabulary"),
                               (f"/v1/collections/museum/pictures/{sha}/explain?top_k=0", 400, "invalid_top_k")):
        body = client.get(path).get_json()
        assert (body["ok"], body["status"], body["code"]) == (False, status, code), body


# -- a IIIF picture: its Image service asked again, at the model's size -----------------------------------------

class SizedIIIF(IIIF):
    """test_iiif_collections' services and manifest, each picture drawn at the size asked (`w,`, `,h`, `w,h`,
    `!w,h`; 4000×3000 masters) while `up`, every request logged."""

    up = True

    def do_GET(self) -> None:  # noqa: N802
        parts = self.path.strip("/").split("/")
        if not (len(parts) == 6 and parts[0] == "iiif" and parts[1] in IIIF_PICTURES):
            return super().do_GET()
        type(self).requests.append(self.path)
        if not type(self).up:
            return self._send(503, "text/plain", b"down")
        w, _, h = parts[3].removeprefix("!").partition(",")
        width = int(w) if w else round(int(h) * 4 / 3)
        height = int(h) if h else round(int(w) * 3 / 4)
        colour, shape = IIIF_PICTURES[parts[1]]
        picture = draw_shape(colour, shape, size=160).convert("RGB").resize((width, height))
        self._send(200, "image/jpeg", encode(picture, "JPEG"))


@pytest.fixture
def iiif_setup(clean_environ, toy_loader, monkeypatch):
    with serving(SizedIIIF) as base:
        monkeypatch.setenv("CLIP_GAZE_FETCH_ALLOW", base.removeprefix("http://"))
        engine = service_engine(toy_loader, monkeypatch, TOKEN)
        create(engine, "shapes", PHRASES)
        collections = Collections(engine)
        collections.create(parse(CreateCollection, {"name": "museum"}))
        report = collections.add("museum", parse(AddSources, {"sources": [f"{base}/manifest.json"]}))
        assert report.added == 3
        client = create_app(Settings.from_env(), engine=engine).test_client()
        yield client, {p.external_id: p for p in collections.view("museum").pictures}, base, engine


def test_a_iiif_picture_is_explained_from_its_image_service_at_the_models_size(iiif_setup):
    client, pictures, base, engine = iiif_setup
    red = pictures[f"{base}/canvas/red"]
    SizedIIIF.requests.clear()
    SizedIIIF.up = True
    body = explained(client, red.sha256)
    assert body["explained_from"] == "source" and body["explained_note"] is None
    size = engine.spec.image_size()
    asked = [r for r in SizedIIIF.requests if not r.endswith("info.json")]
    assert asked == [f"/iiif/red/full/,{size}/0/default.jpg"], asked  # the model's size, never the master, no thumbnail
    width = round(size * 4 / 3)
    sent = encode(draw_shape("red", "circle", size=160).convert("RGB").resize((width, size)), "JPEG")
    given = posted(client, sent)  # what /v1/explain makes of the very picture the service gave
    match, same = body["results"]["shapes"]["matches"][0], given["results"]["shapes"]["matches"][0]
    assert (match["phrase"], match["heatmap"]) == (same["phrase"], same["heatmap"])
    assert (body["grid"]["rows"], body["grid"]["cols"]) == (given["grid"]["rows"], given["grid"]["cols"])
    k = 4000 / width  # the box in the master's pixels (the picture's own size, from its info.json)
    assert body["grid"]["box"] == pytest.approx([v * k for v in given["grid"]["box"]], abs=k)
    thumb = Image.open(io.BytesIO(thumbnail(client, red.sha256)))
    assert max(thumb.size) == 256 and not same_maps(body, posted(client, thumbnail(client, red.sha256)))

    SizedIIIF.up = False
    try:
        down = explained(client, red.sha256)
    finally:
        SizedIIIF.up = True
    assert down["explained_from"] == "thumbnail" and "could not be read" in down["explained_note"]
    assert same_maps(down, posted(client, thumbnail(client, red.sha256)))
