"""A preset's architecture with random weights (same compute as the real one): ONNX export, parity
against torch, memory, and trimmed against full-context text timing. `xlm-b32`'s by default; any
open_clip architecture by `--arch` (`ViT-B-16-SigLIP` for `siglip-b16`: its bias in the export and
the parity, its text tower never trimmed).

No download: XLM-RoBERTa-base's config is written here from its published values, and the toy-
multilingual tokenizer (ids well inside XLM-R's and SigLIP's vocabularies) stands in for the model's
own (the towers' compute does not depend on which ids they read).

    python bench/multilingual_random.py [--arch xlm-roberta-base-ViT-B-32] [--out /tmp/xlm-bench]
    python bench/multilingual_random.py --arch ViT-B-16-SigLIP --phrases 64
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

XLMR = {  # xlm-roberta-base and -large, from their config.json on the Hugging Face hub
    "xlm-roberta-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "xlm-roberta-large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
}


def rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="xlm-roberta-base-ViT-B-32")
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "clip-gaze-xlm-bench")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--phrases", type=int, default=256)
    args = ap.parse_args()

    import numpy as np
    import open_clip
    import torch
    from open_clip.tokenizer import HFTokenizer
    from transformers import XLMRobertaConfig

    from indexer.models.export import export_model
    from indexer.models.onnx_model import OnnxModel
    from indexer.models.registry import TOY_ML_DIR, ModelSpec
    from indexer.models.torch_model import LoadedModel

    torch.set_num_threads(args.threads)
    cfg = open_clip.get_model_config(args.arch)
    base = cfg["text_cfg"].get("hf_model_name")
    extra = {}
    if base in XLMR:  # an HF text tower: its config written here, its weights random
        hf_dir = args.out / "hf-config"
        XLMRobertaConfig(vocab_size=250002, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1, bos_token_id=0,
                         eos_token_id=2, **XLMR[base]).save_pretrained(str(hf_dir))
        extra["text_cfg"] = dict(cfg["text_cfg"], hf_model_name=str(hf_dir), hf_model_pretrained=False)
    before = rss_mib()
    t0 = time.perf_counter()
    model, _, preprocess = open_clip.create_model_and_transforms(args.arch, **extra)
    model.eval()
    context = cfg["text_cfg"].get("context_length", 77)  # XLM-R's in open_clip: 77; SigLIP's: 64
    tokenizer = HFTokenizer(str(TOY_ML_DIR / "hf"), context_length=context)
    spec = ModelSpec(args.arch, "random-weights")
    loaded = LoadedModel(spec, model, preprocess, tokenizer, "cpu")
    params = sum(p.numel() for p in model.parameters())
    print(f"{args.arch} random weights: {params / 1e6:.0f} M parameters, built in {time.perf_counter() - t0:.1f} s, "
          f"RSS +{rss_mib() - before:.0f} MiB (torch), trims_context={loaded.trims_context}, "
          f"logit_bias={loaded.logit_bias}")

    phrases = [f"een rode cirkel nummer {i}" if i % 3 else f"a blue square on a dark background {i}" for i in range(args.phrases)]
    t0 = time.perf_counter()
    trimmed = loaded.encode_texts(phrases, batch_size=64, trim=True)
    t_trim = time.perf_counter() - t0
    t0 = time.perf_counter()
    full = loaded.encode_texts(phrases, batch_size=64, trim=False)
    t_full = time.perf_counter() - t0
    print(f"{len(phrases)} phrases: trimmed {t_trim:.2f} s, full {context}-token context {t_full:.2f} s, "
          f"largest difference {np.abs(trimmed - full).max():.1e}")

    t0 = time.perf_counter()
    manifest = export_model(loaded, args.out / "onnx", force=True)
    print(f"export {time.perf_counter() - t0:.1f} s; {manifest.summary()}")
    del model, loaded
    import gc

    gc.collect()
    before = rss_mib()
    onnx = OnnxModel.load(args.out / "onnx", spec, device="cpu", threads=args.threads)
    onnx.encode_texts(phrases[:8])
    print(f"ONNX Runtime: RSS +{rss_mib() - before:.0f} MiB after loading and one text batch; "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    t0 = time.perf_counter()
    ours = onnx.encode_texts(phrases, batch_size=64)
    print(f"{len(phrases)} phrases on ONNX Runtime {time.perf_counter() - t0:.2f} s, largest difference from torch "
          f"{np.abs(ours - trimmed).max():.1e}")


if __name__ == "__main__":
    main()
