"""The `toy-multilingual` test instrument: open_clip's own HF text tower path, exact trimming of a
masked tower, and the toy's world read in four languages (pictures from tests/shapes.py)."""

from __future__ import annotations

import numpy as np
import pytest

import shapes
from indexer.models.registry import PRESETS, parse_model
from indexer.models.torch_model import LoadedModel, load_model, supports_trimming

# "a {colour} {shape}" in each language, written here (not taken from the training script)
NL_ADJ = {"red": "rode", "green": "groene", "blue": "blauwe", "yellow": "gele", "purple": "paarse",
          "orange": "oranje", "black": "zwarte", "white": "witte"}
NL_HET = {"red": "rood", "green": "groen", "blue": "blauw", "yellow": "geel", "purple": "paars",
          "orange": "oranje", "black": "zwart", "white": "wit"}
NL = {"circle": "cirkel", "square": "vierkant", "triangle": "driehoek", "star": "ster"}
DE_STEM = {"red": "rot", "green": "grün", "blue": "blau", "yellow": "gelb", "purple": "lila", "orange": "orange",
           "black": "schwarz", "white": "weiß"}
DE = {"circle": ("Kreis", "er"), "square": ("Quadrat", "es"), "triangle": ("Dreieck", "es"), "star": ("Stern", "er")}
FR_M = {"red": "rouge", "green": "vert", "blue": "bleu", "yellow": "jaune", "purple": "violet", "orange": "orange",
        "black": "noir", "white": "blanc"}
FR_F = {"red": "rouge", "green": "verte", "blue": "bleue", "yellow": "jaune", "purple": "violette", "orange": "orange",
        "black": "noire", "white": "blanche"}


def phrase(lang: str, colour: str, shape: str) -> str:
    if lang == "en":
        return f"a {colour} {shape}"
    if lang == "nl":
        return f"een {(NL_HET if shape == 'square' else NL_ADJ)[colour]} {NL[shape]}"
    if lang == "de":
        noun, ending = DE[shape]
        return f"ein {DE_STEM[colour] + ('' if colour == 'purple' else ending)} {noun}"
    if shape == "star":
        return f"une étoile {FR_F[colour]}"
    return f"un {dict(circle='cercle', square='carré', triangle='triangle')[shape]} {FR_M[colour]}"


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    return load_model(parse_model("toy-multilingual"), device="cpu")


@pytest.fixture(scope="module")
def pictures():
    return shapes.dataset(per_class=8, seed=2027)  # 256 pictures, 8 of each colour-shape pair


def test_preset_is_a_test_instrument_with_a_local_hf_tower(model):
    preset = PRESETS["toy-multilingual"]
    assert "test instrument" in preset.description
    import open_clip
    from open_clip.hf_model import HFTextEncoder

    assert isinstance(model.model, open_clip.CustomTextCLIP)
    assert isinstance(model.model.text, HFTextEncoder)
    assert model.model.text.config.model_type == "xlm-roberta"
    assert type(model.tokenizer).__name__ == "HFTokenizer"


def test_equals_open_clip_own_computation(model, pictures):
    import open_clip
    import torch

    from indexer.models.registry import local_text_cfg

    spec = parse_model("toy-multilingual")
    text_cfg = local_text_cfg(spec.config)
    open_clip.add_model_config(spec.config)
    ref, _, preprocess = open_clip.create_model_and_transforms(spec.arch, pretrained=spec.pretrained, text_cfg=text_cfg)
    ref.eval()
    tok = open_clip.tokenizer.HFTokenizer(str(text_cfg["hf_tokenizer_name"]), context_length=text_cfg["context_length"])
    phrases = [phrase(lang, c, s) for lang in ("en", "nl", "de", "fr") for c in ("red", "white") for s in shapes.SHAPES]
    phrases += ["a", "een rode vorm op een lichte achtergrond", "Ü ß é"]
    images = [p[0] for p in pictures[:6]]
    with torch.inference_mode():
        img = torch.nn.functional.normalize(ref.encode_image(torch.stack([preprocess(im) for im in images])), dim=-1)
        txt = torch.nn.functional.normalize(ref.encode_text(tok(phrases)), dim=-1)
        probs = (ref.logit_scale.exp() * img @ txt.T).softmax(dim=-1).numpy()
    ours_img, ours_txt = model.encode_images(images), model.encode_texts(phrases, batch_size=5)
    assert np.abs(ours_img - img.numpy()).max() < 1e-5
    assert np.abs(ours_txt - txt.numpy()).max() < 1e-5
    ours = ours_img @ ours_txt.T * model.logit_scale
    ours = np.exp(ours - ours.max(1, keepdims=True))
    assert np.abs(ours / ours.sum(1, keepdims=True) - probs).max() < 1e-5
    assert model.logit_scale == pytest.approx(float(ref.logit_scale.detach().exp()))


def test_masked_hf_tower_trims_exactly(model):
    assert model.trims_context and supports_trimming(model.model)
    phrases = ["a", "een rode cirkel", "ein lila Dreieck auf einem hellen Hintergrund", "une étoile blanche sur un fond sombre",
               "a red circle on a dark background", "een vierkant"] * 3
    trimmed = model.encode_texts(phrases, batch_size=4, trim=True)
    full = model.encode_texts(phrases, batch_size=4, trim=False)
    assert np.abs(trimmed - full).max() < 1e-5
    tokens = model.tokenize(phrases)
    assert tokens.shape[1] == 32 and int((tokens != 1).sum(1).max()) < 16  # the trimmed batches are much shorter


