"""Decoding untrusted images with limits, reduced at once to what the model needs.

Formats: every raster format Pillow decodes in this process (JPEG, PNG and APNG, WebP, GIF, TIFF, BMP,
AVIF, JPEG 2000, PPM/PGM/PBM, TGA, PSD, DDS, ICO, SGI, PCX, QOI, FLI, BLP, …; animations and multi-page
files by their first frame), except those `UNDECODED` names with its reason (EPS is a PostScript program
that only Ghostscript would run). EXIF orientation is applied; every mode Pillow gives (1, L, P with
transparency, LA, La, PA, RGBA, CMYK, YCbCr, LAB, HSV, I, F and the 16-bit I;16 modes) becomes RGB:
transparent areas on white, high bit depths scaled from the picture's own value range to 0–255.

Every exception a decoder raises on untrusted bytes becomes InvalidImage (`unsupported_image` or
`damaged_image`, with the format when known) or ImageTooLarge: never anything else.

Memory is bounded whatever arrives: the pixel count is read from the header and checked against
the per-image limit and the request's budget before anything is decoded (for a file, before it is
read); so is the memory the decode will hold at its peak (`decode_memory.estimate`), taken from one
budget of the process's (CLIP_GAZE_DECODE_MEMORY) before it starts, a decode that does not fit waiting
for others to finish; a picture much larger than the model's input is decoded reduced where its format
allows (JPEG by `draft`, WebP by libwebp's scaling, JPEG 2000 by its resolution levels), else reduced
by an integer box filter in strips (so the RGB copy of a full-size picture never exists) and the
full-size picture dropped at once (a one-strip TIFF, `decode_tiff`, and an AVIF, `decode_avif`, are
decoded a band of rows at a time into those strips, so their full-size picture never exists); a
process decodes at most a few pictures at a time; and after a large picture, freed memory is handed
back to the system. What decoders warn of (Pillow's warnings, libtiff's messages) is counted on the
picture (`DecodedImage.warnings`) and logged at debug level, never written to stderr (`decode_warnings`).
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from ..errors import ImageTooLarge, InvalidImage
from ..schema import ImageInfo
from . import decode_avif
from .decode_memory import (DEFAULT_DECODE_MEMORY, STRIP_PIXELS, Box, DecodeMemory, decode_webp, estimate, j2k_reduce,
                            strip_rows, webp_plan)
from .decode_memory import reduction as _factor
from .decode_tiff import bands, strip_plan
from .decode_warnings import capturing

FORMATS = {"MPO": "JPEG", "WEBP": "WebP"}  # Pillow's format names, where the answer names them otherwise
SUPPORTED = "a raster format Pillow decodes (JPEG, PNG, WebP, GIF, TIFF, BMP, AVIF, JPEG 2000, PPM, TGA, PSD, …)"
UNDECODED = {  # formats Pillow recognises that this process does not decode, and why
    "EPS": "PostScript is a program, which only Ghostscript would run, and untrusted files are not run here",
    "MPEG": "it is a video",
    "WMF": "a Windows metafile is drawn only on Windows",
    "BUFR": "it is meteorological data, which Pillow reads only through a plugin",
    "GRIB": "it is meteorological data, which Pillow reads only through a plugin",
    "HDF5": "it is scientific data, which Pillow reads only through a plugin",
}
_SIXTEEN_BITS = {"I;16": "<u2", "I;16L": "<u2", "I;16B": ">u2", "I;16N": "=u2", "I;16S": "<i2", "I;16BS": ">i2"}
_HIGH_DEPTH = ("I", "F", *_SIXTEEN_BITS)
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90,
}
_ROTATED = {5, 6, 7, 8}  # EXIF orientations that swap width and height
TRIM_AFTER_PIXELS = 16_000_000  # hand memory back after decoding a picture this large
MAX_ASPECT = 64  # a picture longer than this many times its width is cut to its central part of that shape


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # RGB, orientation applied, reduced to at most about twice the model's input
    sha256: str
    width: int  # of the picture as it is shown (orientation applied), before any reduction
    height: int
    format: str | None
    decode_ms: float = 0.0
    pixels: Any = None  # the model's input (3, size, size) when prepared ahead (collection reads, in the pool)
    warnings: int = 0  # what the decoder warned of (Pillow's warnings, libtiff's messages), logged at debug level
    thumbnail: Any = None  # store.thumbnails.Thumbnail, when made in the read pool (collection reads)

    def info(self) -> ImageInfo:
        return ImageInfo(sha256=self.sha256, width=self.width, height=self.height, format=self.format)


class PixelBudget:
    """The pixels one request may have decoded, all its pictures together."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()  # a batch's pictures are fetched, and taken, in threads of their own

    def take(self, pixels: int, name: str) -> None:
        with self._lock:
            if self.used + pixels > self.limit:
                raise ImageTooLarge(
                    f"{name}: this request's pictures add up to more than {self.limit:,} pixels "
                    "(CLIP_GAZE_MAX_REQUEST_PIXELS); send fewer or smaller pictures per request",
                    code="request_too_large",
                )
            self.used += pixels


