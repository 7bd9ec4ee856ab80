"""Collections, in one run (ViT-B-32 with random weights: the real model's compute):

1. `collection add` of 500 JPEGs (a folder) against bare batched `encode_image` on tensors prepared
   beforehand: the pipeline's throughput as a share of the encoder's (target ≥ 0.85×);
2. `collection analyze` of 100,000 stored embeddings against artists-prevalence (957 phrases) to
   Parquet, CSV and JSON Lines: time (target ≤ 2 s) and the memory it adds (bounded: streamed);
3. search over 1,000,000 synthetic embeddings (clustered, as real ones are): the approximate index's
   build time, latency and recall@10 against exact search.

    python bench/collection.py [--pictures 500] [--stored 100000] [--search 1000000]
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import numpy as np

from common import header, median, model_name, peak_rss_mb, rss_mb

from indexer.engine import Engine  # noqa: E402
from indexer.image_store import Picture  # noqa: E402
from indexer.schema import parse  # noqa: E402
from indexer.schema_collections import AddSources, AnalysisRow, CreateCollection  # noqa: E402
from indexer.scoring import normalise  # noqa: E402
from indexer.tables import write_blocks  # noqa: E402


def pictures(folder: Path, count: int) -> None:
    """`count` different 1024×768 JPEGs (about 100 KB each) with the texture of photographs."""
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:768, 0:1024].astype(np.float32)
    for i in range(count):
        f = rng.uniform(60, 400, 3)
        base = np.stack([128 + 90 * np.sin(x / f[0] + i), 128 + 80 * np.cos(y / f[1]), 128 + 70 * np.sin((x + y) / f[2])], -1)
        img = Image.fromarray(np.clip(base + rng.normal(0, 14, base.shape), 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(1))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=88)
        (folder / f"{i:04d}.jpg").write_bytes(buf.getvalue())


def add_vs_encoder(engine: Engine, folder: Path, count: int) -> None:
    import torch

    model = engine.model
    engine.collections.create(parse(CreateCollection, {"name": "bench"}))
    files = sorted(folder.glob("*.jpg"))
    prepared = [model.image_tensor(engine.read(f).image) for f in files]  # decoded and preprocessed beforehand
    batch = 16

    def bare() -> float:
        t0 = time.perf_counter()
        for start in range(0, len(prepared), batch):
            model.encode_image_tensors(torch.stack(prepared[start : start + batch]))
        return time.perf_counter() - t0

    bare_s = [bare()]
    time.sleep(0.5)
    t0 = time.perf_counter()
    report = engine.collections.add("bench", parse(AddSources, {"sources": [str(folder)]}), batch_size=batch)
    add_s = time.perf_counter() - t0
    time.sleep(0.5)
    bare_s.append(bare())
    b = min(bare_s)
    print(f"   bare batched encode_image ({batch} a batch, tensors ready): {count / b:6.1f} pictures/s "
          f"({', '.join(f'{s:.1f}' for s in bare_s)} s; the faster counts)")
    print(f"   collection add (read, decode, preprocess, encode, store): {count / add_s:6.1f} pictures/s ({add_s:.1f} s; "
          f"{report.added} added, {report.failed} failed)")
    print(f"   ratio add / bare encoder: {b / add_s:.2f}×   (target ≥ 0.85×)")


def analyze_stored(engine: Engine, stored: int, out: Path) -> None:
    engine.index(["artists-prevalence"])
    _ = engine.model
    images = engine.collections.images
    row = images.create("stored", "synthetic embeddings")
    rng = np.random.default_rng(2)
    dim = engine.model.dim
    t0 = time.perf_counter()
    for start in range(0, stored, 10_000):
        n = min(10_000, stored - start)
        vectors = normalise(rng.normal(size=(n, dim)))
        shas = [f"synthetic-{start + i:07d}" for i in range(n)]
        pics = [Picture(f"object/{start + i}", f"OBJ-{start + i}", None, sha, 1024, 768) for i, sha in enumerate(shas)]
        images.record(row.id, pics, engine.model_key, dict(zip(shas, vectors)))
    print(f"   stored {stored:,} synthetic embeddings in {time.perf_counter() - t0:.1f} s")
    for suffix in (".parquet", ".csv", ".jsonl"):
        before = rss_mb()
        path = out / f"scores{suffix}"
        t0 = time.perf_counter()
        rows = write_blocks(engine.collections.analyze_blocks("stored", ["artists-prevalence"], top_k=5), path, AnalysisRow)
        took = time.perf_counter() - t0
        print(f"   analyze {stored:,} × artists-prevalence (957 phrases), top 5 → {suffix:<8} {rows:,} rows in {took:5.2f} s "
              f"({path.stat().st_size / 1e6:.0f} MB; RSS {before:.0f} → {rss_mb():.0f} MiB, peak {peak_rss_mb():.0f})"
              + ("   (target ≤ 2 s)" if suffix == ".parquet" else ""))


def search_million(count: int) -> None:
    from indexer.collections import build_search_index

    rng = np.random.default_rng(3)
    dim = 512
    centres = normalise(rng.normal(size=(4000, dim)))
    data = np.empty((count, dim), dtype=np.float32)
    for start in range(0, count, 100_000):
        n = min(100_000, count - start)
        data[start : start + n] = normalise(centres[rng.integers(0, len(centres), n)] + 0.04 * rng.normal(size=(n, dim)))
    queries = normalise(centres[rng.integers(0, len(centres), 200)] + 0.04 * rng.normal(size=(200, dim)))
    t0 = time.perf_counter()
    index = build_search_index(data)
    built = time.perf_counter() - t0
    import faiss

    exact = faiss.IndexFlatIP(dim)
    exact.add(data)
    t0 = time.perf_counter()
    _, truth = exact.search(queries, 10)
    exact_ms = (time.perf_counter() - t0) * 1000 / len(queries)
    times = []
    found = []
    for q in queries:
        t0 = time.perf_counter()
        _, f = index.search(q.reshape(1, -1), 10)
        times.append((time.perf_counter() - t0) * 1000)
        found.append(f[0])
    recall = float(np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found)]))
    print(f"   {count:,} synthetic embeddings: IVF index built in {built:.0f} s ({index.nlist} lists, {index.nprobe} probed); "
          f"search median {median(times):.2f} ms against exact {exact_ms:.1f} ms; recall@10 {recall:.3f}   (target ≥ 0.95)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pictures", type=int, default=500)
    ap.add_argument("--stored", type=int, default=100_000)
    ap.add_argument("--search", type=int, default=1_000_000)
    args = ap.parse_args()
    header("collections (ViT-B-32, random weights, CPU)")
    work = Path(tempfile.mkdtemp(prefix="clip-gaze-bench-collection-"))
    engine = Engine(work / "home", model_name())
    pictures(work / "jpegs", args.pictures)
    print(f"1. adding {args.pictures} JPEGs (1024×768)")
    add_vs_encoder(engine, work / "jpegs", args.pictures)
    print(f"2. analyzing {args.stored:,} stored embeddings")
    analyze_stored(engine, args.stored, work)
    print(f"3. searching {args.search:,} embeddings")
    search_million(args.search)


if __name__ == "__main__":
    main()
