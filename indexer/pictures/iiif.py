"""IIIF Presentation manifests (v2 and v3), read from parsed JSON: the pictures their canvases paint.

Pure functions: nothing here fetches. The caller fetches a manifest (`fetch.fetch_json`), reads its
pictures with `manifest_items` (and what was skipped with `manifest_problems`), and reads each
picture: an Image API service is asked for it at the size the model needs (`iiif_image`, whose
`image_url`, `info_url` and `is_image_service` are named here too), a plain image URL is fetched.

What a canvas paints, as the cookbook's recipes paint it:

- one image, or several (0036 "composition from multiple images"): each image is a picture of that
  canvas. The first one painted on the whole canvas takes the canvas id as its external id; one painted
  on part of the canvas or its timeline takes the canvas id with the annotation target's fragment
  (`<canvas>#xywh=3949,994,1091,1232`, `<canvas>#t=11,42`), said in its metadata: `on canvas` (in the
  canvas's coordinates, which need not be the image's pixels) and `on timeline` (seconds; 0489, 0560).
  A second picture that would take an id already taken takes its annotation's id, else `<id>#<n>`.
- a `Choice` (0033 "choice", 0326 "annotating image layer"): the item a viewer shows first (v3: the
  first of `items` that is an image; v2 `oa:Choice`: its `default`, else the first of `item`), its
  metadata saying so (`choice`: "first of 2: Natural Light") and naming the others (`choice
  alternatives`: "X-ray <service or id>; …").
- a `SpecificResource` (0299 "region"): its `source` image, with the region its selector names (an
  `ImageApiSelector`'s `region`, a `FragmentSelector`'s `xywh=`) as the item's `region`, in the source
  image's pixels (`image region` in its metadata); a selector of another kind (SvgSelector, …) is not
  applied, and the metadata says the whole image was read.
- sound, video, text: not pictures. A canvas that paints nothing else is a problem ("not a picture: it
  paints Video"); one that also paints images says so in their metadata (`canvas also paints`).

A painting that cannot be read (a Choice without items, a selector with a malformed region, an image
without an id or a service) is a problem, whatever else the canvas paints; the rest are read.

Errors are `InvalidInput` with code `invalid_manifest`.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Union

from ..errors import InvalidInput
from .iiif_image import (
    _contexts,
    _id,
    _kind,
    _list,
    _types,
    image_url,
    info_url,
    is_image_service,
    selector_region,
    service_base,
)

PAINTING = ("painting", "sc:painting", "oa:painting")
_TAG = re.compile(r"<[^>]*>")
_DEPTH = 4  # Choices and SpecificResources nested in one another, at most


@dataclass(frozen=True)
class IIIFItem:
    service: str | None  # an Image API service base URL (no trailing /info.json), when the image has one
    url: str | None  # a direct image URL (the image's id), used when there is no service
    label: str | None  # the canvas label (v2: string or list/@value; v3: language map → first value)
    external_id: str | None  # the canvas id (with the target's fragment for a picture on part of it)
    metadata: dict[str, str] = field(default_factory=dict)  # "manifest": the manifest's label, the canvas's own pairs, then how the picture was painted
    region: str | None = None  # the part of the image that is the picture (`iiif_image.parse_region`'s form), None: all of it


@dataclass(frozen=True)
class _Found:
    node: dict[str, Any]  # the image resource
    region: str | None
    meta: dict[str, str]


@dataclass(frozen=True)
class _Other:
    kind: str  # what is painted instead of an image: Video, Sound, TextualBody, …


_Read = Union[_Found, _Other, str, None]  # str: why the painting cannot be read; None: nothing there


def _bad_manifest(message: str) -> InvalidInput:
    return InvalidInput(message, code="invalid_manifest")


def is_manifest(doc: Any) -> bool:
    """A IIIF Presentation manifest: v3 `"type": "Manifest"`, v2 `"@type": "sc:Manifest"`, or a
    presentation context with `items` or `sequences`."""
    if not isinstance(doc, dict):
        return False
    if any(t in ("Manifest", "sc:Manifest", "http://iiif.io/api/presentation/2#Manifest") for t in _types(doc)):
        return True
    presentation = any("iiif.io/api/presentation/" in c for c in _contexts(doc))
    return presentation and not _types(doc) and ("items" in doc or "sequences" in doc)


# ------------------------------------------------------------------------------------------- manifest


def manifest_items(doc: Any) -> list[IIIFItem]:
    """The manifest's pictures in order: each image each canvas paints (see the module's docstring);
    canvases without one are skipped (`manifest_problems` says which and why).

    Raises InvalidInput `invalid_manifest` when `doc` is not a manifest (not a dict, a Collection,
    neither `items` nor `sequences`), has no canvases, or no canvas has an image. v2: the first
    sequence's canvases → `images[]` → `resource` → `service`; v3: `items[]` Canvas → AnnotationPage
    → painting Annotation → `body` → `service` (list or object, `id` or `@id`)."""
    items, _ = _scan(doc)
    return items


def manifest_problems(doc: Any) -> list[str]:
    """One readable line for each canvas, or painting of a canvas, `manifest_items` skipped (empty when
    none was); raises like `manifest_items` when the document itself is not a usable manifest, except
    that a manifest whose every canvas is bad gives the list instead of raising."""
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
        metadata: dict[str, str] = {}
        if manifest_label:
            metadata["manifest"] = manifest_label
        for key, value in _pairs(canvas.get("metadata")):
            metadata[key] = f"{metadata[key]}; {value}" if key in metadata else value
        found, canvas_problems = _canvas(canvas, v2, cid, label, metadata)
        items += found
        problems += [f"{where}{problem}" for problem in canvas_problems]
    if strict and not items:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise _bad_manifest(f"no canvas of this manifest has an image ({shown})")
    return items, problems


def _canvas(canvas: dict[str, Any], v2: bool, cid: str | None, label: str | None,
            metadata: dict[str, str]) -> tuple[list[IIIFItem], list[str]]:
    """A canvas's pictures, and its problems (each line starting ": " or ", painting …: ")."""
    paintings = _v2_paintings(canvas) if v2 else _v3_paintings(canvas)
    if isinstance(paintings, str):
        return [], [f": {paintings}"]
    problems: list[str] = []
    others: Counter[str] = Counter()
    found: list[tuple[dict[str, Any], Any, _Found]] = []
    for i, (annotation, body, target) in enumerate(paintings, 1):
        which = f", painting {i} of {len(paintings)}" if len(paintings) > 1 else ""
        got = _picture(body)
        if isinstance(got, _Other):
            others[got.kind] += 1
        elif isinstance(got, str):
            problems.append(f"{which}: {got}")
        elif got is not None and service_base(got.node) is None and _id(got.node) is None:
            problems.append(f"{which}: its image has neither an id nor an Image API service")
        elif got is not None:
            found.append((annotation, target, got))
    if not found and not problems:
        if others:
            return [], [f": not a picture: it paints {_counted(others)}"]
        return [], [": no image (no painting annotation with a resource)" if v2 else ": no image (no painting annotation)"]
    items: list[IIIFItem] = []
    taken: set[str] = set()
    for k, (annotation, target, got) in enumerate(found, 1):
        meta = {**metadata, **got.meta}
        fragment = _fragment(target)
        if fragment:
            meta.update(_placed(fragment, canvas))
        if len(found) > 1:
            meta["canvas picture"] = f"{k} of {len(found)}"
        if others:
            meta["canvas also paints"] = _counted(others)
        image_label = _text(got.node.get("label"))
        if image_label and "choice" not in got.meta:
            meta["image label"] = image_label
        eid = f"{cid}#{fragment}" if cid and fragment else cid
        if eid is not None and eid in taken:
            aid = _id(annotation)
            eid = aid if aid and aid not in taken else f"{eid}#{k}"
        if eid is not None:
            taken.add(eid)
        items.append(IIIFItem(service=service_base(got.node), url=_id(got.node), label=label, external_id=eid,
                              metadata=meta, region=got.region))
    return items, problems


