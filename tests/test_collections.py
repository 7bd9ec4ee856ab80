"""Collections: pictures by folder, table, URL or IIIF, embedded once per model, scored and searched."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import create, draw_shape
from indexer.collections.local import Collections
from indexer.engine import Engine
from indexer.schema import parse
from indexer.schema.collections import AddSources, AnalysisRow, CreateCollection
from test_e2e_serve import command

SHAPES = [(c, s) for c in ("red", "blue", "green", "yellow") for s in ("circle", "square", "triangle")]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "scans"
    (root / "room-2").mkdir(parents=True)
    for i, (colour, shape) in enumerate(SHAPES):
        where = root / "room-2" if i % 2 else root
        draw_shape(colour, shape).save(where / f"{colour}-{shape}.png")
    (root / "notes.txt").write_text("not a picture, not counted")
    return root


def add(engine: Engine, name: str, *sources: str):
    return Collections(engine).add(name, parse(AddSources, {"sources": list(sources)}))


def new(engine: Engine, name: str = "museum"):
    return Collections(engine).create(parse(CreateCollection, {"name": name}))


def test_a_folder_and_a_table_are_added_once_and_a_rerun_does_only_what_is_missing(engine: Engine, folder: Path, tmp_path: Path):
    new(engine)
    first = add(engine, "museum", str(folder))
    assert (first.total, first.added, first.skipped, first.failed, first.encoded) == (12, 12, 0, 0, 12)
    again = add(engine, "museum", str(folder))
    assert (again.added, again.skipped, again.encoded) == (0, 12, 0)
    table = tmp_path / "objects.csv"  # the catalogue names two of the same files: ids and metadata follow it
    table.write_text("image,external_id,title\nscans/red-circle.png,OBJ-1,Red\nscans/room-2/blue-circle.png,OBJ-2,Blue\n")
    third = add(engine, "museum", str(table))
    assert (third.added, third.skipped, third.relabelled, third.encoded) == (0, 2, 2, 0)
    copy = tmp_path / "copy" / "same-picture.png"
    copy.parent.mkdir()
    copy.write_bytes((folder / "red-circle.png").read_bytes())
    fourth = add(engine, "museum", str(copy))
    assert (fourth.added, fourth.encoded) == (1, 0)  # same content, new source: stored, not encoded again
    view = Collections(engine).view("museum", limit=100)
    assert view.collection.size == 13 and view.collection.failed == 0
    by_id = {p.external_id: p for p in view.pictures}
    assert by_id["OBJ-1"].metadata == {"title": "Red"} and by_id["OBJ-1"].width == 128
    assert by_id["same-picture.png"].sha256 == by_id["OBJ-1"].sha256 and "OBJ-2" in by_id


def test_a_picture_is_encoded_once_per_model_whatever_brings_it(engine: Engine, folder: Path, toy, monkeypatch):
    encoded = []
    original = toy.encode_image_tensors
    monkeypatch.setattr(toy, "encode_image_tensors", lambda t: encoded.append(len(t)) or original(t))
    new(engine, "a"), new(engine, "b")
    add(engine, "a", str(folder))
    add(engine, "b", str(folder / "room-2"))
    engine.analyze(folder / "red-circle.png", ["qualities"])
    engine.compare(folder / "red-circle.png", ["a red circle", "a blue square"])
    assert sum(encoded) == 12


def test_failures_are_recorded_with_reasons_and_never_stop_a_run(engine: Engine, folder: Path, tmp_path: Path):
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    no_image = tmp_path / "no-image-column.csv"
    no_image.write_text("file,external_id\na.png,1\n")
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"image": "broken.png", "external_id": "B-1"}) + "\n"
                    + json.dumps({"image": "missing.png", "external_id": "M-1"}) + "\n"
                    + json.dumps({"image": str(folder / "red-circle.png"), "external_id": "R-1", "room": 3}) + "\n")
    not_json = tmp_path / "manifest.json"
    not_json.write_text("<html>not a manifest</html>")
    new(engine)
    report = add(engine, "museum", str(rows), str(no_image), str(tmp_path / "nowhere"), str(not_json))
    assert report.added == 1 and report.failed == 5
    errors = {p.source.split("/")[-1]: p for p in Collections(engine).view("museum", errors=True).pictures}
    assert errors["broken.png"].error_code == "unsupported_image" and errors["broken.png"].external_id == "B-1"
    assert errors["missing.png"].error_code == "file_not_found"
    assert errors["no-image-column.csv"].error_code == "invalid_source" and "no `image` column" in errors["no-image-column.csv"].error
    assert errors["nowhere"].error_code == "source_not_found"
    assert errors["manifest.json"].error_code == "invalid_manifest"
    ok = Collections(engine).view("museum").pictures
    assert [(p.external_id, p.metadata) for p in ok] == [("R-1", {"room": 3})]
    (tmp_path / "broken.png").write_bytes((folder / "blue-square.png").read_bytes())  # fixed at the source
    assert add(engine, "museum", str(rows)).added == 1  # failures are retried; stored pictures are not


def test_analyze_scores_stored_embeddings_like_analyzing_each_picture(engine: Engine, folder: Path, tmp_path: Path):
    new(engine)
    add(engine, "museum", str(folder))
    create(engine, "shapes", [f"a {c} {s}" for c, s in SHAPES], templates=["{}"])
    rows = list(Collections(engine).analyze("museum", ["shapes", "qualities"], top_k=3))
    assert len(rows) == 12 * 2 * 3
    red = [r for r in rows if r.external_id == "red-circle.png" and r.vocabulary == "shapes"]
    assert [r.rank for r in red] == [1, 2, 3] and red[0].phrase == "a red circle" and red[0].softmax_over == 12
    direct = engine.analyze(folder / "red-circle.png", ["shapes"], top_k=3).results["shapes"].matches
    for row, match in zip(red, direct):
        assert row.phrase == match.phrase and abs(row.probability - match.probability) < 1e-6
    from indexer.collections.tables import write_blocks

    for suffix in (".parquet", ".csv", ".jsonl"):
        out = tmp_path / f"scores{suffix}"
        assert write_blocks(Collections(engine).analyze_blocks("museum", ["shapes"], top_k=2), out, AnalysisRow) == 24
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "scores.parquet").to_pylist()
    assert table[0]["rank"] == 1 and set(table[0]) == set(AnalysisRow.model_fields)
    lines = (tmp_path / "scores.jsonl").read_text().splitlines()
    assert len(lines) == 24 and json.loads(lines[0])["vocabulary"] == "shapes"
    assert (tmp_path / "scores.csv").read_text().splitlines()[0].startswith("external_id,source,sha256,vocabulary")


def test_parquet_csv_json_lines_and_the_api_stream_hold_the_same_rows(engine: Engine, folder: Path, tmp_path: Path):
    """Every output of `collection analyze` holds the same rows, in the same order: the JSON Lines
    file and the API's stream are, byte for byte, json.dumps of the Parquet file's rows."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from indexer.settings import Settings
    from indexer.collections.tables import _arrow_schema, write_blocks
    from service import create_app

    new(engine)
    add(engine, "museum", str(folder))
    create(engine, "shapes", [{"term": f"{c} {s}", "external_id": f"S-{i}" if i % 3 else None}
                              for i, (c, s) in enumerate(SHAPES)] + ['a "quoted" \\ term', "ünï 🎨"], templates=["a {}"])
    vocabs = ["shapes", "qualities"]
    for suffix in (".parquet", ".csv", ".jsonl"):
        assert write_blocks(Collections(engine).analyze_blocks("museum", vocabs, top_k=3), tmp_path / f"s{suffix}", AnalysisRow) == 72
    rows = pq.read_table(tmp_path / "s.parquet").to_pylist()
    assert [list(r) for r in rows[:1]] == [list(AnalysisRow.model_fields)] and len(rows) == 72
    assert any(r["phrase_external_id"] is None for r in rows) and any(r["phrase_external_id"] for r in rows)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    assert (tmp_path / "s.jsonl").read_text(encoding="utf-8") == text
    assert [r.model_dump() for r in Collections(engine).analyze("museum", vocabs, top_k=3)] == rows
    options = pacsv.ConvertOptions(column_types=_arrow_schema(AnalysisRow), strings_can_be_null=True)
    assert pacsv.read_csv(tmp_path / "s.csv", convert_options=options).to_pylist() == rows
    import dataclasses

    client = create_app(dataclasses.replace(Settings.from_env(), api_tokens=("t",)), engine=engine).test_client()
    body = {"vocabularies": "shapes,qualities", "top_k": 3}
    streamed = client.post("/v1/collections/museum/analyze", json=body, headers={"Authorization": "Bearer t"})
    assert streamed.status_code == 200 and streamed.get_data(as_text=True) == text
    # a reader without write access: the same rows, the paths relative to the folder they share
    anonymous = client.post("/v1/collections/museum/analyze", json=body)
    assert anonymous.get_data(as_text=True) == text.replace(f"{folder.resolve()}/", "")


