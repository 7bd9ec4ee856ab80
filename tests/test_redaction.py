"""A reader who may not write sees no folder of the server (issue 27, 6): the local paths of a collection
the CLI or the library added are shown relative to the folder they share, in pictures, errors, search hits,
analysis rows and jobs; URLs as they are. A caller with a write token sees them whole."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import draw_shape, service_engine

from indexer.collections.local import Collections
from indexer.pictures.sources import local_root, shown_source, shown_text
from indexer.schema import parse
from indexer.schema.collections import AddSources, CreateCollection
from indexer.settings import Settings
from service import create_app

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_the_local_root_is_the_folder_every_local_source_shares():
    assert local_root("/srv/museum/scans/a.png", "/srv/museum/scans/room-2/b.png") == "/srv/museum/scans/"
    assert local_root("/srv/museum/scans/a.png", "/srv/museum/scans2/b.png") == "/srv/museum/"  # a folder, not a prefix
    assert local_root("/srv/a.png", "/srv/a.png") == "/srv/" and local_root(None, None) is None
    assert local_root("/a/x.png", "/b/y.png") == "/"


def test_a_source_is_shown_relative_to_the_root_and_a_url_as_it_is():
    root = "/srv/museum/scans/"
    assert shown_source("/srv/museum/scans/room-2/b.png#xywh=0,0,5,5", root) == "room-2/b.png#xywh=0,0,5,5"
    assert shown_source("/srv/museum/objects.csv:3", "/srv/museum/") == "objects.csv:3"
    assert shown_source("https://iiif.example.org/iiif/3/1/info.json", root) == "https://iiif.example.org/iiif/3/1/info.json"
    assert shown_source("./scnas/", root) == "./scnas/"  # as it was typed: no folder of the server in it
    assert shown_source("/elsewhere/c.png", root) == "c.png" and shown_source("/a/x.png", "/") == "x.png"


def test_a_message_loses_the_root_and_any_other_folder_but_keeps_its_urls():
    root = "/srv/museum/scans/"
    said = "cannot read /srv/museum/scans/room-2/b.png: Permission denied"
    assert shown_text(said, root) == "cannot read room-2/b.png: Permission denied"
    assert shown_text("no such file: /home/alice/x.png ('/etc/y')", root) == "no such file: x.png ('y')"
    url = "http://127.0.0.1:9/pics/a.png: refused, host 127.0.0.1 is a loopback address; 1/2 and/or"
    assert shown_text(url, root) == url and shown_text(None, root) is None
    assert shown_text("cannot read /a/x.png", "/") == "cannot read x.png"
    # folders whose names hold spaces go whole; the words after a path stay
    assert shown_text("cannot read /home/alice/My Scans/x.png", None) == "cannot read x.png"
    assert shown_text("copy /opt/a b/c.png to /d e/f.png: done", None) == "copy c.png to f.png: done"
    assert shown_text("/srv/in box/catalogue.csv, row 4: empty `image`", None) == "catalogue.csv, row 4: empty `image`"


@pytest.fixture
def museum(tmp_path: Path, toy_loader, monkeypatch):
    """A collection added by the library from a temporary folder and a table beside it, and the app."""
    engine = service_engine(toy_loader, monkeypatch, TOKEN)
    scans = tmp_path / "server-folders" / "scans"
    (scans / "room-2").mkdir(parents=True)
    draw_shape("red", "circle").save(scans / "red-circle.png")
    draw_shape("blue", "square").save(scans / "room-2" / "blue-square.png")
    (scans / "broken.png").write_bytes(b"not a picture")
    table = tmp_path / "server-folders" / "objects.jsonl"
    table.write_text(json.dumps({"image": "scans/missing.png", "external_id": "M-1"}) + "\n"
                     + json.dumps({"image": "http://127.0.0.1:9/elsewhere.png", "external_id": "U-1"}) + "\n"
                     + "not json\n")
    collections = Collections(engine)
    collections.create(parse(CreateCollection, {"name": "museum"}))
    report = collections.add("museum", parse(AddSources, {"sources": [str(scans), str(table)]}))
    assert (report.added, report.failed) == (2, 4)
    app = create_app(Settings.from_env(), engine=engine)
    return app.test_client(), tmp_path / "server-folders", engine


def _text(resp) -> str:
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.get_data(as_text=True)


@pytest.mark.parametrize("reader", ["anonymous", "read-key"])
def test_a_reader_without_write_access_sees_no_folder_of_the_server(museum, reader):
    """Anonymous, or with a key of the read and analyze scopes (a wrong key is refused: 401, tests/test_access.py)."""
    client, folders, engine = museum
    headers = {}
    if reader == "read-key":
        from indexer.store.keys import KeyStore

        headers = {"Authorization": "Bearer " + KeyStore(engine.store).create("reader", ["read", "analyze"])[1]}
    secret = str(folders.parent)
    pictures = client.get("/v1/collections/museum", headers=headers).get_json()["pictures"]
    assert sorted(p["source"] for p in pictures) == ["scans/red-circle.png", "scans/room-2/blue-square.png"]
    errors = client.get("/v1/collections/museum?errors=true", headers=headers)
    assert secret not in _text(errors)
    by_source = {p["source"]: p for p in errors.get_json()["pictures"]}
    assert set(by_source) == {"scans/broken.png", "scans/missing.png", "http://127.0.0.1:9/elsewhere.png",
                              "objects.jsonl:3"}
    assert by_source["scans/missing.png"]["error"].startswith("no such file: scans/missing.png")
    assert "objects.jsonl, line 3" in by_source["objects.jsonl:3"]["error"]
    assert by_source["http://127.0.0.1:9/elsewhere.png"]["error"].startswith("http://127.0.0.1:9/elsewhere.png")
    hits = client.get("/v1/collections/museum/search?q=a+blue+square&top_k=2", headers=headers)
    assert secret not in _text(hits) and hits.get_json()["hits"][0]["source"] == "scans/room-2/blue-square.png"
    rows = client.post("/v1/collections/museum/analyze", json={"vocabularies": "qualities", "top_k": 1}, headers=headers)
    assert secret not in _text(rows)
    assert {json.loads(line)["source"] for line in _text(rows).splitlines()} == {
        "scans/red-circle.png", "scans/room-2/blue-square.png"}


def test_a_caller_with_write_access_sees_the_paths_whole(museum):
    client, folders, _ = museum
    pictures = client.get("/v1/collections/museum", headers=AUTH).get_json()["pictures"]
    assert sorted(p["source"] for p in pictures) == sorted(
        str((folders / "scans" / p).resolve()) for p in ("red-circle.png", "room-2/blue-square.png"))
    errors = client.get("/v1/collections/museum?errors=true", headers=AUTH).get_json()["pictures"]
    assert any(p["error"].startswith(f"no such file: {folders.resolve()}/scans/missing.png") for p in errors)
    hit = client.get("/v1/collections/museum/search?q=a+red+circle&top_k=1", headers=AUTH).get_json()["hits"][0]
    assert hit["source"] == str((folders / "scans" / "red-circle.png").resolve())
    rows = client.post("/v1/collections/museum/analyze", json={"vocabularies": "qualities", "top_k": 1}, headers=AUTH)
    assert str(folders.resolve()) in _text(rows)


def test_a_jobs_error_loses_the_collections_folders_for_a_reader(museum):
    client, folders, engine = museum
    images = engine.images
    job = images.create_job("add_sources", "museum")
    images.update_job(job, state="failed", error=f"cannot read {folders.resolve()}/scans/room-2/x.png: denied")
    shown = client.get(f"/v1/jobs/{job}").get_json()["job"]
    assert shown["error"] == "cannot read scans/room-2/x.png: denied"
    assert client.get(f"/v1/jobs/{job}", headers=AUTH).get_json()["job"]["error"].startswith(f"cannot read {folders.resolve()}/")
    gone = images.create_job("add_sources", "deleted-since")
    images.update_job(gone, state="failed", error="cannot read /srv/museum/scans/y.png")
    assert client.get(f"/v1/jobs/{gone}").get_json()["job"]["error"] == "cannot read y.png"


def test_a_failed_warm_up_is_reported_by_health_without_the_servers_folders():
    from service.state import ServiceState

    state = ServiceState(Settings.from_env())
    state.warm_error = "no weights for vit-b-32 in /root/.cache/huggingface/hub/models--timm--vit (offline)"
    health = state.health()
    assert health.status == "error" and health.error == "no weights for vit-b-32 in models--timm--vit (offline)"
