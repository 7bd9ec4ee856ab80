"""interrogate on ViT-B-32 (random weights: the real model's compute) against clip-interrogator 0.6.0's own chain.

    pip install --no-deps --target /tmp/24-ci clip-interrogator==0.6.0   # its own folder, not the project's venv
    python bench/interrogate.py [--home DIR] [--pictures 2] [--ci-steps 2] [--ci /tmp/24-ci] [--backends torch,onnx]

In one run, on the same open_clip model, the same picture, the same starting caption and the same
candidates (clip-gaze's exact top 2,048 of ci-artists, ci-flavors, ci-mediums, ci-movements and ci-sites):

- `best` per picture (the chain, 8 forced steps, at most 32), `fast` per picture, on each of `--backends`:
  torch, and ONNX Runtime's prefix graph (the default on a CPU); the token positions `best` ran, the
  rate that is, and the time those positions take at the rate a plain fp32 matrix product of the text
  tower's shape attains here (the floor of an exact chain on this machine);
- clip-gaze's chain and clip-interrogator's `Interrogator.chain` limited to the same `--ci-steps` steps
  (min_count = max_count, so neither stops early; clip-interrogator's step re-encodes every candidate at
  the full 77-token context, about 1.5 minutes a step here): seconds a step, and the final cosines;
- the same steps on ONNX Runtime's prefix graph (the same choices asserted);
- peak memory (ru_maxrss) after each part.

clip-interrogator's Interrogator is built without its constructor (which downloads BLIP and the
precomputed label embeddings): `Interrogator.__new__` and the attributes its `chain` reads (config,
device, dtype, clip_model, tokenize, the offload flags) set by hand; its module is imported from
`--ci` (put on sys.path here only). The first run embeds the candidate lists into `--home` (about
106,000 phrases; minutes), later runs reuse them.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

from common import OUT, model_name

LISTS = ["ci-artists", "ci-flavors", "ci-mediums", "ci-movements", "ci-sites"]


FLOP_PER_TOKEN = 12 * 2 * 12 * 512 ** 2  # 12 blocks of width 512: qkv, out (4 d²) and the MLP (8 d²) multiply-adds


def gemm_gflops() -> float:
    """The best of a few fp32 (4096 × 512) @ (512 × 2048) products on torch: what the text tower's own
    matrix products could run at here, at most."""
    import torch

    a, b = torch.randn(4096, 512), torch.randn(512, 2048)
    best = float("inf")
    for _ in range(20):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * 4096 * 512 * 2048 / best / 1e9


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def picture(seed: int):  # a photograph-like picture: smooth colour fields and noise
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 255, (8, 8, 3)).astype(np.uint8)
    img = Image.fromarray(base).resize((640, 480), Image.BICUBIC)
    arr = np.asarray(img).astype(np.float32) + rng.normal(0, 12, (480, 640, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", type=Path, default=OUT / "interrogate-home")
    ap.add_argument("--pictures", type=int, default=2)
    ap.add_argument("--ci-steps", type=int, default=2)
    ap.add_argument("--ci", default="/tmp/24-ci")
    ap.add_argument("--backends", type=lambda v: [b for b in v.split(",") if b], default=["torch", "onnx"],
                    help="the engines' backends whose best and fast are timed (onnx: the chain on ONNX Runtime's prefix graph)")
    ap.add_argument("--quick", action="store_true",
                    help="No indexing: the candidates are the first 2,048 phrases of ci-flavors (the chain's cost does not "
                         "depend on how they were chosen); best and fast are then timed on the chain itself")
    args = ap.parse_args()

    import torch

    from indexer.engine import Engine
    from indexer.interrogate.candidates import ranked
    from indexer.interrogate.modes import Options, interrogate

    torch.set_num_threads(2)
    engine = Engine(args.home, model_name(), backend="torch")
    caption = "a photograph of a landscape"
    if args.quick:
        quick(engine, args, caption)
        return
    t = time.perf_counter()
    engine.index(LISTS)
    print(f"candidate lists embedded or found in {time.perf_counter() - t:.1f} s "
          f"({sum(engine.vocabulary(n).size for n in LISTS):,} phrases)")
    engines = {"torch": engine}
    if "onnx" in args.backends:  # the default on a CPU (`auto`): the model's ONNX export and the chain's prefix graph
        t = time.perf_counter()
        engines["onnx"] = Engine(args.home, model_name(), backend="onnx", threads=2)
        engines["onnx"].model  # noqa: B018  (exported on first use, kept in --home)
        from indexer.interrogate.modes import plan

        plan(engines["onnx"], Options(mode="best", caption=caption))  # the prefix graph's export, on first use
        print(f"ONNX exports found or made in {time.perf_counter() - t:.1f} s")
    from indexer.interrogate.modes import text_encoder

    attainable = gemm_gflops()
    print(f"attainable here: {attainable:.0f} GFLOP/s (fp32 matrix products of the text tower's MLP shape, 2 threads); "
          f"ViT-B-32's text tower is {FLOP_PER_TOKEN / 1e6:.1f} MFLOP a token position")
    for backend in args.backends:
        for i in range(args.pictures):
            image = picture(i)
            encoder = text_encoder(engines[backend], engines[backend].torch_model)
            time.sleep(0.5)
            t = time.perf_counter()
            best = interrogate(engines[backend], image, Options(mode="best", caption=caption), encoder=encoder)
            t_best = time.perf_counter() - t
            positions = encoder.counts.tokens
            print(f"{backend}, picture {i}: best ran {positions:,} token positions through the text tower "
                  f"({positions * FLOP_PER_TOKEN / 1e12:.2f} TFLOP): {positions * FLOP_PER_TOKEN / t_best / 1e9:.0f} GFLOP/s; "
                  f"at the attainable rate alone, {positions * FLOP_PER_TOKEN / attainable / 1e9:.1f} s")
            t = time.perf_counter()
            fast = interrogate(engines[backend], image, Options(mode="fast", caption=caption))
            t_fast = time.perf_counter() - t
            print(f"{backend} ({best.text_runtime} text tower), picture {i}: best {t_best:.2f} s ({best.steps} steps, "
                  f"{best.text_encodes:,} text encodes, {best.reused_prefix:,} after a cached prefix, cosine "
                  f"{best.cosine:.4f}, {best.tokens} tokens); fast {t_fast:.3f} s (cosine {fast.cosine:.4f}); "
                  f"peak RSS {rss_mb():.0f} MB")

    loaded = engine.torch_model
    image = picture(0)
    emb = loaded.encode_images([image])[0]
    against(loaded, emb, [c.phrase for c in ranked(engine, LISTS, emb, 2048)], caption, args, engines.get("onnx"))


def quick(engine, args, caption) -> None:
    import torch

    from indexer.catalog import catalog
    from indexer.interrogate.chain import Prompts, run_chain
    from indexer.interrogate.prefix import TorchPrefixEncoder

    loaded = engine.torch_model
    pool = [p.phrase for p in catalog().get("ci-flavors").phrases()][:2048]
    for i in range(args.pictures):
        image = picture(i)
        t = time.perf_counter()
        emb = loaded.encode_images([image])[0]
        enc = TorchPrefixEncoder(loaded)
        done = run_chain(enc, Prompts(loaded.tokenizer), emb, pool, caption, forced=8, max_steps=32)
        t_best = time.perf_counter() - t
        print(f"picture {i}: the best chain over {len(pool):,} candidates {t_best:.2f} s ({len(done.steps)} steps, "
              f"{enc.counts.encodes:,} text encodes, {enc.counts.by_suffix:,} after a cached prefix, "
              f"{enc.counts.tokens:,} token positions run); peak RSS {rss_mb():.0f} MB")
    del torch
    against(loaded, loaded.encode_images([picture(0)])[0], pool, caption, args)


def against(loaded, emb, pool, caption, args, onnx_engine=None) -> None:
    """The same chain, step for step, against clip-interrogator's (clip-gaze's on torch, and on ONNX Runtime
    with `onnx_engine`)."""
    import torch

    from indexer.interrogate.chain import Prompts, run_chain
    from indexer.interrogate.prefix import TorchPrefixEncoder

    sys.path.insert(0, args.ci)
    from clip_interrogator import clip_interrogator as ci_module

    ci = ci_module.Interrogator.__new__(ci_module.Interrogator)
    ci.config = ci_module.Config(device="cpu", quiet=True, caption_model_name=None)
    ci.device, ci.dtype = "cpu", torch.float32
    ci.clip_model, ci.tokenize = loaded.model, loaded.tokenizer
    ci.caption_offloaded = ci.clip_offloaded = False
    ci.caption_model = None
    features = torch.from_numpy(emb).unsqueeze(0)
    steps = args.ci_steps
    start_sim = ci.similarity(features, caption)
    t = time.perf_counter()
    ours = run_chain(TorchPrefixEncoder(loaded), Prompts(loaded.tokenizer), emb, pool, caption, forced=steps,
                     max_steps=steps)
    t_ours = time.perf_counter() - t
    ours_prompt = ", ".join([caption, *(pool[j] for j in ours.chosen)])
    ours_cos = ci.similarity(features, ours_prompt)
    t_onnx = None
    if onnx_engine is not None:
        from indexer.interrogate.modes import text_encoder

        encoder = text_encoder(onnx_engine, onnx_engine.torch_model)
        time.sleep(0.5)
        t = time.perf_counter()
        on_ort = run_chain(encoder, Prompts(loaded.tokenizer), emb, pool, caption, forced=steps, max_steps=steps)
        t_onnx = time.perf_counter() - t
        assert on_ort.chosen == ours.chosen, "ONNX Runtime's chain chose otherwise than torch's"
    time.sleep(0.5)
    t = time.perf_counter()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.cuda.amp.autocast's deprecation, on a CPU
        theirs = ci.chain(features, pool, caption, start_sim, min_count=steps, max_count=steps)
    t_theirs = time.perf_counter() - t
    theirs_cos = ci.similarity(features, theirs)
    print(f"{steps} chain steps over the same {len(pool):,} candidates from {caption!r}: clip-gaze {t_ours:.2f} s "
          f"({t_ours / steps:.2f} s a step), clip-interrogator 0.6.0 {t_theirs:.1f} s ({t_theirs / steps:.1f} s a step): "
          f"{t_theirs / t_ours:.0f}x; final cosine clip-gaze {ours_cos:.5f}, clip-interrogator {theirs_cos:.5f}; "
          f"same prompt: {ours_prompt == theirs}; peak RSS {rss_mb():.0f} MB")
    if t_onnx is not None:
        print(f"the same {steps} steps on ONNX Runtime's prefix graph: {t_onnx:.2f} s ({t_onnx / steps:.2f} s a step): "
              f"{t_theirs / t_onnx:.0f}x clip-interrogator's; the same choices as torch's")


if __name__ == "__main__":
    main()
