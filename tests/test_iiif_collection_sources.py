"""IIIF Collections (v2 and v3) as sources, against a loopback IIIF server: nested collections of
manifests read recursively, each picture with its manifest; loops and limits refused with a reason."""

from __future__ import annotations

from typing import Any

import pytest

from iiif_server import serving, toy_engine
from test_iiif_collections import IIIF, manifest

from indexer.collections.local import Collections
from indexer.pictures import iiif_collection
from indexer.schema import parse
from indexer.schema.collections import AddSources, CreateCollection


def v2_manifest(base: str, name: str) -> dict[str, Any]:
    return {"@context": "http://iiif.io/api/presentation/2/context.json", "@id": f"{base}/m2/{name}.json",
            "@type": "sc:Manifest", "label": f"v2 {name}", "sequences": [{"@type": "sc:Sequence", "canvases": [{
                "@id": f"{base}/canvas2/{name}", "@type": "sc:Canvas", "width": 4000, "height": 3000, "images": [{
                    "@type": "oa:Annotation", "motivation": "sc:painting", "on": f"{base}/canvas2/{name}",
                    "resource": {"@id": f"{base}/iiif/{name}/full/full/0/default.jpg", "@type": "dctypes:Image",
                                 "service": {"@id": f"{base}/iiif/{name}", "profile": "http://iiif.io/api/image/2/level2.json"}}}]}]}]}


def v3_collection(base: str, path: str, items: list[tuple[str, str]]) -> dict[str, Any]:
    return {"@context": "http://iiif.io/api/presentation/3/context.json", "id": f"{base}{path}", "type": "Collection",
            "label": {"en": [path]}, "items": [{"id": f"{base}{p}", "type": t} for p, t in items]}


def v2_collection(base: str, path: str, collections: list[str], manifests: list[str]) -> dict[str, Any]:
    return {"@context": "http://iiif.io/api/presentation/2/context.json", "@id": f"{base}{path}", "@type": "sc:Collection",
            "collections": [{"@id": f"{base}{p}", "@type": "sc:Collection"} for p in collections],
            "manifests": [{"@id": f"{base}{p}", "@type": "sc:Manifest"} for p in manifests]}


class Library(IIIF):
    """IIIF's pictures and v3 manifest, plus: /top.json (v3) → /sub2.json (v2: the v2 red manifest and
    /sub3.json) and /sub3.json (v3: the v3 manifest, the v2 blue manifest, itself, and /top.json, a
    loop); /self.json lists itself; /chain/N.json nests deeper than the limit."""

    def do_GET(self) -> None:  # noqa: N802
        base = f"http://127.0.0.1:{self.port}"
        docs: dict[str, Any] = {
            "/top.json": v3_collection(base, "/top.json", [("/sub2.json", "Collection"), ("/sub3.json", "Collection")]),
            "/sub2.json": v2_collection(base, "/sub2.json", ["/sub3.json"], ["/m2/red.json"]),
            "/sub3.json": v3_collection(base, "/sub3.json", [("/manifest.json", "Manifest"), ("/m2/blue.json", "Manifest"),
                                                             ("/sub3.json", "Collection"), ("/top.json", "Collection")]),
            "/self.json": v3_collection(base, "/self.json", [("/self.json", "Collection"), ("/m2/green.json", "Manifest")]),
            "/m2/red.json": v2_manifest(base, "red"), "/m2/blue.json": v2_manifest(base, "blue"),
            "/m2/green.json": v2_manifest(base, "green"), "/manifest.json": manifest(base),
        }
        if self.path.startswith("/chain/"):
            n = int(self.path.split("/")[2].removesuffix(".json"))
            docs[self.path] = v3_collection(base, self.path, [(f"/chain/{n + 1}.json", "Collection"), ("/m2/red.json", "Manifest")])
        if self.path in docs:
            type(self).requests.append(self.path)
            return self._json(docs[self.path])
        return super().do_GET()


@pytest.fixture
def library(clean_environ, toy_loader, monkeypatch):
    with serving(Library) as base:
        monkeypatch.setenv("CLIP_GAZE_FETCH_ALLOW", base.removeprefix("http://"))
        yield base, toy_engine(toy_loader)


def add(engine: Any, name: str, source: str):
    Collections(engine).create(parse(CreateCollection, {"name": name}))
    return Collections(engine).add(name, parse(AddSources, {"sources": [source]}))


def test_nested_v2_and_v3_collections_add_every_manifests_pictures_once(library):
    base, engine = library
    report = add(engine, "library", f"{base}/top.json")
    row = engine.images.get("library")
    stored = {p.external_id: p.manifest for p in engine.images.pictures(row.id, limit=100)}
    # the v2 manifests name the red and blue services after the v3 one (v2 lists collections first):
    # a picture named twice is stored once, as its last naming says
    assert stored == {f"{base}/canvas/green": f"{base}/manifest.json", f"{base}/canvas2/red": f"{base}/m2/red.json",
                      f"{base}/canvas2/blue": f"{base}/m2/blue.json"}
    errors = {p.source: (p.error_code, p.error) for p in engine.images.pictures(row.id, errors=True, limit=100)}
    loops = {k: v for k, v in errors.items() if v[0] == "collection_loop"}
    assert len(loops) == 2 and all(k.startswith(f"{base}/sub3.json#") for k in loops)
    assert any("lists itself" in e for _, e in loops.values())
    assert any(f"lists {base}/top.json, which contains it" in e for _, e in loops.values())
    assert Library.requests.count("/sub3.json") == 1  # reached by two paths, fetched once
    assert (report.total, report.added) == (8, 5)  # five namings of three pictures, a canvas without one, two loops


def test_a_collection_listing_itself_is_refused_and_its_manifests_still_read(library):
    base, engine = library
    add(engine, "self", f"{base}/self.json")
    row = engine.images.get("self")
    assert [p.external_id for p in engine.images.pictures(row.id)] == [f"{base}/canvas2/green"]
    (failure,) = engine.images.pictures(row.id, errors=True)
    assert failure.error_code == "collection_loop" and "lists itself" in (failure.error or "")


def test_depth_and_count_limits_are_recorded_reasons(library, monkeypatch):
    base, engine = library
    monkeypatch.setattr(iiif_collection, "MAX_DEPTH", 3)
    add(engine, "deep", f"{base}/chain/1.json")
    row = engine.images.get("deep")
    codes = [p.error_code for p in engine.images.pictures(row.id, errors=True)]
    assert codes == ["collection_too_deep"]
    assert Library.requests.count("/chain/4.json") == 0
    monkeypatch.setattr(iiif_collection, "MAX_MANIFESTS", 1)
    add(engine, "few", f"{base}/top.json")
    row = engine.images.get("few")
    assert "collection_too_large" in [p.error_code for p in engine.images.pictures(row.id, errors=True)]
    assert {p.manifest for p in engine.images.pictures(row.id)} == {f"{base}/manifest.json"}  # the first reached
