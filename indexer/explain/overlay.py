"""The overlay picture of a map: the map over the picture shown in light grey, red where a cell raises
the phrase's share, blue where it lowers it, with a title and a colour scale."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

F32 = npt.NDArray[np.float32]

POSITIVE = np.array([215, 40, 40], dtype=np.float32)  # raises the phrase's share
NEGATIVE = np.array([40, 100, 215], dtype=np.float32)  # lowers it


def render_overlay(picture: "Image.Image", heat: F32, box: tuple[float, float, float, float], title: str = "",
                   unit: str = "logit") -> "Image.Image":
    """The map over the picture (shown in light grey): red where a cell raises the phrase's share, blue
    where it lowers it, stronger the more; outside the model's input the picture is dimmed; the
    strongest cell ringed; below, the title and a colour scale in logits."""
    from PIL import Image, ImageDraw, ImageFont

    w, h = picture.size
    s = max(384, min(768, max(w, h))) / max(w, h)
    dw, dh = max(1, round(w * s)), max(1, round(h * s))
    # the picture in light grey, so the map's colours read whatever the picture's own
    grey = np.asarray(picture.convert("L").resize((dw, dh), Image.Resampling.BICUBIC), dtype=np.float32)
    base = np.repeat((0.55 * grey + 0.45 * 235)[..., None], 3, axis=2)
    bx0, by0, bx1, by1 = (v * s for v in box)
    inside = np.zeros((dh, dw), dtype=bool)
    ix0, iy0, ix1, iy1 = max(0, round(bx0)), max(0, round(by0)), min(dw, round(bx1)), min(dh, round(by1))
    inside[iy0:iy1, ix0:ix1] = True
    out = np.where(inside[..., None], base, base * 0.45 + 255 * 0.1)
    vmax = float(np.abs(heat).max()) or 1.0
    bw, bh = max(1, round(bx1 - bx0)), max(1, round(by1 - by0))
    field_ = np.asarray(Image.fromarray((heat / vmax).astype(np.float32), "F").resize((bw, bh), Image.Resampling.BILINEAR))
    # place the box's field on the display, clipped to the picture
    value = np.zeros((dh, dw), dtype=np.float32)
    ox, oy = round(bx0), round(by0)
    sx0, sy0 = ix0 - ox, iy0 - oy
    value[iy0:iy1, ix0:ix1] = field_[sy0 : sy0 + (iy1 - iy0), sx0 : sx0 + (ix1 - ix0)]
    alpha = (0.78 * np.clip(np.abs(value), 0, 1))[..., None]
    colour = np.where(value[..., None] >= 0, POSITIVE, NEGATIVE)
    out = out * (1 - alpha) + colour * alpha
    cw = max(dw, 384)
    px = (cw - dw) // 2  # a narrow picture is centred above the scale
    canvas = Image.new("RGB", (cw, dh + 64), (255, 255, 255))
    canvas.paste(Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), "RGB"), (px, 0))
    draw = ImageDraw.Draw(canvas)
    rows, cols = heat.shape
    r, c = np.unravel_index(int(np.argmax(heat)), heat.shape)
    cx, cy = px + bx0 + (c + 0.5) * (bx1 - bx0) / cols, by0 + (r + 0.5) * (by1 - by0) / rows
    rad = max(4.0, 0.5 * min((bx1 - bx0) / cols, (by1 - by0) / rows))
    draw.ellipse((cx - rad, cy - rad, cx + rad, cy + rad), outline=(0, 0, 0), width=4)
    draw.ellipse((cx - rad, cy - rad, cx + rad, cy + rad), outline=(255, 255, 255), width=2)
    font = ImageFont.load_default(size=14)
    draw.text((8, dh + 6), _fit(draw, title, font, cw - 16), fill=(20, 20, 20), font=font)
    bar_x0, bar_x1, bar_y = 8, 8 + 240, dh + 30
    ramp = np.linspace(-1, 1, bar_x1 - bar_x0, dtype=np.float32)
    a = (0.78 * np.abs(ramp))[:, None]
    strip = (255 * (1 - a) + np.where(ramp[:, None] >= 0, POSITIVE, NEGATIVE) * a).astype(np.uint8)
    canvas.paste(Image.fromarray(np.repeat(strip[None], 12, axis=0), "RGB"), (bar_x0, bar_y))
    draw.rectangle((bar_x0, bar_y, bar_x1 - 1, bar_y + 11), outline=(120, 120, 120))
    small = ImageFont.load_default(size=12)
    draw.text((bar_x0, bar_y + 14), f"-{vmax:.3g}", fill=(60, 60, 60), font=small)
    draw.text(((bar_x0 + bar_x1) // 2 - 3, bar_y + 14), "0", fill=(60, 60, 60), font=small)
    high = f"+{vmax:.3g}"
    draw.text((bar_x1 - draw.textlength(high, font=small), bar_y + 14), high, fill=(60, 60, 60), font=small)
    draw.text((bar_x1 + 10, bar_y - 1), f"{unit} per cell", fill=(60, 60, 60), font=small)
    return canvas


def _fit(draw: Any, text: str, font: Any, width: float) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


__all__ = ["NEGATIVE", "POSITIVE", "render_overlay"]
