"""IIIF Presentation manifests (v2 and v3) and Image API services (v2 and v3), read from parsed JSON.

Pure functions: nothing here fetches. The caller fetches a manifest (`fetch.fetch_json`), reads its
pictures with `manifest_items` (and what was skipped with `manifest_problems`), fetches each
service's `info_url(service)`, and asks `image_url(info, target)` for the URL of the picture at the
size the model needs.

Errors are `InvalidInput` with code `invalid_manifest` or `invalid_image_service`.
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidInput

PAINTING = ("painting", "sc:painting", "oa:painting")
IMAGE_SERVICE_TYPES = ("ImageService1", "ImageService2", "ImageService3", "iiif:ImageService")
_TAG = re.compile(r"<[^>]*>")


@dataclass(frozen=True)
class IIIFItem:
    service: str | None  # an Image API service base URL (no trailing /info.json), when the canvas has one
    url: str | None  # a direct image URL (the annotation body's id), used when there is no service
    label: str | None  # the canvas label (v2: string or list/@value; v3: language map → first value)
    external_id: str | None  # the canvas id
    metadata: dict[str, str] = field(default_factory=dict)  # "manifest": the manifest's label, then the canvas's own pairs


def _bad_manifest(message: str) -> InvalidInput:
    return InvalidInput(message, code="invalid_manifest")


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


def is_manifest(doc: Any) -> bool:
    """A IIIF Presentation manifest: v3 `"type": "Manifest"`, v2 `"@type": "sc:Manifest"`, or a
    presentation context with `items` or `sequences`."""
    if not isinstance(doc, dict):
        return False
    if any(t in ("Manifest", "sc:Manifest", "http://iiif.io/api/presentation/2#Manifest") for t in _types(doc)):
        return True
    presentation = any("iiif.io/api/presentation/" in c for c in _contexts(doc))
    return presentation and not _types(doc) and ("items" in doc or "sequences" in doc)


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


# ------------------------------------------------------------------------------------------- manifest


def manifest_items(doc: Any) -> list[IIIFItem]:
    """The manifest's pictures in order, one per canvas that has an image; canvases without one are
    skipped (`manifest_problems` says which and why).

    Raises InvalidInput `invalid_manifest` when `doc` is not a manifest (not a dict, a Collection,
    neither `items` nor `sequences`), has no canvases, or no canvas has an image. v2: the first
    sequence's canvases → `images[]` → `resource` (an `oa:Choice`: its default, else its first item)
    → `service`; v3: `items[]` Canvas → AnnotationPage → painting Annotation → `body` (a Choice: its
    first item) → `service` (list or object, `id` or `@id`)."""
    items, _ = _scan(doc)
    return items


def manifest_problems(doc: Any) -> list[str]:
    """One readable line for each canvas `manifest_items` skipped (empty when none was); raises like
    `manifest_items` when the document itself is not a usable manifest, except that a manifest whose
    every canvas is bad gives the list instead of raising."""
    _, problems = _scan(doc, strict=False)
    return problems


def _scan(doc: Any, strict: bool = True) -> tuple[list[IIIFItem], list[str]]:
    if not isinstance(doc, dict):
        raise _bad_manifest(f"a IIIF manifest is a JSON object, not {_kind(doc)}")
    types = _types(doc)
    if any("Collection" in t for t in types):
        raise _bad_manifest("this is a IIIF Collection, not a manifest: give one of the manifests it lists")
    if is_image_service(doc):
        raise _bad_manifest("this is a IIIF Image API service (an info.json), not a manifest")
    if "items" not in doc and "sequences" not in doc:
        raise _bad_manifest("not a IIIF Presentation manifest (it has neither `items` (v3) nor `sequences` (v2))")
    v2 = "sequences" in doc and "items" not in doc
    canvases = _v2_canvases(doc) if v2 else _list(doc.get("items"))
    if not canvases:
        mid = _id(doc)
        raise _bad_manifest(f"this manifest{' ' + mid if mid else ''} has no canvases")
    manifest_label = _text(doc.get("label"))
    items: list[IIIFItem] = []
    problems: list[str] = []
    for n, canvas in enumerate(canvases, 1):
        where = f"canvas {n} of {len(canvases)}"
        if not isinstance(canvas, dict):
            problems.append(f"{where} is {_kind(canvas)}, not a canvas")
            continue
        label = _text(canvas.get("label"))
        cid = _id(canvas)
        named = ", ".join(x for x in (cid, f"“{label}”" if label else None) if x)
        if named:
            where += f" ({named})"
        body = _v2_image(canvas) if v2 else _v3_image(canvas)
        if isinstance(body, str):  # why there is none
            problems.append(f"{where}: {body}")
            continue
        service = _service(body)
        url = _id(body)
        if service is None and url is None:
            problems.append(f"{where}: its image has neither an id nor an Image API service")
            continue
        metadata: dict[str, str] = {}
        if manifest_label:
            metadata["manifest"] = manifest_label
        for key, value in _pairs(canvas.get("metadata")):
            metadata[key] = f"{metadata[key]}; {value}" if key in metadata else value
        items.append(IIIFItem(service=service, url=url, label=label, external_id=cid, metadata=metadata))
    if strict and not items:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise _bad_manifest(f"no canvas of this manifest has an image ({shown})")
    return items, problems


def _v2_canvases(doc: dict[str, Any]) -> list[Any]:
    sequences = _list(doc.get("sequences"))
    first = sequences[0] if sequences else None
    return _list(first.get("canvases")) if isinstance(first, dict) else []


def _v2_image(canvas: dict[str, Any]) -> dict[str, Any] | str:
    annotations = [a for a in _list(canvas.get("images")) if isinstance(a, dict)]
    if not annotations:
        return "no image (its `images` list is empty or missing)"
    for annotation in annotations:
        if annotation.get("motivation") not in (None, *PAINTING):
            continue
        resource = annotation.get("resource")
        if isinstance(resource, dict) and "oa:Choice" in _types(resource):
            choice = resource.get("default")
            if not isinstance(choice, dict):  # absent, or "rdf:nil"
                choice = next((i for i in _list(resource.get("item")) if isinstance(i, dict)), None)
            resource = choice
        if isinstance(resource, dict):
            return resource
        if isinstance(resource, str) and resource:
            return {"@id": resource}
    return "no image (no painting annotation with a resource)"


def _v3_image(canvas: dict[str, Any]) -> dict[str, Any] | str:
    seen_body = False
    for page in _list(canvas.get("items")):
        if not isinstance(page, dict):
            continue
        for annotation in _list(page.get("items")):
            if not isinstance(annotation, dict) or annotation.get("motivation") not in (None, *PAINTING):
                continue
            for body in _list(annotation.get("body")):
                if isinstance(body, dict) and "Choice" in _types(body):
                    body = next((i for i in _list(body.get("items")) if isinstance(i, dict)), None)
                if isinstance(body, str) and body:
                    body = {"id": body}
                if not isinstance(body, dict):
                    continue
                seen_body = True
                kinds = _types(body)
                if kinds and not any(k in ("Image", "dctypes:Image") for k in kinds):
                    continue
                return body
    if seen_body:
        return "no image (what it paints is not an Image)"
    return "no image (no painting annotation)"


def _service(body: dict[str, Any]) -> str | None:
    """The base URL of the body's Image API service, if it has one."""
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