def test_json_lines_are_what_json_dumps_writes_row_by_row():
    import pyarrow as pa

    from indexer.collections.tables import json_lines

    floats = [0.0, -0.0, 1.0, -3.0, 2.5, 1e-4, 9.99e-5, 1.2345e-5, 5e-324, 1e9, 999999999.5, 1e16, 1.7976931348623157e308,
              0.1, 1 / 3, float("nan"), float("inf"), -float("inf"), None, 0.0021023526440024465, -0.00872, 123456.789]
    rng = np.random.default_rng(0)
    floats += list(np.exp(-rng.uniform(0, 700, 500))) + list(rng.normal(0, 1e6, 500)) + list(rng.random(500).astype(np.float32))
    strings = ["", "plain", 'a "quote"', "back\\slash", "nl\nx", "tab\t", "ctl\x01\x1f", "\x7f", "ünï 🎨", "\u2028", "/", None]
    n = len(floats)
    batch = pa.record_batch({
        "s": pa.array([strings[i % len(strings)] for i in range(n)], pa.string()),
        "n": pa.array([None if i == 3 else i * 7919 - 10**12 for i in range(n)], pa.int64()),
        "x": pa.array([None if f is None else float(f) for f in floats], pa.float64()),
        "f": pa.array(np.resize(np.array([0.1, 2.0, 1e-5, 3.25], np.float32), n), pa.float32()),
    })
    want = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in batch.to_pylist())
    assert json_lines(batch).decode("utf-8") == want
    sliced = batch.slice(7, 5)
    assert json_lines(sliced).decode("utf-8") == "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in sliced.to_pylist())
    assert json_lines(batch.slice(0, 0)) == b""


