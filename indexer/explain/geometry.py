"""Where the model looked: the part of a picture that the model's preprocessing keeps (its input's
box in the picture's pixels), for placing a map over the picture."""

from __future__ import annotations

from typing import Any


def input_box(preprocess: Any, size: tuple[int, int]) -> tuple[float, float, float, float]:
    """The part of a picture of `size` (width, height) that the model's preprocessing keeps, in that
    picture's pixels: open_clip's resizes (shortest side, squash, keep-ratio) and centre crops (a padded
    crop gives a box reaching past the picture)."""
    from torchvision.transforms import CenterCrop, Resize

    width, height = float(size[0]), float(size[1])
    x0, y0, sx, sy = 0.0, 0.0, 1.0, 1.0  # original = offset + current · scale
    for t in getattr(preprocess, "transforms", []):
        name = type(t).__name__
        if isinstance(t, Resize) or name == "ResizeKeepRatio":
            new_w, new_h = _resized(t, width, height)
            sx, sy = sx * width / new_w, sy * height / new_h
            width, height = new_w, new_h
        elif isinstance(t, CenterCrop) or name == "CenterCropOrPad":
            ch, cw = _pair(t.size)
            top, left = int(round((height - ch) / 2.0)), int(round((width - cw) / 2.0))
            x0, y0 = x0 + left * sx, y0 + top * sy
            width, height = float(cw), float(ch)
    return x0, y0, x0 + width * sx, y0 + height * sy


def _pair(size: Any) -> tuple[int, int]:
    if isinstance(size, (list, tuple)):
        return (int(size[0]), int(size[1] if len(size) > 1 else size[0]))
    return int(size), int(size)


def _resized(t: Any, width: float, height: float) -> tuple[float, float]:
    if type(t).__name__ == "ResizeKeepRatio":
        th, tw = t.size
        rh, rw = height / th, width / tw
        ratio = max(rh, rw) * t.longest + min(rh, rw) * (1.0 - t.longest)
        return float(round(width / ratio)), float(round(height / ratio))
    size = t.size
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return float(size[1]), float(size[0])  # squash to (h, w)
    target = int(size[0] if isinstance(size, (list, tuple)) else size)
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = target, int(target * long / short)
    return (float(new_short), float(new_long)) if width <= height else (float(new_long), float(new_short))


__all__ = ["input_box"]
