"""What a SOURCE of `clip-gaze collection add` holds: the pictures it names (each read by `reader`).

A source is a folder (searched recursively), a CSV/TSV or JSON Lines file with an `image` column (a
path, relative to the file or absolute, or an http(s) URL; an optional `external_id`; every other column
kept as metadata) or such a table by http(s) URL (known by its content type, else by its path's suffix;
its rows name pictures by URL, a relative one resolved against the table's), a IIIF Presentation manifest (v2 or v3; a URL or a .json file),
a IIIF Collection (v2 or v3, its manifests read recursively: `iiif_collection`), a IIIF Image API
service (its URL, with or without /info.json), or one picture file. Problems with a source or a row are
returned as failures, to be recorded: they never stop a run.

Every file of a folder is a picture to read, whatever its name: its content decides (the reader records
a file that is not a picture it decodes as `unsupported_image`), except two kinds, which are `Ignored`
and counted: hidden files (a name, or a folder on the way, starting with ".") and the text and
metadata files that sit beside pictures (`NOT_PICTURES`: .txt, .csv, .json, .xml, .xmp, .py, …).

A caller who may not write sees no folder of the server: `shown_source` and `shown_text` give a
collection's local paths relative to its `local_root` (the folder all of them share).
"""

from __future__ import annotations

import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Union
from urllib.parse import urljoin, urlsplit

from ..errors import ClipGazeError, InvalidInput
from .fetch import JSON_IF_IT_PARSES, FetchPolicy, fetch_document, parse_json
from .iiif_collection import Found, is_collection, walk
from .iiif import is_image_service, is_manifest, manifest_items, manifest_problems
from .iiif_image import region_fragment
from .rows import LINES_SUFFIXES, TABLE_SUFFIXES, BadRow, Row, read_rows, read_text_rows, table_kind

NOT_PICTURES = frozenset({  # in a folder, passed over and counted: the text and metadata beside pictures
    ".txt", ".md", ".rst", ".csv", ".tsv", ".json", ".jsonl", ".ndjson", ".xml", ".xmp", ".yaml", ".yml",
    ".html", ".htm", ".log", ".py",
})
MAX_MANIFEST_BYTES = 32 * 1024 * 1024  # a IIIF manifest (or info.json) named as a source, file or URL; a table by URL
TABLE_TYPES = {  # a table fetched by URL, by its content type
    "text/csv": "csv", "text/tab-separated-values": "tsv", "application/x-ndjson": "lines", "application/ndjson": "lines",
    "application/jsonl": "lines", "application/json-lines": "lines", "application/x-jsonlines": "lines",
}
UNTYPED = JSON_IF_IT_PARSES  # a table by URL sent as these (as loosely as JSON is taken): the path's suffix says


@dataclass(frozen=True)
class PictureRef:
    """One picture to add: `source` identifies it within a collection (a path or URL).

    A region of a picture (a IIIF SpecificResource's selector) has `region` (`iiif_image.parse_region`'s
    form, in the picture's pixels) and a source of its own: the picture's path or URL with the region as
    its fragment (`…#xywh=1768,2423,1768,2080`), which `location` leaves off."""

    source: str
    kind: str  # "file", "url" (a picture) or "iiif" (an Image API service base URL)
    external_id: str | None = None
    metadata: dict[str, Any] | None = None
    region: str | None = None  # the part of the picture to read (x,y,w,h; pct:x,y,w,h; square); None: all of it
    manifest: str | None = None  # the IIIF manifest it was read from (its URL as named; a file's: its http(s) id, else its path)
    image_service: str | None = None  # its IIIF Image API service (no /info.json), when it has one

    @property
    def location(self) -> str:
        """Where the picture is read from: the source, less a region's fragment."""
        return self.source.rsplit("#", 1)[0] if self.region else self.source

    @classmethod
    def of_url(cls, url: str, external_id: str | None = None, metadata: dict[str, Any] | None = None) -> "PictureRef":
        """A picture's URL, or a IIIF Image API service's (a URL ending in /info.json, which goes)."""
        if url.rstrip("/").endswith("/info.json"):
            service = url.rstrip("/").removesuffix("/info.json")
            return cls(service, "iiif", external_id, metadata, image_service=service)
        return cls(url, "url", external_id, metadata)


@dataclass(frozen=True)
class SourceFailure:
    source: str
    code: str
    error: str
    external_id: str | None = None
    metadata: dict[str, Any] | None = field(default=None)
    manifest: str | None = None  # a problem of a IIIF manifest: that manifest (as `PictureRef.manifest`)


@dataclass(frozen=True)
class Ignored:
    """A file of a folder passed over by rule: `reason` "hidden" or "not_a_picture"."""

    source: str
    reason: str


