"""IIIF Presentation 3 AnnotationPages of W3C Web Annotations: a collection's matches, handed back to
the viewers and systems that read IIIF (Mirador, Universal Viewer, a collection-management system).

Scores are those of `collection analyze` (the same rows: the stored embeddings against each
vocabulary's whole list). Each match of a picture, at least `min_probability`, is one annotation:

- `id`: stable under the service (`…/v1/collections/<name>/annotations/<key>`, the key a hash of the
  model, the picture's source, the vocabulary and the phrase), so a system that stores it can update it;
- `motivation` `tagging`, or `classifying` where the phrase's external id is a URI (a second body
  names it as `source`) or a person accepted the term (`review`); a rejected term is left out;
- `body`: a `TextualBody` whose `value` is the term (`language` where the phrase has one);
- `target`: a `SpecificResource` whose `source` is the canvas (with the manifest as `partOf`), for
  pictures read from a IIIF manifest; else the picture's URL, or (files) its `external_id` if that is
  a URI, else the picture's record under the service; a server path is never shown. With `regions`,
  a `FragmentSelector` `xywh=` of the explanation's peak (`regions`), in canvas coordinates;
- `creator`: a `Software` (clip-gaze, its version, the model and its fingerprint), `created`;
- `score`: in clip-gaze's own context (`context`): probability, softmax_over, vocabulary, rank, cosine,
  logit and the statement that it is a relative likelihood within the list, not a confidence.

Pages are one per manifest for pictures read from IIIF manifests (the `manifest` column), one for the
others (`pages`); `page_text` gives one, of a manifest or of the others, as a stream of JSON text.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterator
from urllib.parse import quote, urlencode

from .. import __version__
from ..errors import ClipGazeError, InvalidInput, NotFound
from ..schema.interop import MAX_REGION_PICTURES
from ..store.reviews import Review, Reviews
from .context import IIIF_CONTEXT, contexts, statement
from .regions import Wanted, on_target, peak_boxes, picture_ref, placed

if TYPE_CHECKING:  # pragma: no cover
    from ..collections.local import Collections

_URI = re.compile(r"^(?:https?://\S+|urn:[a-z0-9][a-z0-9-]{0,31}:\S+)$", re.IGNORECASE)
PAGE_TYPE = 'application/ld+json;profile="http://iiif.io/api/presentation/3/context.json"'


@dataclass(frozen=True)
class Request:
    vocabularies: tuple[str, ...] | None = None
    top_k: int = 10
    min_probability: float = 0.0
    manifest: str | None = None
    regions: bool = False
    canvas: str | None = None  # only the pictures of this canvas (for a canvas's `annotations`)


@dataclass(frozen=True)
class StoredPicture:
    source: str
    external_id: str | None
    sha256: str
    width: int | None
    height: int | None
    manifest: str | None
    image_service: str | None


def is_uri(text: str | None) -> bool:
    return bool(text) and bool(_URI.match(text or ""))


def stored_pictures(collections: "Collections", collection_id: int) -> dict[str, StoredPicture]:
    """The collection's stored pictures by source, with what annotating needs."""
    db = collections.images.db
    columns = {r[1] for r in db.execute("PRAGMA table_info(collection_images)")}
    extra = [c if c in columns else f"NULL AS {c}" for c in ("manifest", "image_service")]
    rows = db.execute(f"SELECT source, external_id, sha256, width, height, {', '.join(extra)} FROM collection_images "
                      "WHERE collection_id = ? AND sha256 IS NOT NULL ORDER BY id", [collection_id])
    return {r[0]: StoredPicture(*r) for r in rows}


def canvas_of(picture: StoredPicture) -> str:
    """The canvas a IIIF picture is painted on: its external id, less a placement's fragment."""
    return (picture.external_id or picture.source).split("#", 1)[0]