def _v2_canvases(doc: dict[str, Any]) -> list[Any]:
    sequences = _list(doc.get("sequences"))
    first = sequences[0] if sequences else None
    return _list(first.get("canvases")) if isinstance(first, dict) else []


def _v2_paintings(canvas: dict[str, Any]) -> list[tuple[dict[str, Any], Any, Any]] | str:
    """(annotation, resource, `on`) for each painting annotation of a v2 canvas, or why there is none."""
    annotations = [a for a in _list(canvas.get("images")) if isinstance(a, dict)]
    if not annotations:
        return "no image (its `images` list is empty or missing)"
    out = [(a, a.get("resource"), a.get("on")) for a in annotations
           if a.get("motivation") in (None, *PAINTING) and isinstance(a.get("resource"), (dict, str)) and a.get("resource")]
    return out or "no image (no painting annotation with a resource)"


def _v3_paintings(canvas: dict[str, Any]) -> list[tuple[dict[str, Any], Any, Any]] | str:
    """(annotation, body, target) for each body of each painting annotation of a v3 canvas."""
    out = []
    for page in _list(canvas.get("items")):
        if not isinstance(page, dict):
            continue
        for annotation in _list(page.get("items")):
            if isinstance(annotation, dict) and annotation.get("motivation") in (None, *PAINTING):
                out += [(annotation, body, annotation.get("target")) for body in _list(annotation.get("body"))]
    return out or "no image (no painting annotation)"


