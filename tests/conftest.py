"""Hermetic, offline tests: every test gets its own data directory and an empty, offline
Hugging Face cache; the toy model (loaded once per session) stands in wherever a model is needed."""

from __future__ import annotations

import io
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import pytest
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).parent))

# huggingface_hub reads these once, at import: point them at an empty, offline cache before anything
# imports it, so no test can reach the network or a developer's cached weights.
HF_HOME = Path(tempfile.mkdtemp(prefix="clip-gaze-tests-hf-"))
os.environ.update(HF_HOME=str(HF_HOME), HF_HUB_CACHE=str(HF_HOME / "hub"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")

from indexer.engine import Engine  # noqa: E402
from indexer.models import LoadedModel, load_model  # noqa: E402
from indexer.specs import parse_model  # noqa: E402
from indexer.schema import AddPhrases, CreateVocabulary, RemovePhrases, WriteAnswer, parse  # noqa: E402


def create(engine: Engine, name: str, phrases: Any = (), **fields: Any) -> WriteAnswer:
    """engine.create_vocabulary through the request model, as the API and the CLI build it."""
    return engine.create_vocabulary(parse(CreateVocabulary, {"name": name, "phrases": list(phrases), **fields}))


def add(engine: Engine, name: str, phrases: Any) -> WriteAnswer:
    return engine.add_phrases(name, parse(AddPhrases, {"phrases": list(phrases)}))


def remove(engine: Engine, name: str, **fields: Any) -> WriteAnswer:
    return engine.remove_phrases(name, parse(RemovePhrases, fields))


@pytest.fixture(autouse=True)
def clean_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in ("CLIP_GAZE_API_TOKENS", "CLIP_GAZE_DEVICE", "CLIP_GAZE_THREADS", "CLIP_GAZE_LISTS"):
        monkeypatch.delenv(key, raising=False)
    home = tmp_path / "home"
    monkeypatch.setenv("CLIP_GAZE_HOME", str(home))
    monkeypatch.setenv("CLIP_GAZE_MODEL", "toy")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    import clip_gaze.library as library

    library._engines.clear()
    return home


@pytest.fixture(scope="session")
def toy() -> LoadedModel:
    return load_model(parse_model("toy"), device="cpu")


@pytest.fixture
def toy_loader(toy: LoadedModel) -> Callable[..., LoadedModel]:
    def loader(spec: Any, **_: Any) -> LoadedModel:
        assert spec.arch == toy.spec.arch
        return toy

    return loader


@pytest.fixture
def engine(clean_environ: Path, toy_loader: Callable[..., LoadedModel]) -> Engine:
    return Engine(clean_environ, "toy", loader=toy_loader)


def draw_shape(colour: str = "red", shape: str = "circle", size: int = 128, background: str = "white") -> Image.Image:
    img = Image.new("RGB", (size, size), background)
    d = ImageDraw.Draw(img)
    a, b = size // 4, 3 * size // 4
    if shape == "circle":
        d.ellipse((a, a, b, b), fill=colour)
    elif shape == "square":
        d.rectangle((a, a, b, b), fill=colour)
    else:
        d.polygon([(size // 2, a), (b, b), (a, b)], fill=colour)
    return img


def encode(img: Image.Image, fmt: str = "PNG", **kw: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.fixture
def red_circle_png() -> bytes:
    return encode(draw_shape("red", "circle"))


@pytest.fixture
def picture(tmp_path: Path) -> Path:
    p = tmp_path / "picture.png"
    draw_shape("blue", "square").save(p)
    return p
