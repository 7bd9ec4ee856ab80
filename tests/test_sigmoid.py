"""Sigmoid models (issue 25, part 1 and the toy-sigmoid half of part 6): `sigmoid` on every match of a
model with a logit_bias, `logit_bias` in the model block and the ONNX manifest, the presets, the text
towers that must run at full context, and the `toy-sigmoid` test instrument against open_clip itself."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import shapes
from conftest import draw_shape
from indexer.engine import Engine
from indexer.explain.decompose import Explainer, NotExplainable
from indexer.explain.maps import explain_image
from indexer.models.export import export_model
from indexer.models.manifest import export_dir
from indexer.models.onnx_model import OnnxModel
from indexer.models.registry import PRESETS, parse_model
from indexer.models.torch_model import LoadedModel, load_model
from indexer.scoring.softmax import sigmoids

COLOUR_SHAPE = [f"a {c} {s}" for c in shapes.COLOURS for s in shapes.SHAPES]
COLOUR = [f"a {c} shape" for c in shapes.COLOURS]
SHAPE = [f"a {s}" for s in shapes.SHAPES]
CAPTIONS = COLOUR_SHAPE + COLOUR + SHAPE  # 44: for a red circle, "a red circle", "a red shape", "a circle" are true


@pytest.fixture(scope="module")
def sig() -> LoadedModel:
    return load_model(parse_model("toy-sigmoid"), device="cpu")


@pytest.fixture(scope="module")
def sig_onnx(sig: LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> OnnxModel:
    directory = export_dir(tmp_path_factory.mktemp("sigmoid-onnx"), sig.spec.key())
    export_model(sig, directory)
    return OnnxModel.load(directory, sig.spec, device="cpu")


def _engine(home: Path, model: object) -> Engine:
    return Engine(home, "toy-sigmoid", loader=lambda spec, **_: model)


def pictures() -> list:
    return [draw_shape(c, s, size=96, background=b) for c, s, b in
            (("red", "circle", "white"), ("blue", "square", "black"), ("yellow", "star", "black"), ("green", "triangle", "white"))]


def open_clips_own(loaded: LoadedModel, pics: list, phrases: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """open_clip's computation: encode, normalise, logit_scale.exp() · cos (+ logit_bias), softmax and sigmoid."""
    import open_clip
    import torch

    model = loaded.model
    tokenizer = open_clip.get_tokenizer(loaded.spec.arch)
    with torch.no_grad():
        image = model.encode_image(torch.stack([loaded.preprocess(p) for p in pics]), normalize=True)
        text = model.encode_text(tokenizer(phrases), normalize=True)
        logits = model.logit_scale.exp() * image @ text.T
        return logits.softmax(dim=-1).numpy(), torch.sigmoid(logits + model.logit_bias).numpy()


# -- the registry ----------------------------------------------------------------------------------
def test_presets_name_the_sigmoid_models():
    assert (PRESETS["siglip-b16"].arch, PRESETS["siglip-b16"].pretrained) == ("ViT-B-16-SigLIP", "webli")
    assert (PRESETS["siglip-so400m"].arch, PRESETS["siglip-so400m"].pretrained) == ("ViT-SO400M-14-SigLIP-384", "webli")
    assert (PRESETS["siglip2-b16"].arch, PRESETS["siglip2-b16"].pretrained) == ("ViT-B-16-SigLIP2", "webli")
    toy = PRESETS["toy-sigmoid"]
    assert "siglip" not in toy.arch.lower()  # open_clip would fetch SigLIP's tokenizer from the network
    assert "test instrument" in toy.description and Path(toy.pretrained).is_file() and Path(toy.config).is_file()
    spec = parse_model(f"{toy.arch}:{toy.pretrained}")
    assert spec.config == toy.config and spec.preset is None


def test_sigmoids_are_the_logistic_of_the_biased_logit():
    cos = np.array([-1.0, 0.0, 0.1, 0.5, 1.0], dtype=np.float32)
    assert sigmoids(cos, 10.0, None) is None
    got = sigmoids(cos, 10.0, -2.0)
    assert np.allclose(got, 1 / (1 + np.exp(-(10 * cos.astype(np.float64) - 2))), atol=1e-12)
    assert np.isfinite(sigmoids(np.array([1.0, -1.0], np.float32), 1000.0, 0.0)).all()


# -- text towers at full context -------------------------------------------------------------------
def test_trimming_is_used_only_where_it_is_exact(sig: LoadedModel, toy: LoadedModel):
    """The toy's causal tower pooled at the end token trims (equal to the full context); toy-sigmoid's
    tower, like SigLIP's, has no causal mask and pools the last position: cutting it would change every
    embedding, so it runs at its full context whatever `trim` asks."""
    import torch

    from indexer.models.torch_model import encode_text_trimmed, supports_trimming

    phrases = ["a", "a red circle", "a purple triangle on a dark background"]
    assert toy.trims_context and supports_trimming(toy.model)
    assert np.abs(toy.encode_texts(phrases) - toy.encode_texts(phrases, trim=False)).max() <= 1e-6
    assert not sig.trims_context and not supports_trimming(sig.model)
    assert np.array_equal(sig.encode_texts(phrases), sig.encode_texts(phrases, trim=False))
    tokens = sig.tokenize(phrases)
    assert tokens.shape[1] == 32
    with torch.no_grad():
        full = torch.nn.functional.normalize(sig.model.encode_text(tokens), dim=-1).numpy()
        cut = torch.nn.functional.normalize(sig.model.encode_text(tokens[:, :12]), dim=-1).numpy()
    assert np.abs(sig.encode_texts(phrases) - full).max() <= 1e-6
    assert np.abs(cut - full).max() > 1e-3  # trimming this tower would not be exact
    with pytest.raises(Exception):
        encode_text_trimmed(sig.model, tokens)  # a CustomTextCLIP has no CLIP text tower to trim


