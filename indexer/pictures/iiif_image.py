"""IIIF Image API services (v1, v2 and v3) and regions of their pictures, read from parsed JSON.

Pure functions: nothing here fetches. `info_url(service)` is the info.json to fetch; `image_url(info,
target)` the URL of the whole picture at the size the model needs (`image_request`: with the picture's
own width and height, which is what is stored of it); `region_request(info, target,
region)` the URL of a region of it at that size (a level-0 server, which is not asked for regions,
gives its picture with the part to cut here). A region is written as the Image API writes it, in the
picture's pixels: `x,y,w,h`, `pct:x,y,w,h` or `square` (`parse_region` reads those and a media
fragment's `xywh=…`; `selector_region` reads a SpecificResource's selector); `region_box` says which
pixels it is of a picture of a given size. `service_base` finds a resource's service among those it lists.

Errors are `InvalidInput` with code `invalid_image_service` (an info.json without what is needed) or
`invalid_manifest` (a region outside its picture: the manifest that names it is wrong).
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from ..errors import InvalidInput

MAX_INFO_BYTES = 1024 * 1024  # a IIIF Image service's info.json, fetched for each of its pictures
IMAGE_SERVICE_TYPES = ("ImageService1", "ImageService2", "ImageService3", "iiif:ImageService")
_NUMBER = r"\d+(?:\.\d+)?"
_REGION = re.compile(rf"(?:(pct|percent|pixel):)?({_NUMBER}),({_NUMBER}),({_NUMBER}),({_NUMBER})")

Box = tuple[int, int, int, int]  # x, y, width, height in a picture's pixels
D = TypeVar("D")  # a DecodedImage (a dataclass with width and height), typed loosely: nothing here decodes


@dataclass(frozen=True)
class ImageRequest:
    """What to fetch for a picture or a region: `url`; where the server was not asked for the region
    (level 0), the part of the fetched picture to cut (`crop`: left, top, width, height as fractions of
    it); and `size`, the width and height of the picture (or the region) itself, in the picture's pixels
    as its info.json gives them: what is stored of it, not the size of the derivative fetched."""

    url: str
    crop: tuple[float, float, float, float] | None = None
    size: tuple[int, int] | None = None

    def sized(self, decoded: D) -> D:
        """`decoded` (a DecodedImage of what `url` gave) with the picture's own width and height (`size`):
        its pixels stay the derivative's."""
        if self.size is None:
            return decoded
        return dataclasses.replace(decoded, width=self.size[0], height=self.size[1])  # type: ignore[type-var]


def _bad_service(message: str) -> InvalidInput:
    return InvalidInput(message, code="invalid_image_service")


# ----------------------------------------------------------------------------------------- recognise


def _contexts(doc: dict[str, Any]) -> list[str]:
    ctx = doc.get("@context")
    items = ctx if isinstance(ctx, list) else [ctx]
    return [c for c in items if isinstance(c, str)]


