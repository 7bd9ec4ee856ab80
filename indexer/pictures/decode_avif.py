"""AVIF decoded by libavif itself (the copy Pillow loaded, through ctypes), its YUV planes converted to RGB
a band of rows at a time.

Pillow's AVIF decoder has libavif convert the whole picture to RGB, copies that into a `bytes`, then
copies it again into its picture, the YUV planes held meanwhile: 526 MiB for a 60 MP picture (3.07 ×
its RGB size). Here libavif decodes the first frame's planes into an image of this module's (then
drops its decoder, and dav1d's buffers with it), and converts a view of a band of rows at a time
(`avifImageSetViewRect`), so only the planes and a band exist: 213 MiB for that picture (1.24 ×).

Only libavif 1.x is used, and only when the fields of its structures read here hold the defaults it
documents once made (else Pillow decodes, as before); its strictness is Pillow's (a missing `pixi`
property or an odd clean aperture allowed). What libavif refuses raises ValueError with its reason.
"""

from __future__ import annotations

import ctypes as C
from collections.abc import Iterator
from functools import lru_cache
from typing import Any, cast

from PIL import Image

from .decode_memory import loaded_library

_STRICT_ENABLED, _STRICT_PIXI, _STRICT_CLAP = 7, 1, 2
_DECODER_DEFAULTS = {  # avifDecoder's offset: its default (maxThreads, imageSizeLimit, imageDimensionLimit,
    4: 1, 28: 16384 * 16384, 32: 32768, 36: 12 * 3600 * 60, 40: _STRICT_ENABLED}  # imageCountLimit, strictFlags)
_RGB, _RGBA = 0, 1  # avifRGBFormat
MAX_THREADS = 4  # dav1d's threads for one picture


class _Image(C.Structure):  # avifImage's leading fields (libavif 1.x)
    _fields_ = [("width", C.c_uint32), ("height", C.c_uint32), ("depth", C.c_uint32), ("yuvFormat", C.c_int),
                ("yuvRange", C.c_int), ("yuvChromaSamplePosition", C.c_int), ("yuvPlanes", C.c_void_p * 3),
                ("yuvRowBytes", C.c_uint32 * 3), ("imageOwnsYUVPlanes", C.c_int), ("alphaPlane", C.c_void_p)]


class _RGBImage(C.Structure):  # avifRGBImage (libavif 1.x)
    _fields_ = [("width", C.c_uint32), ("height", C.c_uint32), ("depth", C.c_uint32), ("format", C.c_int),
                ("chromaUpsampling", C.c_int), ("chromaDownsampling", C.c_int), ("avoidLibYUV", C.c_int),
                ("ignoreAlpha", C.c_int), ("alphaPremultiplied", C.c_int), ("isFloat", C.c_int),
                ("maxThreads", C.c_int), ("pixels", C.c_void_p), ("rowBytes", C.c_uint32)]


class _Rect(C.Structure):
    _fields_ = [("x", C.c_uint32), ("y", C.c_uint32), ("width", C.c_uint32), ("height", C.c_uint32)]


@lru_cache(maxsize=1)
def _libavif() -> Any:
    """libavif 1.x with the functions used here declared, or None."""
    lib = loaded_library("libavif", "PIL._avif", "avif")
    try:
        if lib is None or not hasattr(lib, "avifImageSetViewRect"):
            return None
        lib.avifVersion.restype = C.c_char_p
        if not lib.avifVersion().startswith(b"1."):
            return None
        for name in ("avifDecoderCreate", "avifImageCreateEmpty"):
            getattr(lib, name).restype = C.c_void_p
        lib.avifResultToString.restype = C.c_char_p
        lib.avifDecoderReadMemory.argtypes = [C.c_void_p, C.c_void_p, C.c_char_p, C.c_size_t]
        lib.avifDecoderDestroy.argtypes = [C.c_void_p]
        lib.avifImageDestroy.argtypes = [C.c_void_p]
        lib.avifImageSetViewRect.argtypes = [C.c_void_p, C.c_void_p, C.POINTER(_Rect)]
        lib.avifRGBImageSetDefaults.argtypes = [C.POINTER(_RGBImage), C.c_void_p]
        lib.avifImageYUVToRGB.argtypes = [C.c_void_p, C.POINTER(_RGBImage)]
        probe = lib.avifDecoderCreate()
    except (AttributeError, OSError):
        return None
    if not probe:
        return None
    try:  # the decoder's fields written here are where libavif 1.x has them, holding its defaults
        if any(C.c_uint32.from_address(probe + at).value != value for at, value in _DECODER_DEFAULTS.items()):
            return None
    finally:
        lib.avifDecoderDestroy(probe)
    return lib


