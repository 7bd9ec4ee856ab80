"""Explain overhead: explaining the top 3 of artists-prevalence (a map for each, over ViT-B-32's 7×7
grid) against analysing the same picture, in the same run.

    python bench/explain.py [--repeat 21]

Two comparisons, each timed alternately so drift on a shared machine hits both alike:
- in the engine, from the decoded picture: `engine.analyze` (its embedding is computed afresh each
  time: the picture is given a new content hash, so the store of picture embeddings never answers)
  against `indexer.explain.maps.explain_image`;
- through the Flask app: POST /v1/analyze against POST /v1/explain with the same 2175×1713 JPEG
  (a few random bytes after its end make each upload new to the store; decoders ignore them).
Target: explain ≤ 1.5× analyze.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import tempfile
import time

import numpy as np

from common import header, median, model_name, photograph

from indexer.engine import Engine  # noqa: E402
from indexer.explain.maps import explain_image  # noqa: E402
from indexer.settings import Settings  # noqa: E402
from service import create_app  # noqa: E402

VOCAB = "artists-prevalence"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=21)
    args = ap.parse_args()
    header("explain overhead (ViT-B-32, random weights)")

    home = tempfile.mkdtemp(prefix="clip-gaze-bench-")
    settings = Settings.from_env({}, home=home, model=model_name())
    engine = Engine.from_settings(settings, batch_window_ms=settings.batch_window_ms)
    engine.index([VOCAB])
    jpeg = photograph()
    decoded = engine.read(jpeg)
    print(f"   picture: 2175×1713 JPEG, {len(jpeg) / 1e6:.2f} MB; {VOCAB} "
          f"({engine.store.get_vocabulary(VOCAB).size} phrases), top 3; device {engine.model.device}")

    def analyze() -> None:
        fresh = dataclasses.replace(decoded, sha256=os.urandom(32).hex())
        engine.analyze(fresh, [VOCAB], top_k=3)

    def explain() -> None:
        explain_image(engine, decoded, vocabularies=[VOCAB], top_k=3)

    found = explain_image(engine, decoded, vocabularies=[VOCAB], top_k=3)
    a = found.answer
    print(f"   grid {a.grid.rows}×{a.grid.cols}, last {a.layers} of 12 blocks decomposed; embedding rebuilt within "
          f"{found.decomposition.error:.1e}; maps + unmapped = relative logits within "
          f"{max(abs(np.sum(m.heatmap) + m.unmapped - m.relative_logit) for m in a.results[VOCAB].matches):.1e}")
    t_an, t_ex = _interleaved(analyze, explain, args.repeat)
    print(f"   engine.analyze (image encoded):      median {median(t_an):7.1f} ms")
    print(f"   explain_image, top 3 mapped:          median {median(t_ex):7.1f} ms")
    print(f"   ratio explain / analyze:              {median(t_ex) / median(t_an):7.2f}×   (target ≤ 1.5×)")

    client = create_app(settings, engine=engine).test_client()
    breakdowns: list[dict[str, float]] = []

    def post(path: str) -> None:
        data = jpeg + os.urandom(16)
        resp = client.post(path, data={"image": (io.BytesIO(data), "painting.jpg"), "vocabularies": VOCAB, "top_k": "3"})
        assert resp.status_code == 200, resp.get_json()
        if path == "/v1/explain":
            breakdowns.append(resp.get_json()["timing_breakdown_ms"])

    r_an, r_ex = _interleaved(lambda: post("/v1/analyze"), lambda: post("/v1/explain"), args.repeat)
    print(f"   POST /v1/analyze, whole request:      median {median(r_an):7.1f} ms")
    print(f"   POST /v1/explain, whole request:      median {median(r_ex):7.1f} ms")
    print(f"   ratio explain / analyze:              {median(r_ex) / median(r_an):7.2f}×   (target ≤ 1.5×)")
    parts = {k: median([b[k] for b in breakdowns[-args.repeat:]]) for k in breakdowns[-1]}
    print("   inside /v1/explain (medians): " + ", ".join(f"{k} {v:.1f} ms" for k, v in parts.items()))


def _interleaved(first, second, repeat: int) -> tuple[list[float], list[float]]:
    for _ in range(3):
        first(), second()
    a, b = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        first()
        t1 = time.perf_counter()
        second()
        t2 = time.perf_counter()
        a.append((t1 - t0) * 1000)
        b.append((t2 - t1) * 1000)
    return a, b


if __name__ == "__main__":
    main()
