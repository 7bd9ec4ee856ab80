"""A museum's path end to end: a IIIF server on a loopback port (admitted by CLIP_GAZE_FETCH_ALLOW),
a collection filled from its manifest through the REST API's background job, searched, analyzed."""

from __future__ import annotations

import http.server
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from conftest import draw_shape, encode
from iiif_server import QuietHandler, serving, toy_engine  # noqa: F401  (other modules import them from here too)
from indexer.collections.local import Collections
from indexer.engine import Engine
from indexer.pictures.iiif_image import MAX_INFO_BYTES
from indexer.pictures.sources import MAX_MANIFEST_BYTES, PictureRef, expand
from indexer.schema import parse
from indexer.schema.collections import AddSources, CreateCollection
from indexer.settings import Settings
from service import create_app

TOKEN = "museum-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PICTURES = {"red": ("red", "circle"), "blue": ("blue", "square"), "green": ("green", "triangle")}


class IIIF(QuietHandler):
    """Image API services for three pictures (two level 2 with 4000×3000 masters, one level 0 with
    listed sizes), a v3 manifest of them plus a canvas without a picture, and a log of every request."""

    requests: list[str] = []
    port = 0

    def do_GET(self) -> None:  # noqa: N802
        type(self).requests.append(self.path)
        base = f"http://127.0.0.1:{self.port}"
        parts = self.path.strip("/").split("/")
        if self.path == "/manifest.json":
            return self._json(manifest(base))
        if len(parts) == 3 and parts[0] == "iiif" and parts[2] == "info.json":
            name = parts[1]
            info: dict[str, Any] = {"@context": "http://iiif.io/api/image/3/context.json", "id": f"{base}/iiif/{name}",
                                    "type": "ImageService3", "protocol": "http://iiif.io/api/image",
                                    "width": 4000, "height": 3000, "profile": "level2"}
            if name == "green":
                info.update(profile="level0", sizes=[{"width": 200, "height": 150}, {"width": 1000, "height": 750}])
            return self._json(info)
        if len(parts) == 6 and parts[0] == "iiif" and parts[1] in PICTURES:
            colour, shape = PICTURES[parts[1]]
            return self._send(200, "image/jpeg", encode(draw_shape(colour, shape, size=160).convert("RGB"), "JPEG"))
        self._send(404, "text/plain", b"not here")

    def _json(self, doc: Any) -> None:
        self._send(200, "application/json", json.dumps(doc).encode())


def manifest(base: str) -> dict[str, Any]:
    def canvas(name: str) -> dict[str, Any]:
        return {
            "id": f"{base}/canvas/{name}", "type": "Canvas", "label": {"en": [f"The {name} one"]}, "width": 4000, "height": 3000,
            "items": [{"id": f"{base}/page/{name}", "type": "AnnotationPage", "items": [{
                "id": f"{base}/anno/{name}", "type": "Annotation", "motivation": "painting", "target": f"{base}/canvas/{name}",
                "body": {"id": f"{base}/iiif/{name}/full/max/0/default.jpg", "type": "Image", "format": "image/jpeg",
                         "service": [{"id": f"{base}/iiif/{name}", "type": "ImageService3", "profile": "level2"}]},
            }]}],
        }

    empty = {"id": f"{base}/canvas/empty", "type": "Canvas", "label": {"en": ["No picture"]}, "items": []}
    return {"@context": "http://iiif.io/api/presentation/3/context.json", "id": f"{base}/manifest.json", "type": "Manifest",
            "label": {"en": ["Three shapes"]}, "items": [canvas("red"), canvas("blue"), canvas("green"), empty]}


@pytest.fixture
def iiif():
    with serving(IIIF) as base:
        yield base


@pytest.fixture
def museum_engine(iiif, clean_environ, toy_loader, monkeypatch):
    monkeypatch.setenv("CLIP_GAZE_FETCH_ALLOW", iiif.removeprefix("http://"))
    monkeypatch.setenv("CLIP_GAZE_API_TOKENS", TOKEN)
    return toy_engine(toy_loader)


