"""SigLIP's text towers run at their full 64 positions (issue 25, part 1): the text settings of open_clip's
own ViT-B-16-SigLIP, ViT-SO400M-14-SigLIP-384 and ViT-B-16-SigLIP2 configs (no causal mask, pooled at the
last position, 64 positions), in a tiny random-weight model built here (no download: a small vision tower
and a stand-in tokenizer, since SigLIP's own comes from the Hugging Face hub). Trimming a batch to its
longest phrase would change every embedding, so `LoadedModel` must not trim them; tests/test_sigmoid.py
shows the causal toy trimming exactly."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest

from indexer.models.registry import ModelSpec
from indexer.models.torch_model import LoadedModel, supports_trimming

PHRASES = ["a", "a red circle", "st jerome in his study, reading by candle light"]


class WordIds:
    """A stand-in for SigLIP's tokenizer: a word → a fixed id, padded with 1 to the context (64)."""

    def __init__(self, context_length: int):
        self.context_length = context_length

    def __call__(self, texts: list[str] | str) -> object:
        import torch

        texts = [texts] if isinstance(texts, str) else texts
        out = torch.ones((len(texts), self.context_length), dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [2 + zlib.crc32(w.encode()) % 500 for w in text.split()][: self.context_length - 1] + [1]
            out[row, : len(ids)] = torch.tensor(ids)
        return out


@pytest.mark.parametrize("arch", ["ViT-B-16-SigLIP", "ViT-SO400M-14-SigLIP-384", "ViT-B-16-SigLIP2"])
def test_siglip_text_towers_run_at_their_full_context(arch: str, tmp_path: Path):
    import open_clip
    import torch

    real = open_clip.get_model_config(arch)
    text = {k: v for k, v in real["text_cfg"].items() if k not in ("hf_tokenizer_name", "tokenizer_kwargs")}
    assert (text["context_length"], text["no_causal_mask"], text["pool_type"]) == (64, True, "last")
    text.update(width=32, heads=2, layers=1, vocab_size=512, mlp_ratio=2.0)  # the shape kept, the size cut
    name = f"tiny-sigmoid-shape-{arch.lower()}"  # no "siglip" in the name: open_clip would fetch a tokenizer
    config = tmp_path / f"{name}.json"
    config.write_text(json.dumps({"embed_dim": 16, "init_logit_bias": real.get("init_logit_bias"), "custom_text": True,
                                  "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
                                  "text_cfg": text}))
    open_clip.add_model_config(str(config))
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None)
    model.eval()
    loaded = LoadedModel(ModelSpec(name, "random", config=str(config)), model, preprocess, WordIds(64), "cpu")
    assert loaded.logit_bias is not None  # a sigmoid model
    assert not supports_trimming(model) and not loaded.trims_context
    tokens = loaded.tokenize(PHRASES)
    assert tokens.shape == (3, 64)
    with torch.inference_mode():
        full = torch.nn.functional.normalize(model.encode_text(tokens).float(), dim=-1).numpy()
        longest = int((tokens != 1).sum(dim=1).max()) + 1  # the longest phrase and its end
        cut = torch.nn.functional.normalize(model.encode_text(tokens[:, :longest]).float(), dim=-1).numpy()
    assert np.abs(loaded.encode_texts(PHRASES) - full).max() <= 1e-6  # what clip-gaze embeds: the full context
    assert np.abs(loaded.encode_texts(PHRASES, trim=True) - full).max() <= 1e-6
    assert np.abs(cut - full).max() > 1e-4  # trimming this tower would not be exact
