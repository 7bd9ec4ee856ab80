"""Large vocabularies: what an exact softmax over every phrase adds per image.

    python bench/large_vocab.py

ci-flavors (100,954 phrases × 512 dimensions, ViT-B-32's width): through the engine's own scoring
with its SQLite look-up of the top matches when bench/out/home-all exists (bench/indexing.py --all),
else on a synthetic matrix of the same shape. Then 1,000,000 synthetic phrases: time and memory, in
float32 and float16, and what float16 does to the probabilities.
"""

from __future__ import annotations

import gc
import time

import numpy as np

from common import OUT, header, median, model_name, rss_mb

from indexer.scoring.kernels import cosines  # noqa: E402
from indexer.scoring.softmax import Scores, normalise, scores_from_cosines  # noqa: E402


def score(matrix: np.ndarray, q: np.ndarray, top_k: int | None = 10) -> Scores:
    """What the engine does per vocabulary and image: the kernel's cosines, then the exact softmax."""
    return scores_from_cosines(cosines(matrix, q)[:, 0], 100.0, top_k)


def per_image_ms(matrix: np.ndarray, repeat: int = 25) -> float:
    rng = np.random.default_rng(1)
    queries = normalise(rng.normal(size=(repeat + 3, matrix.shape[1])))
    times = []
    for i, q in enumerate(queries):
        t0 = time.perf_counter()
        score(matrix, q)
        if i >= 3:
            times.append((time.perf_counter() - t0) * 1000)
    return median(times)


def engine_ms() -> float | None:
    home = OUT / "home-all"
    if not (home / "clip-gaze.db").is_file():
        return None
    from indexer.engine import Engine
    from indexer.models.registry import parse_model

    engine = Engine(home, parse_model(model_name()))
    engine.indexes.get("ci-flavors", engine.store.versions())
    _ = engine.model  # loaded before timing: only the scoring is measured
    rng = np.random.default_rng(2)
    times = []
    for i in range(28):
        emb = normalise(rng.normal(size=(1, 512)))
        t0 = time.perf_counter()
        engine.score(emb, ["ci-flavors"], top_k=10)
        if i >= 3:
            times.append((time.perf_counter() - t0) * 1000)
    return median(times)


def main() -> None:
    header("large vocabularies: exact softmax over every phrase")
    rng = np.random.default_rng(0)
    flavors = normalise(rng.normal(size=(100_954, 512)))
    print(f"   ci-flavors size (100,954 × 512), float32 (default, exact):   {per_image_ms(flavors):6.2f} ms per image  (target ≤ 10 ms)")
    print(f"   ci-flavors size (100,954 × 512), float16 (compact indexes):  {per_image_ms(flavors.astype(np.float16)):6.2f} ms per image")
    real = engine_ms()
    if real is not None:
        print(f"   ci-flavors through Engine.score (index + SQLite top-10): {real:6.2f} ms per image")
    else:
        print("   (run bench/indexing.py --all to time the engine's own path on the real index too)")
    del flavors
    gc.collect()

    before = rss_mb()
    million = normalise(rng.normal(size=(1_000_000, 512)))
    after32 = rss_mb()
    t32 = per_image_ms(million, repeat=9)
    half = million.astype(np.float16)
    t16 = per_image_ms(half, repeat=9)
    q = normalise(rng.normal(size=512))
    p32, p16 = score(million, q, None), score(half, q, None)
    a32, a16 = np.empty(len(million)), np.empty(len(million))
    a32[p32.indices], a16[p16.indices] = p32.probabilities, p16.probabilities
    print(f"   1,000,000 synthetic phrases, float32: {t32:7.1f} ms per image, {million.nbytes / 2**20:6.0f} MiB "
          f"(process grew {after32 - before:.0f} MiB)")
    print(f"   1,000,000 synthetic phrases, float16: {t16:7.1f} ms per image, {half.nbytes / 2**20:6.0f} MiB; "
          f"largest probability change {np.abs(a32 - a16).max():.2e}")


if __name__ == "__main__":
    main()
