"""The two backends: ONNX Runtime (the default, over the toy model's export) against torch (open_clip's
own model): the same answers within 1e-5, what `auto` chooses, the fallback, health, the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import add, create, draw_shape, encode
from indexer.collections.local import Collections
from indexer.models import backends
from indexer.engine import Engine
from indexer.errors import InvalidInput, NotExportable
from indexer.models.torch_model import LoadedModel
from indexer.models.onnx_model import OnnxModel
from indexer.settings import Settings

PHRASES = ["a red circle", "a blue square", "a green triangle", "a yellow star", "a red shape", "a circle on a dark background"]


@pytest.fixture
def onnx_engine(clean_environ: Path) -> Engine:
    engine = Engine(clean_environ, "toy")  # no loader: the default backend, over the linked export
    assert isinstance(engine.model, OnnxModel)
    return engine


def _probabilities(answer: Any, key: str) -> dict[str, float]:
    return {m.phrase: m.probability for m in answer.results[key].matches}


def test_onnx_runtime_answers_as_open_clip_does_within_1e_5(onnx_engine: Engine, engine: Engine):
    """Analyses, comparisons and batches: the same phrases, probabilities within 1e-5 of torch's."""
    assert isinstance(engine.model, LoadedModel)
    pictures = [encode(draw_shape(c, s, size=150)) for c, s in (("red", "circle"), ("blue", "square"), ("green", "triangle"))]
    for picture in pictures:
        a = _probabilities(onnx_engine.compare(onnx_engine.read(picture), PHRASES), "compare")
        b = _probabilities(engine.compare(engine.read(picture), PHRASES), "compare")
        assert a.keys() == b.keys()
        assert max(abs(a[p] - b[p]) for p in a) < 1e-5
        a = _probabilities(onnx_engine.analyze(picture, ["movements"], top_k=20), "movements")
        b = _probabilities(engine.analyze(picture, ["movements"], top_k=20), "movements")
        common = a.keys() & b.keys()
        assert len(common) >= 18 and max(abs(a[p] - b[p]) for p in common) < 1e-5


def test_phrase_embeddings_stored_by_torch_are_kept_and_agree_with_onnx_runtime(engine: Engine, clean_environ: Path):
    """The same model key: what the torch path stored is used as is by ONNX Runtime (never re-made),
    because the two agree within 1e-5."""
    create(engine, "mine", PHRASES[:3])
    stored = engine.embedder.lookup(PHRASES[:3])
    onnx_engine = Engine(clean_environ, "toy")
    assert np.array_equal(onnx_engine.embedder.lookup(PHRASES[:3]), stored)  # from the store
    fresh = onnx_engine.model.encode_texts(PHRASES[:3])
    assert np.abs(fresh - stored).max() < 1e-5
    add(onnx_engine, "mine", PHRASES[3:])  # written by ONNX Runtime, next to torch's
    assert onnx_engine.analyze(encode(draw_shape("red", "circle")), ["mine"]).results["mine"].softmax_over == len(PHRASES)


def test_collections_and_explanations_on_onnx_runtime(onnx_engine: Engine, tmp_path: Path):
    """Pictures added to a collection are encoded by ONNX Runtime and searchable; an explanation loads
    open_clip's own model beside it, once, and health-like reporting says so."""
    from indexer.explain.maps import explain_image

    folder = tmp_path / "pictures"
    folder.mkdir()
    for colour, shape in (("red", "circle"), ("blue", "square"), ("green", "triangle")):
        draw_shape(colour, shape, size=120).save(folder / f"{colour}-{shape}.png")
    from indexer.schema import parse
    from indexer.schema.collections import AddSources, CreateCollection

    Collections(onnx_engine).create(parse(CreateCollection, {"name": "shapes"}))
    Collections(onnx_engine).add("shapes", parse(AddSources, {"sources": [str(folder)]}))
    hits = Collections(onnx_engine).search("shapes", text="a blue square", top_k=1).hits
    assert hits[0].source.endswith("blue-square.png")
    info = onnx_engine.backends()
    assert info is not None and info.images.startswith("onnx (CPUExecutionProvider") and info.explanations.startswith("torch (loaded")
    found = explain_image(onnx_engine, onnx_engine.read(folder / "red-circle.png"), [], PHRASES, 1)
    assert found.answer.results["compare"].matches[0].phrase == "a red circle"
    info = onnx_engine.backends()
    assert info is not None and info.explanations == "torch (cpu)" and isinstance(onnx_engine.model, OnnxModel)


