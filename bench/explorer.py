"""The explorer at a museum's scale, in one run (ViT-B-32 with random weights: its 512-d embeddings and
its text tower for the vocabulary; 100,000 synthetic picture embeddings, clustered as real ones are):

1. the layout job (UMAP, cosine, over a 50-d PCA) on 100,000 embeddings (target ≤ 120 s); placing
   1,000 later pictures into it;
2. `GET /map` (JSON and Arrow) and `GET /scores` (movements, a phrase) over loopback HTTP: time and
   bytes over the wire, gzip-compressed (targets ≤ 1 s and ≤ 4 MB each, in the compact form);
3. facet counts, with and without `where` (target ≤ 0.5 s);
4. thumbnails: the average WebP size of 1,000 photograph-like pictures at 256 px (target ≤ 12 KB);
5. the page's first full render of the 100,000 points in headless Chromium after the data arrives
   (target ≤ 3 s): the page reads the map as Arrow, index, x and y first (its compact form), then the
   points' sha256 and external_id (thumbnails, panel, search, export) without holding up that render.

    python bench/explorer.py [--pictures 100000] [--no-page]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import shutil
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, model_name, photograph  # noqa: E402

from indexer.collections.local import Collections  # noqa: E402
from indexer.engine import Engine  # noqa: E402
from indexer.explore.explorer import Explorer  # noqa: E402
from indexer.explore.layout import layout  # noqa: E402
from indexer.pictures.thumbnails import make_thumbnail  # noqa: E402
from indexer.scoring.softmax import normalise  # noqa: E402
from indexer.store.image_store import Picture  # noqa: E402


def store_synthetic(engine: Engine, n: int) -> None:
    images = engine.images
    row = images.create("bench", "synthetic embeddings")
    rng = np.random.default_rng(3)
    dim = engine.model.dim
    centres = normalise(rng.normal(size=(60, dim)))
    t0 = time.perf_counter()
    for start in range(0, n, 10_000):
        k = min(10_000, n - start)
        vectors = normalise(centres[rng.integers(0, 60, k)] + 0.6 * normalise(rng.normal(size=(k, dim))))
        shas = [hashlib.sha256(str(start + i).encode()).hexdigest() for i in range(k)]  # as random as real hashes
        pics = [Picture(f"object/{start + i}", f"OBJ-{start + i}", {"room": f"R{(start + i) % 12}"}, sha, 1024, 768)
                for i, sha in enumerate(shas)]
        images.record(row.id, pics, engine.model_key, dict(zip(shas, vectors)))
    print(f"   stored {n:,} synthetic {dim}-d embeddings in {time.perf_counter() - t0:.1f} s")


def get(url: str) -> tuple[float, int, int]:
    req = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=300) as resp:
        wire = resp.read()
        took = time.perf_counter() - t0
        raw = gzip.decompress(wire) if resp.headers.get("Content-Encoding") == "gzip" else wire
    return took, len(wire), len(raw)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pictures", type=int, default=100_000)
    ap.add_argument("--no-page", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("CLIP_GAZE_BACKEND", "torch")
    header("explorer (ViT-B-32, random weights, CPU)")
    work = Path(tempfile.mkdtemp(prefix="clip-gaze-bench-explorer-"))
    engine = Engine(work / "home", model_name())
    engine.index(["movements"])
    store_synthetic(engine, args.pictures)
    collections = Collections(engine)
    explorer = Explorer(collections)

    print("1. the layout job")
    row = engine.images.get("bench")
    frame = explorer.frames.get(row, engine.model_key)
    t0 = time.perf_counter()
    w = min(5000, len(frame) - 100)
    warm = layout(frame.matrix[:w])  # numba's compilation, once per process, apart (nearest-neighbour descent from 4,096)
    warm[2].place(frame.matrix[w:w + 100])  # type: ignore[union-attr]
    print(f"   UMAP's first calls in a process (numba compiles; fit and transform): {time.perf_counter() - t0:.1f} s on {w:,} points")
    t0 = time.perf_counter()
    found = explorer.maps.compute_now(row)
    print(f"   layout of {len(found.at):,} embeddings: {time.perf_counter() - t0:.1f} s ({found.method})")
    rng = np.random.default_rng(4)
    more = normalise(frame.matrix[rng.integers(0, len(frame), 1000)] + 0.1 * rng.normal(size=(1000, frame.matrix.shape[1])))
    shas = [hashlib.sha256(f"later-{i}".encode()).hexdigest() for i in range(1000)]
    engine.images.record(row.id, [Picture(f"object/{args.pictures + i}", f"OBJ-{args.pictures + i}", None, s, 10, 10)
                                  for i, s in enumerate(shas)], engine.model_key, dict(zip(shas, more)))
    t0 = time.perf_counter()
    placed = explorer.maps.compute_now(engine.images.get("bench"))
    print(f"   1,000 later pictures placed into it: {time.perf_counter() - t0:.1f} s ({placed.method}; "
          "reading the new frame included)")

    from werkzeug.serving import make_server

    from indexer.settings import Settings
    from service import create_app

    app = create_app(Settings.from_env(), engine=engine)
    app.extensions["clip_gaze_explorers"] = {engine.spec.name: explorer}  # the worker's explorer: its frames read
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    print(f"2. /map and /scores over loopback HTTP ({len(frame) + 1000:,} pictures)")
    m = "/v1/collections/bench/map"
    for label, path in (("map, JSON (encoded)", m), ("map, JSON (kept)", m),
                        ("map, Arrow all (encoded)", m + "?format=arrow"), ("map, Arrow all (kept)", m + "?format=arrow"),
                        ("map, Arrow sha256,x,y", m + "?format=arrow&fields=sha256,x,y"),
                        ("map, Arrow index,x,y", m + "?format=arrow&fields=index,x,y"),
                        ("map, Arrow sha256,ext_id", m + "?format=arrow&fields=sha256,external_id"),
                        ("scores, cold", "/v1/collections/bench/scores?vocabulary=movements&phrase=tonalism%20movement"),
                        ("scores, warm", "/v1/collections/bench/scores?vocabulary=movements&phrase=tonalism%20movement"),
                        ("scores, another phrase", "/v1/collections/bench/scores?vocabulary=movements&phrase=cubism"),
                        ("scores, top only", "/v1/collections/bench/scores?vocabulary=movements")):
        took, wire, raw = get(base + path)
        print(f"   {label:<26} {took:6.2f} s  {wire / 1e6:6.2f} MB over the wire (gzip; {raw / 1e6:6.2f} MB raw)")
    etag = urllib.request.urlopen(base + m + "?format=arrow", timeout=300).headers["ETag"]
    t0 = time.perf_counter()
    try:
        urllib.request.urlopen(urllib.request.Request(base + m + "?format=arrow", headers={"If-None-Match": etag}), timeout=300)
        answered = 200
    except urllib.error.HTTPError as exc:
        answered = exc.code
    print(f"   map, revalidated by ETag    {time.perf_counter() - t0:6.3f} s  (status {answered}, no body)")
    print("3. facets")
    for label, path in (("movements", "/v1/collections/bench/facets?vocabulary=movements"),
                        ("movements, where room", "/v1/collections/bench/facets?vocabulary=movements&where=room%3DR3"),
                        ("where a probability", "/v1/collections/bench/facets?vocabulary=movements&where="
                                                "movements%3Acubism%3E0.01")):
        took, wire, _ = get(base + path)
        print(f"   {label:<24} {took:6.3f} s  ({wire:,} bytes)")

    print("4. thumbnails (photograph-like pictures, WebP q75, longest side 256)")
    from PIL import Image

    sizes = []
    t0 = time.perf_counter()
    for i in range(200):
        with Image.open(io.BytesIO(photograph(1024 + (i % 5) * 64, 768, 85))) as img:
            img = img.convert("RGB")
            img.draft("RGB", (512, 512))
            sizes.append(len(make_thumbnail(img).data))
    print(f"   {len(sizes)} thumbnails: {np.mean(sizes) / 1024:.1f} KB on average (max {max(sizes) / 1024:.1f} KB), "
          f"{(time.perf_counter() - t0) / len(sizes) * 1000:.0f} ms each with the picture's making")

    if not args.no_page:
        print("5. the page's first full render in headless Chromium")
        page_render(base)
    server.shutdown()
    shutil.rmtree(work, ignore_errors=True)


def page_render(base: str) -> None:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(300_000)
        for run in range(2):
            t0 = time.perf_counter()
            page.goto(f"{base}/collections/bench?vocab=movements&colour=phrase&phrase=cubism")
            page.wait_for_selector("body[data-ready=true]")
            t = page.evaluate("window.explorerTimings")
            print(f"   run {run + 1}: the map's Arrow (index,x,y) read in {(t['mapRead'] - t['mapArrived']) / 1000:.2f} s; "
                  f"points drawn {(t['pointsDrawn'] - t['mapArrived']) / 1000:.2f} s after the map "
                  f"arrived; the page ready (scores, facets, colours) {(t['firstDraw'] - t['mapArrived']) / 1000:.2f} s "
                  f"after it; the identities (sha256, external_id) {(t['identities'] - t['mapArrived']) / 1000:.2f} s "
                  f"after it; {time.perf_counter() - t0:.1f} s from navigation")
            t0 = time.perf_counter()
            page.evaluate("() => { const t0 = performance.now(); window.redrawTook = 0; }")
            took = page.evaluate("() => { const t0 = performance.now(); document.getElementById('map')"
                                 ".dispatchEvent(new WheelEvent('wheel', {deltaY: -100, clientX: 700, clientY: 450})); "
                                 "return new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => "
                                 "r(performance.now() - t0)))); }")
            print(f"   a zoom step redrawn in {took:.0f} ms")
        browser.close()


if __name__ == "__main__":
    main()
