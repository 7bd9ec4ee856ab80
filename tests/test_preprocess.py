"""indexer.models.preprocess.ImageTransform against open_clip's eval transform: the same float32 array, bit for
bit, for every picture mode, awkward sizes and every preprocessing configuration open_clip ships."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import pytest
from PIL import Image

from indexer.errors import NotExportable
from indexer.models.preprocess import ImageTransform

open_clip = pytest.importorskip("open_clip")
from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict  # noqa: E402

RNG_SEED = 20240611


def _noise(w: int, h: int, bands: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(RNG_SEED + seed + 7 * w + 13 * h)
    shape = (h, w, bands) if bands > 1 else (h, w)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def _smooth(w: int, h: int) -> Image.Image:
    """A smooth picture with an edge (resampling errors show on gradients and edges alike)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 127.5 + 127.5 * np.sin(x / max(w, 1) * 7.0)
    g = 255.0 * y / max(h - 1, 1)
    b = np.where(x + y > (w + h) / 2, 230.0, 20.0)
    return Image.fromarray(np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8), "RGB")


def _pictures() -> dict[str, Callable[[], Image.Image]]:
    def rgb(w: int, h: int) -> Image.Image:
        return Image.fromarray(_noise(w, h), "RGB")

    def rgba() -> Image.Image:
        a = _noise(211, 150, 4)
        a[:40, :, 3] = 0  # a fully transparent band: PIL resizes RGBA premultiplied
        return Image.fromarray(a, "RGBA")

    def palette_with_transparency() -> Image.Image:
        im = _smooth(120, 90).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
        im.info["transparency"] = 3
        return im

    def i16() -> Image.Image:
        rng = np.random.default_rng(RNG_SEED)
        return Image.fromarray(rng.integers(0, 65536, (80, 70), dtype=np.uint16))

    return {
        "rgb-301x199": lambda: rgb(301, 199),
        "smooth-640x480": lambda: _smooth(640, 480),
        "rgba": rgba,
        "la": lambda: rgb(50, 61).convert("LA"),
        "l-97x333": lambda: rgb(97, 333).convert("L"),
        "p": lambda: rgb(120, 90).convert("P"),
        "p-transparency": palette_with_transparency,
        "pa": lambda: rgb(20, 9).convert("PA"),
        "1-bit": lambda: _smooth(99, 77).convert("1"),
        "cmyk": lambda: rgb(120, 121).convert("CMYK"),
        "i;16": i16,
        "i-32bit": lambda: Image.fromarray(np.random.default_rng(1).integers(-5, 70000, (40, 30), dtype=np.int32)),
        "f-float": lambda: Image.fromarray(np.random.default_rng(2).random((40, 30), dtype=np.float32) * 300),
        "1x1": lambda: rgb(1, 1),
        "3x500": lambda: rgb(3, 500),
        "500x3": lambda: rgb(500, 3),
        "1x40": lambda: rgb(1, 40),
        "exact-224": lambda: rgb(224, 224),
        "exact-64": lambda: rgb(64, 64),
        # centre-crop offsets (round halves to even): (225-224)/2=0.5 -> 0, 1.5 -> 2, 2.5 -> 2
        "225x224": lambda: rgb(225, 224),
        "224x227": lambda: rgb(224, 227),
        "229x224": lambda: rgb(229, 224),
        "65x64": lambda: rgb(65, 64),
        "64x67": lambda: rgb(64, 67),
        # shortest-side truncation: 224 * 300 / 225 = 298.67 -> 298 (not 299); 64 * 100 / 75 = 85.3
        "300x225": lambda: rgb(300, 225),
        "75x100": lambda: rgb(75, 100),
        "small-odd-13x7": lambda: rgb(13, 7),
    }


PICTURES = _pictures()
CONFIGS = [
    (size, mode, interpolation)
    for size in (224, 64)
    for mode in ("shortest", "longest", "squash")
    for interpolation in ("bicubic", "bilinear")
]