@pytest.mark.parametrize("lang", ["en", "nl", "de", "fr"])
def test_top1_over_32_colour_shape_phrases_in_each_language(model, pictures, lang):
    phrases = [phrase(lang, c, s) for c in shapes.COLOURS for s in shapes.SHAPES]
    images = model.encode_images([p[0] for p in pictures])
    best = (images @ model.encode_texts(phrases).T).argmax(axis=1)
    acc = float(np.mean([phrases[b] == phrase(lang, p[1], p[2]) for b, p in zip(best, pictures)]))
    assert acc >= 0.90, (lang, acc)


# -- ONNX Runtime: the HF tower exported, its tokenizer through `tokenizers` -------------------------
EDGE = ["a red circle", "  een   rode\tcirkel ", "ein lila Dreieck auf einem hellen Hintergrund", "une étoile blanche",
        "Ü ß é", "&amp; A RED Circle!", "ﬁ ligature ½", "a " + "very " * 40 + "long phrase", "x", "ℌ𝔢𝔩𝔩𝔬 🙂"]


@pytest.fixture(scope="module")
def onnx_model(model, tmp_path_factory):
    from indexer.models.export import export_model
    from indexer.models.manifest import export_dir
    from indexer.models.onnx_model import OnnxModel

    directory = export_dir(tmp_path_factory.mktemp("onnx-ml"), model.spec.key())
    manifest = export_model(model, directory)
    assert manifest.tokenizer["kind"] == "hf-json" and manifest.text.trims
    return OnnxModel.load(directory, model.spec, device="cpu")


def test_tokenizers_library_equals_open_clip_hftokenizer(model):
    from indexer.models.hf_tokenizer import HfJsonTokenizer

    ours = HfJsonTokenizer.from_open_clip(model.tokenizer)
    assert ours(EDGE).tolist() == model.tokenizer(EDGE).numpy().tolist()
    assert ours.lengths(ours(EDGE)).tolist() == (model.tokenizer(EDGE) != 1).sum(1).tolist()


@pytest.mark.parametrize("mode", ["whitespace", "lower", "canonicalize"])
def test_clean_functions_equal_open_clip(mode):
    from open_clip.tokenizer import get_clean_fn

    from indexer.models.hf_tokenizer import clean

    texts = EDGE + ["St. Jerome", "st jerome", "snake_case words", "l'été—à «Paris»", "&lt;b&gt;"]
    assert [clean(t, mode) for t in texts] == [get_clean_fn(mode)(t) for t in texts]


def test_canonicalize_collisions_are_found():
    from indexer.models.hf_tokenizer import HfJsonTokenizer
    from indexer.models.registry import TOY_ML_DIR

    tok = HfJsonTokenizer((TOY_ML_DIR / "hf" / "tokenizer.json").read_text(encoding="utf-8"), 32, clean="canonicalize",
                          pad_token_id=1)
    assert tok.collisions(["St. Jerome", "st jerome", "a red circle", "A red circle!", "a blue star"]) == [
        ["St. Jerome", "st jerome"], ["a red circle", "A red circle!"]]


def test_onnx_runtime_equals_open_clip_own_computation(model, onnx_model, pictures):
    phrases = [phrase(lang, c, s) for lang in ("en", "nl", "de", "fr") for c in ("red", "black") for s in shapes.SHAPES] + EDGE
    images = [p[0] for p in pictures[:6]]
    assert np.abs(onnx_model.encode_texts(phrases, batch_size=3) - model.encode_texts(phrases, trim=False)).max() < 1e-5
    assert np.abs(onnx_model.encode_images(images) - model.encode_images(images)).max() < 1e-5
    assert onnx_model.tokenize(phrases).tolist() == model.tokenize(phrases).numpy().tolist()


def test_onnx_top1_in_each_language(onnx_model, pictures):
    images = onnx_model.encode_images([p[0] for p in pictures])
    for lang in ("en", "nl", "de", "fr"):
        phrases = [phrase(lang, c, s) for c in shapes.COLOURS for s in shapes.SHAPES]
        best = (images @ onnx_model.encode_texts(phrases).T).argmax(axis=1)
        acc = float(np.mean([phrases[b] == phrase(lang, p[1], p[2]) for b, p in zip(best, pictures)]))
        assert acc >= 0.90, (lang, acc)


# -- offline: the files a multilingual preset needs from the Hugging Face cache ------------------------
def _cache_file(cache, repo: str, name: str) -> None:
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text("0" * 40)
    snap = folder / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True, exist_ok=True)
    (snap / name).write_text("{}")


def test_missing_cache_files_are_named(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from indexer.errors import ModelUnavailable

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _cache_file(tmp_path / "hub", "laion/CLIP-ViT-B-32-xlm-roberta-base-laion5B-s13B-b90k", "open_clip_pytorch_model.bin")
    _cache_file(tmp_path / "hub", "xlm-roberta-base", "tokenizer.json")
    with pytest.raises(ModelUnavailable) as caught:
        load_model(parse_model("xlm-b32"), device="cpu")
    message = str(caught.value)
    assert "xlm-roberta-base/config.json" in message and "xlm-roberta-base/tokenizer_config.json" in message
    assert "tokenizer.json," not in message and "laion/CLIP-ViT-B-32-xlm-roberta-base-laion5B-s13B-b90k/" not in message
    assert str(tmp_path / "hub") in message
