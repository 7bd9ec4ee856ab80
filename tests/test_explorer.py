"""The explorer's API against ground truth: thumbnails by content, a picture's record, the map (one
point per stored picture, computed again when the collection changes, later pictures placed), scores
and facets equal to what `collection analyze` computes, `where` filters, and bad input."""

from __future__ import annotations

import io
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import create, draw_shape, service_engine
from indexer.collections.local import Collections
from indexer.explore.layout import layout, place_by_neighbours
from hypothesis import given, settings, strategies as st

from indexer.explore.where import Above, Column, Top, parse_where
from indexer.errors import InvalidInput
from indexer.schema import parse
from indexer.schema.collections import AddSources, CreateCollection
from indexer.schema.explore import WHERE_PATTERN
from indexer.settings import Settings
from service import create_app

# Under pytest-xdist, the explorer's tests (and its page's) on one worker: their UMAP layouts compile umap's
# numba code once a process (about ten seconds), so one worker compiles it rather than both.
pytestmark = pytest.mark.xdist_group("umap")
TOKEN = "s3cret-token"
COLOURS = ("red", "blue", "green", "yellow")
SHAPES = ("circle", "square", "triangle", "star")
PHRASES = [f"a {c} {s}" for c in COLOURS for s in SHAPES]


@pytest.fixture
def engine(clean_environ, toy_loader, monkeypatch):
    return service_engine(toy_loader, monkeypatch, TOKEN)


def make_folder(root: Path, pictures: list[tuple[str, str]], start: int = 0) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rows = ["image,external_id,colour,shape"]
    for i, (colour, shape) in enumerate(pictures, start):
        draw_shape(colour, shape, size=160 + i).save(root / f"{i:02d}-{colour}-{shape}.png")
        rows.append(f"{i:02d}-{colour}-{shape}.png,OBJ-{i},{colour},{shape}")
    (root / "objects.csv").write_text("\n".join(rows) + "\n")
    return root / "objects.csv"


@pytest.fixture
def museum(engine, tmp_path):
    create(engine, "shapes", PHRASES)
    collections = Collections(engine)
    collections.create(parse(CreateCollection, {"name": "museum"}))
    table = make_folder(tmp_path / "scans", [(c, s) for c in COLOURS for s in SHAPES[:3]])
    report = collections.add("museum", parse(AddSources, {"sources": [str(table)]}))
    assert report.added == 12
    return collections


@pytest.fixture
def client(engine, museum):
    app = create_app(Settings.from_env(), engine=engine)
    app.config["TESTING"] = True
    return app.test_client()


def is_error(resp, status: int, code: str):
    body = resp.get_json()
    assert resp.status_code == status, body
    assert set(body) == {"ok", "status", "code", "error"} and body["ok"] is False and body["code"] == code, body
    return body


def wait_map(client, name: str = "museum") -> dict:
    deadline = time.monotonic() + 300  # UMAP's first call in a process compiles (numba): slow on a loaded machine
    while time.monotonic() < deadline:
        body = client.get(f"/v1/collections/{name}/map").get_json()
        if body["job"] is None and body["version"] == body["current_version"]:
            return body
        time.sleep(0.05)
    raise AssertionError(body)


def analyze_rows(museum: Collections, vocabulary: str, top_k: int, relative_to: str | None = None):
    return list(museum.analyze("museum", [vocabulary], top_k=top_k, relative_to=relative_to))


# -- thumbnails and records ------------------------------------------------------------------------
def test_each_picture_has_a_small_thumbnail_served_by_its_hash_and_a_record(client, museum):
    pictures = museum.view("museum").pictures
    for p in pictures:
        resp = client.get(f"/v1/collections/museum/pictures/{p.sha256}/thumbnail")
        assert resp.status_code == 200 and resp.mimetype == "image/webp"
        assert resp.headers["ETag"] == f'"{p.sha256}"' and "max-age" in resp.headers["Cache-Control"]
        img = Image.open(io.BytesIO(resp.data))
        assert max(img.size) <= 256 and len(resp.data) < 12_000
    again = client.get(f"/v1/collections/museum/pictures/{p.sha256}/thumbnail", headers={"If-None-Match": f'"{p.sha256}"'})
    assert again.status_code == 304
    record = client.get(f"/v1/collections/museum/pictures/{p.sha256}").get_json()
    assert record["ok"] and record["external_id"] == p.external_id and record["metadata"] == p.metadata
    assert record["source"] == Path(p.source).name and record["width"]  # without a write token: no server folder
    assert record["width"] == p.width and record["thumbnail"].endswith("/thumbnail")
    is_error(client.get("/v1/collections/museum/pictures/" + "0" * 64), 404, "unknown_picture")
    is_error(client.get("/v1/collections/nope/pictures/" + "0" * 64 + "/thumbnail"), 404, "unknown_collection")


