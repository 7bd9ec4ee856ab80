"""Thumbnails: a picture's small image for the explorer (longest side `SIDE` px, WebP), made from the
picture already decoded for the model; for a IIIF picture, the Image API service's own at that size."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from ..schema.explore import Thumbnail
from .fetch import FetchPolicy, fetch

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

SIDE = 256  # px, the longest side
QUALITY = 75  # WebP: about 6 to 12 KB a picture
MAX_THUMBNAIL_BYTES = 2 * 1024 * 1024  # what a IIIF service may send for one


def make_thumbnail(image: "Image.Image", side: int = SIDE) -> Thumbnail:
    """The picture, reduced so its longest side is at most `side`, as WebP."""
    from PIL import Image


    small = image.convert("RGB") if image.mode != "RGB" else image.copy()
    small.thumbnail((side, side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    small.save(out, format="WEBP", quality=QUALITY, method=4)
    return Thumbnail("image/webp", small.width, small.height, out.getvalue())


def iiif_thumbnail_url(service: str, side: int = SIDE) -> str:
    """The picture at `side` px on its longest side, asked of its IIIF Image service (`!w,h` is the
    same in Image API 2 and 3; 2's `default` quality is 3's too)."""
    return f"{service.rstrip('/')}/full/!{side},{side}/0/default.jpg"


def fetch_iiif_thumbnail(service: str, policy: FetchPolicy, deadline: float | None = None) -> Thumbnail:
    """The service's own thumbnail of the picture, checked to be a picture of at most `SIDE` px (a
    level-0 server that cannot size it gives an error here: the caller makes one instead)."""
    from PIL import Image

    from ..errors import InvalidInput

    data = fetch(iiif_thumbnail_url(service), policy, deadline=deadline).data
    if len(data) > MAX_THUMBNAIL_BYTES:
        raise InvalidInput(f"{service}: the thumbnail is too large", code="invalid_thumbnail")
    try:
        with Image.open(io.BytesIO(data)) as img:
            size, fmt = img.size, (img.format or "").upper()
            if max(size) > SIDE + 1 or fmt not in ("JPEG", "PNG", "WEBP"):
                raise InvalidInput(f"{service}: not a thumbnail", code="invalid_thumbnail")
            if fmt != "JPEG":  # store what browsers show, small
                return make_thumbnail(img)
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{service}: the thumbnail does not decode: {exc}", code="invalid_thumbnail") from None
    return Thumbnail("image/jpeg", size[0], size[1], data)


__all__ = ["SIDE", "fetch_iiif_thumbnail", "iiif_thumbnail_url", "make_thumbnail"]