@contextmanager
def _reading(p: Path) -> Iterator[None]:
    """A file that cannot be read, as the InvalidImage that says why."""
    try:
        yield
    except FileNotFoundError:
        raise InvalidImage(f"no such file: {p}", code="file_not_found") from None
    except IsADirectoryError:
        raise InvalidImage(f"{p} is a directory, not an image") from None
    except OSError as exc:
        raise InvalidImage(f"cannot read {p}: {exc.strerror or exc}") from None


class Decoder:
    """Decodes pictures for one model input size, within a process's limits."""

    def __init__(self, max_pixels: int, max_request_pixels: int, concurrency: int = 2, target: int | None = None,
                 memory: int | DecodeMemory = DEFAULT_DECODE_MEMORY):
        self.max_pixels = max_pixels
        self.max_request_pixels = max_request_pixels
        self.target = target  # the model's input size; pictures are reduced to at least twice it
        self._slots = threading.BoundedSemaphore(max(1, concurrency))
        self.memory = memory if isinstance(memory, DecodeMemory) else DecodeMemory(memory)  # shared by copies
        # Each picture's size is checked from its header against max_pixels before anything is decoded;
        # Pillow's own guard stays on for what that check cannot see (the picture inside an ICNS, a
        # later frame), erring past twice MAX_IMAGE_PIXELS: never below this limit, process-wide. Its
        # warning below that says nothing the check here does not.
        Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, max_pixels // 2 + 1)
        warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

    def budget(self) -> PixelBudget:
        return PixelBudget(self.max_request_pixels)

    def decode(self, data: bytes, name: str = "image", budget: PixelBudget | None = None) -> DecodedImage:
        """Bytes → DecodedImage, or InvalidImage / ImageTooLarge with a readable message."""
        t0 = time.perf_counter()
        if not data:
            raise InvalidImage(f"{name} is empty")
        sha = hashlib.sha256(data).hexdigest()
        with capturing(name) as warned:
            img, fmt = _open(io.BytesIO(data), name)
            width, height = self._check(img, name)
            if budget is not None:
                budget.take(width * height, name)
            try:
                orientation = int(img.getexif().get(0x0112, 1))
            except Exception:  # a damaged EXIF block: the picture is shown as stored
                orientation = 1
            try:  # decoded reduced where the format can be (header work only, nothing decoded yet)
                if self.target and fmt == "JPEG":
                    img.draft("RGB", (2 * self.target, 2 * self.target))
                if fmt == "JPEG2000":
                    img.reduce = j2k_reduce(data, width, height, self.target)  # type: ignore[assignment,method-assign]
                box = central_box(img.size)
                webp = webp_plan(data, img, box, _factor(box, self.target)) if fmt == "WebP" else None
                tiff = strip_plan(img, len(data)) if fmt == "TIFF" else None
                avif = fmt == "AVIF" and decode_avif.available()
                need = webp[1] if webp else estimate(img, fmt, self.target, tiff, avif)
            except Exception as exc:  # whatever a plugin raises on untrusted bytes
                raise _undecodable(name, fmt, exc) from None
            with self.memory.hold(need), self._slots:
                try:
                    if webp:
                        img.close()
                        rgb = to_rgb(decode_webp(data, box, webp[0]))
                    elif tiff:
                        rgb = _shrink_bands(lambda t, b, r: bands(data, tiff, t, b, r), img.size, self.target)
                    elif avif:
                        size = img.size
                        img.close()
                        rgb = _shrink_bands(lambda t, b, r: decode_avif.bands(data, size, t, b, r), size, self.target)
                    else:
                        img.load()
                        rgb = shrink(img, self.target)
                except (Image.DecompressionBombError, MemoryError):
                    raise ImageTooLarge(f"{name} is too large to decode") from None
                except Exception as exc:  # whatever a decoder raises on untrusted bytes
                    raise _undecodable(name, fmt, exc) from None
                if rgb is not img:  # drop the full-size picture at once
                    img.close()
                del img
                if width * height >= TRIM_AFTER_PIXELS:
                    trim_memory()
        if orientation in _TRANSPOSE:
            rgb = rgb.transpose(_TRANSPOSE[orientation])
        if orientation in _ROTATED:
            width, height = height, width
        return DecodedImage(rgb, sha, width, height, fmt, (time.perf_counter() - t0) * 1000, warnings=warned.count)

    def _check(self, img: Image.Image, name: str) -> tuple[int, int]:
        width, height = img.size
        if width < 1 or height < 1:
            raise InvalidImage(f"{name} has no pixels")
        if width * height > self.max_pixels:
            raise ImageTooLarge(f"{name} is {width}×{height} = {width * height:,} pixels; the limit is {self.max_pixels:,}")
        return width, height

    def check_file(self, path: str | Path) -> None:
        """A file's format and size, from its header alone: InvalidImage (`unsupported_image` for a
        file that is not a picture this process decodes) or ImageTooLarge before the file is read."""
        p = Path(path)
        with capturing(str(p)), _reading(p), open(p, "rb") as f:  # its warnings are counted when it is decoded
            img, _ = _open(f, str(p))
            with img:
                self._check(img, str(p))

    def decode_file(self, path: str | Path, budget: PixelBudget | None = None) -> DecodedImage:
        p = Path(path)
        self.check_file(p)
        with _reading(p):
            data = p.read_bytes()
        return self.decode(data, name=str(p), budget=budget)

    def from_pil(self, image: Image.Image) -> DecodedImage:
        """A picture already in memory (the library, tests): made RGB and reduced like a decoded one."""
        rgb = shrink(image, self.target)
        sha = hashlib.sha256(rgb.tobytes()).hexdigest()
        return DecodedImage(rgb, sha, image.width, image.height, None)


