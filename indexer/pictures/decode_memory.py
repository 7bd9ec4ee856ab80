"""Decoding within a memory budget: what a decode will hold at its peak, estimated from the picture's
header before anything is decoded; one budget a process's decodes take that from; and the formats
decoded reduced at once where their libraries can (WebP by libwebp's own scaling, JPEG 2000 by its
resolution levels; JPEG by `draft`, in `decode`).

The estimates are Pillow's own storage (4 bytes a pixel for every mode of three or four bands, 1 for
L and P, 2 for the 16-bit modes) plus what the format's decoder holds beside it, measured with
bench/decode_memory.py on 60 MP pictures: a TIFF strip's buffer, OpenJPEG's 32-bit planes (about 16
bytes a pixel at the resolution decoded), libavif's planes. A picture decoded by bands (a one-strip
deflate TIFF, an AVIF through libavif) holds no full-size picture: its band, and for AVIF the planes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from PIL import Image

from .decode_tiff import StripPlan

DEFAULT_DECODE_MEMORY = 1024 * 1024 * 1024  # CLIP_GAZE_DECODE_MEMORY's default, 1024 MB
STRIP_PIXELS = 2_000_000  # converted to RGB at a time while reducing a large picture (`decode.shrink`)
Box = tuple[int, int, int, int]  # left, top, right, bottom


def reduction(box: Box, target: int | None) -> int:
    """The integer factor that keeps the shorter side of `box` at least 2 × target (0 or 1: none)."""
    return min(box[2] - box[0], box[3] - box[1]) // (2 * target) if target else 0


def strip_rows(box: Box, factor: int) -> int:
    """The rows of `box` that `decode.shrink` converts at a time: about STRIP_PIXELS, a multiple of `factor`."""
    return max(1, STRIP_PIXELS // ((box[2] - box[0]) * factor)) * factor
_STRIP_COST = {"RGB": 8, "alpha": 24, "deep": 32, "other": 12}  # bytes a pixel of a strip, at its peak
_STORED = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2, "I;16S": 2, "I;16BS": 2}
_DECODER_EXTRA = {  # bytes a pixel the format's decoder holds beside Pillow's picture, at its peak
    "JPEG2000": 16.0,  # OpenJPEG: a 32-bit plane a component (and its tiles' code blocks)
    "AVIF": 6.0,  # libavif through Pillow (where `decode_avif` cannot be used): the YUV planes and an RGBA copy
    "WebP": 12.0,  # Pillow's WebP: libwebp's two RGBA canvases and the frame's bytes
}
_ROW_DECODERS = {"PNG", "BMP", "DIB", "GIF", "PPM", "TGA", "SGI", "PCX", "QOI", "TIFF", "JPEG", "ICO", "DDS",
                 "PSD", "IM", "XBM", "XPM", "FLI", "BLP", "FTEX", "GBR", "MSP", "PCD", "SUN", "WAL", "IPTC"}


class DecodeMemory:
    """The bytes a process's decodes may hold together. A decode takes its estimate before it starts
    and gives it back when done; one that does not fit waits, in the order they came. A picture
    larger than the whole budget still runs, alone, when nothing else holds any of it."""

    def __init__(self, limit: int):
        self.limit = max(1, int(limit))
        self.held = 0
        self.high_water = 0  # the most held at once, since this budget was made
        self._cond = threading.Condition()
        self._queue: deque[object] = deque()

    @contextmanager
    def hold(self, nbytes: int) -> Iterator[None]:
        nbytes = max(0, int(nbytes))
        ticket = object()
        with self._cond:
            self._queue.append(ticket)
            try:
                while self._queue[0] is not ticket or (self.held and self.held + nbytes > self.limit):
                    self._cond.wait()
            except BaseException:
                self._queue.remove(ticket)
                self._cond.notify_all()
                raise
            self._queue.popleft()
            self.held += nbytes
            self.high_water = max(self.high_water, self.held)
            self._cond.notify_all()  # the next in line may fit beside this one
        try:
            yield
        finally:
            with self._cond:
                self.held -= nbytes
                self._cond.notify_all()


def stored_bytes(mode: str, pixels: int) -> int:
    """What Pillow holds for a picture of `pixels` in `mode`."""
    return pixels * _STORED.get(mode, 4)


def estimate(img: Image.Image, fmt: str, target: int | None, tiff: StripPlan | None = None, avif: bool = False) -> int:
    """The peak bytes Pillow's decoding of `img` (opened, not loaded; a JPEG already drafted, a JPEG 2000
    given its `reduce`) will hold: the picture as Pillow stores it, what its format's decoder holds
    beside it, a strip of `shrink`'s and the reduced RGB copy made from it."""
    width, height = img.size
    drop = int(vars(img).get("_reduce") or 0) if fmt == "JPEG2000" else 0  # resolution levels not decoded
    width, height = -(-width // (1 << drop)), -(-height // (1 << drop))
    pixels = width * height
    out = 4 * _reduced_pixels(width, height, target)
    whole = (0, 0, width, height)
    rows = strip_rows(whole, max(1, reduction(whole, target)))  # a band's rows, as `decode.shrink` takes them
    if tiff is not None:  # a one-strip TIFF inflated a band at a time: a band, a strip of shrink's, the output
        return out + strip_bytes(img) + tiff.band_bytes(rows)
    if avif:  # libavif's planes converted a band at a time (`decode_avif`): while it decodes, dav1d's planes
        # and libavif's copy of them, at most 4 bytes a pixel each (8 bits, 4:4:4 and alpha), and a band
        return out + strip_bytes(img) + 8 * pixels + 12 * (rows + 1) * width
    full = stored_bytes(img.mode, pixels) + strip_bytes(img) + out
    if fmt == "TIFF":
        return full + _tiff_buffer(img)
    extra = _DECODER_EXTRA.get(fmt)
    if extra is None:
        extra = 0.0 if fmt in _ROW_DECODERS else 4.0  # another plugin: as much again as a margin
    return full + int(extra * pixels)


def strip_bytes(img: Image.Image) -> int:
    """What `decode.shrink` holds converting one strip of `img` (its cut, the conversions, white)."""
    mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info):
        kind = "alpha"
    elif mode in ("I", "F") or mode.startswith("I;16"):
        kind = "deep"
    else:
        kind = "RGB" if mode == "RGB" else "other"
    return STRIP_PIXELS * _STRIP_COST[kind]