def test_a_re_add_makes_the_thumbnails_that_are_missing(engine, museum, tmp_path):
    engine.store.db.execute("DELETE FROM thumbnails")
    engine.store.db.conn.commit()
    report = museum.add("museum", parse(AddSources, {"sources": [str(tmp_path / "scans" / "objects.csv")]}))
    assert (report.added, report.skipped, report.encoded) == (0, 12, 0)
    count = engine.store.db.execute("SELECT count(*) FROM thumbnails").fetchone()[0]
    assert count == 12


# -- the map ------------------------------------------------------------------------------------------
def test_the_map_is_a_job_then_one_point_per_picture_and_is_computed_again_when_the_collection_changes(client, museum, tmp_path):
    first = client.get("/v1/collections/museum/map")
    assert first.status_code == 202 and first.get_json()["job"]["kind"] == "map" and first.get_json()["points"] == []
    job = first.get_json()["job"]["id"]
    body = wait_map(client)
    assert client.get(f"/v1/jobs/{job}").get_json()["job"]["state"] == "done"
    shas = [p.sha256 for p in museum.view("museum").pictures]
    assert [p["sha256"] for p in body["points"]] == shas and body["size"] == 12 and body["method"] == "umap"
    assert all(0 <= p["x"] <= 1 and 0 <= p["y"] <= 1 for p in body["points"])
    # two more pictures: the stored layout keeps its points and places them
    more = make_folder(tmp_path / "more", [("red", "star"), ("blue", "star")], start=20)
    museum.add("museum", parse(AddSources, {"sources": [str(more)]}))
    stale = client.get("/v1/collections/museum/map").get_json()
    assert stale["version"] == body["version"] and stale["job"] is not None and len(stale["points"]) == 12
    assert body["index"] is None and stale["index"] == list(range(12))  # the scores' positions of the older points
    after = wait_map(client)
    assert after["size"] == 14 and after["version"] > body["version"]
    old = {p["sha256"]: (p["x"], p["y"]) for p in body["points"]}
    assert all(old[p["sha256"]] == (p["x"], p["y"]) for p in after["points"] if p["sha256"] in old)
    assert after["method"] in ("umap+transform", "umap+neighbours")
    arrow = client.get("/v1/collections/museum/map?format=arrow")
    import pyarrow as pa

    table = pa.ipc.open_stream(arrow.data).read_all()
    assert table.column_names == ["sha256", "external_id", "x", "y", "index"] and table.num_rows == 14
    assert [b.hex() for b in table.column("sha256").to_pylist()] == [p["sha256"] for p in after["points"]]
    assert table.column("index").to_pylist() == list(range(14))
    assert table.column("external_id").to_pylist() == [p["external_id"] for p in after["points"]]
    xs = np.array([p["x"] for p in after["points"]])
    assert np.abs(table.column("x").to_numpy() - xs).max() <= 0.5 / 65536 + 1e-7  # float32 rounded to 1/65536


def test_the_maps_body_is_kept_with_an_etag_and_its_columns_chosen(client, museum):
    import pyarrow as pa

    body = wait_map(client)
    first = client.get("/v1/collections/museum/map?format=arrow&fields=index,x,y", headers={"Accept-Encoding": "gzip"})
    assert first.status_code == 200 and first.mimetype == "application/vnd.apache.arrow.stream"
    etag = first.headers["ETag"]
    table = pa.ipc.open_stream(first.data).read_all()  # small: not compressed
    assert table.column_names == ["x", "y", "index"] and table.column("index").to_pylist() == list(range(12))
    meta = {k.decode(): v.decode() for k, v in table.schema.metadata.items()}
    assert meta["collection"] == '"museum"' and meta["size"] == "12" and meta["method"] == '"umap"'
    assert client.get("/v1/collections/museum/map?format=arrow&fields=index,x,y",
                      headers={"If-None-Match": etag}).status_code == 304
    other = client.get("/v1/collections/museum/map?format=arrow&fields=sha256,x,y")
    assert other.headers["ETag"] != etag and pa.ipc.open_stream(other.data).read_all().column_names == ["sha256", "x", "y"]
    plain = client.get("/v1/collections/museum/map")
    assert plain.get_json() == body and client.get("/v1/collections/museum/map",
                                                   headers={"If-None-Match": plain.headers["ETag"]}).status_code == 304
    is_error(client.get("/v1/collections/museum/map?fields=x,y"), 400, "invalid_input")  # the JSON points are whole
    is_error(client.get("/v1/collections/museum/map?format=arrow&fields=x,colour"), 400, "invalid_input")


