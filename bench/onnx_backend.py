"""ONNX Runtime backend against torch: export times, image and text speed, memory and load time.

    python bench/onnx_backend.py [--phrases 2000] [--rounds 3]

- export: the toy model and ViT-B-32 (random weights) exported afresh (`indexer.models.export`).
- images: ViT-B-32 encode at batch 1 and 8, torch `LoadedModel` against `OnnxModel` (CPU, default
  session settings), alternating with 0.5 s gaps; also ONNX Runtime with its threads spinning.
- text: a fixed sample of the built-in vocabularies' phrases, sorted and trimmed by both, batches
  of 256.
- memory: `OnnxModel.load` of ViT-B-32 in a fresh process (no torch), with the CPU arena on and
  off: resident memory after import, after load, after images and after the text, the peak of one
  batch of 256 phrases at the full 77 tokens (and torch's), and load time.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from common import OUT, ROOT, header, median, model_name, peak_rss_mb, photograph, rss_mb, timed

GAP = 0.5  # seconds between torch and ONNX Runtime runs (OpenMP threads still spinning)


def sample_phrases(n: int) -> list[str]:
    """A fixed sample of the phrases in lists/ (names, flavors, terms)."""
    phrases = set()
    for path in sorted((ROOT / "lists").rglob("*.txt")):
        phrases.update(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    return random.Random(0).sample(sorted(phrases), n)


def ms(fn: Callable[[], object], repeat: int) -> float:
    return median(timed(fn, repeat, warmup=1))


def alternate(runs: dict[str, Callable[[], object]], repeat: int, rounds: int) -> dict[str, float]:
    """Median over `rounds` of each run's median of `repeat` calls, alternating with GAP; every
    round's figure is printed (this machine's speed drifts)."""
    got: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            time.sleep(GAP)
            got[name].append(ms(fn, repeat))
    print("   rounds (ms): " + "; ".join(f"{k} {', '.join(f'{v:.0f}' for v in vs)}" for k, vs in got.items()))
    return {k: median(v) for k, v in got.items()}


def export_fresh(loaded, home: Path):
    from indexer.models.export import export_model
    from indexer.models.manifest import export_dir

    directory = export_dir(home, loaded.spec.key())
    shutil.rmtree(directory, ignore_errors=True)
    t0 = time.perf_counter()
    manifest = export_model(loaded, directory)
    return directory, manifest, time.perf_counter() - t0


def child(directory: str, arena: bool, spin: bool, phrases: int) -> None:
    """In a fresh process: memory and load time of OnnxModel alone."""
    import io

    from PIL import Image

    before = rss_mb()
    t0 = time.perf_counter()
    import indexer.models.onnx_model as om
    imported = rss_mb()
    import_s = time.perf_counter() - t0
    om.CPU_MEM_ARENA, om.INTRA_OP_SPINNING = arena, spin
    from indexer.models.registry import parse_model

    spec = parse_model(model_name())
    t0 = time.perf_counter()
    model = om.OnnxModel.load(Path(directory), spec)
    load_s = time.perf_counter() - t0
    loaded = rss_mb()
    image = Image.open(io.BytesIO(photograph()))
    image.load()
    batch = np.stack([model.image_array(image)] * 8)
    model.encode_image_arrays(batch[:1])
    model.encode_image_arrays(batch)
    after_images = rss_mb()
    model.encode_texts(sample_phrases(phrases))
    after_text = rss_mb()
    reset_peak()
    model.encode_texts([" ".join(["word"] * 80)] * 256)  # one batch of 256 at the full 77 tokens
    peak_77, after_77 = peak_rss_mb() - after_text, rss_mb()
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "open_clip"))
    print(json.dumps({"start": before, "imported": imported, "import_s": import_s, "loaded": loaded, "load_s": load_s,
                      "after_images": after_images, "after_text": after_text, "peak_77": peak_77, "after_77": after_77,
                      "torch_modules": len(heavy)}))


def reset_peak() -> None:
    """Linux: start VmHWM (peak resident memory) afresh from the current figure."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--phrases", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", nargs=4, metavar=("DIR", "ARENA", "SPIN", "PHRASES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        d, arena, spin, n = args.child
        child(d, arena == "1", spin == "1", int(n))
        return

    import io

    import torch
    from PIL import Image

    import indexer.models.onnx_model as om
    from indexer.models.torch_model import load_model
    from indexer.models.registry import parse_model

    header("ONNX Runtime backend against torch")
    home = OUT / "onnx-bench-home"
    print(f"   onnxruntime {om.ort.__version__}, threads: {om._cores()}, inter-op {om.INTER_OP_THREADS}, arena {om.CPU_MEM_ARENA}, "
          f"spinning {om.INTRA_OP_SPINNING}")

    toy = load_model(parse_model("toy"), device="cpu")
    _, _, toy_s = export_fresh(toy, home)
    print(f"export toy: {toy_s:.1f} s")
    del toy

    vit = load_model(parse_model(model_name()), device="cpu")
    directory, manifest, vit_s = export_fresh(vit, home)
    sizes = sum(manifest.sizes.values()) / 2**20
    print(f"export ViT-B-32: {vit_s:.1f} s ({sizes:.0f} MiB); parity: image {manifest.parity.image_embedding:.2g}, "
          f"text {manifest.parity.text_embedding:.2g}, probability {manifest.parity.probability:.2g}")

    onnx = om.OnnxModel.load(directory, vit.spec)
    om.INTRA_OP_SPINNING = True
    spinning = om.OnnxModel.load(directory, vit.spec)
    om.INTRA_OP_SPINNING = False

    image = Image.open(io.BytesIO(photograph()))
    image.load()
    pixels = np.stack([onnx.image_array(image)] * 8)
    tensor = torch.from_numpy(pixels.copy())
    diff = np.abs(onnx.encode_image_arrays(pixels) - vit.encode_image_tensors(tensor)).max()
    print(f"image embedding difference at batch 8: {diff:.2g}")
    alone = ms(lambda: vit.encode_image_tensors(tensor[:1]), 5)
    print(f"torch encode_image batch 1 alone, before alternating: {alone:.0f} ms")
    for n in (1, 8):
        got = alternate({
            "torch": lambda: vit.encode_image_tensors(tensor[:n]),
            "onnx": lambda: onnx.encode_image_arrays(pixels[:n]),
            "onnx-spin": lambda: spinning.encode_image_arrays(pixels[:n]),
        }, repeat=5 if n == 1 else 2, rounds=args.rounds)
        print(f"encode_image batch {n}: torch {got['torch']:.0f} ms, onnx {got['onnx']:.0f} ms "
              f"({got['torch'] / got['onnx']:.2f}x), onnx spinning {got['onnx-spin']:.0f} ms "
              f"({got['torch'] / got['onnx-spin']:.2f}x)")

    phrases = sample_phrases(args.phrases)
    lengths = onnx.tokenizer.lengths(onnx.tokenize(phrases))
    print(f"text: {len(phrases)} phrases, tokens median {int(np.median(lengths))}, max {int(lengths.max())}")
    times: dict[str, list[float]] = {"torch": [], "onnx": []}
    results = {}
    for _ in range(2):
        for name, fn in (("torch", vit.encode_texts), ("onnx", onnx.encode_texts)):
            time.sleep(GAP)
            t0 = time.perf_counter()
            results[name] = fn(phrases)
            times[name].append(time.perf_counter() - t0)
    t_torch, t_onnx = min(times["torch"]), min(times["onnx"])
    print(f"encode_texts: torch {t_torch:.1f} s ({len(phrases) / t_torch:.0f}/s), onnx {t_onnx:.1f} s "
          f"({len(phrases) / t_onnx:.0f}/s), {t_torch / t_onnx:.2f}x; largest difference "
          f"{np.abs(results['torch'] - results['onnx']).max():.2g}")
    long = [" ".join(["word"] * 80)] * 256
    del onnx, spinning
    time.sleep(GAP)
    base = rss_mb()
    reset_peak()
    vit.encode_texts(long)
    print(f"torch: one batch of 256 phrases at 77 tokens: peak +{peak_rss_mb() - base:.0f} MiB")
    del vit

    for arena in ("0", "1"):
        out = subprocess.run([sys.executable, __file__, "--child", str(directory), arena, "0", str(args.phrases)],
                             capture_output=True, text=True, check=True, cwd=ROOT)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"fresh process, arena {'on' if arena == '1' else 'off'}: RSS start {r['start']:.0f} MiB, "
              f"after import {r['imported']:.0f} ({r['import_s']:.2f} s), after load {r['loaded']:.0f} "
              f"(load {r['load_s']:.2f} s), after images {r['after_images']:.0f}, after text {r['after_text']:.0f}, "
              f"one batch of 256 at 77 tokens: peak +{r['peak_77']:.0f}, then {r['after_77']:.0f}; "
              f"torch modules: {r['torch_modules']}")


if __name__ == "__main__":
    main()