def available() -> bool:
    return _libavif() is not None


def _check(lib: Any, result: int, what: str) -> None:
    if result != 0:
        raise ValueError(f"libavif {what}: {(lib.avifResultToString(result) or b'error').decode(errors='replace')}")


def bands(data: bytes, size: tuple[int, int], top: int, bottom: int, rows: int) -> Iterator[Image.Image]:
    """Rows `top`…`bottom` of the AVIF picture in `data` (of `size`, as Pillow read its header), `rows`
    at a time, each a full-width RGB or RGBA picture; only where `available()` (else Pillow decodes).
    The planes are decoded when the first band is asked for."""
    lib = _libavif()
    assert lib is not None, "decode_avif.bands without libavif: check available() first"
    return _bands(lib, data, size, top, bottom, rows)


def _bands(lib: Any, data: bytes, size: tuple[int, int], top: int, bottom: int, rows: int) -> Iterator[Image.Image]:
    decoder = image = view = None
    try:
        decoder = lib.avifDecoderCreate()
        image = lib.avifImageCreateEmpty()
        view = lib.avifImageCreateEmpty()
        if not decoder or not image or not view:
            raise MemoryError("libavif")
        C.c_int.from_address(decoder + 4).value = MAX_THREADS
        C.c_uint32.from_address(decoder + 40).value = _STRICT_ENABLED & ~(_STRICT_PIXI | _STRICT_CLAP)
        C.c_uint32.from_address(decoder + 28).value = min(2**32 - 1, max(1, size[0] * size[1]))  # no more than the header said
        C.c_uint32.from_address(decoder + 32).value = min(2**32 - 1, max(1, *size))
        _check(lib, lib.avifDecoderReadMemory(decoder, image, data, len(data)), "decoding")
        lib.avifDecoderDestroy(decoder)  # and dav1d's buffers: the planes are the image's own copy
        decoder = None
        header = _Image.from_address(image)
        width, height = header.width, header.height
        if (width, height) != size:
            raise ValueError(f"its picture is {width}×{height}, its header said {size[0]}×{size[1]}")
        mode, channels = ("RGBA", 4) if header.alphaPlane else ("RGB", 3)
        for start in range(top, bottom, rows):
            end = min(bottom, start + rows)
            y = start & ~1  # a view of subsampled planes starts on an even row
            _check(lib, lib.avifImageSetViewRect(view, image, C.byref(_Rect(0, y, width, end - y))), "view")
            rgb = _RGBImage()
            lib.avifRGBImageSetDefaults(C.byref(rgb), view)
            if (rgb.width, rgb.height) != (width, end - y):
                raise ValueError("libavif's RGB image is not the view's size")
            buf = C.create_string_buffer(width * channels * (end - y))
            rgb.depth, rgb.format, rgb.maxThreads = 8, _RGBA if channels == 4 else _RGB, 1
            rgb.pixels, rgb.rowBytes = C.addressof(buf), width * channels
            _check(lib, lib.avifImageYUVToRGB(view, C.byref(rgb)), "conversion")
            band = Image.frombuffer(mode, (width, end - y), cast(Any, buf), "raw", mode, 0, 1)
            yield band.crop((0, start - y, width, end - y)) if y != start else band.copy()
            del band, buf
    finally:
        if decoder:
            lib.avifDecoderDestroy(decoder)
        if view:
            lib.avifImageDestroy(view)
        if image:
            lib.avifImageDestroy(image)
