"""open_clip's eval image transform (`open_clip.transform.image_transform_v2(cfg, is_train=False)`),
reproduced without torch or torchvision: the same PIL calls in the same order, then numpy.

open_clip 3 composes, for a picture of any mode:

1. the resize, on the picture as it comes (in its own mode: RGBA is resized premultiplied, P and 1
   with nearest neighbour, as PIL's `Image.resize` does):
   'shortest': torchvision `Resize(size)`: the shorter side becomes `size`, the longer
   `int(size * long / short)` (truncated); 'longest': `ResizeKeepRatio(size, longest=1)`: each side
   `round(side / max(h / size, w / size))`; 'squash': `Resize((size, size))`. Like torchvision, a
   picture already at the target size is not resampled; PIL's resize is torchvision's on PIL images
   (antialiased bilinear or bicubic).
2. 'shortest' and 'squash': torchvision `CenterCrop(size)`; 'longest': `CenterCropOrPad(size, fill)`:
   pad a short side (left/top get the smaller half) with `fill`, then crop at
   `round((side - size) / 2)` (Python's round: halves to even).
3. `convert("RGB")`, then `ToTensor` (uint8 / 255 in float32) and `Normalize` ((x - mean) / std in
   float32): here one 256-entry table per channel, computed with the same float32 operations.

The result equals open_clip's `preprocess(image).numpy()` exactly (tests compare them).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Mapping, Sequence, cast

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps

OPENAI_DATASET_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_DATASET_STD = (0.26862954, 0.26130258, 0.27577711)

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
_RESIZE_MODES = ("shortest", "longest", "squash")


def _not_exportable(message: str) -> Exception:
    from ..errors import NotExportable

    return NotExportable(message)


def _triple(value: Any, default: tuple[float, float, float], what: str) -> tuple[float, float, float]:
    """open_clip's `mean or OPENAI_DATASET_MEAN`, a scalar for all three channels, or a sequence of
    one (Normalize broadcasts it) or three."""
    if not value:
        return default
    if isinstance(value, numbers.Real):
        return (float(value),) * 3
    values = tuple(float(v) for v in value)
    if len(values) == 1:
        return values * 3
    if len(values) != 3:
        raise _not_exportable(f"image {what} has {len(values)} values; only 3 channels are supported")
    return (values[0], values[1], values[2])


@dataclass(frozen=True)
class ImageTransform:
    """A picture -> the (3, size, size) float32 array open_clip's eval transform makes of it."""

    size: int  # square input size
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str  # 'bicubic' or 'bilinear' (open_clip's names)
    resize_mode: str  # 'shortest' (default), 'longest', 'squash'
    fill_color: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, numbers.Integral) or self.size < 1:
            raise ValueError(f"size must be a positive integer, not {self.size!r}")
        if self.interpolation not in _RESAMPLE:
            raise ValueError(f"interpolation must be one of {sorted(_RESAMPLE)}, not {self.interpolation!r}")
        if self.resize_mode not in _RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {list(_RESIZE_MODES)}, not {self.resize_mode!r}")
        if isinstance(self.fill_color, bool) or not isinstance(self.fill_color, numbers.Integral):
            raise ValueError(f"fill_color must be an integer, not {self.fill_color!r}")
        mean = tuple(float(v) for v in self.mean)
        std = tuple(float(v) for v in self.std)
        if len(mean) != 3 or len(std) != 3:
            raise ValueError("mean and std need 3 values each")
        if any(s == 0 for s in std):
            raise ValueError(f"std must not be zero: {std}")
        object.__setattr__(self, "size", int(self.size))
        object.__setattr__(self, "fill_color", int(self.fill_color))
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        # ToTensor then Normalize, in float32 as torch computes them, for each possible byte value
        x = np.arange(256, dtype=np.float32) / np.float32(255)
        m = np.asarray(mean, dtype=np.float32)[:, None]
        s = np.asarray(std, dtype=np.float32)[:, None]
        lut = ((x[None, :] - m) / s).astype(np.float32)
        lut.setflags(write=False)
        object.__setattr__(self, "_lut", lut)

    # -- geometry: torchvision's and open_clip's arithmetic, PIL's operations ---------------------

    def _resize(self, image: Image.Image, height: int, width: int) -> Image.Image:
        if (image.height, image.width) == (height, width):
            return image  # torchvision's F.resize returns the picture itself
        return image.resize((width, height), _RESAMPLE[self.interpolation])

    def _center_crop(self, image: Image.Image, fill: int) -> Image.Image:
        size = self.size
        if size > image.width or size > image.height:
            dw, dh = size - image.width, size - image.height
            border = (
                dw // 2 if dw > 0 else 0,
                dh // 2 if dh > 0 else 0,
                (dw + 1) // 2 if dw > 0 else 0,
                (dh + 1) // 2 if dh > 0 else 0,
            )
            image = self._pad(image, border, fill)
            if (image.width, image.height) == (size, size):
                return image
        top = int(round((image.height - size) / 2.0))
        left = int(round((image.width - size) / 2.0))
        return image.crop((left, top, left + size, top + size))

    @staticmethod
    def _pad(image: Image.Image, border: tuple[int, int, int, int], fill: int) -> Image.Image:
        """torchvision's PIL pad, padding_mode='constant' (its _parse_fill, then ImageOps.expand)."""
        bands = len(image.getbands())
        color: int | tuple[int, ...] = (fill,) * bands if bands > 1 else fill
        if image.mode == "P":
            palette = image.getpalette()
            out = ImageOps.expand(image, border=border, fill=color)
            out.putpalette(palette)  # type: ignore[arg-type]
            return out
        return ImageOps.expand(image, border=border, fill=color)

    def geometry(self, image: Image.Image) -> Image.Image:
        """The resized and cropped (or padded) picture, still in its own mode."""
        size = self.size
        if self.resize_mode == "shortest":
            w, h = image.size
            short, long = (w, h) if w <= h else (h, w)
            new_short, new_long = size, int(size * long / short)
            new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
            return self._center_crop(self._resize(image, new_h, new_w), fill=0)
        if self.resize_mode == "squash":  # Resize((size, size)) and no crop
            return self._resize(image, size, size)
        # 'longest': open_clip's ResizeKeepRatio(longest=1) and CenterCropOrPad
        h, w = image.height, image.width
        ratio_h, ratio_w = h / size, w / size
        ratio = max(ratio_h, ratio_w) * 1.0 + min(ratio_h, ratio_w) * (1.0 - 1.0)
        new_h, new_w = (round(x * 1.0 / ratio) for x in (h, w))
        return self._center_crop(self._resize(image, new_h, new_w), fill=self.fill_color)

    def __call__(self, image: Image.Image) -> npt.NDArray[np.float32]:
        if not isinstance(image, Image.Image):
            raise TypeError(f"expected a PIL image, not {type(image).__name__}")
        picture = self.geometry(image)
        if picture.mode != "RGB":
            picture = picture.convert("RGB")
        pixels = np.asarray(picture)  # (size, size, 3) uint8
        lut: npt.NDArray[np.float32] = self._lut  # type: ignore[attr-defined]
        out = np.empty((3, self.size, self.size), dtype=np.float32)
        for c in range(3):
            np.take(lut[c], pixels[:, :, c], out=out[c])
        return out

    # -- description ---------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "resize_mode": self.resize_mode,
            "fill_color": self.fill_color,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ImageTransform":
        return cls(
            size=data["size"],
            mean=cast("tuple[float, float, float]", tuple(data["mean"])),
            std=cast("tuple[float, float, float]", tuple(data["std"])),
            interpolation=data["interpolation"],
            resize_mode=data["resize_mode"],
            fill_color=data.get("fill_color", 0),
        )

    @classmethod
    def from_open_clip(cls, model: Any) -> "ImageTransform":
        """The eval transform open_clip 3 builds for `model` (`image_transform_v2` of
        `model.visual.preprocess_cfg`); NotExportable for what this class cannot reproduce."""
        visual = getattr(model, "visual", model)
        cfg = getattr(visual, "preprocess_cfg", None)
        if not isinstance(cfg, Mapping) or not cfg:
            raise _not_exportable("the model has no preprocess_cfg (open_clip 3's image preprocessing settings)")
        if cfg.get("mode", "RGB") != "RGB":
            raise _not_exportable(f"image mode {cfg.get('mode')!r} is not supported (only RGB)")
        size: Any = cfg.get("size", 224)
        if isinstance(size, Sequence):
            if len(size) == 1:
                size = size[0]
            elif len(size) == 2 and size[0] == size[1]:
                size = size[0]
            else:
                raise _not_exportable(f"image size {tuple(size)} is not square")
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
            raise _not_exportable(f"image size {size!r} is not a positive integer")
        interpolation = cfg.get("interpolation") or "bicubic"
        if interpolation == "random":  # open_clip: random is bicubic at inference
            interpolation = "bicubic"
        if interpolation not in _RESAMPLE:
            raise _not_exportable(f"interpolation {interpolation!r} is not supported (bicubic or bilinear)")
        resize_mode = cfg.get("resize_mode") or "shortest"
        if resize_mode not in _RESIZE_MODES:
            raise _not_exportable(f"resize mode {resize_mode!r} is not supported")
        fill = cfg.get("fill_color", 0)
        if isinstance(fill, float) and fill.is_integer():
            fill = int(fill)
        if isinstance(fill, bool) or not isinstance(fill, numbers.Integral):
            raise _not_exportable(f"fill colour {fill!r} is not an integer")
        mean = _triple(cfg.get("mean"), OPENAI_DATASET_MEAN, "mean")
        std = _triple(cfg.get("std"), OPENAI_DATASET_STD, "std")
        if any(s == 0 for s in std):
            raise _not_exportable(f"image std {std} has a zero")
        return cls(
            size=int(size), mean=mean, std=std, interpolation=interpolation, resize_mode=resize_mode, fill_color=int(fill)
        )