def test_reading_embeddings_in_chunks_keeps_to_the_collection_in_order(engine: Engine):
    from indexer.store.image_store import Picture
    from indexer.scoring.softmax import normalise

    images = engine.images
    a, b = images.create("a"), images.create("b")
    rng = np.random.default_rng(1)
    for i in range(10):  # interleaved: the collections' ids alternate
        for row in (a, b):
            sha = f"{row.name}-{i}"
            images.record(row.id, [Picture(f"{row.name}/{i}", f"{row.name.upper()}-{i}", None, sha, 1, 1)], "m",
                          {sha: normalise(rng.normal(size=4))})
    images.record(a.id, [Picture("a/broken", error_code="unsupported_image", error="no")], "m", {})  # no embedding
    for row in (a, b):
        chunks = list(images.vector_columns(row.id, "m", chunk=3))
        assert [len(c.source) for c in chunks] == [3, 3, 3, 1]
        assert sum((c.source for c in chunks), []) == [f"{row.name}/{i}" for i in range(10)]
        assert sum((c.external_id for c in chunks), []) == [f"{row.name.upper()}-{i}" for i in range(10)]
        pictures = [p for v in images.vectors(row.id, "m", chunk=4) for p in v.pictures]
        assert [p.source for p in pictures] == [f"{row.name}/{i}" for i in range(10)] and pictures[0].width == 1
        assert np.array_equal(np.concatenate([c.matrix for c in chunks]), np.concatenate([v.matrix for v in images.vectors(row.id, "m")]))
    empty = images.create("empty")
    assert list(images.vector_columns(empty.id, "m")) == [] and list(images.vectors(empty.id, "m")) == []


