"""What a SOURCE of `clip-gaze collection add` holds: the pictures it names (each read by `reader`).

A source is a folder (searched recursively for pictures), a CSV/TSV or JSON Lines file with an
`image` column (a path, relative to the file or absolute, or an http(s) URL; an optional
`external_id`; every other column kept as metadata), a IIIF Presentation manifest (v2 or v3; a URL or
a .json file) or a IIIF Image API service (its URL, with or without /info.json). Problems with a
source or a row are returned as failures, to be recorded: they never stop a run.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Union

from ..errors import ClipGazeError, InvalidInput
from .fetch import FetchPolicy, fetch_json
from .iiif import is_image_service, is_manifest, manifest_items, manifest_problems

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".tif", ".tiff", ".bmp"}
TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t"}
LINES_SUFFIXES = {".jsonl", ".ndjson"}


@dataclass(frozen=True)
class PictureRef:
    """One picture to add: `source` identifies it within a collection (a path or URL)."""

    source: str
    kind: str  # "file", "url" (a picture) or "iiif" (an Image API service base URL)
    external_id: str | None = None
    metadata: dict[str, Any] | None = None

    @classmethod
    def of_url(cls, url: str, external_id: str | None = None, metadata: dict[str, Any] | None = None) -> "PictureRef":
        """A picture's URL, or a IIIF Image API service's (a URL ending in /info.json, which goes)."""
        if url.rstrip("/").endswith("/info.json"):
            return cls(url.rstrip("/").removesuffix("/info.json"), "iiif", external_id, metadata)
        return cls(url, "url", external_id, metadata)


@dataclass(frozen=True)
class SourceFailure:
    source: str
    code: str
    error: str
    external_id: str | None = None
    metadata: dict[str, Any] | None = field(default=None)


Item = Union[PictureRef, SourceFailure]


def _is_url(text: str) -> bool:
    return text.lower().startswith(("http://", "https://"))


def expand(source: str, policy: FetchPolicy) -> Iterator[Item]:
    """The pictures a source names, or failures saying why a source or a row gives none."""
    try:
        if _is_url(source):
            yield from _iiif_document(source, fetch_json(source, policy), base=source)
            return
        path = Path(source).expanduser()
        if path.is_dir():
            yield from _folder(path)
        elif not path.is_file():
            yield SourceFailure(source, "source_not_found", f"no such file or folder: {source}")
        elif path.suffix.lower() in TABLE_SUFFIXES or path.suffix.lower() in LINES_SUFFIXES:
            yield from _table(path)
        elif path.suffix.lower() == ".json":
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as exc:
                yield SourceFailure(source, "invalid_manifest", f"{source} is not a JSON document ({exc})")
                return
            yield from _iiif_document(source, doc, base=None)
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            yield PictureRef(str(path.resolve()), "file", external_id=path.name)
        else:
            yield SourceFailure(source, "invalid_source", f"{source}: not a folder, .csv, .tsv, .jsonl, IIIF .json or picture")
    except ClipGazeError as exc:
        yield SourceFailure(source, exc.code, exc.message)


def _folder(root: Path) -> Iterator[Item]:
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
        yield PictureRef(str(path.resolve()), "file", external_id=path.relative_to(root).as_posix())


def _rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() in LINES_SUFFIXES:
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise InvalidInput(f"{path}, line {n}: not JSON ({exc})", code="invalid_source") from None
            if not isinstance(row, dict):
                raise InvalidInput(f"{path}, line {n}: not a JSON object", code="invalid_source")
            yield n, row
        return
    reader = csv.DictReader(io.StringIO(text), delimiter=TABLE_SUFFIXES[path.suffix.lower()])
    if "image" not in (reader.fieldnames or []):
        raise InvalidInput(f"{path} has no `image` column (columns: {', '.join(reader.fieldnames or []) or 'none'})",
                           code="invalid_source")
    for n, row in enumerate(reader, 2):
        yield n, dict(row)


def _table(path: Path) -> Iterator[Item]:
    try:
        rows = list(_rows(path))
    except UnicodeDecodeError:
        yield SourceFailure(str(path), "invalid_source", f"{path} is not UTF-8 text")
        return
    except InvalidInput as exc:
        yield SourceFailure(str(path), exc.code, exc.message)
        return
    if rows and all("image" not in row for _, row in rows):
        yield SourceFailure(str(path), "invalid_source", f"{path} has no `image` field")
        return
    for n, row in rows:
        image = str(row.pop("image", "") or "").strip()
        ext = row.pop("external_id", None)
        ext = str(ext).strip() if ext not in (None, "") else None
        meta = {k: v for k, v in row.items() if k and v not in (None, "")} or None
        if not image:
            yield SourceFailure(f"{path}:{n}", "invalid_source", f"{path}, row {n}: empty `image`", ext, meta)
        elif _is_url(image):
            yield PictureRef.of_url(image, ext, meta)
        else:
            file = Path(image).expanduser()
            file = file if file.is_absolute() else path.parent / file
            yield PictureRef(str(file.resolve()), "file", ext, meta)


def _iiif_document(source: str, doc: Any, base: str | None) -> Iterator[Item]:
    if is_image_service(doc):
        service = base or str(doc.get("id") or doc.get("@id") or "")
        yield PictureRef(service.rstrip("/").removesuffix("/info.json"), "iiif", external_id=source)
        return
    if not is_manifest(doc):
        yield SourceFailure(source, "invalid_manifest", f"{source} is neither a IIIF Presentation manifest nor an Image API service")
        return
    for item in manifest_items(doc):
        meta = {**(item.metadata or {}), **({"label": item.label} if item.label else {})} or None
        if item.service:
            yield PictureRef(item.service, "iiif", item.external_id, meta)
        elif item.url:
            yield PictureRef(item.url, "url", item.external_id, meta)
    for problem in manifest_problems(doc):  # canvases without a picture: recorded, the rest are added
        yield SourceFailure(f"{source}#{problem[:80]}", "invalid_manifest", problem)
