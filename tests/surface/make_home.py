"""Writes tests/surface/home/: a data directory as clip-gaze wrote it before `indexer/` was laid out in
rooms (run once, on commit 1e565e7, with `python tests/surface/make_home.py`). tests/test_surface.py
opens a copy of it with the code under test: what it holds must still read the same.

It holds two custom vocabularies (one with external ids and metadata, one with two templates), two
built-in ones (surfaces, qualities), the toy model's phrase embeddings, a collection added from the
examples folder and a CSV catalogue (with a row whose picture is missing and a row with none), a
second collection added through the REST API as a background job (so a job row) from a IIIF
manifest served on a loopback port, and both collections' picture embeddings.

Rewriting it changes what the surface test compares against: regenerate the golden answers after it
(`CLIP_GAZE_SURFACE_UPDATE=1 python -m pytest tests/test_surface.py`), and only on purpose.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HOME = ROOT / "tests" / "surface" / "home"
WORK = Path("/tmp/clip-gaze-surface")  # the paths the collection stores are under here
TOKEN = "surface-token"


def main() -> None:
    shutil.rmtree(HOME, ignore_errors=True)
    shutil.rmtree(WORK, ignore_errors=True)
    (WORK / "scans").mkdir(parents=True)
    for name in ("red-circle.png", "blue-square.png"):
        shutil.copy(ROOT / "examples" / name, WORK / "scans" / name)
    (WORK / "catalogue.csv").write_text(
        "image,external_id,title\nscans/red-circle.png,OBJ-1,Rouge\nmissing.png,OBJ-2,Gone\n,OBJ-3,No picture\n",
        encoding="utf-8")
    os.environ.update(CLIP_GAZE_HOME=str(HOME), CLIP_GAZE_MODEL="toy", CLIP_GAZE_BACKEND="torch", HF_HUB_OFFLINE="1",
                      CLIP_GAZE_API_TOKENS=TOKEN, CLIP_GAZE_FETCH_ALLOW="127.0.0.1")
    sys.path.insert(0, str(ROOT))
    from click.testing import CliRunner

    from clip_gaze.cli import cli
    from indexer.engine import Engine
    from indexer.settings import Settings
    from service import create_app

    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(cli, list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    engine = Engine.from_settings(Settings.from_env())
    client = create_app(engine=engine).test_client()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    answer = client.post("/v1/vocabularies", headers=auth, json={
        "name": "shapes", "description": "The toy world's shapes, with catalogue ids", "template": "a {}",
        "phrases": [{"term": "red circle", "external_id": "S-1", "metadata": {"colour": "red", "shape": "circle"}},
                    {"term": "blue square", "external_id": "S-2", "metadata": {"colour": "blue", "shape": "square"}},
                    {"term": "green triangle", "external_id": "S-3"}, "yellow star"]})
    assert answer.status_code == 201, answer.get_json()
    answer = client.post("/v1/vocabularies", headers=auth, json={
        "name": "toy-world", "templates": ["a {}", "a {} on a dark background"],
        "phrases": ["red shape", "blue shape", "circle", "square"]})
    assert answer.status_code == 201, answer.get_json()
    run("index", "--vocab", "surfaces,qualities,shapes,toy-world")

    run("collection", "create", "museum", "-d", "The examples and a catalogue")
    run("collection", "add", "museum", str(WORK / "scans"), str(WORK / "catalogue.csv"))

    served = WORK / "served"
    served.mkdir()
    shutil.copy(ROOT / "examples" / "blue-square.png", served / "blue-square.png")
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    (served / "manifest.json").write_text(json.dumps({
        "@context": "http://iiif.io/api/presentation/3/context.json", "id": f"{base}/manifest.json", "type": "Manifest",
        "label": {"en": ["Served shapes"]},
        "items": [{"id": f"{base}/canvas/1", "type": "Canvas", "label": {"en": ["A blue square"]}, "items": [{
            "id": f"{base}/page/1", "type": "AnnotationPage", "items": [{
                "id": f"{base}/annotation/1", "type": "Annotation", "motivation": "painting", "target": f"{base}/canvas/1",
                "body": {"id": f"{base}/blue-square.png", "type": "Image", "format": "image/png"}}]}]}]}))
    answer = client.post("/v1/collections", headers=auth, json={"name": "served"})
    assert answer.status_code == 201, answer.get_json()
    answer = client.post("/v1/collections/served/sources", headers=auth, json={"sources": [f"{base}/manifest.json"]})
    assert answer.status_code == 202, answer.get_json()
    job = answer.get_json()["job"]["id"]
    deadline = time.monotonic() + 60
    while client.get(f"/v1/jobs/{job}").get_json()["job"]["state"] not in ("done", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert client.get(f"/v1/jobs/{job}").get_json()["job"]["state"] == "done"
    server.shutdown()

    # one file, complete on its own (the store's WAL folded in), beside nothing else: the index files and
    # an ONNX export are derived caches
    snapshot = WORK / "clip-gaze.db"
    with sqlite3.connect(HOME / "clip-gaze.db") as src, sqlite3.connect(snapshot) as dst:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode=DELETE")
        dst.execute("VACUUM")
    shutil.rmtree(HOME)
    HOME.mkdir()
    shutil.copy(snapshot, HOME / "clip-gaze.db")
    (HOME / "JOB").write_text(job + "\n", encoding="utf-8")
    print(f"wrote {HOME} ({(HOME / 'clip-gaze.db').stat().st_size:,} bytes); job {job}")


if __name__ == "__main__":
    tempfile.tempdir = None
    main()