def _reduced_pixels(width: int, height: int, target: int | None) -> int:
    factor = min(width, height) // (2 * target) if target else 0
    if factor < 2:
        return width * height
    return -(-width // factor) * -(-height // factor)


def _tiff_buffer(img: Image.Image) -> int:
    """The strip or tile libtiff decodes at a time, uncompressed (a single-strip TIFF: the whole picture)."""
    tags: Any = getattr(img, "tag_v2", {})
    if img.info.get("compression", "raw") == "raw":  # read by Pillow's own decoder, a row at a time
        return 0
    width, height = img.size
    bits = tags.get(258, (8,))
    bits_sum = sum(bits) if isinstance(bits, tuple) else int(bits) * int(tags.get(277, 1))
    if 322 in tags and 323 in tags:  # tiled
        return int(tags[322]) * int(tags[323]) * bits_sum // 8
    rows = min(height, int(tags.get(278, height) or height))
    return rows * width * bits_sum // 8


# -- JPEG 2000: decoded at the resolution level the model needs ---------------------------------------
def j2k_reduce(data: bytes, width: int, height: int, target: int | None) -> int:
    """How many resolution levels to drop decoding this JPEG 2000 picture (Pillow's `reduce`): as many as
    keep its shorter side at least twice `target`, no more than its codestream has, and only where
    Pillow's size for the reduced picture (rounded to nearest) is OpenJPEG's (rounded up): a halving
    always is; 0 for a picture whose origin is not at 0, 0."""
    if not target:
        return 0
    levels = _j2k_levels(data)
    best = 0
    for n in range(1, levels + 1):
        if (min(width, height) >> n) < 2 * target:
            break
        power = 1 << n
        if all(side % power == 0 or side % power >= power // 2 for side in (width, height)):
            best = n
    return best


def _j2k_levels(data: bytes) -> int:
    """The decomposition levels in the main header's COD marker (0 when it cannot be read, or when the
    picture's origin is not at 0, 0)."""
    start = data.find(b"\xff\x4f\xff\x51")  # SOC then SIZ: the codestream, bare or in a JP2 box
    if start < 0 or len(data) < start + 24 or data[start + 16:start + 24] != bytes(8):  # XOsiz, YOsiz
        return 0
    pos = start + 2
    while pos + 4 <= len(data):
        marker, length = struct.unpack(">HH", data[pos:pos + 4])
        if marker == 0xFF52 and pos + 10 <= len(data):  # COD: Scod, progression, layers (2), MCT, levels
            return int(data[pos + 4 + 1 + 4])
        if marker in (0xFF90, 0xFF93) or length < 2:  # a tile begins: no COD in the main header
            return 0
        pos += 2 + length
    return 0


# -- WebP: decoded by libwebp, cropped and scaled as it decodes -----------------------------------------
class _Features(ctypes.Structure):
    _fields_ = [("width", ctypes.c_int), ("height", ctypes.c_int), ("has_alpha", ctypes.c_int),
                ("has_animation", ctypes.c_int), ("format", ctypes.c_int), ("pad", ctypes.c_uint32 * 5)]


class _RGBA(ctypes.Structure):
    _fields_ = [("rgba", ctypes.c_void_p), ("stride", ctypes.c_int), ("size", ctypes.c_size_t)]


class _YUVA(ctypes.Structure):
    _fields_ = [("y", ctypes.c_void_p), ("u", ctypes.c_void_p), ("v", ctypes.c_void_p), ("a", ctypes.c_void_p),
                ("strides", ctypes.c_int * 4), ("sizes", ctypes.c_size_t * 4)]


class _Buffers(ctypes.Union):
    _fields_ = [("RGBA", _RGBA), ("YUVA", _YUVA)]


class _Output(ctypes.Structure):
    _fields_ = [("colorspace", ctypes.c_int), ("width", ctypes.c_int), ("height", ctypes.c_int),
                ("is_external_memory", ctypes.c_int), ("u", _Buffers), ("pad", ctypes.c_uint32 * 4),
                ("private_memory", ctypes.c_void_p)]


class _Options(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int) for name in (
        "bypass_filtering", "no_fancy_upsampling", "use_cropping", "crop_left", "crop_top", "crop_width",
        "crop_height", "use_scaling", "scaled_width", "scaled_height", "use_threads", "dithering_strength",
        "flip", "alpha_dithering_strength")] + [("pad", ctypes.c_uint32 * 5)]


class _Config(ctypes.Structure):
    _fields_ = [("input", _Features), ("output", _Output), ("options", _Options)]


class _Data(ctypes.Structure):
    _fields_ = [("bytes", ctypes.c_void_p), ("size", ctypes.c_size_t)]


class _Iterator(ctypes.Structure):
    _fields_ = [("frame_num", ctypes.c_int), ("num_frames", ctypes.c_int), ("x_offset", ctypes.c_int),
                ("y_offset", ctypes.c_int), ("width", ctypes.c_int), ("height", ctypes.c_int),
                ("duration", ctypes.c_int), ("dispose_method", ctypes.c_int), ("complete", ctypes.c_int),
                ("fragment", _Data), ("has_alpha", ctypes.c_int), ("blend_method", ctypes.c_int),
                ("pad", ctypes.c_uint32 * 2), ("private_", ctypes.c_void_p)]


_DECODER_ABI, _DEMUX_ABI = 0x0209, 0x0107  # the structures above: libwebp 1.1 and later (ABI major 2, 1)
_MODE_RGB, _MODE_RGBA = 0, 1


def loaded_library(prefix: str, imported: str, fallback: str) -> ctypes.CDLL | None:
    """A shared library Pillow itself loaded (its wheel's copy, found among this process's mappings once
    `imported` is), else the system's `fallback`; None where neither is found."""
    try:
        __import__(imported)
        with open("/proc/self/maps") as fh:
            paths = {line.split()[-1] for line in fh if "/" in line}
        path = next((p for p in sorted(paths) if os.path.basename(p).startswith((prefix + "-", prefix + ".so"))), None)
    except (OSError, ImportError):
        path = None
    try:
        return ctypes.CDLL(path or ctypes.util.find_library(fallback) or "")
    except OSError:
        return None


@lru_cache(maxsize=1)
def _libwebp() -> tuple[Any, Any] | None:
    webp = loaded_library("libwebp", "PIL._webp", "webp")
    demux = loaded_library("libwebpdemux", "PIL._webp", "webpdemux")
    try:
        if webp is None or demux is None or (webp.WebPGetDecoderVersion() >> 16) < 1:
            return None
        webp.WebPInitDecoderConfigInternal.argtypes = [ctypes.POINTER(_Config), ctypes.c_int]
        webp.WebPDecode.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(_Config)]
        webp.WebPFreeDecBuffer.argtypes = [ctypes.POINTER(_Output)]
        demux.WebPDemuxInternal.argtypes = [ctypes.POINTER(_Data), ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
        demux.WebPDemuxInternal.restype = ctypes.c_void_p
        demux.WebPDemuxGetFrame.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(_Iterator)]
        demux.WebPDemuxReleaseIterator.argtypes = [ctypes.POINTER(_Iterator)]
        demux.WebPDemuxDelete.argtypes = [ctypes.c_void_p]
    except AttributeError:
        return None
    return webp, demux