def test_reading_ahead_hands_over_errors_and_stops_with_its_consumer():
    import threading

    from indexer.collections.local import ahead

    def failing():
        yield 1
        raise ValueError("broken")

    got = []
    with pytest.raises(ValueError, match="broken"):
        for x in ahead(failing()):
            got.append(x)
    assert got == [1]
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    stream = ahead(endless(), depth=2)
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    stream.close()  # the thread ends, and it stops producing
    assert not [t for t in threading.enumerate() if t.name == "clip-gaze-read-ahead"]
    assert len(produced) <= 3 + 2 + 1


def test_search_by_phrase_and_by_picture(engine: Engine, folder: Path):
    new(engine)
    add(engine, "museum", str(folder))
    by_text = Collections(engine).search("museum", text="a green triangle", top_k=3)
    assert by_text.exact and by_text.searched == 12 and by_text.hits[0].external_id == "green-triangle.png"
    assert by_text.hits[0].cosine >= by_text.hits[1].cosine
    by_image = Collections(engine).search("museum", image=draw_shape("yellow", "square"), top_k=1)
    assert by_image.hits[0].external_id.endswith("yellow-square.png")


def test_the_approximate_index_keeps_recall_above_0_95():
    from indexer.collections.search import build_search_index
    from indexer.scoring.softmax import normalise

    rng = np.random.default_rng(0)
    centres = normalise(rng.normal(size=(256, 64)))
    data = normalise(centres[rng.integers(0, 256, 20_000)] + 0.2 * rng.normal(size=(20_000, 64)))
    queries = normalise(centres[rng.integers(0, 256, 100)] + 0.2 * rng.normal(size=(100, 64)))  # not in the data
    exact = build_search_index(data)
    approx = build_search_index(data, exact_limit=1000)
    _, truth = exact.search(queries, 10)
    _, found = approx.search(queries, 10)
    recall = np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found)])
    assert recall >= 0.95, recall


