"""Reading pictures: from bytes, a file, a PIL image, a URL or a IIIF Image API service, decoded within
one process's limits and reduced to what the model needs.

`ImageLimits` is those limits as one value (decoding: CLIP_GAZE_MAX_PIXELS, CLIP_GAZE_MAX_REQUEST_PIXELS,
CLIP_GAZE_MAX_DECODES; fetching: CLIP_GAZE_FETCH_ALLOW, and a fetched picture may be as large as an
upload, CLIP_GAZE_MAX_UPLOAD_MB). It is built once from the settings and carried as it is wherever
pictures are read: the engine's `PictureReader`, and Ray's reading tasks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Union

from ..errors import InvalidInput
from .decode import DecodedImage, Decoder, PixelBudget
from .fetch import FetchPolicy, fetch, fetch_json
from .iiif import image_url, info_url
from .sources import PictureRef

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from ..settings import Settings

ImageSource = Union[DecodedImage, "Image.Image", bytes, str, Path]  # a path as text, not a URL


@dataclass(frozen=True)
class ImageLimits:
    """How large a picture, and how many at once, a process decodes, and what it may fetch."""

    max_pixels: int  # one picture
    max_request_pixels: int  # one request's pictures together
    decodes: int  # pictures decoded at once in a process
    fetch: FetchPolicy

    @classmethod
    def from_settings(cls, settings: "Settings") -> "ImageLimits":
        return cls(max_pixels=settings.max_pixels, max_request_pixels=settings.max_request_pixels,
                   decodes=settings.max_decodes, fetch=FetchPolicy.from_settings(settings))


class PictureReader:
    """Pictures for one model input size (`target`, read from the model's config), within `limits`."""

    def __init__(self, limits: ImageLimits, target: int | None = None):
        self.limits = limits
        self.target = target
        self.decoder = Decoder(limits.max_pixels, limits.max_request_pixels, limits.decodes, target=target)

    def budget(self) -> PixelBudget:
        """The pixels one request may have decoded, all its pictures together."""
        return self.decoder.budget()

    def read(self, source: ImageSource, name: str | None = None, budget: PixelBudget | None = None) -> DecodedImage:
        """A picture from bytes, a file, a PIL image or an already decoded one."""
        from PIL import Image

        if isinstance(source, DecodedImage):
            return source
        if isinstance(source, Image.Image):
            return self.decoder.from_pil(source)
        if isinstance(source, (bytes, bytearray)):
            return self.decoder.decode(bytes(source), name or "image", budget)
        return self.decoder.decode_file(source, budget)

    def load(self, ref: PictureRef) -> bytes:
        """A picture's bytes: a file read, a URL fetched, or a IIIF service asked for the size the model
        needs (`target` pixels on the shorter side; the nearest listed size on a level-0 server)."""
        policy = self.limits.fetch
        if ref.kind == "file":
            self.decoder.check_file(ref.source)  # its header: a file that is not a picture is not read whole
            try:
                return Path(ref.source).read_bytes()
            except FileNotFoundError:
                raise InvalidInput(f"no such file: {ref.source}", code="file_not_found") from None
            except OSError as exc:
                raise InvalidInput(f"cannot read {ref.source}: {exc.strerror or exc}", code="file_not_found") from None
        if ref.kind == "iiif":
            info = fetch_json(info_url(ref.source), policy)
            return fetch(image_url(info, self.target or 0), policy).data  # no target: image_url says so
        return fetch(ref.source, policy).data

    def read_ref(self, ref: PictureRef, budget: PixelBudget | None = None) -> DecodedImage:
        """The picture a source names (file, URL or IIIF at the model's size), decoded."""
        return self.read(self.load(ref), name=ref.source, budget=budget)

    def fetch(self, url: str, budget: PixelBudget | None = None) -> DecodedImage:
        """A picture from a URL: an image, or a IIIF Image API service (…/info.json)."""
        return self.read_ref(PictureRef.of_url(url), budget)


__all__ = ["ImageLimits", "ImageSource", "PictureReader"]
