"""The ONNX Runtime backend: exporting a model's towers (indexer.models.export) and serving them
(indexer.models.onnx_model.OnnxModel), against the torch LoadedModel and open_clip itself."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from conftest import draw_shape
from indexer.models import export
from indexer.errors import ModelUnavailable, NotExportable
from indexer.models.export import export_model
from indexer.models.manifest import FORMAT_VERSION, export_dir, read_manifest
from indexer.models.parity import parity_pictures, probabilities
from indexer.models.torch_model import LoadedModel, load_model
from indexer.models.onnx_model import OnnxModel
from indexer.models.registry import ModelSpec, parse_model

ROOT = Path(__file__).resolve().parents[1]
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "black", "white")
SHAPES = ("circle", "square", "triangle")
PHRASES = [f"a {c} {s}" for c in COLOURS for s in SHAPES] + ["a circle", "a red shape", "a blue square on a dark background"]


@pytest.fixture(scope="module")
def onnx_toy(toy_onnx_dir: Path, toy: LoadedModel) -> OnnxModel:
    return OnnxModel.load(toy_onnx_dir, toy.spec, device="cpu")


def pictures() -> list[Image.Image]:
    out = [draw_shape(c, s, size=64 + 37 * i, background="white" if i % 2 else "black")
           for i, (c, s) in enumerate(zip(COLOURS, SHAPES * 3))]
    out.append(draw_shape("red", "square").convert("L"))
    out.append(draw_shape("blue", "circle").convert("RGBA"))
    out.append(draw_shape("green", "triangle").resize((300, 90)))
    return out


def leftovers(directory: Path) -> list[Path]:
    return sorted(p for p in directory.parent.glob(f".{directory.name}.*") if not p.name.endswith(".lock"))


# -- parity with the torch backend ----------------------------------------------------------------
def test_image_embeddings_equal_torch_for_several_pictures_in_one_batch(toy: LoadedModel, onnx_toy: OnnxModel):
    pics = pictures()
    for p in pics:
        assert np.abs(toy.image_tensor(p).numpy() - onnx_toy.image_array(p)).max() <= 1e-6
    theirs, ours = toy.encode_images(pics), onnx_toy.encode_images(pics)
    assert ours.shape == (len(pics), toy.dim) and ours.dtype == np.float32
    assert np.abs(ours - theirs).max() <= 1e-5
    assert np.allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-6)
    one = onnx_toy.encode_image_arrays(onnx_toy.image_array(pics[3])[None])  # another batch size
    assert np.abs(one - theirs[3:4]).max() <= 1e-5


def test_text_embeddings_equal_torch_at_every_token_length(toy: LoadedModel, onnx_toy: OnnxModel):
    phrases = [" ".join(["a"] * k) for k in range(0, 80)]  # 2 .. 77 tokens, the last few cut to 77
    tokens = onnx_toy.tokenize(phrases)
    assert np.array_equal(tokens, toy.tokenize(phrases).numpy())
    assert sorted(set(onnx_toy.tokenizer.lengths(tokens).tolist())) == list(range(2, 78))
    theirs = toy.encode_texts(phrases, batch_size=1)  # each phrase alone, at its own length
    ours = onnx_toy.encode_texts(phrases, batch_size=1)
    assert np.abs(ours - theirs).max() <= 1e-5
    full = onnx_toy.encode_texts(phrases, trim=False)  # the whole context, one batch
    assert np.abs(full - theirs).max() <= 1e-5


def test_text_embeddings_equal_torch_in_batches_mixing_lengths(toy: LoadedModel, onnx_toy: OnnxModel):
    rng = np.random.default_rng(7)
    phrases = PHRASES + [" ".join(rng.choice(["red", "circle", "on", "a", "dark", "background"], size=n)) for n in range(1, 30)]
    order = rng.permutation(len(phrases))
    phrases = [phrases[i] for i in order]
    theirs = toy.encode_texts(phrases)
    for batch_size in (len(phrases), 8, 5):
        done: list[int] = []
        ours = onnx_toy.encode_texts(phrases, batch_size=batch_size, progress=done.append)
        assert sum(done) == len(phrases) and len(done) == -(-len(phrases) // batch_size)
        assert ours.shape == theirs.shape and ours.dtype == np.float32
        assert np.abs(ours - theirs).max() <= 1e-5


def test_probabilities_equal_torch(toy: LoadedModel, onnx_toy: OnnxModel):
    pics = pictures()
    theirs = probabilities(toy.encode_images(pics), toy.encode_texts(PHRASES), toy.logit_scale)
    ours = probabilities(onnx_toy.encode_images(pics), onnx_toy.encode_texts(PHRASES), onnx_toy.logit_scale)
    assert np.abs(ours - theirs).max() <= 1e-5
    assert onnx_toy.logit_scale == pytest.approx(toy.logit_scale, rel=1e-7)
    assert PHRASES[int(ours[0].argmax())] == "a red circle"  # the toy still reads its own world


def test_empty_inputs_and_wrong_shapes(onnx_toy: OnnxModel):
    assert onnx_toy.encode_texts([]).shape == (0, onnx_toy.dim)
    assert onnx_toy.encode_images([]).shape == (0, onnx_toy.dim)
    from indexer.errors import InvalidInput

    with pytest.raises(InvalidInput):
        onnx_toy.encode_image_arrays(np.zeros((1, 3, 32, 32), dtype=np.float32))


# -- the export and its manifest ------------------------------------------------------------------
def test_manifest_describes_the_export(toy: LoadedModel, toy_onnx_dir: Path, onnx_toy: OnnxModel):
    m = read_manifest(toy_onnx_dir)
    assert m is not None and m == onnx_toy.manifest
    assert (m.format, m.opset, m.model_key, m.model_name, m.arch) == (
        FORMAT_VERSION, 18, toy.spec.key(), "toy", "clip-gaze-toy")
    assert set(m.versions) == {"torch", "open_clip", "onnx", "onnxruntime", "clip_gaze"}
    assert m.versions["onnxruntime"] == ort.__version__
    assert (m.logit_scale, m.image_size, m.dim) == (pytest.approx(toy.logit_scale), toy.image_size, toy.dim)
    assert m.text.trims is True and m.text.context_length == 77
    assert m.transform["size"] == toy.image_size and m.tokenizer["context_length"] == 77
    p = m.parity
    assert max(p.image_embedding, p.text_embedding, p.probability, p.pixels) <= 1e-5
    assert p.images >= 3 and p.phrases >= 5 and len(p.token_lengths) >= 5 and max(p.token_lengths) == 77
    assert m.files == {"image": "image.onnx", "text": "text.onnx", "bpe": "bpe_simple_vocab_16e6.txt.gz"}
    on_disk = {f.name: f.stat().st_size for f in toy_onnx_dir.iterdir() if f.name != "manifest.json"}
    assert m.sizes == on_disk and {"image.onnx.data", "text.onnx.data"} <= set(on_disk)  # weights beside the graphs
    assert datetime.fromisoformat(m.created).utcoffset() is not None and m.export_seconds > 0
    assert json.loads((toy_onnx_dir / "manifest.json").read_text())["model_key"] == toy.spec.key()
    assert (onnx_toy.backend, onnx_toy.providers, onnx_toy.trims_context) == ("onnx", ["CPUExecutionProvider"], True)
    assert (onnx_toy.image_size, onnx_toy.dim, onnx_toy.spec) == (toy.image_size, toy.dim, toy.spec)
    pixels, tokens = onnx_toy.image_session.get_inputs()[0], onnx_toy.text_session.get_inputs()[0]
    assert (pixels.name, pixels.type, pixels.shape[1:]) == ("pixels", "tensor(float)", [3, 64, 64])
    assert (tokens.name, tokens.type) == ("tokens", "tensor(int64)")
    assert all(isinstance(d, str) for d in [pixels.shape[0], *tokens.shape])  # dynamic batch and length


def test_export_dir_is_safe_and_distinct_per_key(tmp_path: Path, toy: LoadedModel):
    keys = ["ViT-B-32:openai", "ViT-B-32:laion2b_s34b_b79k", "clip-gaze-toy:file-3f2a0123456789ab", "a:b", "a/b",
            "a_b", "../../etc:passwd", "x" * 300]
    dirs = [export_dir(tmp_path, k) for k in keys]
    assert len(set(dirs)) == len(keys)
    for d in dirs:
        assert d.parent == tmp_path / "onnx" and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*-[0-9a-f]{12}", d.name)
        assert len(d.name) <= 80
    assert export_dir(tmp_path, "ViT-B-32:openai").name.startswith("ViT-B-32_openai-")
    assert export_dir(tmp_path, toy.spec.key()) == export_dir(tmp_path, toy.spec.key())


def test_a_model_with_other_weights_gets_its_own_directory(tmp_path: Path, toy: LoadedModel, toy_onnx_dir: Path):
    other = tmp_path / "other.safetensors"
    other.write_bytes(Path(toy.spec.pretrained).read_bytes() + b" ")
    spec = ModelSpec(toy.spec.arch, str(other), None, toy.spec.config)
    assert spec.key() != toy.spec.key()
    assert export_dir(tmp_path, spec.key()) != export_dir(tmp_path, toy.spec.key())
    with pytest.raises(ModelUnavailable, match="is of clip-gaze-toy:file-"):
        OnnxModel.load(toy_onnx_dir, spec)


def test_incomplete_exports_are_not_taken(tmp_path: Path, toy: LoadedModel, toy_onnx_dir: Path):
    directory = export_dir(tmp_path, toy.spec.key())
    directory.parent.mkdir(parents=True)
    leftover = directory.parent / f".{directory.name}.tmp-999-dead"  # an export that died before its rename
    shutil.copytree(toy_onnx_dir, leftover)
    assert read_manifest(directory) is None
    with pytest.raises(ModelUnavailable, match="no complete ONNX export"):
        OnnxModel.load(directory, toy.spec)

    shutil.copytree(toy_onnx_dir, directory)
    assert read_manifest(directory) is not None
    manifest = directory / "manifest.json"
    text = manifest.read_text()
    broken = {
        "no manifest": lambda: manifest.unlink(),
        "truncated manifest": lambda: manifest.write_text(text[: len(text) // 2]),
        "other format": lambda: manifest.write_text(text.replace('"format": 1', '"format": 99')),
        "missing weights": lambda: (directory / "text.onnx.data").unlink(),
        "truncated graph": lambda: (directory / "image.onnx").write_bytes(b"\0" * 10),
    }
    for why, damage in broken.items():
        shutil.rmtree(directory)
        shutil.copytree(toy_onnx_dir, directory)
        damage()
        assert read_manifest(directory) is None, why


def test_a_second_export_waits_for_the_first_and_finds_it_done(tmp_path: Path, toy: LoadedModel, toy_onnx_dir: Path):
    directory = export_dir(tmp_path, toy.spec.key())
    directory.parent.mkdir(parents=True)
    leftover = directory.parent / f".{directory.name}.tmp-999-dead"
    leftover.mkdir()
    (leftover / "image.onnx").write_bytes(b"half")
    done: dict[str, object] = {}
    messages: list[str] = []
    with export._export_lock(directory):  # "another process" is exporting
        worker = threading.Thread(target=lambda: done.update(m=export_model(toy, directory, progress=messages.append)))
        worker.start()
        time.sleep(0.5)
        assert worker.is_alive() and not done  # waits for the lock
        shutil.copytree(toy_onnx_dir, directory)  # the other process's export lands
    worker.join(60)
    assert done["m"] == read_manifest(toy_onnx_dir)
    assert messages == [f"toy: already exported to {directory}"]
    assert leftovers(directory) == []  # the dead export's directory is cleared


_EXPORT_SCRIPT = """
import json, sys
from pathlib import Path
from indexer.models.export import export_model
from indexer.models.registry import parse_model
from indexer.models.torch_model import load_model
model = load_model(parse_model("toy"), device="cpu")
messages = []
manifest = export_model(model, Path(sys.argv[1]), progress=messages.append)
print(json.dumps({"created": manifest.created, "messages": messages}))
"""


def test_two_processes_exporting_at_once_make_one_export(tmp_path: Path, toy: LoadedModel):
    directory = export_dir(tmp_path, toy.spec.key())
    directory.mkdir(parents=True)  # an earlier export without its manifest: redone
    (directory / "image.onnx").write_bytes(b"half")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", _EXPORT_SCRIPT, str(directory)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    exported = [r for r in results if any("exporting the image tower" in m for m in r["messages"])]
    found = [r for r in results if any("already exported" in m for m in r["messages"])]
    assert len(exported) == 1 and len(found) == 1
    manifest = read_manifest(directory)
    assert manifest is not None and {r["created"] for r in results} == {manifest.created}
    assert leftovers(directory) == []
    assert OnnxModel.load(directory, toy.spec).encode_texts(["a red circle"]).shape == (1, toy.dim)


def test_a_text_tower_that_does_not_trim_is_exported_at_full_context(tmp_path: Path, toy: LoadedModel):
    fixed = copy.copy(toy)
    fixed.trims_context = False  # as for towers without a causal mask or not pooled at the end token
    manifest = export_model(fixed, export_dir(tmp_path, toy.spec.key()))
    assert manifest.text.trims is False and manifest.text.context_length == 77
    model = OnnxModel.load(export_dir(tmp_path, toy.spec.key()), toy.spec)
    batch, length = model.text_session.get_inputs()[0].shape
    assert model.trims_context is False and isinstance(batch, str) and length == 77
    phrases = PHRASES + [" ".join(["a"] * 90)]
    assert np.abs(model.encode_texts(phrases, batch_size=7) - toy.encode_texts(phrases)).max() <= 1e-5


# -- what cannot be exported ----------------------------------------------------------------------
def _with_tokenizer(toy: LoadedModel, tokenizer: object) -> LoadedModel:
    other = copy.copy(toy)
    other.tokenizer = tokenizer
    return other


def test_an_unsupported_tokenizer_is_not_exportable_and_leaves_nothing(tmp_path: Path, toy: LoadedModel):
    from open_clip.tokenizer import HFTokenizer, SimpleTokenizer

    directory = export_dir(tmp_path, toy.spec.key())
    hf = object.__new__(HFTokenizer)  # a Hugging Face tokenizer, as SigLIP's (not built: no network)
    for tokenizer, why in ((hf, "holds no Hugging Face tokenizer"), (SimpleTokenizer(clean="whitespace"), "cleans text")):
        with pytest.raises(NotExportable, match=why) as caught:
            export_model(_with_tokenizer(toy, tokenizer), directory)
        assert caught.value.code == "not_exportable" and isinstance(caught.value, ModelUnavailable)
        assert not directory.exists() and leftovers(directory) == []


def test_an_export_that_differs_from_torch_is_refused_and_leaves_nothing(
    tmp_path: Path, toy: LoadedModel, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(export, "PARITY_LIMIT", -1.0)  # no difference is small enough
    directory = export_dir(tmp_path, toy.spec.key())
    with pytest.raises(NotExportable, match="differ from torch's"):
        export_model(toy, directory)
    assert not directory.exists() and leftovers(directory) == []


# -- serving ------------------------------------------------------------------------------------------
def test_devices_and_threads(toy: LoadedModel, toy_onnx_dir: Path):
    model = OnnxModel.load(toy_onnx_dir, toy.spec, device="auto", threads=1)
    assert model.threads == 1
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert model.providers[0] == "CUDAExecutionProvider"
    else:
        assert model.providers == ["CPUExecutionProvider"] and model.device == "cpu"
        with pytest.raises(ModelUnavailable) as caught:
            OnnxModel.load(toy_onnx_dir, toy.spec, device="cuda")
        assert caught.value.code == "no_device"
    with pytest.raises(ModelUnavailable) as caught:
        OnnxModel.load(toy_onnx_dir, toy.spec, device="mps")
    assert caught.value.code == "no_device"


_NO_TORCH_SCRIPT = """
import sys
from pathlib import Path
from PIL import Image
from indexer.models.onnx_model import OnnxModel
from indexer.models.registry import parse_model
model = OnnxModel.load(Path(sys.argv[1]), parse_model("toy"))
model.encode_images([Image.new("RGB", (90, 70), "red")])
model.encode_texts(["a red circle", "a blue square on a dark background"])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "open_clip"))
print(",".join(heavy) or "none")
"""


def test_onnx_model_never_imports_torch(toy_onnx_dir: Path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", _NO_TORCH_SCRIPT, str(toy_onnx_dir)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "none"


# -- a real architecture ------------------------------------------------------------------------------
def test_vit_b_32_with_random_weights_gives_open_clips_probabilities(tmp_path: Path):
    """ViT-B-32's compute (random weights, saved as a local checkpoint): the export's probabilities
    against open_clip's own encode_image / encode_text at full context. Slow: about 30 s here."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    checkpoint = tmp_path / "vit-b-32-random.safetensors"
    save_file({k: v.contiguous() for k, v in open_clip.create_model("ViT-B-32").state_dict().items()}, str(checkpoint))
    loaded = load_model(parse_model(f"ViT-B-32:{checkpoint}"), device="cpu")
    directory = export_dir(tmp_path / "home", loaded.spec.key())
    manifest = export_model(loaded, directory)
    assert manifest.parity.image_embedding <= 1e-5 and manifest.parity.text_embedding <= 1e-5
    assert manifest.sizes["image.onnx.data"] > 300e6 and manifest.sizes["text.onnx.data"] > 200e6
    onnx = OnnxModel.load(directory, loaded.spec)

    pics = pictures()[:6] + parity_pictures()
    phrases = PHRASES[:12] + ["a detailed oil painting of a harbour at sunset, in the manner of the old Dutch masters"]
    model, tokenizer = loaded.model, open_clip.get_tokenizer("ViT-B-32")
    with torch.no_grad():
        image = model.encode_image(torch.stack([loaded.preprocess(p) for p in pics]), normalize=True)
        text = model.encode_text(tokenizer(phrases), normalize=True)
        theirs = (model.logit_scale.exp() * image @ text.T).softmax(dim=-1).numpy()
    ours = probabilities(onnx.encode_images(pics), onnx.encode_texts(phrases, batch_size=4), onnx.logit_scale)
    assert np.abs(ours - theirs).max() <= 1e-5
    assert np.abs(onnx.encode_images(pics) - image.numpy()).max() <= 1e-5