def webp_plan(data: bytes, img: Image.Image, box: tuple[int, int, int, int],
              factor: int) -> tuple[tuple[int, int], int] | None:
    """The size a still WebP picture's `box` comes out at, reduced `factor` times by libwebp as it
    decodes (`decode_webp`), and the peak bytes that holds: a lossless picture's ARGB copy (libwebp's
    working memory), else its rows (and a lossy picture's alpha plane); which it is, from the file's
    chunks (`webp_bitstream`; chunks it cannot follow: held as lossless). None where that is not how it
    is decoded: no libwebp found, an animation, a factor below 2."""
    animated = data[12:16] == b"VP8X" and len(data) > 20 and data[20] & 0x02
    bitstream = webp_bitstream(data)
    if factor < 2 or animated or bitstream == "animation" or _libwebp() is None:
        return None
    x0, y0, x1, y1 = box
    size = max(1, -(-(x1 - (x0 & ~1)) // factor)), max(1, -(-(y1 - (y0 & ~1)) // factor))
    pixels = img.size[0] * img.size[1]
    lossy = bitstream == "VP8 "  # a layout not understood is held at the lossless (larger) estimate
    return size, (pixels if lossy else 4 * pixels) + 3 * 4 * size[0] * size[1] + (24 << 20)


_ANIMATION_CHUNKS = (b"ANIM", b"ANMF")


def webp_bitstream(data: bytes) -> str | None:
    """What a WebP file's picture is stored as, read from its RIFF chunks (a FourCC, a little-endian
    size, the payload padded to an even length) from the first to the first picture chunk: "VP8L"
    (lossless), "VP8 " (lossy), "animation" (an ANIM or ANMF chunk first); None where the chunks do not
    lead to one (not RIFF/WEBP, truncated, a size running past the file's or the RIFF's end). Never raises."""
    if len(data) < 20 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    (riff_size,) = struct.unpack_from("<I", data, 4)
    pos, end = 12, min(len(data), 8 + riff_size)  # libwebp reads no chunk past the RIFF's own size
    while pos + 8 <= end:  # every step moves on by 8 bytes at least: it ends
        fourcc = bytes(data[pos:pos + 4])
        if fourcc in (b"VP8 ", b"VP8L"):
            return fourcc.decode("ascii")
        if fourcc in _ANIMATION_CHUNKS:
            return "animation"
        (length,) = struct.unpack_from("<I", data, pos + 4)
        pos += 8 + length + (length & 1)
    return None


def decode_webp(data: bytes, box: tuple[int, int, int, int], size: tuple[int, int]) -> Image.Image:
    """The WebP picture's `box`, decoded by libwebp straight to `size` (RGB, or RGBA with its alpha): the
    full-size picture is never made (a lossless picture's one ARGB copy is libwebp's working memory)."""
    libs = _libwebp()
    assert libs is not None
    webp, demux = libs
    blob = ctypes.create_string_buffer(data, len(data))  # libwebp reads it in place, outside the GIL
    whole = _Data(ctypes.cast(blob, ctypes.c_void_p), len(data))
    dmux = demux.WebPDemuxInternal(ctypes.byref(whole), 0, None, _DEMUX_ABI)
    if not dmux:
        raise OSError("not a WebP file libwebp can read")
    frame = _Iterator()
    try:
        if not demux.WebPDemuxGetFrame(dmux, 1, ctypes.byref(frame)):
            raise OSError("no frame in the WebP file")
        try:
            return _decode_frame(webp, frame, box, size)
        finally:
            demux.WebPDemuxReleaseIterator(ctypes.byref(frame))
    finally:
        demux.WebPDemuxDelete(dmux)


def _decode_frame(webp: Any, frame: _Iterator, box: tuple[int, int, int, int], size: tuple[int, int]) -> Image.Image:
    config = _Config()
    if not webp.WebPInitDecoderConfigInternal(ctypes.byref(config), _DECODER_ABI):
        raise OSError("libwebp's decoder is not the version this process was written for")
    x0, y0, x1, y1 = box
    x0, y0 = x0 & ~1, y0 & ~1  # libwebp crops from even offsets
    mode = "RGBA" if frame.has_alpha else "RGB"
    opts = config.options
    config.output.colorspace = _MODE_RGBA if frame.has_alpha else _MODE_RGB
    opts.use_cropping, opts.crop_left, opts.crop_top, opts.crop_width, opts.crop_height = 1, x0, y0, x1 - x0, y1 - y0
    opts.use_scaling, (opts.scaled_width, opts.scaled_height) = 1, size
    status = webp.WebPDecode(frame.fragment.bytes, frame.fragment.size, ctypes.byref(config))
    try:
        if status != 0 or not frame.complete:
            raise OSError(f"libwebp could not decode the picture (status {status})")
        out = config.output.u.RGBA
        raw = ctypes.string_at(out.rgba, out.size)
        return Image.frombuffer(mode, size, raw, "raw", mode, out.stride, 1)
    finally:
        webp.WebPFreeDecBuffer(ctypes.byref(config.output))


__all__ = ["DEFAULT_DECODE_MEMORY", "Box", "DecodeMemory", "decode_webp", "estimate", "j2k_reduce", "reduction",
           "stored_bytes", "strip_rows", "webp_bitstream", "webp_plan"]
