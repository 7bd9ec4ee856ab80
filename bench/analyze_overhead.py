"""Analyze overhead: one POST /v1/analyze of a 2175×1713 JPEG against artists-prevalence, movements and
surfaces, against the bare `model.encode_image` of the same decoded picture, in the same run.

    python bench/analyze_overhead.py [--repeat 21]

Requests go through the whole Flask app in-process (multipart parsing, decoding with limits,
preprocessing, the batcher, scoring, JSON); the bare figure is encode_image alone on a tensor prepared
beforehand. The two are timed alternately so drift on a shared machine hits both alike.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time

import numpy as np
import torch
from PIL import Image

from common import header, median, model_name, photograph

from indexer.engine import Engine  # noqa: E402
from indexer.settings import Settings  # noqa: E402
from service import create_app  # noqa: E402
from indexer.pictures.decode import Decoder  # noqa: E402

VOCABS = ["artists-prevalence", "movements", "surfaces"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=41)
    args = ap.parse_args()
    header("analyze overhead (ViT-B-32, random weights, CPU)")

    home = tempfile.mkdtemp(prefix="clip-gaze-bench-")
    settings = Settings.from_env({}, home=home, model=model_name())
    engine = Engine.from_settings(settings, batch_window_ms=settings.batch_window_ms)
    engine.index(VOCABS)
    client = create_app(settings, engine=engine).test_client()
    jpeg = photograph()
    model = engine.model
    print(f"   picture: 2175×1713 JPEG, {len(jpeg) / 1e6:.2f} MB; vocabularies {', '.join(VOCABS)} "
          f"({sum(engine.store.get_vocabulary(v).size for v in VOCABS)} phrases)")

    full = Image.open(io.BytesIO(jpeg)).convert("RGB")
    tensor = model.preprocess(full).unsqueeze(0)

    def bare() -> None:
        with torch.inference_mode():
            model.model.encode_image(tensor)

    breakdowns: list[dict[str, float]] = []

    def post() -> None:
        resp = client.post("/v1/analyze", data={"image": (io.BytesIO(jpeg), "painting.jpg"),
                                                "vocabularies": ",".join(VOCABS), "top_k": "10"})
        assert resp.status_code == 200, resp.get_json()
        breakdowns.append(resp.get_json()["timing_breakdown_ms"])

    for _ in range(3):
        bare(), post()
    t_bare, t_api = [], []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        bare()
        t1 = time.perf_counter()
        post()
        t2 = time.perf_counter()
        t_bare.append((t1 - t0) * 1000)
        t_api.append((t2 - t1) * 1000)
    mb, ma = median(t_bare), median(t_api)
    print(f"   bare model.encode_image (batch of 1): median {mb:7.1f} ms")
    print(f"   POST /v1/analyze, whole request:     median {ma:7.1f} ms")
    print(f"   ratio analyze / encode_image:        {ma / mb:7.2f}×   (target ≤ 1.5×, aim 1.2×)")
    parts = {k: median([b[k] for b in breakdowns[-args.repeat:]]) for k in breakdowns[-1]}
    print("   inside the request (medians): " + ", ".join(f"{k} {v:.1f} ms" for k, v in parts.items())
          + f"; the rest (HTTP parsing, preprocessing, JSON) {ma - sum(parts.values()):.1f} ms")
    print(f"   spread: encode_image p10–p90 {np.percentile(t_bare, 10):.0f}–{np.percentile(t_bare, 90):.0f} ms, "
          f"request p10–p90 {np.percentile(t_api, 10):.0f}–{np.percentile(t_api, 90):.0f} ms")

    # Where the rest goes, and what the decoding shortcut costs in accuracy.
    limit = settings.max_pixels
    full_res, reducing = Decoder(limit, 10**10), Decoder(limit, 10**10, target=model.image_size)
    stages = {
        "decode, full resolution": lambda: full_res.decode(jpeg),
        "decode, JPEG draft + box reduce (≥ 448 px)": lambda: reducing.decode(jpeg),
        "preprocess from full resolution": lambda: model.preprocess(full),
    }
    drafted = reducing.decode(jpeg).image
    stages["preprocess after draft + box reduce"] = lambda: model.image_tensor(drafted)  # noqa: B023
    for name, fn in stages.items():
        times = []
        for _ in range(9):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1000)
        print(f"   {name:<36} median {median(times):6.1f} ms")

    slow = model.encode_image_tensors(model.preprocess(full).unsqueeze(0))[0]
    fast = model.encode_image_tensors(model.image_tensor(drafted).unsqueeze(0))[0]
    cos = float(np.dot(slow, fast))
    print(f"   image embedding, fast path vs full-resolution path: cosine {cos:.5f}   (must be ≥ 0.999)")
    print(f"   drafted picture: {drafted.size[0]}×{drafted.size[1]} before the model's own resize to {model.image_size}")


if __name__ == "__main__":
    main()