# ---------------------------------------------------------------------------------------------- bodies


def _picture(body: Any, depth: int = 0) -> _Read:
    """What a painting annotation's body (or a Choice's item, a SpecificResource's source) gives."""
    if isinstance(body, str) and body.strip():
        body = {"id": body.strip()}
    if not isinstance(body, dict):
        return None
    if depth > _DEPTH:
        return "its body nests Choices and SpecificResources too deeply to be read"
    types = _types(body)
    if any(t in ("Choice", "oa:Choice") for t in types):
        return _choice(body, depth)
    if any(t in ("SpecificResource", "oa:SpecificResource") for t in types):
        return _specific(body, depth)
    if types and not any(t.rsplit(":", 1)[-1].lower() == "image" for t in types):
        return _Other(types[0].rsplit(":", 1)[-1])
    media = str(body.get("format") or "").split("/")[0]
    if not types and media in ("audio", "video"):
        return _Other("Sound" if media == "audio" else "Video")
    return _Found(body, None, {})


def _choice(body: dict[str, Any], depth: int) -> _Read:
    """The item a viewer shows first: v2 its `default`, else the first (v3 `items`, v2 `item`) that is
    an image; the metadata says which, of how many, and names the others."""
    default = body.get("default") if isinstance(body.get("default"), dict) else None  # v2: may be "rdf:nil"
    options = ([default] if default else []) + [
        i for i in _list(body.get("items")) + _list(body.get("item")) if isinstance(i, (dict, str)) and i and i is not default]
    if not options:
        return "its Choice lists no items"
    others: Counter[str] = Counter()
    for n, option in enumerate(options):
        got = _picture(option, depth + 1)
        if isinstance(got, str):
            return f"item {n + 1} of its Choice: {got}"
        if isinstance(got, _Other):
            others[got.kind] += 1
        if not isinstance(got, _Found):
            continue
        how = (f"default of {len(options)}" if default and n == 0 else f"first of {len(options)}" if n == 0
               else f"item {n + 1} of {len(options)}, the first image")
        name = _name(option)
        meta = {"choice": how + (f": {name}" if name else "")}
        rest = [_alternative(o, k) for k, o in enumerate(options, 1) if k != n + 1]
        meta["choice alternatives"] = "; ".join(rest)
        return _Found(got.node, got.region, {**meta, **got.meta})
    if others:
        return _Other(f"a Choice of {_counted(others)}")
    return f"its Choice has no image among its {len(options)} items"