def test_an_existing_store_upgrades_in_place(tmp_path: Path, toy_loader):
    import sqlite_utils

    from indexer.store.migrations import migrations

    home = tmp_path / "old"
    home.mkdir()
    db = sqlite_utils.Database(home / "clip-gaze.db")
    migrations.apply(db, stop_before="002_collections")  # a store made by clip-gaze 1.0
    db.conn.close()
    engine = Engine(home, "toy", loader=toy_loader)
    create(engine, "mine", ["a red circle"])
    new(engine)
    tables = {r[0] for r in sqlite3.connect(home / "clip-gaze.db").execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"vocabularies", "phrases", "embeddings", "collections", "collection_images", "image_embeddings", "jobs"} <= tables
    indexes = {r[0] for r in sqlite3.connect(home / "clip-gaze.db").execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert "image_embeddings_keys" in indexes  # 003: which pictures lack an embedding, without reading vectors


@pytest.mark.e2e
def test_sigkill_in_the_middle_of_an_add_loses_nothing_committed_and_a_rerun_finishes(tmp_path: Path):
    root = tmp_path / "many"
    root.mkdir()
    for i in range(240):
        colour, shape = SHAPES[i % len(SHAPES)]
        draw_shape(colour, shape, size=96 + i).save(root / f"{i:03d}.png")
    env = {**os.environ, "CLIP_GAZE_HOME": str(tmp_path / "home"), "CLIP_GAZE_MODEL": "toy"}
    subprocess.run(command(["clip-gaze", "collection", "create", "many"]), env=env, check=True, capture_output=True)
    proc = subprocess.Popen(command(["clip-gaze", "collection", "add", "many", str(root), "--batch-size", "4"]), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    db_path = tmp_path / "home" / "clip-gaze.db"

    def stored() -> int:
        con = sqlite3.connect(db_path, timeout=30)
        try:
            return con.execute("SELECT count(*) FROM collection_images WHERE sha256 IS NOT NULL").fetchone()[0]
        finally:
            con.close()

    deadline = time.monotonic() + 120
    while stored() < 8 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    before = stored()
    assert 0 < before <= 240
    con = sqlite3.connect(db_path)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert before % 4 == 0 or before == 240  # whole batches only
    con.close()
    done = subprocess.run(command(["clip-gaze", "collection", "add", "many", str(root), "--json"]), env=env,
                          capture_output=True, text=True, timeout=300)
    report = json.loads(done.stdout)
    assert done.returncode == 0 and report["skipped"] == before and report["added"] == 240 - before
    assert stored() == 240


def test_relative_to_a_collection_on_analyze_collection_analyze_the_api_and_the_cli(engine: Engine, folder: Path, tmp_path: Path):
    from click.testing import CliRunner

    from indexer.errors import NotFound

    new(engine, "reference")
    add(engine, "reference", str(folder))
    create(engine, "shapes", [f"a {c} {s}" for c, s in SHAPES], templates=["{}"])
    plain = engine.analyze(folder / "red-circle.png", ["shapes"], top_k=3).results["shapes"]
    fair = engine.analyze(folder / "red-circle.png", ["shapes"], top_k=3, relative_to="reference").results["shapes"]
    assert plain.relative_to is None and "relative_to" not in plain.json_dict()
    info = fair.relative_to
    assert info is not None and (info.method, info.collection, info.reference_pictures) == ("zscore", "reference", 12)
    assert fair.matches[0].phrase == "a red circle" and fair.matches[0].cosine == plain.matches[0].cosine
    with pytest.raises(NotFound) as exc:
        engine.analyze(folder / "red-circle.png", ["shapes"], relative_to="nope")
    assert exc.value.code == "unknown_collection"
    rows = list(Collections(engine).analyze("reference", ["shapes"], top_k=1, relative_to="reference"))
    assert len(rows) == 12 and all(r.phrase.endswith(r.external_id.split("/")[-1].removesuffix(".png").replace("-", " "))
                                   for r in rows)
    from service import create_app
    from indexer.settings import Settings

    client = create_app(Settings.from_env(), engine=engine).test_client()
    resp = client.post("/v1/analyze", data={"image": ((folder / "red-circle.png").open("rb"), "r.png"),
                                            "vocabularies": "shapes", "relative_to": "reference", "top_k": "1"})
    body = resp.get_json()
    assert resp.status_code == 200 and body["results"]["shapes"]["relative_to"]["reference_pictures"] == 12
    import base64

    picture = base64.b64encode((folder / "red-circle.png").read_bytes()).decode()
    missing = client.post("/v1/analyze", json={"image_base64": picture, "relative_to": "nope"})
    assert missing.status_code == 422 and missing.get_json()["code"] == "unknown_collection"
    from clip_gaze.cli import cli

    result = CliRunner().invoke(cli, ["analyze", str(folder / "red-circle.png"), "--vocab", "shapes", "--relative-to", "nope"])
    assert result.exit_code == 1 and "no collection named 'nope'" in result.stderr