Item = Union[PictureRef, SourceFailure, Ignored]


def _is_url(text: str) -> bool:
    return text.lower().startswith(("http://", "https://"))


# -- how sources are shown to a reader who may not write: never the server's folders -------------------

# An absolute path's folders in a message (not a URL's): each folder's name may hold spaces ("My Scans"),
# but neither starts nor ends with one nor holds ": " or ", ", so the words after a path stay.
_FOLDER = r"[^/\s'\"](?:(?!: |, )[^/'\"\n])*(?<=[^/\s'\"])"
_FOLDERS = re.compile(r"(?<![\w.:/%~-])/(?:" + _FOLDER + r"/)+")


def local_root(first: str | None, last: str | None) -> str | None:
    """The folder (ending in "/") that holds every absolute local source of a collection, from the first
    and the last of them in text order (the common prefix of those two is every one's); None for none."""
    if not first or not last:
        return None
    common = os.path.commonprefix([first, last])
    return common[: common.rfind("/") + 1] or None


def shown_source(source: str, root: str | None) -> str:
    """A source as a caller without write access sees it: a URL (or a path that is not absolute) as it
    is; an absolute local path relative to the collection's `root` (`local_root`), or its file name
    when the sources share no folder but "/"."""
    if _is_url(source) or not source.startswith("/"):
        return source
    if root and root != "/" and source.startswith(root) and len(source) > len(root):
        return source[len(root):]
    return source.rstrip("/").rsplit("/", 1)[-1] or source


def shown_text(text: str | None, root: str | None) -> str | None:
    """A message (a picture's or a job's error) as a caller without write access sees it: `root` taken
    out of it, and the folders of any other absolute local path; URLs as they are."""
    if not text:
        return text
    if root and root != "/":
        text = text.replace(root, "")
    return _FOLDERS.sub("", text)


def expand(source: str, policy: FetchPolicy) -> Iterator[Item]:
    """The pictures a source names, or failures saying why a source or a row gives none."""
    try:
        if _is_url(source):
            yield from _remote(source, policy)
            return
        path = Path(source).expanduser()
        if path.is_dir():
            yield from _folder(path)
        elif not path.is_file():
            yield SourceFailure(source, "source_not_found", f"no such file or folder: {source}")
        elif path.suffix.lower() in TABLE_SUFFIXES or path.suffix.lower() in LINES_SUFFIXES:
            yield from _table(path)
        elif path.suffix.lower() == ".json":
            if path.stat().st_size > MAX_MANIFEST_BYTES:
                yield SourceFailure(source, "invalid_manifest",
                                    f"{source} is larger than {MAX_MANIFEST_BYTES // 2**20} MiB, the limit for a manifest")
                return
            try:
                doc = json.loads(path.read_text(encoding="utf-8-sig"))
            except (ValueError, UnicodeDecodeError, RecursionError) as exc:
                yield SourceFailure(source, "invalid_manifest", f"{source} is not a JSON document ({str(exc)[:200]})")
                return
            ident = doc.get("id") or doc.get("@id") if isinstance(doc, dict) else None
            named = ident if isinstance(ident, str) and _is_url(ident) else str(path.resolve())
            yield from _iiif_document(source, doc, base=None, manifest=named, policy=policy)
        else:  # a picture, by its content: the reader says if it is not one
            yield PictureRef(str(path.resolve()), "file", external_id=path.name)
    except ClipGazeError as exc:
        yield SourceFailure(source, exc.code, exc.message)


def _folder(root: Path) -> Iterator[Item]:
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts):
            yield Ignored(str(path), "hidden")
        elif path.suffix.lower() in NOT_PICTURES:
            yield Ignored(str(path), "not_a_picture")
        else:
            yield PictureRef(str(path.resolve()), "file", external_id=relative.as_posix())


def _remote(source: str, policy: FetchPolicy) -> Iterator[Item]:
    """A source by URL: a table (`TABLE_TYPES`; or a .csv, .tsv, .jsonl or .ndjson path sent as text/plain,
    application/octet-stream or untyped), else a IIIF document. A table is read within a manifest's cap
    (`MAX_MANIFEST_BYTES`), its rows within a file's (`rows`)."""
    got = fetch_document(source, policy, tuple(TABLE_TYPES), MAX_MANIFEST_BYTES)
    kind = TABLE_TYPES.get(got.content_type)
    if kind is None and got.content_type in UNTYPED:
        kind = table_kind(urlsplit(got.url).path) or table_kind(urlsplit(source).path)
    if kind is None:
        yield from _iiif_document(source, parse_json(got), base=source, manifest=source, policy=policy,
                                  size=len(got.data))
        return
    text = io.TextIOWrapper(io.BytesIO(got.data), encoding="utf-8-sig", newline="")
    yield from _rows(source, lambda n: f"{source}#line={n}", read_text_rows(text, source, kind), base=got.url)


