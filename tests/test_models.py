from __future__ import annotations

from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch

from indexer.errors import InvalidInput, ModelUnavailable
from indexer.models.torch_model import load_model
from indexer.models.registry import PRESETS, TOY_CHECKPOINT, parse_model
from indexer.catalog import catalog


def test_presets_are_the_guide_s():
    assert {n: (p.arch, p.pretrained) for n, p in PRESETS.items() if not p.config} == {
        "vit-b-32": ("ViT-B-32", "openai"),
        "sd15": ("ViT-L-14", "openai"),
        "sd2": ("ViT-H-14", "laion2b_s32b_b79k"),
        "sdxl": ("ViT-bigG-14", "laion2b_s39b_b160k"),
        "xlm-b32": ("xlm-roberta-base-ViT-B-32", "laion5b_s13b_b90k"),
        "xlm-h14": ("xlm-roberta-large-ViT-H-14", "frozen_laion5b_s13b_b90k"),
        "nllb-clip-base": ("nllb-clip-base", "v1"),
        "nllb-clip-large": ("nllb-clip-large", "v1"),
        "siglip-b16": ("ViT-B-16-SigLIP", "webli"),
        "siglip-so400m": ("ViT-SO400M-14-SigLIP-384", "webli"),
        "siglip2-b16": ("ViT-B-16-SigLIP2", "webli"),
    }
    for p in PRESETS.values():  # every preset names a real open_clip architecture and tag
        if not p.config:
            assert open_clip.get_pretrained_cfg(p.arch, p.pretrained)


def test_model_names_parse_to_presets_tags_and_files(tmp_path: Path):
    assert parse_model(None).preset == "vit-b-32"
    assert parse_model("SD15").arch == "ViT-L-14"
    tag = parse_model("ViT-B-16:laion2b_s34b_b88k")
    assert (tag.arch, tag.pretrained, tag.preset, tag.is_file) == ("ViT-B-16", "laion2b_s34b_b88k", None, False)
    ckpt = tmp_path / "weights.safetensors"
    ckpt.write_bytes(TOY_CHECKPOINT.read_bytes())
    spec = parse_model(f"clip-gaze-toy:{ckpt}")
    assert spec.is_file and spec.pretrained == str(ckpt)
    assert spec.key() == parse_model("toy").key()  # same weights, same stored embeddings


@pytest.mark.parametrize("name, match", [("nope", "unknown model"), ("ViT-B-32:/no/such/file.pt", "not found")])
def test_unknown_models_and_missing_files_are_clear_errors(name: str, match: str):
    with pytest.raises(InvalidInput, match=match):
        parse_model(name)


def test_missing_weights_offline_name_the_cache_and_how_to_pass_a_file():
    from conftest import HF_HOME

    with pytest.raises(ModelUnavailable) as exc:
        load_model(parse_model("vit-b-32"), device="cpu")
    message = exc.value.message
    assert str(HF_HOME / "hub") in message
    assert "timm/vit_base_patch32_clip_224.openai" in message
    assert "CLIP_GAZE_MODEL=ViT-B-32-quickgelu:/path/to/" in message


def test_unknown_tag_is_refused_before_any_download():
    with pytest.raises(InvalidInput, match="no pretrained tag"):
        load_model(parse_model("ViT-B-32:no-such-tag"), device="cpu")


def test_toy_is_loaded_through_open_clip_like_any_checkpoint(toy):
    assert isinstance(toy.model, open_clip.CLIP)
    assert toy.spec.config and toy.spec.arch == "clip-gaze-toy"
    assert toy.image_size == 64 and toy.dim == 32
    assert toy.logit_scale == pytest.approx(float(toy.model.logit_scale.detach().exp()))
    assert toy.trims_context


def test_trimmed_context_equals_full_77_token_context(toy):
    phrases = [p.phrase for p in catalog().get("movements").phrases()][:150] + ["a", "a red circle on a dark background"]
    trimmed = toy.encode_texts(phrases, batch_size=32)
    full = toy.encode_texts(phrases, batch_size=32, trim=False)
    assert np.abs(trimmed - full).max() < 1e-5
    with torch.inference_mode():  # and both equal open_clip's own encode_text
        ref = torch.nn.functional.normalize(toy.model.encode_text(toy.tokenize(phrases)), dim=-1).numpy()
    assert np.abs(trimmed - ref).max() < 1e-5


def test_embeddings_come_back_in_input_order_whatever_the_batching(toy):
    phrases = ["a very long phrase about a purple star on a light background", "a", "a red circle"]
    one = toy.encode_texts(phrases, batch_size=1)
    many = toy.encode_texts(phrases, batch_size=256)
    assert np.abs(one - many).max() < 1e-5
    assert np.abs(toy.encode_texts(["a red circle"])[0] - many[2]).max() < 1e-5


def test_input_sizes_come_from_open_clip_configs_without_importing_torch():
    """ONNX Runtime serves without torch: the decoder's target size of any open_clip architecture is
    read from open_clip's config files, not by importing open_clip."""
    import subprocess
    import sys

    code = ("import sys; from indexer.models.registry import parse_model; "
            "print([parse_model(m).image_size() for m in ('vit-b-32', 'ViT-L-14-336:openai', 'toy')], "
            "'torch' in sys.modules, 'open_clip' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[224, 336, 64] False False"
