"""Indexing: text-embedding throughput against open_clip at full 77-token context (batches of 256),
same phrases, same run; and, with --all, one `clip-gaze index --all` over every built-in vocabulary
with the honesty of its progress bar's ETA measured.

    python bench/indexing.py [--phrases 1536] [--all]

--all takes several minutes (about 119,000 phrases) and leaves its data in bench/out/home-all, which
bench/memory_start.py then serves.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import time

import numpy as np
import torch

from common import OUT, header, model_name

from indexer.models.torch_model import load_model  # noqa: E402
from indexer.models.registry import parse_model  # noqa: E402
from indexer.catalog import catalog  # noqa: E402


def sample_phrases(n: int) -> list[str]:
    """A fixed sample of every built-in vocabulary's phrases (names, flavors, templated terms)."""
    everything = sorted({p.phrase for v in catalog().vocabularies.values() for p in v.phrases()})
    return random.Random(0).sample(everything, n)


def full_context(model, phrases: list[str], batch: int = 256) -> np.ndarray:
    out = []
    with torch.inference_mode():
        for i in range(0, len(phrases), batch):
            feats = model.model.encode_text(model.tokenize(phrases[i : i + batch]))
            out.append(torch.nn.functional.normalize(feats, dim=-1).numpy())
    return np.concatenate(out)


def throughput(args: argparse.Namespace) -> None:
    model = load_model(parse_model(model_name()), device="cpu")
    phrases = sample_phrases(args.phrases)
    lengths = (model.tokenize(phrases) != 0).sum(1).float()
    print(f"   {len(phrases)} phrases sampled from all built-in vocabularies; tokens per phrase: "
          f"mean {lengths.mean():.1f}, max {int(lengths.max())} (of a 77-token context)")
    model.encode_texts(phrases[:64])  # warm up
    t0 = time.perf_counter()
    ours = model.encode_texts(phrases, batch_size=256)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = full_context(model, phrases)
    t_ref = time.perf_counter() - t0
    diff = float(np.abs(ours - ref).max())
    print(f"   open_clip, full 77-token context, batches of 256: {t_ref:6.1f} s  ({len(phrases) / t_ref:6.0f} phrases/s)")
    print(f"   clip-gaze, sorted by length, trimmed batches:     {t_ours:6.1f} s  ({len(phrases) / t_ours:6.0f} phrases/s)")
    print(f"   speed-up: {t_ref / t_ours:.1f}×  (target ≥ 5×); largest difference in any embedding value: {diff:.2e} (must be ≤ 1e-5)")


def index_all() -> None:
    home = OUT / "home-all"
    if home.exists():
        import shutil

        shutil.rmtree(home)
    env = {**os.environ, "CLIP_GAZE_HOME": str(home), "CLIP_GAZE_MODEL": model_name()}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "clip_gaze", "index", "--all", "--json"], env=env,
                          capture_output=True, text=True, check=True)
    total = time.perf_counter() - t0
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    # tqdm's lines: "embedding phrases:  10%|█   | 11906/119057 [00:30<04:30, 396.20 phrases/s]"
    pattern = re.compile(r"(\d+)%\|[^|]*\| (\d+)/(\d+) \[(\d+):(\d+)<(\d+):(\d+)")
    bars = [m.groups() for m in pattern.finditer(proc.stderr)]
    embedded_total = report["embedded"]
    end_elapsed = None
    checkpoints = {}
    for pct, done, n, em, es, rm, rs in bars:
        elapsed, remaining = int(em) * 60 + int(es), int(rm) * 60 + int(rs)
        for target in (10, 25, 50, 75):
            if int(pct) >= target and target not in checkpoints:
                checkpoints[target] = (elapsed, elapsed + remaining)
        if int(done) == int(n):
            end_elapsed = elapsed
    print(f"   clip-gaze index --all: {len(report['vocabularies'])} vocabularies, {embedded_total} distinct phrases embedded, "
          f"{len(report['indexes_written'])} index files, {total:.0f} s in all ({embedded_total / total:.0f} phrases/s)")
    if end_elapsed:
        for target, (elapsed, predicted) in sorted(checkpoints.items()):
            print(f"   ETA at {target:2d}% ({elapsed:4d} s in): predicted total {predicted:4d} s, actual {end_elapsed} s "
                  f"({100 * (predicted - end_elapsed) / end_elapsed:+.0f}%)")
    again = subprocess.run([sys.executable, "-m", "clip_gaze", "index", "--all", "--json"], env=env,
                           capture_output=True, text=True, check=True)
    print(f"   second run embeds {json.loads(again.stdout.strip().splitlines()[-1])['embedded']} phrases")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--phrases", type=int, default=1536)
    ap.add_argument("--all", action="store_true", help="also index all 16 built-in vocabularies (minutes)")
    args = ap.parse_args()
    header("indexing (ViT-B-32 text tower, random weights, CPU)")
    throughput(args)
    if args.all:
        index_all()


if __name__ == "__main__":
    main()