def _table(path: Path) -> Iterator[Item]:
    yield from _rows(str(path), lambda n: f"{path}:{n}", read_rows(path), folder=path.parent)


def _rows(name: str, key: Callable[[int], str], rows: Iterator[Union[Row, BadRow]], *, folder: Path | None = None,
          base: str = "") -> Iterator[Item]:
    """The pictures a table's rows name: `key(line)` names a row's failure; a relative `image` is taken
    relative to `folder` (a file's) or, for a table fetched by URL, resolved as a URL against `base`."""
    try:
        for row in rows:
            if isinstance(row, BadRow):
                yield SourceFailure(key(row.line), "invalid_source", row.error)
            else:
                yield _row_item(name, key(row.line), row.line, row.fields, folder, base)
    except (InvalidInput, OSError) as exc:
        message = exc.message if isinstance(exc, InvalidInput) else f"cannot read {name}: {exc.strerror or exc}"
        yield SourceFailure(name, "invalid_source", message)


def _row_item(name: str, key: str, n: int, row: dict[str, Any], folder: Path | None, base: str) -> Item:
    if "image" not in row:
        return SourceFailure(key, "invalid_source", f"{name}, line {n}: no `image` field")
    image = str(row.pop("image", "") or "").strip()
    ext = row.pop("external_id", None)
    ext = str(ext).strip() if ext not in (None, "") else None
    meta = {k: v for k, v in row.items() if k and v not in (None, "")} or None
    if not image:
        return SourceFailure(key, "invalid_source", f"{name}, row {n}: empty `image`", ext, meta)
    if folder is None:  # a table fetched by URL names pictures by URL, never files of this machine
        url = urljoin(base, image)
        if not _is_url(url):
            return SourceFailure(key, "invalid_source", f"{name}, row {n}: {image[:200]!r} is not an http(s) URL "
                                                        "(a table fetched by URL names its pictures by URL)", ext, meta)
        return PictureRef.of_url(url, ext, meta)
    if _is_url(image):
        return PictureRef.of_url(image, ext, meta)
    file = Path(image).expanduser()
    file = file if file.is_absolute() else folder / file
    return PictureRef(str(file.resolve()), "file", ext, meta)


def _iiif_document(source: str, doc: Any, base: str | None, manifest: str | None = None,
                   policy: FetchPolicy | None = None, size: int = 0) -> Iterator[Item]:
    """A IIIF document's pictures: an Image API service's one, a manifest's (each with `manifest`,
    where the manifest was read from, and its image service), or those of each manifest a IIIF
    Collection lists (`iiif_collection`; what it refuses is recorded as a failure)."""
    if is_collection(doc) and policy is not None:
        def get(url: str, left: int) -> tuple[Any, int]:
            got = fetch_document(url, policy, (), min(MAX_MANIFEST_BYTES, left))
            return parse_json(got), len(got.data)

        refused: dict[str, int] = {}
        for event in walk(base or manifest or source, doc, get, size):
            if isinstance(event, Found):
                yield from _iiif_document(event.url, event.doc, base=event.url, manifest=event.url)
                continue
            key = f"{event.where}#{event.code}"
            refused[key] = refused.get(key, 0) + 1  # each refusal recorded, two of one collection too
            yield SourceFailure(key if refused[key] == 1 else f"{key} ({refused[key]})", event.code, event.error,
                                manifest=event.where)
        return
    if is_image_service(doc):
        service = (base or str(doc.get("id") or doc.get("@id") or "")).rstrip("/").removesuffix("/info.json")
        yield PictureRef(service, "iiif", external_id=source, image_service=service)
        return
    if not is_manifest(doc):
        yield SourceFailure(source, "invalid_manifest", f"{source} is neither a IIIF Presentation manifest nor an Image API service")
        return
    for item in manifest_items(doc):
        meta = {**(item.metadata or {}), **({"label": item.label} if item.label else {})} or None
        where, kind = (item.service, "iiif") if item.service else (item.url, "url")
        if where:  # a region has a source of its own: each region of a picture is a picture
            named = f"{where}#{region_fragment(item.region)}" if item.region else where
            yield PictureRef(named, kind, item.external_id, meta, region=item.region, manifest=manifest,
                             image_service=item.service)
    seen: dict[str, int] = {}
    for problem in manifest_problems(doc):  # canvases without a picture: recorded, the rest are added
        key = f"{source}#{problem[:80]}"
        seen[key] = seen.get(key, 0) + 1  # two problems of one canvas may start alike: each is recorded
        yield SourceFailure(key if seen[key] == 1 else f"{key} ({seen[key]})", "invalid_manifest", problem, manifest=manifest)