# -- the answers -----------------------------------------------------------------------------------
def test_matches_carry_the_sigmoid_equal_to_open_clips_own(sig: LoadedModel, tmp_path: Path):
    engine = _engine(tmp_path, sig)
    pics = pictures()
    softmax, sigmoid = open_clips_own(sig, pics, CAPTIONS)
    for j, pic in enumerate(pics):
        answer = engine.compare(pic, CAPTIONS)
        assert answer.model.logit_bias == pytest.approx(float(sig.model.logit_bias.item()))
        matches = answer.results["compare"].matches
        assert len(matches) == len(CAPTIONS)
        for m in matches:
            i = CAPTIONS.index(m.phrase)
            assert abs(m.sigmoid - sigmoid[j, i]) <= 1e-5
            assert abs(m.probability - softmax[j, i]) <= 1e-5
        assert sum(m.probability for m in matches) == pytest.approx(1.0, abs=1e-6)
    dumped = engine.compare(pics[0], ["a red circle", "a blue star"]).model_dump(mode="json")
    assert "sigmoid" in dumped["results"]["compare"]["matches"][0] and "logit_bias" in dumped["model"]
    assert engine.models().model.logit_bias is not None


def test_the_sigmoid_does_not_move_when_the_list_changes(sig: LoadedModel, tmp_path: Path):
    engine = _engine(tmp_path, sig)
    pic = pictures()[0]
    short = {m.phrase: m for m in engine.compare(pic, ["a red circle", "a red shape"]).results["compare"].matches}
    long = {m.phrase: m for m in engine.compare(pic, CAPTIONS).results["compare"].matches}
    for phrase in short:
        assert short[phrase].sigmoid == pytest.approx(long[phrase].sigmoid, abs=1e-9)
        assert short[phrase].probability > long[phrase].probability  # the share is relative to its list


def test_softmax_models_have_no_sigmoid_and_no_bias(engine: Engine):
    answer = engine.compare(pictures()[0], ["a red circle", "a blue star"])
    dumped = answer.model_dump(mode="json")
    assert "logit_bias" not in dumped["model"]
    assert all("sigmoid" not in m for m in dumped["results"]["compare"]["matches"])


def test_the_text_output_says_what_each_number_means(sig: LoadedModel, tmp_path: Path):
    from clip_gaze.cli import format_table

    text = format_table(_engine(tmp_path, sig).compare(pictures()[0], ["a red circle", "a blue star"]))
    assert "logit bias" in text and "sigmoid" in text and "not relative" in text


# -- ONNX Runtime --------------------------------------------------------------------------------------
def test_the_onnx_export_carries_the_bias_and_equals_open_clip(sig: LoadedModel, sig_onnx: OnnxModel, tmp_path: Path):
    manifest = sig_onnx.manifest
    assert manifest.logit_bias == pytest.approx(float(sig.model.logit_bias.item()))
    assert manifest.text.trims is False and manifest.text.context_length == 32
    assert manifest.parity.sigmoid is not None and manifest.parity.sigmoid <= 1e-5
    assert sig_onnx.logit_bias == manifest.logit_bias
    pics = pictures()
    softmax, sigmoid = open_clips_own(sig, pics, CAPTIONS)
    engine = _engine(tmp_path, sig_onnx)
    for j, pic in enumerate(pics):
        for m in engine.compare(pic, CAPTIONS).results["compare"].matches:
            i = CAPTIONS.index(m.phrase)
            assert abs(m.sigmoid - sigmoid[j, i]) <= 1e-5 and abs(m.probability - softmax[j, i]) <= 1e-5


# -- the test instrument classifies independently drawn pictures ---------------------------------------
def test_toy_sigmoid_says_yes_to_every_true_caption_and_no_to_the_false_ones(sig: LoadedModel):
    held_out = shapes.dataset(per_class=6, seed=2025)  # 192 pictures, drawn by tests/shapes.py
    images = sig.encode_images([p[0] for p in held_out])
    texts = sig.encode_texts(CAPTIONS)
    prob = sigmoids(images @ texts.T, sig.logit_scale, sig.logit_bias)
    right = 0
    for row, (_, colour, shape, _bg) in zip(prob, held_out):
        true = {f"a {colour} {shape}", f"a {colour} shape", f"a {shape}"}
        want = np.array([c in true for c in CAPTIONS])
        right += int(((row > 0.5) == want).all())
    assert right / len(held_out) >= 0.90, right / len(held_out)


# -- explanations ----------------------------------------------------------------------------------
def test_toy_sigmoid_explanations_work_and_carry_the_sigmoid(sig: LoadedModel, tmp_path: Path):
    engine = _engine(tmp_path, sig)
    explained = explain_image(engine, pictures()[0], phrases=["a red circle", "a blue star", "a red shape"], top_k=3)
    matches = explained.answer.results["compare"].matches
    assert all(m.sigmoid is not None for m in matches)
    for m in matches:  # the map still adds up exactly
        assert sum(map(sum, m.heatmap)) + m.unmapped == pytest.approx(m.relative_logit, abs=1e-3)


def test_siglip_image_towers_are_not_explainable_with_the_reason():
    fake = SimpleNamespace(visual=SimpleNamespace(trunk=SimpleNamespace(attn_pool=object())))
    with pytest.raises(NotExplainable, match="attention-pooling head"):
        Explainer(fake)
