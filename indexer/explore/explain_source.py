"""A collection picture's explanation map, from its source where it can still be read (a local file
still there and unchanged, a URL, the IIIF Image service at the model's size: read as `collection add`
read it), else from its stored 256-px thumbnail; `explained_from` says which, `explained_note` why a
source was not used."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ..errors import ClipGazeError, NotFound
from ..explain.maps import ExplainedImage, explain_image
from ..pictures.sources import PictureRef

if TYPE_CHECKING:  # pragma: no cover
    from ..pictures.decode import DecodedImage
    from .explorer import Explorer


@dataclass
class SourcedExplanation:
    explained: ExplainedImage
    explained_from: str  # "source" or "thumbnail"
    note: str | None  # why not the source, when the thumbnail was used

    def json_dict(self) -> dict[str, Any]:
        return {**self.explained.answer.json_dict(), "explained_from": self.explained_from, "explained_note": self.note}


def source_ref(row: dict[str, Any]) -> PictureRef | None:
    """The stored picture's source as `collection add` read it (None: a kind of source not read again)."""
    source, service = str(row["source"]), row.get("image_service")
    location, _, fragment = source.partition("#")
    region = fragment.removeprefix("xywh=") if fragment.startswith("xywh=") else None
    if service:
        return PictureRef(source, "iiif", row.get("external_id"), image_service=service, region=region)
    if location.startswith(("http://", "https://")):
        return PictureRef(source, "url", row.get("external_id"), region=region)
    if location.startswith("/"):
        return PictureRef(source, "file", row.get("external_id"), region=region)
    return None


def read_source(explorer: "Explorer", name: str, sha256: str) -> tuple["DecodedImage | None", str | None]:
    """The picture read again from its source, or None and why not."""
    row = explorer.images.get(name)
    rows = list(explorer.images.db.query(
        "SELECT * FROM collection_images WHERE collection_id = ? AND sha256 = ? ORDER BY id", [row.id, sha256]))
    if not rows:
        raise NotFound(f"collection {name!r} has no picture {sha256!r}", code="unknown_picture")
    why = "its source is not one clip-gaze reads again"
    for r in rows:  # any source with this content will do
        ref = source_ref(r)
        if ref is None:
            continue
        if ref.kind == "file" and not Path(ref.location).is_file():
            why = "its file is no longer there"
            continue
        try:
            decoded = explorer.engine.reader.read_ref(ref)
        except ClipGazeError as exc:
            why = f"its source could not be read ({exc.code}: {exc.message})"
            continue
        except OSError as exc:
            why = f"its source could not be read ({exc.strerror or exc})"
            continue
        if ref.kind != "iiif" and ref.region is None and decoded.sha256 != sha256:
            why = "its source has changed since it was added"
            continue
        return decoded, None
    return None, why


def explain_picture(explorer: "Explorer", name: str, sha256: str, vocabularies: Sequence[str] | None,
                    phrases: Sequence[str] | None = None, top_k: int = 1, versus: str | None = None) -> SourcedExplanation:
    """The explanation of a collection's picture: from its source, else its thumbnail."""
    decoded, why = read_source(explorer, name, sha256)
    if decoded is not None:
        return SourcedExplanation(explain_image(explorer.engine, decoded, vocabularies, phrases, top_k, versus), "source", None)
    thumb = explorer.thumbnail(name, sha256)  # no_thumbnail: 404
    found = explain_image(explorer.engine, thumb.data, vocabularies, phrases, top_k, versus, name="thumbnail")
    return SourcedExplanation(found, "thumbnail", f"the {max(thumb.width, thumb.height)}-px thumbnail: {why}")


__all__ = ["SourcedExplanation", "explain_picture", "read_source", "source_ref"]
