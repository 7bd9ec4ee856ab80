"""CSV, TSV and JSON Lines sources by http(s) URL (issue 27, 6): known by their content type, else by
their path's suffix; read with a file's caps; their rows name pictures by URL, a relative one resolved
against the table's own URL, never a file of this machine. Every server is on a loopback port."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from conftest import draw_shape, encode
from iiif_server import QuietHandler, serving, toy_engine

import indexer.pictures.sources as sources
from indexer.collections.local import Collections
from indexer.pictures.fetch import FetchPolicy
from indexer.pictures.rows import MAX_LINE_BYTES
from indexer.pictures.sources import PictureRef, SourceFailure, expand
from indexer.schema import parse
from indexer.schema.collections import AddSources, CreateCollection
from indexer.settings import Settings
from service import create_app

TOKEN = "tables-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PICTURES = {"red": ("red", "circle"), "blue": ("blue", "square"), "green": ("green", "triangle")}
CSV = "image,external_id,title\npics/red.png,OBJ-1,Red\n/pics/blue.png,OBJ-2,Blue\n{base}/pics/green.png,OBJ-3,\n"
LINES = [{"image": "../pics/red.png", "external_id": 7, "room": 3}, "not json", {"image": "/etc/passwd"},
         {"image": "file:///etc/passwd", "external_id": "F"}, {"image": "pics/blue.png"}]


def handler() -> Any:
    class Handler(QuietHandler):
        requests: list[str] = []
        port = 0

        def do_GET(self) -> None:  # noqa: N802
            type(self).requests.append(self.path)
            base = f"http://127.0.0.1:{self.port}"
            path = self.path.split("?", 1)[0]
            lines = "\n".join(json.dumps(r) if isinstance(r, dict) else r for r in LINES) + "\n"
            long_line = json.dumps({"image": "pics/red.png", "pad": "x" * MAX_LINE_BYTES}) + "\n"
            bodies = {
                "/t.csv": ("text/csv; charset=utf-8", CSV.format(base=base)),
                "/t.tsv": ("text/tab-separated-values", CSV.format(base=base).replace(",", "\t")),
                "/rows/t.jsonl": ("application/x-ndjson", lines),
                "/rows/t2": ("application/jsonl", lines),
                "/rows/t3": ("application/json-lines", lines),
                "/plain/t.csv": ("text/plain", CSV.format(base=base)),
                "/octet/t.ndjson": ("application/octet-stream", lines),
                "/octet/long.jsonl": ("application/octet-stream", long_line + json.dumps({"image": "../pics/red.png"}) + "\n"),
                "/html/t.csv": ("text/html", CSV.format(base=base)),
                "/plain/no-suffix": ("text/plain", CSV.format(base=base)),
                "/no-image.csv": ("text/csv", "file,external_id\na.png,1\n"),
                "/latin1.csv": ("text/csv", None),
                "/moved.csv": ("redirect", f"{base}/rows/t.csv"),
                "/rows/t.csv": ("text/csv", "image\n../pics/green.png\n"),
            }
            if path.startswith("/pics/") and path.removeprefix("/pics/").removesuffix(".png") in PICTURES:
                colour, shape = PICTURES[path.removeprefix("/pics/").removesuffix(".png")]
                return self._send(200, "image/png", encode(draw_shape(colour, shape, size=96)))
            if path not in bodies:
                return self._send(404, "text/plain", b"not here")
            ctype, body = bodies[path]
            if ctype == "redirect":
                self.send_response(302)
                self.send_header("Location", body or "")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = "image\nå.png\n".encode("latin-1") if body is None else body.encode()
            self._send(200, ctype, data)

    return Handler


@pytest.fixture
def tables():
    with serving(handler()) as base:
        yield base


def policy(base: str) -> FetchPolicy:
    return FetchPolicy(allow=frozenset({base.removeprefix("http://")}), timeout=5.0)


def named(base: str, path: str) -> list[Any]:
    return list(expand(f"{base}{path}", policy(base)))


@pytest.mark.parametrize("path", ["/t.csv", "/t.tsv", "/plain/t.csv"])
def test_a_csv_by_url_is_read_as_a_table_by_its_type_or_its_suffix(tables: str, path: str):
    items = named(tables, path)
    folder = tables + path.rsplit("/", 1)[0]
    assert items == [
        PictureRef(f"{folder}/pics/red.png", "url", "OBJ-1", {"title": "Red"}),  # relative to the table's URL
        PictureRef(f"{tables}/pics/blue.png", "url", "OBJ-2", {"title": "Blue"}),  # an absolute path: on that host
        PictureRef(f"{tables}/pics/green.png", "url", "OBJ-3", None),
    ]


@pytest.mark.parametrize("path", ["/rows/t.jsonl", "/rows/t2", "/rows/t3", "/octet/t.ndjson"])
def test_json_lines_by_url_name_pictures_by_url_never_files_here(tables: str, path: str):
    items = named(tables, path)
    assert items[0] == PictureRef(f"{tables}/pics/red.png", "url", "7", {"room": 3})
    bad, passwd, file_url, blue = items[1:]
    assert isinstance(bad, SourceFailure) and bad.source == f"{tables}{path}#line=2" and "not JSON" in bad.error
    assert passwd == PictureRef(f"{tables}/etc/passwd", "url")  # a URL on the table's host, not /etc/passwd here
    assert isinstance(file_url, SourceFailure) and file_url.code == "invalid_source" and "not an http(s) URL" in file_url.error
    assert file_url.external_id == "F"
    base = tables + path.rsplit("/", 1)[0]
    assert blue == PictureRef(f"{base}/pics/blue.png", "url")
    assert not any(isinstance(i, PictureRef) and i.kind == "file" for i in items)


def test_a_table_by_url_has_a_files_caps_and_a_manifests_size(tables: str, monkeypatch: pytest.MonkeyPatch):
    long, red = named(tables, "/octet/long.jsonl")
    assert isinstance(long, SourceFailure) and long.source.endswith("#line=1") and "the limit for a line" in long.error
    assert red == PictureRef(f"{tables}/pics/red.png", "url")
    monkeypatch.setattr(sources, "MAX_MANIFEST_BYTES", 100)
    [too_large] = named(tables, "/t.csv")
    assert isinstance(too_large, SourceFailure) and too_large.code == "too_large" and "100 bytes" in too_large.error


def test_what_is_not_a_table_or_a_document_is_said_so(tables: str):
    [html] = named(tables, "/html/t.csv")
    assert isinstance(html, SourceFailure) and html.code == "unexpected_content_type"
    [plain] = named(tables, "/plain/no-suffix")  # text/plain without a table's suffix: read as JSON, as before
    assert isinstance(plain, SourceFailure) and plain.code == "invalid_json_document"
    [no_image] = named(tables, "/no-image.csv")
    assert no_image.code == "invalid_source" and "no `image` column" in no_image.error
    [latin] = named(tables, "/latin1.csv")
    assert latin.code == "invalid_source" and "not UTF-8" in latin.error


def test_a_redirected_table_resolves_its_rows_against_where_it_was_found(tables: str):
    assert named(tables, "/moved.csv") == [PictureRef(f"{tables}/pics/green.png", "url")]


def test_a_csv_by_url_fills_a_collection_through_the_api(tables: str, clean_environ, toy_loader, monkeypatch):
    monkeypatch.setenv("CLIP_GAZE_FETCH_ALLOW", tables.removeprefix("http://"))
    monkeypatch.setenv("CLIP_GAZE_API_TOKENS", TOKEN)
    engine = toy_engine(toy_loader)
    client = create_app(Settings.from_env(), engine=engine).test_client()
    assert client.post("/v1/collections", json={"name": "tables"}, headers=AUTH).status_code == 201
    resp = client.post("/v1/collections/tables/sources", json={"sources": [f"{tables}/t.csv"]}, headers=AUTH)
    assert resp.status_code == 202, resp.get_json()
    job = resp.get_json()["job"]
    for _ in range(600):
        job = client.get(f"/v1/jobs/{job['id']}").get_json()["job"]
        if job["state"] in ("done", "failed"):
            break
        time.sleep(0.05)
    assert job["state"] == "done", job
    view = client.get("/v1/collections/tables?limit=100").get_json()
    by_id = {p["external_id"]: p for p in view["pictures"]}
    assert by_id["OBJ-1"]["source"] == f"{tables}/pics/red.png" and by_id["OBJ-1"]["metadata"] == {"title": "Red"}
    assert set(by_id) == {"OBJ-1", "OBJ-2", "OBJ-3"} and (job["done"], job["failed"]) == (3, 0)
    hit = client.get("/v1/collections/tables/search?q=a+blue+square&top_k=1").get_json()["hits"][0]
    assert hit["source"].endswith("/pics/blue.png")
    # and through the library, as the CLI adds it
    Collections(engine).create(parse(CreateCollection, {"name": "again"}))
    report = Collections(engine).add("again", parse(AddSources, {"sources": [f"{tables}/t.tsv"]}))
    assert (report.added, report.failed) == (3, 0)