def _types(doc: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for key in ("type", "@type"):
        value = doc.get(key)
        out += [v for v in (value if isinstance(value, list) else [value]) if isinstance(v, str)]
    return out


def is_image_service(doc: Any) -> bool:
    """An Image API info.json: v2 (image/2 context and `@id`) or v3 (`"type": "ImageService3"` or
    the image/3 context, and `id`)."""
    if not isinstance(doc, dict):
        return False
    contexts = _contexts(doc)
    if (("ImageService3" in _types(doc) or any("iiif.io/api/image/3/" in c for c in contexts))
            and isinstance(doc.get("id") or doc.get("@id"), str)):
        return True
    return any("iiif.io/api/image/2/" in c for c in contexts) and isinstance(doc.get("@id") or doc.get("id"), str)


def _version(info: dict[str, Any]) -> int:
    if "ImageService3" in _types(info) or any("iiif.io/api/image/3/" in c for c in _contexts(info)):
        return 3
    return 2


# ------------------------------------------------------------------------------------------- regions


def parse_region(text: Any) -> str | None:
    """A region as the Image API writes it (`x,y,w,h` in pixels, `pct:x,y,w,h`, `square`), or None for
    the whole picture (`full`, `xywh=percent:0,0,100,100`). Also read: a media fragment's `xywh=x,y,w,h`,
    `xywh=pixel:…` and `xywh=percent:…` (a FragmentSelector's value). Pixels are whole numbers, widths
    and heights above 0. Raises ValueError with the reason for anything else."""
    if not isinstance(text, str):
        raise ValueError(f"a region is text, not {_kind(text)}")
    value = "".join(text.split())
    value = value.removeprefix("xywh=")
    if value in ("full", "max"):
        return None
    if value == "square":
        return "square"
    match = _REGION.fullmatch(value)
    if not match:
        raise ValueError(f"{text!r} is not a region (x,y,w,h in pixels, pct:x,y,w,h, full or square)")
    unit, *numbers = match.groups()
    x, y, w, h = (float(n) for n in numbers)
    if w <= 0 or h <= 0:
        raise ValueError(f"the region {text!r} has no width or no height")
    if unit in ("pct", "percent"):
        if x >= 100 or y >= 100:
            raise ValueError(f"the region {text!r} starts beyond the picture (percentages run to 100)")
        if (x, y, w, h) == (0, 0, 100, 100) or (x + w >= 100 and y + h >= 100 and x == y == 0):
            return None
        return "pct:" + ",".join(f"{n:g}" for n in (x, y, w, h))
    if not all(n.is_integer() for n in (x, y, w, h)):
        raise ValueError(f"the region {text!r} is in pixels, which are whole numbers")
    return ",".join(str(int(n)) for n in (x, y, w, h))


def region_fragment(region: str) -> str:
    """The region as a media fragment (`xywh=…`, `xywh=percent:…`; `region=square`): what follows the
    `#` of a region picture's source, so that each region of a picture has its own."""
    if region == "square":
        return "region=square"
    if region.startswith("pct:"):
        return "xywh=percent:" + region.removeprefix("pct:")
    return "xywh=" + region


def region_box(region: str, width: int, height: int) -> Box:
    """The pixels a region is of a picture `width`×`height`: clipped to the picture (as an Image API
    server does). Raises InvalidInput `invalid_manifest` when it lies outside the picture."""
    if region == "square":
        side = min(width, height)
        return (width - side) // 2, (height - side) // 2, side, side
    if region.startswith("pct:"):
        px, py, pw, ph = (float(n) for n in region.removeprefix("pct:").split(","))
        x, y = round(width * px / 100), round(height * py / 100)
        w, h = max(1, round(width * pw / 100)), max(1, round(height * ph / 100))
    else:
        x, y, w, h = (int(n) for n in region.split(","))
    if x >= width or y >= height:
        raise InvalidInput(f"the region {region} lies outside the picture, which is {width}×{height} pixels",
                           code="invalid_manifest")
    return x, y, min(w, width - x), min(h, height - y)


def selector_region(selectors: Any) -> tuple[str | None, str | None] | str:
    """The region a SpecificResource's selector (or list of them) names: an `ImageApiSelector`'s
    `region`, a `FragmentSelector`'s `xywh=` value, in `parse_region`'s form: (the region, or None for
    the whole picture; a note when a selector of another kind was not applied), or the reason a
    selector is malformed."""
    unread: list[str] = []
    for selector in _list(selectors):
        if not isinstance(selector, dict):
            continue
        types = [t.rsplit(":", 1)[-1] for t in _types(selector)]
        if "ImageApiSelector" in types:
            name, value = "ImageApiSelector", selector.get("region", "full")
        elif "FragmentSelector" in types:
            name, value = "FragmentSelector", selector.get("value")
            if isinstance(value, str) and not value.strip().startswith("xywh="):
                return f"FragmentSelector {value!r} is not an xywh= region of the image"
        else:
            unread.append(types[0] if types else "untyped selector")
            continue
        try:
            return parse_region(value), None
        except ValueError as exc:
            return f"{name} has a malformed region: {exc}"
    if unread:
        return None, f"the whole image: its {unread[0]} is not applied"
    return None, None


# -------------------------------------------------------------------------------------- image service


def service_base(body: dict[str, Any]) -> str | None:
    """The base URL of a resource's Image API service (no /info.json), if it lists one: a service
    typed, profiled or with a context as an Image API's, else an untyped one."""
    candidates = [s for s in _list(body.get("service")) if isinstance(s, (dict, str))]
    plain: str | None = None
    for s in candidates:
        if isinstance(s, str):
            plain = plain or s
            continue
        sid = _id(s)
        if sid is None:
            continue
        profile = " ".join(p for p in _list(s.get("profile")) if isinstance(p, str))
        if (any(t in IMAGE_SERVICE_TYPES for t in _types(s))
                or any("/api/image/" in c or "image-api" in c for c in _contexts(s))
                or "iiif.io/api/image/" in profile or "image-api" in profile
                or profile in ("level0", "level1", "level2")):
            return _base(sid)
        if not _types(s) and not profile:
            plain = plain or sid
    return _base(plain) if plain else None


def info_url(service: str) -> str:
    """The info.json URL of an Image API service base URL."""
    return _base(service) + "/info.json"


def image_url(info: Any, target: int) -> str:
    """The URL of the picture at the size the model needs, from an info.json (v2 or v3).

    Its shorter side at `target` pixels (`w,` or `,h`, whichever side is shorter), never upscaled
    (a picture already no larger: v2 `full`, v3 `max`), within the service's maxWidth/maxHeight/maxArea.
    A level-0 service may only be asked for a listed size or the full picture: the smallest listed
    size whose shorter side is at least `target`, else the largest listed size (v2 as `w,`, the
    canonical form static level-0 servers write; v3 as `w,h`), else full/max. Format `default.jpg`.

    Raises InvalidInput `invalid_image_service` when `info` has no id or no width and height."""
    return image_request(info, target).url


def image_request(info: Any, target: int) -> ImageRequest:
    """`image_url`'s URL, with the picture's own width and height from the info.json (`size`)."""
    base, width, height, v3 = _facts(info, target)
    if _level0(info, v3):
        size = _listed(info, v3, width, height, lambda w, h: min(w, h) >= target)
    else:
        size = _size(info, v3, width, height, target)
    return ImageRequest(f"{base}/full/{size}/0/default.jpg", size=(width, height))


def region_request(info: Any, target: int, region: str) -> ImageRequest:
    """What to fetch for a region (`parse_region`'s form) of the picture, at the size the model needs.

    The region in pixels (`x,y,w,h`: percentages and `square` are worked out from the info.json's width
    and height, since a level-1 server need only take pixels), its shorter side at `target` pixels,
    never upscaled, within the service's limits, as `image_url` sizes a whole picture. A level-0 server
    is not asked for regions: the smallest listed size at which the region's shorter side is at least
    `target` (else the largest; else full/max), with `crop` saying which part of it to cut. A region
    that is the whole picture is the whole picture's URL. Raises like `image_url`, and InvalidInput
    `invalid_manifest` when the region lies outside the picture."""
    base, width, height, v3 = _facts(info, target)
    x, y, w, h = region_box(region, width, height)
    if (x, y, w, h) == (0, 0, width, height):
        return image_request(info, target)
    if _level0(info, v3):
        size = _listed(info, v3, width, height, lambda sw, sh: min(w * sw / width, h * sh / height) >= target)
        return ImageRequest(f"{base}/full/{size}/0/default.jpg", crop=(x / width, y / height, w / width, h / height),
                            size=(w, h))
    return ImageRequest(f"{base}/{x},{y},{w},{h}/{_size(info, v3, w, h, target)}/0/default.jpg", size=(w, h))


def _facts(info: Any, target: int) -> tuple[str, int, int, bool]:
    """The service's base URL, the picture's width and height, and whether it is v3."""
    if isinstance(target, bool) or not isinstance(target, int) or target < 1:
        raise ValueError(f"target must be a positive number of pixels, not {target!r}")
    if not isinstance(info, dict):
        raise _bad_service(f"an Image API info.json is a JSON object, not {_kind(info)}")
    sid = _id(info)
    if sid is None:
        raise _bad_service("this info.json has no `id` (v3) or `@id` (v2): the service's URL is unknown")
    base = _base(sid)
    return base, _dimension(info, "width", base), _dimension(info, "height", base), _version(info) == 3


def _size(info: dict[str, Any], v3: bool, width: int, height: int, target: int) -> str:
    """The size parameter for a picture (or region) `width`×`height` whose shorter side is wanted at
    `target` pixels, never upscaled, within maxWidth/maxHeight/maxArea."""
    scale = target / min(width, height)
    for key, side in (("maxWidth", width), ("maxHeight", height)):
        limit = _int(info.get(key)) or (_int(info.get("maxWidth")) if key == "maxHeight" else None)
        if limit:
            scale = min(scale, limit / side)
    max_area = _int(info.get("maxArea"))
    if max_area:
        scale = min(scale, math.sqrt(max_area / (width * height)))
    if scale >= 1:
        return "max" if v3 else "full"
    if width <= height:
        return f"{max(1, math.floor(width * scale + 1e-9))},"
    return f",{max(1, math.floor(height * scale + 1e-9))}"


def _listed(info: dict[str, Any], v3: bool, width: int, height: int, enough: Callable[[int, int], bool]) -> str:
    """A level-0 server's size parameter: the smallest listed size that is `enough`, else the largest
    listed, else the full picture."""
    full = "max" if v3 else "full"
    sizes = sorted(
        ((w, h) for s in _list(info.get("sizes")) if isinstance(s, dict)
         for w, h in [(_int(s.get("width")), _int(s.get("height")))] if w and h),
        key=lambda wh: wh[0] * wh[1],
    )
    if not sizes:
        return full
    w, h = next((wh for wh in sizes if enough(*wh)), sizes[-1])
    if (w, h) == (width, height):
        return full
    return f"{w},{h}" if v3 else f"{w},"


def _level0(info: dict[str, Any], v3: bool) -> bool:
    profiles = _list(info.get("profile"))
    names = [p for p in profiles if isinstance(p, str)]
    if v3:
        return any(p == "level0" or p.endswith("/level0.json") for p in names)
    return bool(names) and "level0" in names[0]


def _dimension(info: dict[str, Any], key: str, base: str) -> int:
    value = _int(info.get(key))
    if not value:
        raise _bad_service(f"Image API service {base} gives no valid {key} in its info.json")
    return value


# ---------------------------------------------------------------------------------------------- small


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if isinstance(value, float) and value.is_integer() and value > 0:
        return int(value)
    return None


def _id(node: Any) -> str | None:
    if not isinstance(node, dict):
        return None
    for key in ("id", "@id"):
        value = node.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _base(service_id: str) -> str:
    base = service_id.strip()
    base = base.removesuffix("/info.json")
    return base.rstrip("/")


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _kind(value: Any) -> str:
    return {list: "a list", str: "a string", type(None): "null", bool: "a boolean", int: "a number",
            float: "a number", dict: "an object"}.get(type(value), type(value).__name__)


__all__ = ["IMAGE_SERVICE_TYPES", "MAX_INFO_BYTES", "ImageRequest", "image_request", "image_url", "info_url", "is_image_service", "parse_region",
           "region_box", "region_fragment", "region_request", "selector_region", "service_base"]
