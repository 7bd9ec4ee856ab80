"""Collections, in one run (ViT-B-32 with random weights: the real model's compute):

1. `collection add` of 500 JPEGs (a folder) against bare batched `encode_image` on tensors prepared
   beforehand: the pipeline's throughput as a share of the encoder's (target ≥ 0.85×);
2. `collection analyze` of 100,000 stored embeddings against artists-prevalence (957 phrases) to
   Parquet, CSV and JSON Lines: time (target ≤ 2 s) and the memory it adds (bounded: streamed);
3. search over 1,000,000 synthetic embeddings (clustered, as real ones are): the approximate index's
   build time, latency and recall@10 against exact search.

4. with --ray (needs `pip install 'clip-gaze[ray]'`): `collection add` with the local engine against
   `--engine ray` (a local Ray over every core) on the same pictures, each into a fresh store; Ray's
   overhead per task and per actor call (the slope of no-op runs over few and many blocks, so the
   start-up is apart); and the rate at which the driver merges shards into SQLite (embeddings/s).
   `--ray-only` runs part 4 alone.

    python bench/collection.py [--pictures 500] [--stored 100000] [--search 1000000] [--repeat 1] [--ray | --ray-only]

A count of 0 skips its part (`--pictures 0 --search 0`: the analysis alone). Part 2 also measures its
stages apart (the check for pictures without an embedding, reading the embeddings, the product,
softmax and top-k, the phrase table, building the columns, writing Parquet), one after the other over
the same chunks, against the streamed run whose reading overlaps the rest; `--repeat N` runs the three
formats N times, interleaved.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import numpy as np

from common import header, median, model_name, peak_rss_mb, reset_peak_rss, rss_mb

from indexer.collections.local import Collections  # noqa: E402
from indexer.collections.tables import write_blocks  # noqa: E402
from indexer.engine import Engine  # noqa: E402
from indexer.models import backends  # noqa: E402
from indexer.schema import parse  # noqa: E402
from indexer.schema.collections import AddSources, AnalysisRow, CreateCollection  # noqa: E402
from indexer.scoring.softmax import normalise  # noqa: E402
from indexer.store.image_store import Picture  # noqa: E402


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
    model = engine.model
    Collections(engine).create(parse(CreateCollection, {"name": "bench"}))
    files = sorted(folder.glob("*.jpg"))
    prepared = [model.image_array(engine.read(f).image) for f in files]  # decoded and preprocessed beforehand
    batch = 16

    def bare() -> float:
        t0 = time.perf_counter()
        for start in range(0, len(prepared), batch):
            model.encode_image_arrays(np.stack(prepared[start : start + batch]))
        return time.perf_counter() - t0

    bare_s = [bare()]
    time.sleep(0.5)
    t0 = time.perf_counter()
    report = Collections(engine).add("bench", parse(AddSources, {"sources": [str(folder)]}), batch_size=batch)
    add_s = time.perf_counter() - t0
    time.sleep(0.5)
    bare_s.append(bare())
    b = min(bare_s)
    print(f"   backend {backends.describe(model)}")
    print(f"   bare batched encode_image ({batch} a batch, arrays ready): {count / b:6.1f} pictures/s "
          f"({', '.join(f'{s:.1f}' for s in bare_s)} s; the faster counts)")
    print(f"   collection add (read, decode, preprocess, encode, store): {count / add_s:6.1f} pictures/s ({add_s:.1f} s; "
          f"{report.added} added, {report.failed} failed)")
    print(f"   ratio add / bare encoder: {b / add_s:.2f}×   (target ≥ 0.85×)")


def analyze_stored(engine: Engine, stored: int, out: Path, repeat: int = 1) -> None:
    engine.index(["artists-prevalence"])
    _ = engine.model
    images = engine.images
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
    for run in range(repeat):
        for suffix in (".parquet", ".csv", ".jsonl"):
            before = rss_mb()
            fresh_peak = reset_peak_rss()
            path = out / f"scores{suffix}"
            t0 = time.perf_counter()
            rows = write_blocks(Collections(engine).analyze_blocks("stored", ["artists-prevalence"], top_k=5), path, AnalysisRow)
            took = time.perf_counter() - t0
            peak = f"peak {peak_rss_mb():.0f} during it" if fresh_peak else f"peak {peak_rss_mb():.0f}"
            print(f"   analyze {stored:,} × artists-prevalence (957 phrases), top 5 → {suffix:<8} {rows:,} rows in {took:5.2f} s "
                  f"({path.stat().st_size / 1e6:.0f} MB; RSS {before:.0f} → {rss_mb():.0f} MiB, {peak})"
                  + ("   (target ≤ 2 s)" if suffix == ".parquet" else ""))
    analyze_stages(engine, row.id, out / "stages.parquet")


def analyze_stages(engine: Engine, collection_id: int, path: Path) -> None:
    """The Parquet run's stages measured apart, one after the other over the same chunks (the streamed
    run reads the next chunk in a thread while it scores and writes this one)."""
    import pyarrow.parquet as pq

    from indexer.collections.local import CHUNK
    from indexer.scoring.kernels import cosines
    from indexer.scoring.softmax import scores_from_cosine_columns
    from indexer.collections.tables import PhraseColumns, _arrow_schema, analysis_block

    versions = engine.store.versions()
    idx = engine.indexes.get("artists-prevalence", versions)
    scale = engine.model.logit_scale
    took = dict.fromkeys(("check", "read", "product", "softmax and top-k", "phrase table", "columns", "write"), 0.0)
    t0 = time.perf_counter()
    engine.images.count_unembedded(collection_id, engine.model_key)  # the refusal before the first block
    t1 = time.perf_counter()
    vocab = PhraseColumns.read(engine.store, "artists-prevalence", idx.ids)
    took["check"], took["phrase table"] = t1 - t0, time.perf_counter() - t1
    with pq.ParquetWriter(path, _arrow_schema(AnalysisRow)) as writer:
        t0 = time.perf_counter()
        for chunk in engine.images.vector_columns(collection_id, engine.model_key, CHUNK):
            t1 = time.perf_counter()
            cos = cosines(idx.matrix, chunk.matrix)
            t2 = time.perf_counter()
            scores = scores_from_cosine_columns(cos, scale, 5)
            t3 = time.perf_counter()
            block = analysis_block(vocab, chunk.external_id, chunk.source, chunk.sha256, scores)
            t4 = time.perf_counter()
            writer.write_table(block)
            t5 = time.perf_counter()
            for stage, a, b in (("read", t0, t1), ("product", t1, t2), ("softmax and top-k", t2, t3), ("columns", t3, t4),
                                ("write", t4, t5)):
                took[stage] += b - a
            t0 = time.perf_counter()
    print(f"   stages of the Parquet run, one after the other: {', '.join(f'{k} {v:.2f}' for k, v in took.items())} s "
          f"(sum {sum(took.values()):.2f} s)")


def search_million(count: int) -> None:
    from indexer.collections.search import build_search_index

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


def ray_part(folder: Path, count: int, work: Path) -> None:
    import os

    import ray
    import torch

    from indexer.collections.on_ray.driver import ray_add
    from indexer.collections.on_ray.session import plan

    cpus = os.cpu_count() or 1
    request = parse(AddSources, {"sources": [str(folder)]})
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    try:
        print(f"   Ray {ray.__version__}, {cpus} CPUs; pool: {plan(ray.cluster_resources()).describe()}")
        # the Ray actor runs torch on its 1 CPU: the local engine with 1 torch thread tells Ray's share from threading's
        variants = {"local engine": 0, "local engine, 1 torch thread": 1, "Ray engine": -1}
        timings: dict[str, list[float]] = {label: [] for label in variants}
        for run in range(2):  # interleaved: this machine's speed drifts
            for i, (label, threads) in enumerate(variants.items()):
                torch.set_num_threads(threads if threads > 0 else cpus)  # process-wide: set it back each time
                # a fresh store each time: everything is encoded
                engine = Engine(work / f"home-{i}-{run}", model_name(), threads=max(threads, 0))
                collections = Collections(engine)
                collections.create(parse(CreateCollection, {"name": "bench"}))
                time.sleep(0.5)
                t0 = time.perf_counter()
                if threads >= 0:
                    report = collections.add("bench", request, batch_size=16)
                else:
                    report = ray_add(collections, "bench", request, batch_size=16)
                took = time.perf_counter() - t0
                timings[label].append(took)
                print(f"   {label:<29} {count / took:6.1f} pictures/s ({took:5.1f} s, model loading included; "
                      f"{report.added} added, {report.encoded} encoded)")
        best = {label: min(t) for label, t in timings.items()}
        for label in list(variants)[1:]:
            print(f"   {label} / local engine throughput: {best['local engine'] / best[label]:.2f}× (the faster run of each)")
        ray_overheads()
    finally:
        ray.shutdown()
    merge_rate(work, dim=512)


def ray_overheads() -> None:
    import ray

    class Noop:
        def __call__(self, batch: dict) -> dict:
            return batch

    def run(blocks: int, actor: bool) -> float:
        ds = ray.data.range(blocks, override_num_blocks=blocks)
        if actor:
            ds = ds.map_batches(Noop, batch_size=None, compute=ray.data.ActorPoolStrategy(size=1), num_cpus=1)
        else:
            ds = ds.map_batches(lambda b: b, batch_size=None, num_cpus=0.5)
        t0 = time.perf_counter()
        ds.materialize()
        return time.perf_counter() - t0

    for actor, what in ((False, "task"), (True, "actor call")):
        run(4, actor)  # warm up
        few, many = run(10, actor), run(210, actor)
        print(f"   Ray overhead per {what}: {(many - few) / 200 * 1000:5.1f} ms (no-op over 10 and 210 blocks: "
              f"{few:.2f} s and {many:.2f} s; the difference is 200 {what}s)")


def merge_rate(work: Path, dim: int, total: int = 20_000) -> None:
    """The driver's merge: synthetic shards (rows as the encoding actors write them) into a fresh store."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from indexer.collections.ingest import AddRun
    from indexer.collections.on_ray.shards import Merger
    from indexer.collections.on_ray.workers import shard_schema
    from indexer.store.image_store import ImageStore
    from indexer.store.phrase_store import Store

    rng = np.random.default_rng(4)
    for rows in (128, 1024):
        folder = work / f"shards-{rows}"
        folder.mkdir()
        for start in range(0, total, rows):
            n = min(rows, total - start)
            vectors = normalise(rng.normal(size=(n, dim)))
            table = pa.table({
                "source": [f"/pictures/{rows}/{start + i:07d}.jpg" for i in range(n)],
                "external_id": [f"OBJ-{start + i}" for i in range(n)],
                "metadata": ['{"title": "A picture"}'] * n,
                "sha256": [f"{rows:04d}{start + i:060d}" for i in range(n)],
                "width": [1024] * n, "height": [768] * n, "error_code": [None] * n, "error": [None] * n,
                "embedding": [v.astype("<f4").tobytes() for v in vectors], "encoded": [True] * n,
            }, schema=shard_schema().with_metadata({"clip_gaze_model": "bench-model"}))
            pq.write_table(table, folder / f"{start:08d}.parquet")
        images = ImageStore(Store(work / f"merge-home-{rows}"))
        collection = images.create("merged")
        merger = Merger(AddRun(images, collection.id, "bench-model", []))
        t0 = time.perf_counter()
        merger.merge_folder(folder)
        took = time.perf_counter() - t0
        print(f"   merge into SQLite, shards of {rows:>4} rows: {merger.embeddings:,} embeddings ({dim} floats) in {took:.1f} s "
              f"= {merger.embeddings / took:,.0f} embeddings/s ({merger.shards} transactions)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pictures", type=int, default=500)
    ap.add_argument("--stored", type=int, default=100_000)
    ap.add_argument("--search", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=1, help="part 2: run the three formats this many times, interleaved")
    ap.add_argument("--ray", action="store_true", help="also part 4: the local engine against the Ray engine")
    ap.add_argument("--ray-only", action="store_true", help="part 4 alone")
    args = ap.parse_args()
    header("collections (ViT-B-32, random weights, CPU)")
    work = Path(tempfile.mkdtemp(prefix="clip-gaze-bench-collection-"))
    pictures(work / "jpegs", args.pictures)
    if args.ray_only:
        print(f"4. adding {args.pictures} JPEGs (1024×768): local engine against Ray engine")
        ray_part(work / "jpegs", args.pictures, work)
        return
    engine = Engine(work / "home", model_name())
    print(f"1. adding {args.pictures} JPEGs (1024×768)")
    if args.pictures:
        add_vs_encoder(engine, work / "jpegs", args.pictures)
    else:
        print("   skipped (--pictures 0)")
    print(f"2. analyzing {args.stored:,} stored embeddings")
    if args.stored:
        analyze_stored(engine, args.stored, work, args.repeat)
    else:
        print("   skipped (--stored 0)")
    print(f"3. searching {args.search:,} embeddings")
    if args.search:
        search_million(args.search)
    else:
        print("   skipped (--search 0)")
    if args.ray:
        print(f"4. adding {args.pictures} JPEGs (1024×768): local engine against Ray engine")
        ray_part(work / "jpegs", args.pictures, work)


if __name__ == "__main__":
    main()
