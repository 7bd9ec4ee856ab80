"""A tiny BLIP captioner, randomly initialised from a config (nothing downloaded), written into the test
session's Hugging Face cache as a snapshot of a made-up repo: the captioner's real loading code finds it
there, offline, as it would find Salesforce/blip-image-captioning-large."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

REPO = "clip-gaze-tests/tiny-blip"
REVISION = "0" * 40
WORDS = ["a", "red", "green", "blue", "circle", "square", "star", "shape", "picture", "of", "on", "dark", "light"]


def tiny_blip_in_cache(repo: str = REPO) -> str:
    import torch
    from transformers import (BertTokenizerFast, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor,
                              BlipProcessor)

    cache = Path(os.environ["HF_HUB_CACHE"])
    folder = cache / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / REVISION
    if (snapshot / "config.json").is_file():
        return repo
    with tempfile.TemporaryDirectory() as tmp:
        vocab = Path(tmp) / "vocab.txt"
        vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n", encoding="utf-8")
        tokenizer = BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True)
        tokenizer.add_special_tokens({"bos_token": "[DEC]"})
        images = BlipImageProcessor(size={"height": 32, "width": 32})
        processor = BlipProcessor(image_processor=images, tokenizer=tokenizer)
        torch.manual_seed(0)
        config = BlipConfig(
            vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                           "image_size": 32, "patch_size": 16},
            text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                         "num_attention_heads": 2, "max_position_embeddings": 64, "encoder_hidden_size": 32,
                         "bos_token_id": tokenizer.bos_token_id, "pad_token_id": tokenizer.pad_token_id,
                         "sep_token_id": tokenizer.sep_token_id, "eos_token_id": tokenizer.sep_token_id},
            projection_dim=32,
        )
        model = BlipForConditionalGeneration(config).eval()
        snapshot.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(snapshot)
        processor.save_pretrained(snapshot)
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(REVISION, encoding="utf-8")
    return repo