def _pair(cfg: PreprocessCfg) -> tuple[Any, ImageTransform]:
    reference = image_transform_v2(cfg, is_train=False)
    ours = ImageTransform.from_open_clip(SimpleNamespace(visual=SimpleNamespace(preprocess_cfg=asdict(cfg))))
    return reference, ours


def _same(reference: Any, ours: ImageTransform, image: Image.Image) -> None:
    try:
        expected = reference(image).numpy()
    except ValueError as exc:  # e.g. 'longest' makes a side 0 px: both must refuse alike
        with pytest.raises(type(exc), match=re.escape(str(exc))):
            ours(image)
        return
    got = ours(image)
    assert got.dtype == np.float32 and got.shape == expected.shape == (3, ours.size, ours.size)
    assert np.array_equal(got, expected), f"max abs difference {np.abs(got - expected).max()}"


def test_pictures_cover_every_mode() -> None:
    modes = {make().mode for make in PICTURES.values()}
    assert modes >= {"RGB", "RGBA", "LA", "L", "P", "PA", "1", "CMYK", "I;16", "I", "F"}


@pytest.mark.parametrize(("size", "resize_mode", "interpolation"), CONFIGS)
def test_equals_open_clip(size: int, resize_mode: str, interpolation: str) -> None:
    cfg = PreprocessCfg(
        size=size, resize_mode=resize_mode, interpolation=interpolation, fill_color=200 if resize_mode == "longest" else 0
    )
    reference, ours = _pair(cfg)
    for name, make in PICTURES.items():
        image = make()
        before = image.tobytes(), image.mode, image.size
        _same(reference, ours, image)
        assert (image.tobytes(), image.mode, image.size) == before, f"{name}: the picture was changed"


def test_large_picture() -> None:
    reference, ours = _pair(PreprocessCfg(size=224))
    _same(reference, ours, Image.fromarray(_noise(2175, 1713), "RGB"))
    _same(reference, ours, _smooth(1713, 2175))


def test_every_byte_value() -> None:
    """ToTensor and Normalize of each of the 256 values of each channel, as torch computes them."""
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    image = Image.fromarray(np.stack([values, values.T, 255 - values], -1), "RGB")
    for mean, std in [(None, None), ((0.5,) * 3, (0.5,) * 3), ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), ((0.0,) * 3, (1.0,) * 3)]:
        cfg = PreprocessCfg(size=16, **({} if mean is None else {"mean": mean, "std": std}))
        _same(*_pair(cfg), image)


def _pretrained_cfgs() -> dict[str, dict[str, Any]]:
    """Each distinct preprocessing configuration of open_clip's pretrained models (no download)."""
    out: dict[str, dict[str, Any]] = {}
    for arch, tag in open_clip.list_pretrained():
        vision = (open_clip.get_model_config(arch) or {}).get("vision_cfg") or {}
        cfg = merge_preprocess_dict(PreprocessCfg(), open_clip.get_pretrained_cfg(arch, tag))
        cfg["size"] = vision.get("image_size", 224)
        out.setdefault(json.dumps(cfg, sort_keys=True), cfg | {"name": f"{arch}:{tag}"})
    return out


def test_every_pretrained_configuration() -> None:
    cfgs = _pretrained_cfgs()
    assert len(cfgs) >= 10
    pictures = [Image.fromarray(_noise(301, 199), "RGB"), _smooth(199, 517), Image.fromarray(_noise(64, 64, 4), "RGBA")]
    for cfg in cfgs.values():
        name = cfg.pop("name")
        reference = image_transform_v2(PreprocessCfg(**cfg), is_train=False)
        model = SimpleNamespace(visual=SimpleNamespace(preprocess_cfg=cfg))
        size = cfg["size"]
        if isinstance(size, (tuple, list)) and len(set(size)) > 1:
            with pytest.raises(NotExportable):
                ImageTransform.from_open_clip(model)
            continue
        ours = ImageTransform.from_open_clip(model)
        for image in pictures:
            expected = reference(image).numpy()
            assert np.array_equal(ours(image), expected), name


