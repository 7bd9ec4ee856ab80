"""Labels files: the pictures people labelled or rated, read like a collection source (`sources.expand`).

A labels file is a CSV/TSV or JSON Lines file with an `image` column (a path relative to the file,
an absolute path, or a URL), an optional `external_id`, and either `label` (a term of the vocabulary;
`|` separates several, or a JSON list) or `term` and `rating` (graded judgements; one row per picture
and term). A picture named on several rows gathers them; rows without a picture are failures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidInput
from ..pictures.fetch import FetchPolicy
from ..pictures.sources import Ignored, PictureRef, SourceFailure, expand
from ..schema.collections import PictureInfo
from ..store.image_store import ImageStore
from ..store.reviews import Reviews

LABEL_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson")


@dataclass
class LabelledPicture:
    ref: PictureRef
    row: int
    external_id: str | None = None
    labels: list[str] = field(default_factory=list)
    ratings: dict[str, list[float]] = field(default_factory=dict)
    sha256: str | None = None  # a collection's picture: its stored embedding is used, nothing read


@dataclass
class LabelsFile:
    path: Path
    pictures: list[LabelledPicture]
    failures: list[PictureInfo]
    has_labels: bool
    has_ratings: bool


def _split_labels(value: Any) -> list[str]:
    if isinstance(value, list):
        parts = [str(v) for v in value if v is not None]
    else:
        parts = str(value).split("|")
    return [p.strip() for p in parts if p.strip()]


def _rating(value: Any, where: str) -> float:
    if isinstance(value, bool):
        raise InvalidInput(f"{where}: rating {value!r} is not a number", code="invalid_labels")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{where}: rating {value!r} is not a number", code="invalid_labels") from None
    if not math.isfinite(number):
        raise InvalidInput(f"{where}: rating {value!r} is not a finite number", code="invalid_labels")
    return number


def read_labels(path: str | Path, policy: FetchPolicy | None = None) -> LabelsFile:
    """The pictures of a labels file with their labels and ratings (a picture named on several rows
    gathers them); rows without a picture are returned as failures."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InvalidInput(f"no such labels file: {path}", code="file_not_found")
    if not path.name.lower().endswith(LABEL_SUFFIXES):
        raise InvalidInput(f"{path}: a labels file is a .csv, .tsv or .jsonl file with an `image` column",
                           code="invalid_labels")
    pictures: dict[str, LabelledPicture] = {}
    failures: list[PictureInfo] = []
    has_labels = has_ratings = False
    for row, item in enumerate(expand(str(path), policy or FetchPolicy()), 1):
        if isinstance(item, SourceFailure):
            if item.source == str(path):  # the file itself: no `image` column, not UTF-8, not JSON
                raise InvalidInput(item.error, code="invalid_labels")
            failures.append(PictureInfo(source=item.source, external_id=item.external_id, error_code=item.code, error=item.error))
            continue
        if isinstance(item, Ignored):  # only a folder passes files over, and a labels file is not one
            continue
        meta = dict(item.metadata or {})
        where = f"{path}, row {row}"
        picture = pictures.setdefault(item.source, LabelledPicture(item, row))
        picture.external_id = picture.external_id or item.external_id
        if "label" in meta:
            has_labels = True
            picture.labels.extend(label for label in _split_labels(meta["label"]) if label not in picture.labels)
        if "term" in meta or "rating" in meta:
            if "term" not in meta or "rating" not in meta:
                raise InvalidInput(f"{where}: a rating needs both `term` and `rating`", code="invalid_labels")
            has_ratings = True
            term = str(meta["term"]).strip()
            if term:
                picture.ratings.setdefault(term, []).append(_rating(meta["rating"], where))
    if not has_labels and not has_ratings:
        raise InvalidInput(
            f"{path} has no `label` column (terms of the vocabulary, `|` between several) and no `term` and `rating` "
            "columns", code="invalid_labels")
    return LabelsFile(path, list(pictures.values()), failures, has_labels, has_ratings)


def from_reviews(images: ImageStore, collection: str, vocabulary: str) -> LabelsFile:
    """The labels people gave a collection's pictures by reviewing suggestions: each picture with a term
    of `vocabulary` accepted is labelled with its accepted terms (rejections label nothing)."""
    row = images.get(collection)
    accepted: dict[str, list[str]] = {}
    for review in Reviews(images.store).of_collection(row.id, vocabulary):
        if review.verdict == "accepted":
            accepted.setdefault(review.sha256, []).append(review.term)
    if not accepted:
        raise InvalidInput(f"no picture of {collection!r} has an accepted term of {vocabulary!r} to evaluate against "
                           f"(review suggestions with `clip-gaze collection review {collection} …`)", code="invalid_labels")
    pictures: list[LabelledPicture] = []
    seen: set[str] = set()
    for sha, source, external_id in images.db.execute(
            "SELECT sha256, source, external_id FROM collection_images WHERE collection_id = ? AND sha256 IS NOT NULL "
            "ORDER BY id", [row.id]):
        if sha in accepted and sha not in seen:  # the same picture at two sources is one labelled picture
            seen.add(sha)
            kind = "url" if "://" in source else "file"
            pictures.append(LabelledPicture(PictureRef(source, kind, external_id), len(pictures) + 1, external_id,
                                            labels=accepted[sha], sha256=sha))
    return LabelsFile(Path(f"reviews:{collection}"), pictures, [], True, False)


__all__ = ["LABEL_SUFFIXES", "LabelledPicture", "LabelsFile", "from_reviews", "read_labels"]