def _specific(body: dict[str, Any], depth: int) -> _Read:
    """A SpecificResource's `source` (v2 `full`) with the region its selector names."""
    source = body.get("source") if body.get("source") is not None else body.get("full")
    got = _picture(source, depth + 1)
    if got is None:
        return "its SpecificResource has no `source` image"
    if not isinstance(got, _Found):
        return got
    selection = selector_region(body.get("selector"))
    if isinstance(selection, str):
        return f"its SpecificResource's {selection}"
    region, note = selection
    meta = dict(got.meta)
    if got.region is not None and region is not None:
        return "its SpecificResource selects a region of a region, which is not read"
    region = region if region is not None else got.region
    width, height = got.node.get("width"), got.node.get("height")
    size = f" ({width}×{height})" if isinstance(width, int) and isinstance(height, int) else ""
    if note:
        meta["image region"] = note
    elif region == "square":
        meta["image region"] = f"square: the centred square of the source image{size}"
    elif region is not None and region.startswith("pct:"):
        meta["image region"] = f"{region}, in percent of the source image{size}"
    elif region is not None:
        meta["image region"] = f"{region}, in pixels of the source image{size}"
    return _Found(got.node, region, meta)


def _fragment(target: Any) -> str | None:
    """The fragment an annotation's target names on its canvas (`xywh=…`, `t=…`, both joined by &)."""
    if isinstance(target, list):
        target = target[0] if target else None
    if isinstance(target, dict):
        for selector in _list(target.get("selector")):
            if isinstance(selector, dict) and isinstance(selector.get("value"), str) and any(
                    t.endswith("FragmentSelector") for t in _types(selector)):
                return selector["value"].strip() or None
        target = _id(target) or (target.get("source") if isinstance(target.get("source"), str) else None)
    if isinstance(target, str):
        return target.partition("#")[2].strip() or None
    return None


def _placed(fragment: str, canvas: dict[str, Any]) -> dict[str, str]:
    """Where on its canvas, and when on its timeline, a picture is painted (from the target's fragment)."""
    out: dict[str, str] = {}
    width, height, duration = canvas.get("width"), canvas.get("height"), canvas.get("duration")
    for part in fragment.split("&"):
        if part.startswith("xywh="):
            size = f" (the canvas is {width}×{height})" if isinstance(width, int) and isinstance(height, int) else ""
            out["on canvas"] = f"{part}, in canvas coordinates{size}"
        elif part.startswith("t="):
            lasts = (f" (the canvas lasts {duration:g} s)"
                     if isinstance(duration, (int, float)) and not isinstance(duration, bool) else "")
            out["on timeline"] = f"{part}, in seconds{lasts}"
    return out


def _name(node: Any) -> str | None:
    """A Choice item's label: its own, else (a SpecificResource) its source's."""
    if not isinstance(node, dict):
        return None
    source = node.get("source", node.get("full"))
    return _text(node.get("label")) or (_text(source.get("label")) if isinstance(source, dict) else None)


def _alternative(node: Any, n: int) -> str:
    """A Choice's item not read: its label and where it is (its service, else its id)."""
    if isinstance(node, str):
        return f"<{node.strip()}>"
    where = (service_base(node) or _id(node) or _id(node.get("source"))) if isinstance(node, dict) else None
    name = _name(node)
    return " ".join(x for x in (name, f"<{where}>" if where else None) if x) or f"item {n}"


def _counted(kinds: Counter[str]) -> str:
    return ", ".join(kind if count == 1 else f"{kind} ×{count}" for kind, count in kinds.items())


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



__all__ = ["IIIFItem", "image_url", "info_url", "is_image_service", "is_manifest", "manifest_items", "manifest_problems"]