def _pairs(metadata: Any) -> list[tuple[str, str]]:
    out = []
    for pair in _list(metadata):
        if isinstance(pair, dict):
            key, value = _text(pair.get("label")), _text(pair.get("value"), join=True)
            if key and value is not None:
                out.append((key, value))
    return out


def _text(value: Any, join: bool = False) -> str | None:
    """A IIIF label or value as one string: a string; a v2 list or {"@value": …}; a v3 language map
    (its first language's values). `join`: every value of the list, joined with "; " (metadata
    values); else the first. HTML (a value that starts with < and ends with >) loses its tags."""
    strings: list[str] = []

    def walk(v: Any) -> None:
        if isinstance(v, str):
            strings.append(v)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            strings.append(str(v))
        elif isinstance(v, list):
            for x in v:
                walk(x)
        elif isinstance(v, dict):
            if "@value" in v:
                walk(v["@value"])
            else:
                for values in v.values():  # a v3 language map: the first language that has a value
                    before = len(strings)
                    walk(values)
                    if len(strings) > before:
                        break

    walk(value)
    cleaned = [s for s in (_plain(s) for s in strings) if s]
    if not cleaned:
        return None
    return "; ".join(cleaned) if join else cleaned[0]


def _plain(text: str) -> str:
    text = text.strip()
    if text.startswith("<") and text.endswith(">"):
        text = html.unescape(_TAG.sub(" ", text))
    return " ".join(text.split())


# -------------------------------------------------------------------------------------- image service


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
    if isinstance(target, bool) or not isinstance(target, int) or target < 1:
        raise ValueError(f"target must be a positive number of pixels, not {target!r}")
    if not isinstance(info, dict):
        raise _bad_service(f"an Image API info.json is a JSON object, not {_kind(info)}")
    sid = _id(info)
    if sid is None:
        raise _bad_service("this info.json has no `id` (v3) or `@id` (v2): the service's URL is unknown")
    base = _base(sid)
    width, height = _dimension(info, "width", base), _dimension(info, "height", base)
    v3 = _version(info) == 3
    full = "max" if v3 else "full"

    def url(size: str) -> str:
        return f"{base}/full/{size}/0/default.jpg"

    if _level0(info, v3):
        sizes = sorted(
            ((w, h) for s in _list(info.get("sizes")) if isinstance(s, dict)
             for w, h in [(_int(s.get("width")), _int(s.get("height")))] if w and h),
            key=lambda wh: wh[0] * wh[1],
        )
        if not sizes:
            return url(full)
        w, h = next((wh for wh in sizes if min(wh) >= target), sizes[-1])
        if (w, h) == (width, height):
            return url(full)
        return url(f"{w},{h}" if v3 else f"{w},")
    scale = target / min(width, height)
    for key, side in (("maxWidth", width), ("maxHeight", height)):
        limit = _int(info.get(key)) or (_int(info.get("maxWidth")) if key == "maxHeight" else None)
        if limit:
            scale = min(scale, limit / side)
    max_area = _int(info.get("maxArea"))
    if max_area:
        scale = min(scale, math.sqrt(max_area / (width * height)))
    if scale >= 1:
        return url(full)
    if width <= height:
        return url(f"{max(1, math.floor(width * scale + 1e-9))},")
    return url(f",{max(1, math.floor(height * scale + 1e-9))}")


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


__all__ = ["IIIFItem", "image_url", "info_url", "is_image_service", "is_manifest", "manifest_items", "manifest_problems"]