def test_auto_chooses_onnx_runtime_unless_it_cannot_serve(monkeypatch: pytest.MonkeyPatch):
    assert backends.choose("auto", "cpu") == "onnx"
    assert backends.choose("torch", "cpu") == "torch"
    monkeypatch.setattr(backends, "onnxruntime_installed", lambda: False)
    assert backends.choose("auto", "cpu") == "torch"
    monkeypatch.setattr(backends, "onnxruntime_installed", lambda: True)
    monkeypatch.setattr(backends, "onnx_cuda_available", lambda: False)
    monkeypatch.setattr(backends, "nvidia_gpu_present", lambda: True)
    assert backends.choose("auto", "auto") == "torch"  # a GPU, no CUDA provider: torch on the GPU
    assert backends.choose("auto", "cpu") == "onnx"
    monkeypatch.setattr(backends, "onnx_cuda_available", lambda: True)
    assert backends.choose("auto", "auto") == "onnx"
    with pytest.raises(InvalidInput, match="unknown backend"):
        backends.choose("tensorflow", "cpu")
    with pytest.raises(ValueError, match="CLIP_GAZE_BACKEND must be one of auto, onnx, torch"):
        Settings.from_env({"CLIP_GAZE_BACKEND": "tensorflow"})
    assert Settings.from_env({"CLIP_GAZE_BACKEND": " ONNX "}).backend == "onnx"


def test_a_model_that_cannot_be_exported_is_served_by_torch_under_auto_only(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, toy: LoadedModel, caplog: pytest.LogCaptureFixture):
    """The torch model loaded to export it then serves (on the CPU): it is not loaded a second time."""
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise NotExportable("its tokenizer is not open_clip's BPE tokenizer")

    loads: list[str] = []
    monkeypatch.setattr(backends, "ensure_export", refuse)
    monkeypatch.setattr("indexer.models.torch_model.load_model", lambda spec, **kw: loads.append(kw["device"]) or toy)
    home = tmp_path / "no-export"  # not the test's home, which holds the toy export
    assert backends.load(toy.spec, home=home, backend="auto", device="cpu") is toy
    assert loads == ["cpu"]
    assert "served by torch: its tokenizer is not open_clip's BPE tokenizer" in caplog.text
    with pytest.raises(NotExportable, match="tokenizer"):
        backends.load(toy.spec, home=home, backend="onnx")


def test_health_says_what_runs_what(clean_environ: Path):
    from service import create_app

    client = create_app(Settings.from_env()).test_client()
    before = client.get("/v1/health").get_json()
    assert before["backends"] is None and before["model_loaded"] is False
    assert client.post("/v1/compare", json={"image_base64": __import__("base64").b64encode(encode(draw_shape())).decode(),
                                            "phrases": PHRASES[:2]}).status_code == 200
    after = client.get("/v1/health").get_json()
    assert after["backends"]["images"] == after["backends"]["texts"] == "onnx (CPUExecutionProvider)"
    assert after["backends"]["explanations"] == "torch (loaded on first use)"


def test_models_export_command(clean_environ: Path, monkeypatch: pytest.MonkeyPatch):
    from clip_gaze.cli import cli

    runner = CliRunner()
    out = runner.invoke(cli, ["models", "export", "--json"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    manifest = json.loads(out.output)  # the linked session export: not made again
    assert manifest["model_name"] == "toy" and manifest["parity"]["probability"] < 1e-5 and manifest["opset"] == 18
    text = runner.invoke(cli, ["models", "export"], catch_exceptions=False).output
    assert "toy: " in text and "largest difference from open_clip" in text
    listed = runner.invoke(cli, ["models"], catch_exceptions=False).output
    assert "vit-b-32" in listed and "toy" in listed  # the group still lists presets
    monkeypatch.setenv("CLIP_GAZE_BACKEND", "tensorflow")
    bad = runner.invoke(cli, ["compare", "x.png", "a", "b"])
    assert bad.exit_code == 1 and "CLIP_GAZE_BACKEND must be one of auto, onnx, torch" in bad.output
