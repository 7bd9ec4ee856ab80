"""Where a match's explanation peaks, as a region of its target (an annotation's `xywh=`).

A picture is read again from its source and decomposed once (`explain.decompose`); each annotated
phrase gets its map relative to its whole list, as `explain.maps` makes them, and the map's strongest
cell is the region: the cell's rectangle of the part of the picture the model saw, in the picture's
own pixels (for a IIIF picture, those of its `info.json`: the full image, or the region of it that a
canvas paints).

Canvas coordinates. clip-gaze does not keep a canvas's size, so a picture painted on a whole canvas
is taken to cover it pixel for pixel (canvas coordinates are the picture's pixels, as IIIF's cookbook
draws canvases the size of their image and as viewers place an image whose canvas has the same
size); a picture painted on part of a canvas (its external id ends in `#xywh=x,y,w,h`, the painting
annotation's target) is scaled into that part.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..explain.decompose import Explainer
from ..explain.geometry import input_box
from ..explain.maps import _weighted_mean
from ..pictures.iiif_image import parse_region
from ..pictures.sources import PictureRef
from ..scoring.kernels import cosines

if TYPE_CHECKING:  # pragma: no cover
    from ..engine import Engine
    from ..pictures.decode import DecodedImage

Box = tuple[float, float, float, float]  # x, y, w, h
_PLACED = re.compile(r"#xywh=(?:pixel:)?(\d+(?:\.\d+)?),(\d+(?:\.\d+)?),(\d+(?:\.\d+)?),(\d+(?:\.\d+)?)$")


def picture_ref(source: str, image_service: str | None) -> PictureRef:
    """How a stored picture is read again: from its IIIF Image service (with the region its source's
    fragment names), else its URL or file."""
    if image_service:
        fragment = source.partition("#")[2]
        region = parse_region(fragment.removeprefix("region=")) if fragment else None
        return PictureRef(source, "iiif", region=region)
    return PictureRef(source, "url" if "://" in source else "file")


@dataclass(frozen=True)
class Wanted:
    """The phrases of one list to find regions for: their positions in the list's index."""

    vocabulary: str
    positions: Sequence[int]


def peak_boxes(engine: "Engine", decoded: "DecodedImage", wanted: Sequence[Wanted]) -> dict[tuple[str, int], Box]:
    """(vocabulary, position) → the peak cell of that phrase's map, in the picture's own pixels
    (`decoded.width` × `decoded.height`), clipped to the picture. One forward pass."""
    model = engine.torch_model
    decomposition = Explainer(model.model).decompose(model.image_tensor(decoded.image).unsqueeze(0))[0]
    scale = model.logit_scale
    here = input_box(model.preprocess, decoded.image.size)
    fx, fy = decoded.width / decoded.image.width, decoded.height / decoded.image.height
    x0, y0, x1, y1 = here[0] * fx, here[1] * fy, here[2] * fx, here[3] * fy
    cw, ch = (x1 - x0) / decomposition.cols, (y1 - y0) / decomposition.rows
    versions = engine.store.versions()
    out: dict[tuple[str, int], Box] = {}
    for want in wanted:
        matrix = engine.indexes.get(want.vocabulary, versions).matrix
        logits = cosines(matrix, decomposition.embedding)[:, 0].astype(np.float64) * scale
        weights = np.exp(logits - logits.max())
        weights /= weights.sum()
        positions = list(want.positions)
        directions = np.asarray(matrix[positions], dtype=np.float32) - _weighted_mean(matrix, weights)
        heat, _ = decomposition.contributions(directions, scale)
        for k, position in enumerate(positions):
            r, c = np.unravel_index(int(np.argmax(heat[k])), heat[k].shape)
            left, top = max(0.0, x0 + c * cw), max(0.0, y0 + r * ch)
            right, bottom = min(float(decoded.width), x0 + (c + 1) * cw), min(float(decoded.height), y0 + (r + 1) * ch)
            out[(want.vocabulary, position)] = (left, top, max(1.0, right - left), max(1.0, bottom - top))
    return out


def placed(external_id: str | None) -> Box | None:
    """Where on its canvas a picture is painted, when its external id says so (`…#xywh=x,y,w,h`)."""
    match = _PLACED.search(external_id or "")
    return tuple(float(v) for v in match.groups()) if match else None  # type: ignore[return-value]


def on_target(box: Box, width: int, height: int, placement: Box | None) -> str:
    """A box of a picture `width` × `height` as a media fragment `xywh=` on its target: the picture's
    pixels, or scaled into its `placement` on a canvas; whole numbers, at least 1 wide and high."""
    x, y, w, h = box
    if placement is not None and width and height:
        px, py, pw, ph = placement
        sx, sy = pw / width, ph / height
        x, y, w, h = px + x * sx, py + y * sy, w * sx, h * sy
    return f"xywh={round(x)},{round(y)},{max(1, round(w))},{max(1, round(h))}"


__all__ = ["Box", "Wanted", "on_target", "peak_boxes", "picture_ref", "placed"]
