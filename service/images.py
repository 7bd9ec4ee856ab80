"""Decoding untrusted images with limits. Used by the API, the CLI and the library (no Flask here).

Formats: JPEG, PNG, WebP, GIF (first frame), TIFF, BMP. EXIF orientation is applied; CMYK,
palette, 16-bit and alpha images become RGB (transparent areas on white). A pixel limit, checked
from the header before anything is decoded, guards against decompression bombs.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from indexer.errors import ImageTooLarge, InvalidImage

FORMATS = {"JPEG": "JPEG", "MPO": "JPEG", "PNG": "PNG", "WEBP": "WebP", "GIF": "GIF", "TIFF": "TIFF", "BMP": "BMP"}
SUPPORTED = "JPEG, PNG, WebP, GIF, TIFF or BMP"
_ROTATED = {5, 6, 7, 8}  # EXIF orientations that swap width and height


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # RGB, orientation applied (possibly reduced while decoding: see `draft`)
    sha256: str
    width: int  # of the picture as it is shown (orientation applied), before any reduction
    height: int
    format: str

    def info(self) -> dict[str, object]:
        return {"sha256": self.sha256, "width": self.width, "height": self.height, "format": self.format}


def decode_image(data: bytes, max_pixels: int, draft: int | None = None, name: str = "image") -> DecodedImage:
    """Bytes → DecodedImage, or InvalidImage / ImageTooLarge with a readable message.

    `draft`: for JPEG, let the decoder scale by 1/2, 1/4 or 1/8 while keeping both sides at least
    this many pixels (much faster for big photographs; the model sees no difference: bench/).
    """
    if not data:
        raise InvalidImage(f"{name} is empty")
    sha = hashlib.sha256(data).hexdigest()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLarge(f"{name} has more pixels than the limit of {max_pixels:,}") from None
    except UnidentifiedImageError:
        raise InvalidImage(f"{name} is not an image in a supported format ({SUPPORTED})", code="unsupported_image") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImage(f"{name} is truncated or damaged ({exc})", code="damaged_image") from None
    fmt = FORMATS.get(img.format or "")
    if fmt is None:
        raise InvalidImage(f"{name} is a {img.format} image; supported formats are {SUPPORTED}", code="unsupported_image")
    width, height = img.size
    if width < 1 or height < 1:
        raise InvalidImage(f"{name} has no pixels")
    if width * height > max_pixels:
        raise ImageTooLarge(f"{name} is {width}×{height} = {width * height:,} pixels; the limit is {max_pixels:,}")
    try:
        orientation = int(img.getexif().get(0x0112, 1))
    except Exception:
        orientation = 1
    if orientation in _ROTATED:
        width, height = height, width
    try:
        if draft and fmt == "JPEG":
            img.draft("RGB", (draft, draft))
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img.load()
        img = ImageOps.exif_transpose(img) or img
        rgb = to_rgb(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLarge(f"{name} has more pixels than the limit of {max_pixels:,}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImage(f"{name} is truncated or damaged ({exc})", code="damaged_image") from None
    return DecodedImage(rgb, sha, width, height, fmt)


def decode_file(path: str | Path, max_pixels: int, draft: int | None = None) -> DecodedImage:
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise InvalidImage(f"no such file: {p}", code="file_not_found") from None
    except IsADirectoryError:
        raise InvalidImage(f"{p} is a directory, not an image") from None
    except OSError as exc:
        raise InvalidImage(f"cannot read {p}: {exc.strerror or exc}") from None
    return decode_image(data, max_pixels, draft=draft, name=str(p))


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode → RGB; transparency is composited onto white."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = np.zeros_like(arr) if hi <= lo else (arr - lo) * (255.0 / (hi - lo))
        return Image.fromarray(scaled.astype(np.uint8), "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")