def test_layouts_of_few_pictures_and_placement_by_neighbours():
    rng = np.random.default_rng(1)
    for n in (0, 1, 2, 3):
        xy, method, fitted = layout(rng.normal(size=(n, 8)).astype(np.float32))
        assert xy.shape == (n, 2) and method == "trivial" and fitted is None and ((0 <= xy) & (xy <= 1)).all()
    data = rng.normal(size=(6, 8)).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    xy, method, _ = layout(data)
    assert method == "umap" and xy.shape == (6, 2) and ((0 <= xy) & (xy <= 1)).all()
    placed = place_by_neighbours(data, xy, data[:2], k=1)
    assert np.allclose(placed, xy[:2])


# -- scores and facets against analysis -----------------------------------------------------------------
def test_scores_equal_the_probabilities_collection_analyze_computes(client, museum):
    body = client.get("/v1/collections/museum/scores", query_string={"vocabulary": "shapes", "phrase": "a red circle"}).get_json()
    assert body["softmax_over"] == 16 and body["size"] == body["matched"] == 12 and body["index"] is None
    rows = analyze_rows(museum, "shapes", 16)
    by_sha = {(r.sha256, r.phrase): r for r in rows}
    shas = [p.sha256 for p in museum.view("museum").pictures]
    for sha, top, top_p, p in zip(shas, body["top"], body["top_probability"], body["probability"]):
        best = by_sha[next(k for k in by_sha if k[0] == sha and by_sha[k].rank == 1)]
        assert body["phrases"][top] == best.phrase and top_p == pytest.approx(best.probability, abs=1e-5)
        assert p == pytest.approx(by_sha[(sha, "a red circle")].probability, abs=1e-5)
    # another phrase of the same reading: one column against each picture's kept log-partition
    other = client.get("/v1/collections/museum/scores", query_string={"vocabulary": "shapes", "phrase": PHRASES[-1]}).get_json()
    assert other["top"] == body["top"]
    assert other["probability"] == pytest.approx([by_sha[(sha, PHRASES[-1])].probability for sha in shas], abs=1e-5)


def test_facet_counts_equal_counts_of_analysis_best_phrases_and_where_cross_filters(client, museum):
    body = client.get("/v1/collections/museum/facets?vocabulary=shapes").get_json()
    truth = Counter(r.phrase for r in analyze_rows(museum, "shapes", 1))
    assert {f["phrase"]: f["count"] for f in body["facets"]} == dict(truth)
    assert [f["count"] for f in body["facets"]] == sorted(truth.values(), reverse=True) and body["size"] == 12
    filtered = client.get("/v1/collections/museum/facets", query_string={"vocabulary": "shapes", "where": "colour=red"}).get_json()
    assert filtered["size"] == 3 and sum(f["count"] for f in filtered["facets"]) == 3
    column = client.get("/v1/collections/museum/facets", query_string={"column": "shape", "where": "colour=red"}).get_json()
    assert column["column"] == "shape" and column["softmax_over"] is None
    assert {f["phrase"]: f["count"] for f in column["facets"]} == {"circle": 1, "square": 1, "triangle": 1}
    is_error(client.get("/v1/collections/museum/facets?column=shape&vocabulary=shapes"), 400, "invalid_input")
    top = body["facets"][0]["phrase"]
    scores = client.get("/v1/collections/museum/scores", query_string=[("vocabulary", "shapes"), ("where", f"top:shapes={top}")]).get_json()
    assert scores["matched"] == body["facets"][0]["count"] and all(scores["phrases"][t] == top for t in scores["top"])
    above = client.get("/v1/collections/museum/scores", query_string={
        "vocabulary": "shapes", "phrase": "a red circle", "where": "shapes:a red circle>0.5 and colour=red"}).get_json()
    assert all(p > 0.5 for p in above["probability"]) and len(above["index"]) == above["matched"] <= 3


def test_relative_to_is_accepted_as_in_analysis(client, museum):
    first = client.get("/v1/collections/museum/scores", query_string={"vocabulary": "shapes", "relative_to": "museum"})
    assert first.status_code == 200  # the reading is kept: the phrase below is one corrected column after it
    body = client.get("/v1/collections/museum/scores", query_string={"vocabulary": "shapes", "phrase": "a red circle",
                                                                     "relative_to": "museum"}).get_json()
    rows = analyze_rows(museum, "shapes", 16, relative_to="museum")
    truth = {r.sha256: r.probability for r in rows if r.phrase == "a red circle"}
    shas = [p.sha256 for p in museum.view("museum").pictures]
    assert body["probability"] == pytest.approx([truth[s] for s in shas], abs=1e-5)