def _open(stream: IO[bytes], name: str) -> tuple[Image.Image, str]:
    """The picture's header read (nothing decoded yet), and its format's name."""
    try:
        img = Image.open(stream)
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"{name} has more pixels than this server decodes") from None
    except UnidentifiedImageError:
        raise InvalidImage(f"{name} is not an image in a supported format ({SUPPORTED})", code="unsupported_image") from None
    except MemoryError:
        raise ImageTooLarge(f"{name} is too large to decode") from None
    except Exception as exc:  # a plugin that recognised the header and then choked on it
        stream.seek(0)
        raise _undecodable(name, _recognised(stream.read(64)), exc) from None
    raw = str(img.format or "")
    if raw in UNDECODED:
        img.close()
        raise InvalidImage(f"{name}: {raw} files are not decoded here ({UNDECODED[raw]})", code="unsupported_image")
    return img, FORMATS.get(raw, raw or "unknown")


def _recognised(prefix: bytes) -> str | None:
    """The format whose plugin claims these first bytes, for a message (None if none does)."""
    for fmt in Image.ID:
        accept = Image.OPEN[fmt][1]
        try:
            if accept is not None and accept(prefix):
                return FORMATS.get(fmt, fmt)
        except Exception:  # a plugin's check on odd bytes: no claim
            continue
    return None


def _undecodable(name: str, fmt: str | None, exc: Exception) -> InvalidImage:
    """The error for a decoder's exception: a variant the decoder does not implement (NotImplementedError,
    or Pillow's "Unsupported …" messages) is unsupported; anything else is damage."""
    detail = str(exc) or type(exc).__name__
    what = f"{name} ({fmt})" if fmt else name
    if isinstance(exc, NotImplementedError) or detail.lower().startswith(("unsupported", "unimplemented", "unknown")):
        return InvalidImage(f"{what} uses a variant of its format that Pillow cannot decode ({detail})", code="unsupported_image")
    return InvalidImage(f"{what} is truncated or damaged ({detail})", code="damaged_image")


def central_box(size: tuple[int, int]) -> Box:
    """The whole picture, or its central part of MAX_ASPECT:1 when it is longer than that: the model's
    preprocessing scales the shorter side to its input size, so a strip of 1 × 80,000,000 pixels would
    become 224 × 18 billion before its central square is cut (for CLIP's 'shortest' mode, all the model
    sees); cut first, it stays a few megabytes."""
    w, h = size
    short, long = min(w, h), max(w, h)
    if long <= MAX_ASPECT * short:
        return 0, 0, w, h
    keep = MAX_ASPECT * short
    start = (long - keep) // 2
    return (start, 0, start + keep, h) if w > h else (0, start, w, start + keep)