def test_from_real_models(toy: Any) -> None:
    """The toy model (64 px) and ViT-B-32 (224 px, built without weights)."""
    ours = ImageTransform.from_open_clip(toy.model)
    assert ours.size == 64 and ours.resize_mode == "shortest" and ours.interpolation == "bicubic"
    images = [Image.fromarray(_noise(97, 131), "RGB"), PICTURES["cmyk"](), PICTURES["p"]()]
    for image in images:
        assert np.array_equal(ours(image), toy.preprocess(image).numpy())
    model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32")
    ours = ImageTransform.from_open_clip(model)
    assert ours == ImageTransform(224, model.visual.preprocess_cfg["mean"], model.visual.preprocess_cfg["std"], "bicubic", "shortest")
    for image in images:
        assert np.array_equal(ours(image), preprocess(image).numpy())


def test_overrides_open_clip_honours() -> None:
    """A scalar mean, 'random' interpolation (bicubic at inference), empty values (open_clip's defaults)."""
    cfg = {"size": [64], "mean": 0.5, "std": [0.25], "interpolation": "random", "resize_mode": None, "fill_color": 0.0}
    ours = ImageTransform.from_open_clip(SimpleNamespace(visual=SimpleNamespace(preprocess_cfg=cfg)))
    assert ours == ImageTransform(64, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "bicubic", "shortest", 0)
    reference = open_clip.image_transform(64, is_train=False, mean=0.5, std=[0.25], interpolation="random")
    image = _smooth(90, 70)
    assert np.array_equal(ours(image), reference(image).numpy())


@pytest.mark.parametrize(
    "cfg",
    [
        {"size": (224, 256)},
        {"size": (224, 224), "interpolation": "nearest"},
        {"size": 224, "interpolation": "lanczos"},
        {"size": 224, "resize_mode": "pad"},
        {"size": 224, "mean": (0.5, 0.5, 0.5, 0.5)},
        {"size": 224, "std": (0.0, 1.0, 1.0)},
        {"size": 224, "fill_color": 0.5},
        {"size": 224, "mode": "L"},
        {},
    ],
)
def test_not_exportable(cfg: dict[str, Any]) -> None:
    with pytest.raises(NotExportable):
        ImageTransform.from_open_clip(SimpleNamespace(visual=SimpleNamespace(preprocess_cfg=cfg)))


def test_no_preprocess_cfg() -> None:
    with pytest.raises(NotExportable):
        ImageTransform.from_open_clip(SimpleNamespace(visual=SimpleNamespace()))


def test_json_round_trip() -> None:
    t = ImageTransform(64, (0.1, 0.2, 0.3), (0.4, 0.5, 0.6), "bilinear", "longest", 255)
    data = json.loads(json.dumps(t.to_json()))
    assert data == {
        "size": 64, "mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6],
        "interpolation": "bilinear", "resize_mode": "longest", "fill_color": 255,
    }
    back = ImageTransform.from_json(data)
    assert back == t and hash(back) == hash(t)
    image = _smooth(90, 33)
    assert np.array_equal(back(image), t(image))
    for bad in ({"size": 0}, {"interpolation": "nearest"}, {"resize_mode": "crop"}, {"mean": [0.1, 0.2]}, {"std": [0, 1, 1]}):
        with pytest.raises(ValueError):
            ImageTransform.from_json(data | bad)


def test_rejects_other_inputs() -> None:
    with pytest.raises(TypeError):
        ImageTransform(64, (0.5,) * 3, (0.5,) * 3, "bicubic", "shortest")(np.zeros((64, 64, 3), np.uint8))  # type: ignore[arg-type]


def test_import_leaves_torch_out() -> None:
    code = (
        "import sys, indexer.models.preprocess, indexer.models.tokenizer\n"
        "bad = sorted(m for m in ('torch', 'torchvision', 'open_clip') if m in sys.modules)\n"
        "assert not bad, bad\n"
    )
    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True, timeout=120)