def test_a_iiif_manifest_is_fetched_at_the_models_size_never_the_master(museum_engine: Engine, iiif: str):
    Collections(museum_engine).create(parse(CreateCollection, {"name": "shapes"}))
    report = Collections(museum_engine).add("shapes", parse(AddSources, {"sources": [f"{iiif}/manifest.json"]}))
    assert (report.added, report.failed) == (3, 1)  # the canvas without a picture is recorded
    pictures = {p.external_id: p for p in Collections(museum_engine).view("shapes").pictures}
    assert set(pictures) == {f"{iiif}/canvas/{n}" for n in PICTURES}
    assert pictures[f"{iiif}/canvas/red"].metadata["label"] == "The red one"
    asked = [r for r in IIIF.requests if r.startswith("/iiif/") and not r.endswith("info.json")]
    size = museum_engine.spec.image_size()
    assert f"/iiif/red/full/,{size}/0/default.jpg" in asked  # landscape: the shorter side at the model's size
    assert "/iiif/green/full/200,150/0/default.jpg" in asked  # level 0: the smallest listed size that is enough
    assert not any("/max/" in r or "/full/full/" in r for r in asked), asked
    hit = Collections(museum_engine).search("shapes", text="a blue square", top_k=1).hits[0]
    assert hit.external_id == f"{iiif}/canvas/blue"
    errors = Collections(museum_engine).view("shapes", errors=True).pictures
    assert errors[0].error_code == "invalid_manifest"


def test_a_redirect_to_a_loopback_port_not_allowed_is_recorded_not_followed(museum_engine: Engine, iiif: str, tmp_path: Path):
    rows = tmp_path / "objects.jsonl"
    other = f"http://127.0.0.1:{IIIF.port + 1 if IIIF.port < 65535 else 1}/secret.png"
    rows.write_text(json.dumps({"image": other, "external_id": "X-1"}) + "\n" + json.dumps({"image": f"{iiif}/nothing.png"}) + "\n")
    Collections(museum_engine).create(parse(CreateCollection, {"name": "guarded"}))
    report = Collections(museum_engine).add("guarded", parse(AddSources, {"sources": [str(rows)]}))
    assert report.failed == 2
    codes = {p.external_id: p.error_code for p in Collections(museum_engine).view("guarded", errors=True).pictures}
    assert codes["X-1"] == "url_refused" and codes[None] == "fetch_failed"