def test_where_parses_its_three_kinds_and_refuses_what_does_not(client):
    assert parse_where("colour=red and shapes:a red circle>=0.25 AND top:shapes=a red star") == [
        Column("colour", "red"), Above("shapes", "a red circle", ">=", 0.25), Top("shapes", "a red star")]
    for bad in ("colour", "shapes:a red circle>2", "shapes:x>abc", "top:shapes>0.3", "colour<3", "=x"):
        with pytest.raises(InvalidInput):
            parse_where(bad)
    is_error(client.get("/v1/collections/museum/facets?vocabulary=shapes&where=colour"), 400, "invalid_where")
    is_error(client.get("/v1/collections/museum/facets?vocabulary=nope"), 422, "unknown_vocabulary")
    is_error(client.get("/v1/collections/museum/scores?vocabulary=shapes&phrase=a+purple+cow"), 400, "unknown_phrase")
    is_error(client.get("/v1/collections/museum/scores?vocabulary=shapes&where=top:nope=x"), 422, "unknown_vocabulary")
    is_error(client.get("/v1/collections/museum/scores"), 400, "invalid_input")
    is_error(client.get("/v1/collections/nope/scores?vocabulary=shapes"), 404, "unknown_collection")


@settings(max_examples=400, deadline=None)
@given(st.from_regex(WHERE_PATTERN, fullmatch=True))
def test_every_where_the_document_allows_parses(text):
    """The document states `where` as a pattern; whatever it allows, the parser reads (a request the
    document allows is never refused for its `where`), and refuses only what names nothing stored."""
    assert parse_where(text)


def test_a_where_outside_the_documented_pattern_is_refused_before_it_is_read(client):
    for bad in ("image_service", "i.*", "x=a and", "shapes:a red circle>1.5", "top:shapes>0.3", "a=b  and c=d"):
        is_error(client.get("/v1/collections/museum/facets", query_string={"vocabulary": "shapes", "where": bad}),
                 400, "invalid_where")


def test_a_collection_without_embeddings_for_this_model_is_refused(client, engine):
    engine.store.db.execute("DELETE FROM image_embeddings")
    engine.store.db.conn.commit()
    is_error(client.get("/v1/collections/museum/facets?vocabulary=shapes"), 409, "not_indexed")
    is_error(client.get("/v1/collections/museum/map"), 409, "not_indexed")


def test_the_explorer_page_is_served_for_a_collection(client):
    page = client.get("/collections/museum")
    assert page.status_code == 200 and b"explorer.js" in page.data
    page.close()
    is_error(client.get("/collections/nope"), 404, "unknown_collection")


# -- search: cut-offs, query arithmetic ----------------------------------------------------------------
def test_search_with_cut_offs_and_more_like_these_less_like_those(client, museum):
    plain = client.get("/v1/collections/museum/search?q=a+red+circle&top_k=12").get_json()
    assert len(plain["hits"]) == 12
    cut = client.get("/v1/collections/museum/search?q=a+red+circle&top_k=12&min_cosine=0.5").get_json()
    assert cut["hits"] and all(h["cosine"] >= 0.5 for h in cut["hits"]) and len(cut["hits"]) < 12
    prob = client.get("/v1/collections/museum/search", query_string={"q": "a red circle", "vocabulary": "shapes",
                                                                     "min_probability": 0.5, "top_k": 12}).get_json()
    assert prob["softmax_over"] == 16 and all(h["probability"] >= 0.5 for h in prob["hits"])
    scores = client.get("/v1/collections/museum/scores", query_string={"vocabulary": "shapes", "phrase": "a red circle"}).get_json()
    assert len(prob["hits"]) == sum(p >= 0.5 for p in scores["probability"])
    red = plain["hits"][0]["sha256"]
    mixed = client.get("/v1/collections/museum/search", query_string=[("q", "a circle"), ("not", "a red shape"),
                                                                        ("unlike", red), ("top_k", "3")]).get_json()
    assert red not in [h["sha256"] for h in mixed["hits"]] and " - a red shape" in mixed["query"]
    like = client.get("/v1/collections/museum/search", query_string={"like": red, "top_k": 1}).get_json()
    assert like["hits"][0]["sha256"] == red
    is_error(client.get("/v1/collections/museum/search?min_probability=0.5&q=x"), 400, "invalid_input")
    is_error(client.get("/v1/collections/museum/search?like=" + "0" * 64), 422, "unknown_picture")
