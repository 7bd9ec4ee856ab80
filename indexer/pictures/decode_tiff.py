"""TIFFs whose picture is one deflate-compressed strip, decoded a band of rows at a time.

libtiff decodes a strip whole, into a buffer of its own, before Pillow copies it into its picture: for a
TIFF written as one strip that is two full-size copies (RGBA at 60 MP: 458 MiB, 2.67 × its RGB size).
Here the strip's bytes are inflated by zlib as far as the next band of rows needs (the horizontal
predictor undone on the band), so `decode.shrink`'s strips are cut from bands and the full-size
picture never exists. Only the plain cases are taken (one strip, deflate, 8 bits a sample, samples
interleaved, the modes L, LA, RGB, RGBA as Pillow reads them); any other TIFF is left to Pillow.
Lying tags (a strip outside the file, too few bytes for its rows) and damaged data raise ValueError,
which `decode` reports as a damaged picture.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

_DEFLATE = {8, 32946}  # Adobe deflate and the older code for it
_MODES = {  # Pillow's mode, the photometric interpretation and samples a pixel: the mode decoded
    ("L", 1, 1): "L", ("LA", 1, 2): "LA", ("RGB", 2, 3): "RGB", ("RGBA", 2, 4): "RGBA"}
_CHUNK = 1 << 16  # compressed bytes handed to zlib at a time


@dataclass(frozen=True)
class StripPlan:
    offset: int
    length: int
    width: int
    height: int
    mode: str
    samples: int
    predictor: int

    def band_bytes(self, rows: int) -> int:
        """What a band of `rows` rows holds at once: its inflated bytes (twice, with the predictor
        undone) and Pillow's picture of them (4 bytes a pixel)."""
        return rows * self.width * (2 * self.samples + 4)


def strip_plan(img: Image.Image, size: int) -> StripPlan | None:
    """How to decode `img` (a TIFF opened, not loaded, from `size` bytes) by bands, or None when it is
    not a one-strip deflate TIFF of the plain kind (Pillow decodes it then)."""
    try:
        found = _plain(img)
    except (TypeError, ValueError, IndexError, AttributeError):  # tags of odd types: Pillow's to judge
        return None
    if found is None:
        return None
    (offset, length), plan = found
    if offset < 0 or length <= 0 or offset + length > size:
        raise ValueError("its strip lies outside the file")
    return StripPlan(offset, length, *plan)


def _plain(img: Image.Image) -> tuple[tuple[int, int], tuple[int, int, str, int, int]] | None:
    """The strip's place and the picture's shape, when `img` is a TIFF of the kind decoded here."""
    tags: Any = getattr(img, "tag_v2", None)
    tiles: Any = getattr(img, "tile", ())
    if tags is None or 322 in tags or 324 in tags or len(tiles) != 1:
        return None
    offsets, counts = tags.get(273), tags.get(279)
    if not (isinstance(offsets, tuple) and isinstance(counts, tuple) and len(offsets) == len(counts) == 1):
        return None
    samples = int(tags.get(277, 1))
    bits = tags.get(258, (8,))
    bits = bits if isinstance(bits, tuple) else (bits,)
    rawmode = tiles[0].args[0] if isinstance(tiles[0].args, tuple) and tiles[0].args else None
    mode = _MODES.get((img.mode, int(tags.get(262, -1)), samples))
    if (mode is None or rawmode != mode or int(tags.get(259, 1)) not in _DEFLATE or any(int(b) != 8 for b in bits)
            or int(tags.get(284, 1)) != 1 or int(tags.get(317, 1)) not in (1, 2) or int(tags.get(266, 1)) != 1):
        return None
    width, height = img.size
    if int(tags.get(278, height) or height) < height:  # rows per strip short of the picture: not one strip
        return None
    return (int(offsets[0]), int(counts[0])), (width, height, mode, samples, int(tags.get(317, 1)))


def bands(data: bytes, plan: StripPlan, top: int, bottom: int, rows: int) -> Iterator[Image.Image]:
    """Rows `top`…`bottom` of the picture, `rows` at a time (the last band shorter), each a picture of
    the plan's mode and full width; the rows above `top` are inflated and dropped a band at a time."""
    strip = memoryview(data)[plan.offset:plan.offset + plan.length]
    inflate = zlib.decompressobj()
    fed = 0
    row = plan.width * plan.samples

    def read(n: int) -> bytearray:
        nonlocal fed
        out = bytearray()
        while len(out) < n:
            pending: bytes | memoryview = inflate.unconsumed_tail
            if not pending:
                if inflate.eof or fed >= len(strip):
                    raise ValueError(f"its strip ends after {len(out) // row + done} of {plan.height} rows")
                pending = strip[fed:fed + _CHUNK]
                fed += len(pending)
            out += inflate.decompress(pending, n - len(out))
        return out

    done = 0
    while done < bottom:
        start = done
        count = min(rows, bottom - done) if done >= top else min(rows, top - done)
        raw = read(count * row)
        done += count
        if start < top:
            continue
        band = np.frombuffer(raw, dtype=np.uint8).reshape(count, plan.width, plan.samples)
        if plan.predictor == 2:  # each sample stored as its difference from the one to its left
            band = np.cumsum(band, axis=1, dtype=np.uint8)
        yield Image.frombytes(plan.mode, (plan.width, count), band if plan.predictor == 2 else raw)
        del raw, band