def page_url(base_url: str, name: str, request: Request) -> str:
    """The URL the service answers this page at: the page's `id` (arguments in a fixed order)."""
    args: list[tuple[str, str]] = []
    if request.vocabularies:
        args.append(("vocabularies", ",".join(request.vocabularies)))
    args.append(("top_k", str(request.top_k)))
    if request.min_probability:
        args.append(("min_probability", repr(request.min_probability)))
    if request.manifest is not None:
        args.append(("manifest", request.manifest))
    if request.canvas is not None:
        args.append(("canvas", request.canvas))
    if request.regions:
        args.append(("regions", "true"))
    return f"{base_url.rstrip('/')}/v1/collections/{quote(name)}/annotations?{urlencode(args)}"


class Annotator:
    """Annotations of one collection's matches, for one request, as dicts (JSON-LD nodes)."""

    def __init__(self, collections: "Collections", name: str, request: Request, base_url: str, every: bool = False,
                 limit_regions: bool = False):
        """`every`: every picture (for `pages`); else those of the request's manifest, or of none (a page)."""
        self.collections, self.name, self.request = collections, name, request
        self.base = base_url.rstrip("/")
        self.row = collections.images.get(name)
        engine = collections.engine
        self.names = engine.resolve(list(request.vocabularies) if request.vocabularies else None)
        stored = stored_pictures(collections, self.row.id)
        self.manifests = sorted({p.manifest for p in stored.values() if p.manifest})
        self.pictures = stored if every else {s: p for s, p in stored.items() if p.manifest == request.manifest}
        if request.manifest is not None and not self.pictures:
            raise NotFound(f"no picture of {name!r} was read from the manifest {request.manifest}", code="unknown_manifest")
        if request.canvas is not None:
            self.pictures = {s: p for s, p in self.pictures.items() if p.manifest and canvas_of(p) == request.canvas}
            if not self.pictures:
                raise NotFound(f"no picture of {name!r} is painted on the canvas {request.canvas}"
                               + (f" of {request.manifest}" if request.manifest else " (give its manifest too)"),
                               code="unknown_canvas")
        if request.regions and limit_regions and len(self.pictures) > MAX_REGION_PICTURES:
            raise ClipGazeError(
                f"regions=true reads and explains every picture again: at most {MAX_REGION_PICTURES} a request, and "
                f"this page has {len(self.pictures)}; ask for one manifest, or use `clip-gaze collection annotations "
                "--regions`", code="too_many_pictures", status=413)
        self.reviews = {(r.sha256, r.vocabulary, r.term): r for r in Reviews(engine.store).of_collection(self.row.id)}
        info = engine.model_info()
        model = {k: v for k, v in (("preset", info.preset), ("arch", info.arch), ("pretrained", info.pretrained),
                                   ("fingerprint", info.fingerprint or engine.model_key)) if v is not None}
        self.creator = {"id": f"{self.base}/v1/models", "type": "Software", "name": "clip-gaze", "version": __version__,
                        "model": model}
        self.created = datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
        self._phrases: dict[str, dict[str, tuple[int, str | None]]] = {}
        self._blocks = collections.analyze_blocks(name, self.names, request.top_k)  # refusals here, before any answer

    def _phrase_info(self, vocabulary: str) -> dict[str, tuple[int, str | None]]:
        """phrase → (its position in the vocabulary's index, its language or None), read once."""
        if vocabulary not in self._phrases:
            engine = self.collections.engine
            ids = engine.indexes.get(vocabulary, engine.store.versions()).ids
            found: dict[int, dict[str, Any]] = {}
            for start in range(0, len(ids), 10_000):
                found.update(engine.store.phrase_rows(ids[start : start + 10_000]))
            info = {}
            for position, i in enumerate(ids):
                r = found[int(i)]
                language = r.get("language") or (r.get("metadata") or {}).get("language")
                info[r["phrase"]] = (position, language if isinstance(language, str) and language else None)
            self._phrases[vocabulary] = info
        return self._phrases[vocabulary]

    def by_picture(self) -> Iterator[tuple[StoredPicture, list[dict[str, Any]]]]:
        """Each picture with annotations and its annotations, in the collection's order (every
        vocabulary's of a picture together); once."""
        blocks = self._blocks
        pending: dict[str, list[dict[str, Any]]] = {}
        order: list[str] = []
        count = 0
        for block in blocks:
            for row in block.to_pylist():
                picture = self.pictures.get(row["source"])
                if picture is None or row["probability"] < self.request.min_probability:
                    continue
                review = self.reviews.get((row["sha256"], row["vocabulary"], row["term"]))
                if review is not None and review.verdict == "rejected":
                    continue
                if row["source"] not in pending:
                    pending[row["source"]] = []
                    order.append(row["source"])
                pending[row["source"]].append({**row, "review": review})
            count += 1
            if count % len(self.names) == 0:  # a chunk's every vocabulary is done: its pictures are whole
                for source in order:
                    yield self._annotated(self.pictures[source], pending.pop(source))
                order = []
        for source in order:
            yield self._annotated(self.pictures[source], pending.pop(source))

    def _annotated(self, picture: StoredPicture, rows: list[dict[str, Any]]) -> tuple[StoredPicture, list[dict[str, Any]]]:
        boxes = self._regions(picture, rows) if self.request.regions else {}
        return picture, [self.annotation(picture, row, boxes.get((row["vocabulary"], row["phrase"]))) for row in rows]

    def _regions(self, picture: StoredPicture, rows: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
        """(vocabulary, phrase) → the fragment `xywh=` of its explanation's peak on the target; empty
        when the picture cannot be read again now (its annotations then target the whole canvas)."""
        engine = self.collections.engine
        wanted: dict[str, list[int]] = {}
        for row in rows:
            wanted.setdefault(row["vocabulary"], []).append(self._phrase_info(row["vocabulary"])[row["phrase"]][0])
        try:
            decoded = engine.reader.read_ref(picture_ref(picture.source, picture.image_service))
        except ClipGazeError:
            return {}
        boxes = peak_boxes(engine, decoded, [Wanted(v, p) for v, p in wanted.items()])
        placement = placed(picture.external_id) if picture.manifest else None
        width, height = decoded.width, decoded.height
        return {(row["vocabulary"], row["phrase"]): on_target(
            boxes[(row["vocabulary"], self._phrase_info(row["vocabulary"])[row["phrase"]][0])], width, height, placement)
            for row in rows}

    def target(self, picture: StoredPicture, fragment: str | None) -> dict[str, Any]:
        if picture.manifest:
            source: dict[str, Any] = {"id": canvas_of(picture), "type": "Canvas", "partOf": [{"id": picture.manifest, "type": "Manifest"}]}
            where = placed(picture.external_id)
            if fragment is None and where is not None:  # painted on part of its canvas: that part
                fragment = on_target((0.0, 0.0, where[2], where[3]), int(where[2]), int(where[3]), where)
        elif "://" in picture.source:
            source = {"id": picture.source, "type": "Image"}
        elif is_uri(picture.external_id):
            source = {"id": picture.external_id, "type": "Image"}
        else:
            source = {"id": f"{self.base}/v1/collections/{quote(self.name)}/pictures/{picture.sha256}", "type": "Image"}
        if picture.external_id and not picture.manifest:
            source["identifier"] = picture.external_id
        target: dict[str, Any] = {"type": "SpecificResource", "source": source}
        if fragment is not None:
            target["selector"] = {"type": "FragmentSelector", "conformsTo": "http://www.w3.org/TR/media-frags/",
                                  "value": fragment}
        return target

    def annotation(self, picture: StoredPicture, row: dict[str, Any], fragment: str | None = None) -> dict[str, Any]:
        review: Review | None = row["review"]
        uri = row["phrase_external_id"] if is_uri(row["phrase_external_id"]) else None
        motivation = "classifying" if uri or (review is not None and review.verdict == "accepted") else "tagging"
        key = hashlib.sha256("\n".join((self.collections.engine.model_key, picture.source, row["vocabulary"],
                                        row["phrase"])).encode()).hexdigest()[:32]
        body: dict[str, Any] = {"type": "TextualBody", "value": row["term"], "format": "text/plain", "purpose": motivation}
        language = self._phrase_info(row["vocabulary"]).get(row["phrase"], (0, None))[1]
        if language:
            body["language"] = language
        bodies: list[dict[str, Any]] = [body]
        if uri:
            bodies.append({"type": "SpecificResource", "source": uri, "purpose": "classifying"})
        out: dict[str, Any] = {
            "id": f"{self.base}/v1/collections/{quote(self.name)}/annotations/{key}",
            "type": "Annotation", "motivation": motivation, "body": bodies, "target": self.target(picture, fragment),
            "creator": self.creator, "created": self.created,
            "score": {"type": "RelativeLikelihood", "probability": row["probability"], "softmax_over": row["softmax_over"],
                      "vocabulary": row["vocabulary"], "rank": row["rank"], "phrase": row["phrase"], "cosine": row["cosine"],
                      "logit": row["logit"],
                      "statement": statement(row["softmax_over"], row["vocabulary"])},
        }
        if review is not None:
            out["review"] = {"verdict": review.verdict, "reviewed": review.reviewed_at,
                             **({"note": review.note} if review.note else {})}
        return out

    def header(self, manifest: str | None) -> dict[str, Any]:
        request = Request(**{**self.request.__dict__, "manifest": manifest,
                             "canvas": self.request.canvas if manifest == self.request.manifest else None})
        what = ", ".join(self.names)
        head: dict[str, Any] = {
            "@context": contexts(self.base), "id": page_url(self.base, self.name, request), "type": "AnnotationPage",
            "label": {"none": [f"clip-gaze: {what} on {self.name}" + (f", {manifest}" if manifest else "")]}}
        if manifest is None and self.manifests:  # the pages of the pictures read from manifests
            head["seeAlso"] = [{"id": page_url(self.base, self.name, Request(**{**self.request.__dict__, "manifest": m,
                                                                                 "canvas": None})),
                                "type": "AnnotationPage", "label": {"none": [m]}} for m in self.manifests]
        return head


def page_text(annotator: Annotator) -> Iterator[str]:
    """One AnnotationPage (the request's manifest's, else that of the pictures read from no manifest,
    naming the manifests' pages in `seeAlso`) as JSON text, in pieces, as the pictures are scored."""
    head = json.dumps(annotator.header(annotator.request.manifest), ensure_ascii=False)
    yield head[:-1] + ', "items": ['
    first = True
    for _, found in annotator.by_picture():
        for a in found:
            yield ("" if first else ", ") + json.dumps(a, ensure_ascii=False)
            first = False
    yield "]}"


def pages(annotator: Annotator) -> dict[str | None, dict[str, Any]]:
    """Every page (of an `every` annotator): one per manifest (by its URL), and one (key None) for the
    pictures read from none."""
    out: dict[str | None, dict[str, Any]] = {}
    for picture, found in annotator.by_picture():
        if picture.manifest not in out:
            out[picture.manifest] = {**annotator.header(picture.manifest), "items": []}
        out[picture.manifest]["items"].extend(found)
    return out


def check(request: Request) -> Request:
    if not 0.0 <= request.min_probability <= 1.0:
        raise InvalidInput("min_probability runs from 0 to 1", code="invalid_input")
    return request


__all__ = ["IIIF_CONTEXT", "PAGE_TYPE", "Annotator", "Request", "StoredPicture", "check", "is_uri", "page_text",
           "page_url", "pages", "stored_pictures"]