def shrink(img: Image.Image, target: int | None) -> Image.Image:
    """`central_box` of the picture, RGB, box-reduced by an integer factor so the shorter side stays at
    least 2 × target.

    A large picture is cut, converted and reduced a strip at a time, so neither a full-size RGB copy nor
    a full-size cut is made."""
    box = central_box(img.size)
    factor = max(1, _factor(box, target))
    levels = _levels(img, box)
    whole = box == (0, 0, *img.size)
    if factor == 1 and whole and (img.mode == "RGB" or img.width * img.height <= STRIP_PIXELS):
        return to_rgb(img, levels)
    rows = strip_rows(box, factor)
    cuts = ((img.crop((box[0], top, box[2], min(box[3], top + rows))), top) for top in range(box[1], box[3], rows))
    return _paste(cuts, box, factor, levels)


def _paste(strips: Iterator[tuple[Image.Image, int]], box: Box, factor: int,
           levels: tuple[float, float] | None) -> Image.Image:
    """The reduced RGB picture of `box`, from its strips (each cut to the box's columns) and their top rows."""
    x0, y0, x1, y1 = box
    out = Image.new("RGB", (-(-(x1 - x0) // factor), -(-(y1 - y0) // factor)))
    for cut, top in strips:
        strip = to_rgb(cut, levels)
        out.paste(strip.reduce(factor) if factor > 1 else strip, (0, (top - y0) // factor))
        del strip, cut  # before the next strip is cut
    return out


def _shrink_bands(bands_of: Callable[[int, int, int], Iterator[Image.Image]], size: tuple[int, int],
                  target: int | None) -> Image.Image:
    """`shrink` of a picture its decoder gives a band of full-width rows at a time (`bands_of(top, bottom,
    rows)`: a one-strip TIFF, an AVIF), so the full-size picture never exists."""
    box = central_box(size)
    factor = max(1, _factor(box, target))
    rows = strip_rows(box, factor)
    cuts = ((band if band.width == box[2] - box[0] else band.crop((box[0], 0, box[2], band.height)), top)
            for band, top in zip(bands_of(box[1], box[3], rows), range(box[1], box[3], rows)))
    return _paste(cuts, box, factor, None)


def _levels(img: Image.Image, box: Box | None = None) -> tuple[float, float] | None:
    """The value range of a 16-bit, 32-bit or float picture, or of its `box` (for scaling to 8 bits),
    else None."""
    if img.mode not in _HIGH_DEPTH:
        return None
    x0, y0, x1, y1 = box or (0, 0, *img.size)
    if img.mode in ("I", "F"):
        part = img if (x0, y0, x1, y1) == (0, 0, *img.size) else img.crop((x0, y0, x1, y1))
        lo, hi = cast(tuple[float, float], part.getextrema())
        return float(lo), float(hi)
    rows = max(1, STRIP_PIXELS // max(1, x1 - x0))
    ranges = [(float(v.min()), float(v.max())) for top in range(y0, y1, rows)
              if (v := _values(img.crop((x0, top, x1, min(y1, top + rows))))).size]
    return min(r[0] for r in ranges), max(r[1] for r in ranges)


def _values(img: Image.Image) -> npt.NDArray[np.float32]:
    """A high-depth picture's values as floats (Pillow's 16-bit modes are read from their bytes)."""
    dtype = _SIXTEEN_BITS.get(img.mode)
    if dtype is None:
        return np.asarray(img, dtype=np.float32)
    return np.frombuffer(img.tobytes(), dtype=dtype).reshape(img.height, img.width).astype(np.float32)


def to_rgb(img: Image.Image, levels: tuple[float, float] | None = None) -> Image.Image:
    """Any PIL mode → RGB; transparency is composited onto white; 16-bit and float values are
    scaled from `levels` (their range over the whole picture) to 0–255."""
    if img.mode == "RGB":
        return img
    if img.mode in _HIGH_DEPTH:
        lo, hi = levels or _levels(img) or (0.0, 0.0)
        arr = _values(img)
        scaled = np.zeros_like(arr) if hi <= lo else (arr - lo) * np.float32(255.0 / (hi - lo))
        return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode == "La":  # premultiplied: Pillow converts it only to LA
        img = img.convert("LA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def trim_memory() -> None:
    """Hand freed heap memory back to the system (glibc keeps it otherwise)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc
