"""Against the old way: clip-gaze 0.3.0 encoded the image and every prompt on every call (one batch,
padded to the longest prompt in the call). clip-gaze embeds phrases once and scores from the index.
Same model (ViT-B-32, random weights), same picture, same run.

    python bench/old_way.py

The old way is timed without its tokenisation (done beforehand, which flatters it), on the decoded
picture; clip-gaze's figure is Engine.analyze on the same decoded picture, indexes already built.
"""

from __future__ import annotations

import io
import tempfile
import time

import torch
from PIL import Image

from common import OUT, header, median, model_name, peak_rss_mb, photograph

from indexer.models import backends  # noqa: E402
from indexer.engine import Engine  # noqa: E402
from indexer.models.torch_model import encode_text_trimmed, token_lengths  # noqa: E402


def old_way(model, image: Image.Image, tokens: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        img = model.model.encode_image(model.preprocess(image).unsqueeze(0))
        padded = tokens[:, : int(token_lengths(model.model, tokens).max())]  # padding=True: to the longest
        txt = encode_text_trimmed(model.model, padded)
        img = img / img.norm(dim=-1, keepdim=True)
        txt = txt / txt.norm(dim=-1, keepdim=True)
        return (model.model.logit_scale.exp() * img @ txt.T).softmax(dim=-1)


def main() -> None:
    header("against clip-gaze 0.3.0's method (re-encode every prompt on every call)")
    home = OUT / "home-all"
    if not (home / "clip-gaze.db").is_file():
        home = tempfile.mkdtemp(prefix="clip-gaze-bench-")
    engine = Engine(home, model_name())
    engine.index(["artists-prevalence", "artists"])
    model = engine.torch_model  # the old way ran open_clip itself; clip-gaze runs on its default backend
    print(f"   clip-gaze's backend: {backends.describe(engine.model)}")
    image = Image.open(io.BytesIO(photograph())).convert("RGB")
    count = iter(range(10**9))

    def fresh() -> Image.Image:
        """The picture with a small corner patch changed: a new picture each call, so clip-gaze encodes it
        (a picture it has seen is found by its hash and never encoded again, which would flatter it)."""
        i = next(count)
        copy = image.copy()
        copy.paste((i % 256, (i // 256) % 256, 7), (0, 0, 48, 48))
        return copy
    targets = {"artists-prevalence": 100, "artists": 300}
    for name, target in targets.items():
        phrases = [p["phrase"] for p in engine.store.phrases_page(name, 0, 10_000)[0]]  # every phrase, in order
        tokens = model.tokenize(phrases)
        engine.analyze(image, [name], top_k=5)  # warm: the index is in memory
        runs = 3 if len(phrases) < 2000 else 1
        peak_before = peak_rss_mb()
        ours, old = [], []
        for _ in range(runs):  # interleaved, so a drifting machine slows both alike
            for _ in range(3):
                picture = fresh()
                time.sleep(0.5)  # torch's threads (the old way) stop spinning before ours run
                t0 = time.perf_counter()
                engine.analyze(picture, [name], top_k=5)
                ours.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.5)
            t0 = time.perf_counter()
            old_way(model, image, tokens)
            old.append((time.perf_counter() - t0) * 1000)
        peak_after = peak_rss_mb()
        speedup = median(old) / median(ours)
        print(f"   {name} ({len(phrases):,} phrases): old way {median(old) / 1000:6.1f} s per image, clip-gaze "
              f"{median(ours):6.1f} ms per image → {speedup:,.0f}× faster (target ≥ {target}×)")
        if peak_after > peak_before:
            print(f"      the old way raised this process's peak memory from {peak_before:,.0f} to {peak_after:,.0f} MiB")


if __name__ == "__main__":
    main()