def test_the_rest_api_adds_in_a_background_job_then_searches_and_streams_an_analysis(museum_engine: Engine, iiif: str):
    client = create_app(Settings.from_env(), engine=museum_engine).test_client()
    assert client.post("/v1/collections", json={"name": "shapes"}).status_code == 401
    created = client.post("/v1/collections", json={"name": "shapes", "description": "three"}, headers=AUTH)
    assert created.status_code == 201 and created.get_json()["collection"]["size"] == 0
    started = client.post("/v1/collections/shapes/sources", json={"sources": [f"{iiif}/manifest.json"]}, headers=AUTH)
    assert started.status_code == 202, started.get_json()
    job_id = started.get_json()["job"]["id"]
    deadline = time.monotonic() + 60
    while (job := client.get(f"/v1/jobs/{job_id}").get_json()["job"])["state"] in ("queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert job["state"] == "done" and (job["done"], job["failed"], job["total"]) == (3, 1, 4)
    listed = client.get("/v1/collections").get_json()["collections"]
    assert [(c["name"], c["size"], c["failed"]) for c in listed] == [("shapes", 3, 1)]
    errors = client.get("/v1/collections/shapes?errors=true").get_json()
    assert errors["pictures"][0]["error_code"] == "invalid_manifest"
    found = client.get("/v1/collections/shapes/search?q=a+red+circle&top_k=2").get_json()
    assert found["hits"][0]["external_id"] == f"{iiif}/canvas/red" and found["searched"] == 3
    streamed = client.post("/v1/collections/shapes/analyze", json={"vocabularies": "qualities", "top_k": 2})
    assert streamed.status_code == 200 and streamed.mimetype == "application/x-ndjson"
    rows = [json.loads(line) for line in streamed.get_data(as_text=True).splitlines()]
    assert len(rows) == 3 * 2 and rows[0]["vocabulary"] == "qualities" and rows[0]["softmax_over"] == 7
    missing = client.post("/v1/collections/nope/analyze", json={})
    assert missing.status_code == 404 and missing.get_json()["code"] == "unknown_collection"
    gone = client.delete("/v1/collections/shapes", headers=AUTH)
    assert gone.get_json()["deleted"] == "shapes" and client.get("/v1/collections/shapes").status_code == 404
    assert client.get("/v1/jobs/nope").get_json()["code"] == "unknown_job"


def test_analyze_takes_an_image_url_and_a_iiif_service(museum_engine: Engine, iiif: str):
    direct = museum_engine.fetch_picture(f"{iiif}/iiif/blue/full/max/0/default.jpg")
    service = museum_engine.fetch_picture(f"{iiif}/iiif/red/info.json")
    assert direct.width == 160 and (service.width, service.height) == (4000, 3000)  # the picture's own, from info.json
    top = museum_engine.compare(service, ["a red circle", "a blue square"]).results["compare"].matches[0]
    assert top.phrase == "a red circle"
    with pytest.raises(Exception) as exc:
        museum_engine.fetch_picture("http://127.0.0.1:9/elsewhere.png")
    assert getattr(exc.value, "code", "") == "url_refused"


def test_the_python_client_drives_a_collection(museum_engine: Engine, iiif: str):
    from werkzeug.serving import make_server

    from clip_gaze import ApiError, Client

    server = make_server("127.0.0.1", 0, create_app(Settings.from_env(), engine=museum_engine), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        api = Client(f"http://127.0.0.1:{server.server_port}", token=TOKEN)
        assert api.create_collection("shapes", "three").collection.name == "shapes"
        job = api.wait(api.add_sources("shapes", [f"{iiif}/manifest.json"]).id, timeout=60, poll=0.1)
        assert (job.state, job.done, job.failed) == ("done", 3, 1)
        assert [c.size for c in api.collections()] == [3]
        assert api.collection("shapes", errors=True).pictures[0].error_code == "invalid_manifest"
        assert api.search("shapes", "a green triangle", top_k=1).hits[0].external_id == f"{iiif}/canvas/green"
        rows = list(api.analyze_collection("shapes", ["qualities"], top_k=1))
        assert len(rows) == 3 and rows[0].softmax_over == 7
        with pytest.raises(ApiError) as exc:
            list(api.analyze_collection("nope"))
        assert exc.value.code == "unknown_collection"
        assert api.delete_collection("shapes").deleted == "shapes"
    finally:
        server.shutdown()
        server.server_close()


def test_the_api_takes_image_url_on_analyze_compare_and_batch(museum_engine: Engine, iiif: str):
    client = create_app(Settings.from_env(), engine=museum_engine).test_client()
    red = f"{iiif}/iiif/red/info.json"  # a IIIF Image API service: asked for the model's size
    blue = f"{iiif}/iiif/blue/full/max/0/default.jpg"  # a plain picture
    one = client.post("/v1/analyze", json={"image_url": red, "vocabularies": "qualities", "top_k": 1}).get_json()
    assert one["ok"] and (one["image"]["width"], one["image"]["height"]) == (4000, 3000)
    form = client.post("/v1/compare", data={"image_url": blue, "phrases": '["a red circle", "a blue square"]'}).get_json()
    assert form["results"]["compare"]["matches"][0]["phrase"] == "a blue square"
    batch = client.post("/v1/analyze/batch", json={"image_urls": [red, blue, "http://127.0.0.1:9/x.png"],
                                                   "vocabularies": "qualities", "top_k": 1}).get_json()
    assert [r["ok"] for r in batch["results"]] == [True, True, False] and batch["results"][2]["code"] == "url_refused"
    assert batch["results"][2]["status"] == 403  # a policy refusal, in the picture's own entry
    both = client.post("/v1/analyze", json={"image_url": red, "image_base64": "aGk="})
    assert both.status_code == 400 and "not both" in both.get_json()["error"]
    neither = client.post("/v1/analyze", json={"top_k": 1})
    assert neither.status_code == 400 and neither.get_json()["code"] == "missing_image"
    not_http = client.post("/v1/analyze", json={"image_url": "file:///etc/passwd"})
    assert not_http.status_code == 400 and not_http.get_json()["code"] == "invalid_url"


# --- the cookbook's harder recipes, served: a composed canvas, regions, a choice, sound, bad selectors ---

class Cutting(http.server.BaseHTTPRequestHandler):
    """An Image API server that really cuts and sizes: `halves` (400×300, red left, blue right; level 2)
    and `halves0` (the same, level 0, two listed sizes), the same pictures as plain PNGs, `big.png`
    (1600×1200, white with a blue 100×100 square at its top right corner), and a manifest of them."""

    requests: list[str] = []
    port = 0

    @staticmethod
    def masters() -> dict[str, Image.Image]:
        halves = Image.new("RGB", (400, 300), "red")
        halves.paste(Image.new("RGB", (200, 300), "blue"), (200, 0))
        big = Image.new("RGB", (1600, 1200), "white")
        big.paste(Image.new("RGB", (100, 100), "blue"), (1500, 0))
        return {"halves": halves, "halves0": halves, "big": big}

    def do_GET(self) -> None:  # noqa: N802
        type(self).requests.append(self.path)
        base = f"http://127.0.0.1:{self.port}"
        parts = self.path.strip("/").split("/")
        masters = self.masters()
        if self.path == "/manifest.json":
            return self._send(200, "application/json", json.dumps(recipes(base)).encode())
        if self.path.startswith("/plain/") and parts[1].removesuffix(".png") in masters:
            return self._send(200, "image/png", encode(masters[parts[1].removesuffix(".png")]))
        if len(parts) == 3 and parts[0] == "iiif" and parts[1] in masters and parts[2] == "info.json":
            info: dict[str, Any] = {"@context": "http://iiif.io/api/image/3/context.json", "id": f"{base}/iiif/{parts[1]}",
                                    "type": "ImageService3", "protocol": "http://iiif.io/api/image", "width": 400, "height": 300,
                                    "profile": "level2"}
            if parts[1] == "halves0":
                info.update(profile="level0", sizes=[{"width": 100, "height": 75}, {"width": 200, "height": 150}])
            return self._send(200, "application/json", json.dumps(info).encode())
        if len(parts) == 6 and parts[0] == "iiif" and parts[1] in masters:
            return self._send(200, "image/png", encode(self.cut(masters[parts[1]], parts[2], parts[3])))
        self._send(404, "text/plain", b"not here")

    @staticmethod
    def cut(img: Image.Image, region: str, size: str) -> Image.Image:
        if region != "full":
            x, y, w, h = (int(n) for n in region.split(","))
            img = img.crop((x, y, min(img.width, x + w), min(img.height, y + h)))
        if size in ("max", "full"):
            return img
        w_, _, h_ = size.partition(",")
        w = int(w_) if w_ else round(img.width * int(h_) / img.height)
        h = int(h_) if h_ else round(img.height * w / img.width)
        return img.resize((w, h))

    _send = IIIF._send
    log_message = IIIF.log_message


def recipes(base: str) -> dict[str, Any]:
    def canvas(name: str, *bodies: Any, target: str = "") -> dict[str, Any]:
        return {"id": f"{base}/canvas/{name}", "type": "Canvas", "width": 400, "height": 300, "items": [{
            "id": f"{base}/page/{name}", "type": "AnnotationPage", "items": [
                {"id": f"{base}/anno/{name}/{n}", "type": "Annotation", "motivation": "painting", "body": body,
                 "target": f"{base}/canvas/{name}" + (target if n > 1 else "")} for n, body in enumerate(bodies, 1)]}]}

    def service(name: str, **extra: Any) -> dict[str, Any]:
        level = "level0" if name.endswith("0") else "level2"
        return {"id": f"{base}/iiif/{name}/full/max/0/default.jpg", "type": "Image", "format": "image/jpeg", **extra,
                "service": [{"id": f"{base}/iiif/{name}", "type": "ImageService3", "profile": level}]}

    def plain(name: str, **extra: Any) -> dict[str, Any]:
        return {"id": f"{base}/plain/{name}.png", "type": "Image", "format": "image/png", **extra}

    def region(source: dict[str, Any], selector: dict[str, Any]) -> dict[str, Any]:
        return {"type": "SpecificResource", "source": source, "selector": selector}

    return {"@context": "http://iiif.io/api/presentation/3/context.json", "id": f"{base}/manifest.json", "type": "Manifest",
            "label": {"en": ["Recipes"]}, "items": [
                canvas("composition", service("halves"), service("halves0"), target="#xywh=200,0,200,150"),  # 0036
                canvas("region", region(service("halves"), {"type": "ImageApiSelector", "region": "200,0,200,300"})),  # 0299
                canvas("plain", region(plain("halves"), {"type": "FragmentSelector", "value": "xywh=0,0,200,300"})),
                canvas("level0", region(service("halves0"), {"type": "ImageApiSelector", "region": "200,0,200,300"})),
                canvas("choice", {"type": "Choice", "items": [  # 0033
                    region(plain("big", label={"en": ["Detail"]}), {"type": "FragmentSelector", "value": "xywh=1500,0,100,100"}),
                    plain("halves", label={"en": ["Whole"]})]}),
                canvas("song", {"id": f"{base}/song.mp3", "type": "Sound", "duration": 60}),
                canvas("torn", region(service("halves"), {"type": "ImageApiSelector", "region": "0,0,0,5"})),
                canvas("outside", region(service("halves"), {"type": "ImageApiSelector", "region": "5000,0,10,10"})),
            ]}


@pytest.fixture
def cutting():
    with serving(Cutting) as base:
        yield base


@pytest.fixture
def recipes_engine(cutting, clean_environ, toy_loader, monkeypatch):
    monkeypatch.setenv("CLIP_GAZE_FETCH_ALLOW", cutting.removeprefix("http://"))
    return toy_engine(toy_loader)


def colour(picture: Image.Image) -> str:
    import numpy as np

    r, g, b = np.asarray(picture.convert("RGB"), dtype=float).mean(axis=(0, 1))
    return "blue" if b > 200 > r else "red" if r > 200 > b else f"({r:.0f}, {g:.0f}, {b:.0f})"


def test_each_picture_a_manifest_composes_chooses_or_cuts_is_read_as_itself(recipes_engine: Engine, cutting: str):
    Collections(recipes_engine).create(parse(CreateCollection, {"name": "recipes"}))
    report = Collections(recipes_engine).add("recipes", parse(AddSources, {"sources": [f"{cutting}/manifest.json"]}))
    assert (report.added, report.failed) == (6, 3)
    pictures = {p.external_id: p for p in Collections(recipes_engine).view("recipes").pictures}
    assert set(pictures) == {f"{cutting}/canvas/{name}" for name in ("composition", "region", "plain", "level0", "choice")} | {
        f"{cutting}/canvas/composition#xywh=200,0,200,150"}
    # a region has a source of its own, the picture's with its region as the fragment
    assert pictures[f"{cutting}/canvas/region"].source == f"{cutting}/iiif/halves#xywh=200,0,200,300"
    assert pictures[f"{cutting}/canvas/composition"].source == f"{cutting}/iiif/halves"
    assert pictures[f"{cutting}/canvas/plain"].source == f"{cutting}/plain/halves.png#xywh=0,0,200,300"
    asked = [r for r in Cutting.requests if not r.endswith(("info.json", "manifest.json"))]
    assert "/iiif/halves/200,0,200,300/64,/0/default.jpg" in asked  # the region, its shorter side at the model's 64
    assert "/iiif/halves0/full/200,150/0/default.jpg" in asked  # level 0: a listed size the region is enough in, cut here
    assert not any(r.startswith("/iiif/halves0/") and "/full/" not in r for r in asked), asked
    assert {"/plain/halves.png", "/plain/big.png"} <= set(asked)
    sizes = {eid.removeprefix(f"{cutting}/canvas/"): (p.width, p.height) for eid, p in pictures.items()}
    assert sizes["plain"] == (200, 300) and sizes["level0"] == (200, 300) and sizes["choice"] == (100, 100)
    assert len({p.sha256 for p in pictures.values()}) == 6  # a region is not its picture
    region_meta = pictures[f"{cutting}/canvas/region"].metadata
    assert region_meta["image region"] == "200,0,200,300, in pixels of the source image"
    choice_meta = pictures[f"{cutting}/canvas/choice"].metadata
    assert choice_meta["choice"] == "first of 2: Detail"
    assert choice_meta["choice alternatives"] == f"Whole <{cutting}/plain/halves.png>"
    composed = pictures[f"{cutting}/canvas/composition#xywh=200,0,200,150"].metadata
    assert composed["on canvas"] == "xywh=200,0,200,150, in canvas coordinates (the canvas is 400×300)"
    errors = {p.source: p for p in Collections(recipes_engine).view("recipes", errors=True).pictures}
    said = sorted(f"{p.error_code}: {p.error}" for p in errors.values())
    assert said[0].startswith("invalid_manifest: canvas 6 of 8") and said[0].endswith("not a picture: it paints Sound")
    assert said[1].startswith("invalid_manifest: canvas 7 of 8") and "malformed region" in said[1]
    assert said[2] == "invalid_manifest: the region 5000,0,10,10 lies outside the picture, which is 400×300 pixels"


def test_regions_are_cut_where_they_lie_and_keep_the_detail_the_model_needs(recipes_engine: Engine, cutting: str):
    refs = {r.external_id.rsplit("/", 1)[-1]: r for r in expand(f"{cutting}/manifest.json", recipes_engine.limits.fetch)
            if isinstance(r, PictureRef)}
    read = {name: recipes_engine.reader.read_ref(ref) for name, ref in refs.items() if name != "outside"}
    assert refs["plain"].region == "0,0,200,300" and refs["plain"].location == f"{cutting}/plain/halves.png"
    assert colour(read["region"].image) == "blue"  # the service cut the right half
    assert colour(read["plain"].image) == "red"  # the left half, cut here
    assert colour(read["level0"].image) == "blue"  # the right half of a listed size, cut here
    assert colour(read["choice"].image) == "blue"  # 100×100 of a 1600×1200 picture ...
    assert min(read["choice"].image.size) >= 64  # ... at the model's size, not cut from the picture reduced whole
    assert read["composition"].height == 300 and min(read["composition"].image.size) == 64 and colour(read["composition"].image) not in ("red", "blue")  # whole: both halves


def test_the_ray_reading_tasks_read_the_region_too(recipes_engine: Engine, cutting: str, monkeypatch: pytest.MonkeyPatch):
    import numpy as np
    import pyarrow as pa

    from indexer.collections.on_ray import workers
    from indexer.collections.on_ray.driver import ref_rows

    class Known:  # what the driver put in Ray's object store: the sha256s already embedded (none)
        def hex(self) -> str:
            return "no-shas-known"

    monkeypatch.setitem(workers._SHARED, "no-shas-known", np.array([], dtype="S64"))
    refs = [r for r in expand(f"{cutting}/manifest.json", recipes_engine.limits.fetch)
            if isinstance(r, PictureRef) and r.external_id.endswith(("/plain", "/region"))]
    rows = ref_rows(refs)
    assert [r["region"] for r in rows] == ["200,0,200,300", "0,0,200,300"]
    settings = workers.WorkerSettings(model=recipes_engine.spec, target=recipes_engine.spec.image_size(), limits=recipes_engine.limits)
    out = workers.read_pictures(pa.Table.from_pylist(rows), settings, {"ref": Known()}).to_pylist()
    local = [recipes_engine.reader.read_ref(r) for r in refs]
    assert [(o["sha256"], o["width"], o["height"]) for o in out] == [(d.sha256, d.width, d.height) for d in local]
    assert out[1]["width"] == 200 and out[1]["error"] is None


# --- a manifest and an info.json are read no further than their caps ---------------------------------

class Oversized(IIIF):
    """A manifest streamed without a length, 64 MiB of it; one that declares 40 MiB; a manifest of two
    canvases whose services answer an ordinary info.json and one padded past 1 MiB. `sent` counts the
    bytes each stream got out before the reader hung up."""

    sent: dict[str, int] = {}
    requests: list[str] = []
    port = 0

    def do_GET(self) -> None:  # noqa: N802
        base = f"http://127.0.0.1:{self.port}"
        if self.path == "/endless.json":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            chunk = b" " * 65536
            type(self).sent[self.path] = 0
            try:
                self.wfile.write(b'{"items": [')
                for _ in range(1024):
                    self.wfile.write(chunk)
                    type(self).sent[self.path] += len(chunk)
            except OSError:
                pass
            return
        if self.path == "/declared.json":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(40 * 2**20))
            self.end_headers()
            return
        if self.path == "/manifest.json":
            doc = manifest(base)
            doc["items"] = doc["items"][:2]  # red: an ordinary info.json; blue: a padded one
            return self._json(doc)
        if self.path == "/iiif/blue/info.json":
            info = {"@context": "http://iiif.io/api/image/3/context.json", "id": f"{base}/iiif/blue", "type": "ImageService3",
                    "width": 4000, "height": 3000, "profile": "level2", "padding": "x" * (MAX_INFO_BYTES + 1)}
            return self._json(info)
        super().do_GET()


@pytest.fixture
def oversized(clean_environ, monkeypatch):
    Oversized.sent = {}
    with serving(Oversized) as base:
        monkeypatch.setenv("CLIP_GAZE_FETCH_ALLOW", base.removeprefix("http://"))
        yield base


def test_a_manifest_or_info_json_past_its_cap_is_refused_with_its_reason(oversized: str, toy_loader):
    engine = toy_engine(toy_loader)
    Collections(engine).create(parse(CreateCollection, {"name": "big"}))
    sources = [f"{oversized}/endless.json", f"{oversized}/declared.json", f"{oversized}/manifest.json"]
    report = Collections(engine).add("big", parse(AddSources, {"sources": sources}))
    assert (report.added, report.failed) == (1, 3)
    errors = {p.source: p for p in Collections(engine).view("big", errors=True).pictures}
    cap = f"than the {MAX_MANIFEST_BYTES:,} bytes fetched at most"
    assert errors[sources[0]].error_code == "too_large" and errors[sources[0]].error.endswith("sent more " + cap)
    assert errors[sources[1]].error_code == "too_large" and f"declares {40 * 2**20:,} bytes" in errors[sources[1]].error
    blue = errors[f"{oversized}/iiif/blue"]
    assert blue.error_code == "too_large" and f"than the {MAX_INFO_BYTES:,} bytes fetched at most" in blue.error
    # the endless manifest was read no further than its cap (and what the sockets' buffers hold)
    assert MAX_MANIFEST_BYTES <= Oversized.sent["/endless.json"] < MAX_MANIFEST_BYTES + 24 * 2**20
    assert [p.external_id for p in Collections(engine).view("big").pictures] == [f"{oversized}/canvas/red"]
