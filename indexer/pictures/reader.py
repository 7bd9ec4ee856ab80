"""Reading pictures: from bytes, a file, a PIL image, a URL or a IIIF Image API service, decoded within
one process's limits and reduced to what the model needs; a region of one (a IIIF SpecificResource's),
asked of its service or cut here.

`ImageLimits` is those limits as one value (decoding: CLIP_GAZE_MAX_PIXELS, CLIP_GAZE_MAX_REQUEST_PIXELS,
CLIP_GAZE_MAX_DECODES, CLIP_GAZE_DECODE_MEMORY; fetching: CLIP_GAZE_FETCH_ALLOW, and a fetched picture may be as large as an
upload, CLIP_GAZE_MAX_UPLOAD_MB). It is built once from the settings and carried as it is wherever
pictures are read: the engine's `PictureReader`, and Ray's reading tasks.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import io
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Union

from ..errors import InvalidInput
from .decode import DecodedImage, Decoder, PixelBudget, shrink
from .decode_memory import DEFAULT_DECODE_MEMORY
from .fetch import FetchPolicy, fetch, fetch_json
from .iiif_image import MAX_INFO_BYTES, Box, ImageRequest, image_request, info_url, region_box, region_fragment, region_request
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
    decode_memory: int = DEFAULT_DECODE_MEMORY  # bytes the decodes of a reader hold at once, by their estimates

    @classmethod
    def from_settings(cls, settings: "Settings") -> "ImageLimits":
        return cls(max_pixels=settings.max_pixels, max_request_pixels=settings.max_request_pixels,
                   decodes=settings.max_decodes, fetch=FetchPolicy.from_settings(settings),
                   decode_memory=settings.decode_memory_bytes)


class PictureReader:
    """Pictures for one model input size (`target`, read from the model's config), within `limits`."""

    def __init__(self, limits: ImageLimits, target: int | None = None):
        self.limits = limits
        self.target = target
        self.decoder = Decoder(limits.max_pixels, limits.max_request_pixels, limits.decodes, target=target,
                               memory=limits.decode_memory)

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

    def load(self, ref: PictureRef, deadline: float | None = None) -> bytes:
        """The bytes of a file or URL source (a URL's region is fetched whole, for `read_ref` to cut),
        fetched by `deadline` (time.monotonic()), by default the fetch timeout from now. A IIIF source
        is `fetch_ref`'s: it asks the service for the size the model needs."""
        if ref.kind == "file":
            self.decoder.check_file(ref.source)  # its header: a file that is not a picture is not read whole
            try:
                return Path(ref.source).read_bytes()
            except FileNotFoundError:
                raise InvalidInput(f"no such file: {ref.source}", code="file_not_found") from None
            except OSError as exc:
                raise InvalidInput(f"cannot read {ref.source}: {exc.strerror or exc}", code="file_not_found") from None
        return fetch(ref.location, self.limits.fetch, deadline=self._deadline(deadline)).data

    def read_ref(self, ref: PictureRef, budget: PixelBudget | None = None, deadline: float | None = None) -> DecodedImage:
        """The picture a source names (file, URL or IIIF at the model's size), decoded; for a region
        (`ref.region`), that region: served by the IIIF service, else cut here from the picture. A IIIF
        service is asked for the size the model needs (`target` pixels on the shorter side; the nearest
        listed size on a level-0 server, which is cut here for a region). Every fetch of it (a service's
        info.json, then the picture) by one `deadline` (time.monotonic()), by default the fetch timeout
        from now."""
        return self.fetch_ref(ref, budget, deadline)()

    def fetch_ref(self, ref: PictureRef, budget: PixelBudget | None = None,
                  deadline: float | None = None) -> Callable[[], DecodedImage]:
        """What `read_ref` does in two steps: the fetching (or file reading) done now, by one `deadline`
        for all its fetches; the decoding left to do, returned (so that a batch can tell a picture
        still being fetched from one fetched and being decoded)."""
        if ref.kind == "iiif":  # its width and height are the picture's (or region's) own, from its info.json
            deadline = self._deadline(deadline)
            asked = self._asked(ref, deadline)
            data = fetch(asked.url, self.limits.fetch, deadline=deadline).data
            return lambda: asked.sized(self._read_asked(data, asked, ref, budget))
        data = self.load(ref, deadline)
        if ref.region is None:
            return lambda: self.read(data, name=ref.source, budget=budget)
        region = ref.region
        return lambda: self._cut(data, ref, lambda w, h: region_box(region, w, h), budget)

    def _deadline(self, deadline: float | None) -> float:
        return time.monotonic() + self.limits.fetch.timeout if deadline is None else deadline

    def _read_asked(self, data: bytes, asked: ImageRequest, ref: PictureRef, budget: PixelBudget | None) -> DecodedImage:
        """What a IIIF service gave for the picture or its region, decoded (a level-0 server's listed size cut)."""
        if asked.crop is None:  # the whole picture, or a region the service cut
            return self.read(data, name=ref.source, budget=budget)
        fx, fy, fw, fh = asked.crop

        def box(w: int, h: int) -> Box:  # a level-0 server's listed size: the region's share of it
            x, y = min(w - 1, round(fx * w)), min(h - 1, round(fy * h))
            return x, y, max(1, min(w - x, round(fw * w))), max(1, min(h - y, round(fh * h)))
        return self._cut(data, ref, box, budget)

    def _asked(self, ref: PictureRef, deadline: float) -> ImageRequest:
        """What to fetch from a IIIF service for the picture, or its region, at the model's size."""
        info = fetch_json(info_url(ref.location), self.limits.fetch, MAX_INFO_BYTES, deadline=deadline)
        if ref.region is None:
            return image_request(info, self.target or 0)  # no target: image_request says so
        return region_request(info, self.target or 0, ref.region)

    def _cut(self, data: bytes, ref: PictureRef, box: Callable[[int, int], Box],
             budget: PixelBudget | None) -> DecodedImage:
        """The region `box` names of the picture in `data`: decoded within the limits (reduced less, so
        that the region keeps at least twice the model's size on its shorter side), cut, then reduced.
        Its sha256 is the picture's with the region, its width and height the region's."""
        decoder = self.decoder
        size = _header_size(data)
        if size and self.target:
            try:
                _, _, w, h = box(*size)
            except InvalidInput:
                pass  # said when the decoded picture is cut
            else:
                wanted = math.ceil(self.target * min(size) / max(1, min(w, h)))
                if wanted > self.target:  # the same limits, decoding slots and memory, a larger target
                    decoder = copy.copy(self.decoder)
                    decoder.target = wanted
        decoded = decoder.decode(data, ref.source, budget)
        x, y, w, h = box(decoded.width, decoded.height)
        sx, sy = decoded.image.width / decoded.width, decoded.image.height / decoded.height
        left, top = math.floor(x * sx), math.floor(y * sy)
        cut = decoded.image.crop((left, top, max(left + 1, math.ceil((x + w) * sx)), max(top + 1, math.ceil((y + h) * sy))))
        sha = hashlib.sha256(f"{decoded.sha256}#{region_fragment(ref.region or '')}".encode()).hexdigest()
        return dataclasses.replace(decoded, image=shrink(cut, self.target), sha256=sha, width=w, height=h)

    def fetch(self, url: str, budget: PixelBudget | None = None, deadline: float | None = None) -> DecodedImage:
        """A picture from a URL: an image, or a IIIF Image API service (…/info.json), every fetch by one
        `deadline` (by default the fetch timeout from now)."""
        return self.read_ref(PictureRef.of_url(url), budget, deadline)

    def fetching(self, url: str, budget: PixelBudget | None = None,
                 deadline: float | None = None) -> Callable[[], DecodedImage]:
        """`fetch` in two steps (`fetch_ref`): fetched now, the decoding returned."""
        return self.fetch_ref(PictureRef.of_url(url), budget, deadline)


def _header_size(data: bytes) -> tuple[int, int] | None:
    """A picture's width and height from its header, to choose how much to reduce it before a region is
    cut; None where the header is not read (the decoder then says why)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
    except Exception:  # whatever a header parser raises on untrusted bytes: the decoder reports it
        return None
    return (width, height) if width > 0 and height > 0 else None


__all__ = ["ImageLimits", "ImageSource", "PictureReader"]
