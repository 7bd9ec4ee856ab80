"""IIIF Presentation Collections (v2 and v3) as a source: the manifests they list, recursively
(collections of collections of manifests), each fetched once, within limits on depth
(`MAX_DEPTH` levels of collections), count (`MAX_MANIFESTS` manifests) and bytes (`MAX_TOTAL_BYTES`
for every document fetched, the collections' and the manifests'). A collection that lists itself, or
one that contains it (a loop), is refused with its reason and not followed; a collection or manifest
reached twice by other paths is read once. v3: `items` of `type` Collection or Manifest; v2:
`collections`, `manifests` and `members` (by `@type`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Union

from ..errors import ClipGazeError
from .iiif_image import _types

MAX_DEPTH = 8  # collections within collections
MAX_MANIFESTS = 10_000  # manifests read from one collection source
MAX_TOTAL_BYTES = 512 * 1024 * 1024  # every document fetched for one collection source
COLLECTION_TYPES = ("Collection", "sc:Collection", "http://iiif.io/api/presentation/2#Collection")
MANIFEST_TYPES = ("Manifest", "sc:Manifest", "http://iiif.io/api/presentation/2#Manifest")


@dataclass(frozen=True)
class Found:
    """A manifest a collection lists: where it was fetched from and its parsed document."""

    url: str
    doc: Any


@dataclass(frozen=True)
class Refused:
    """A member not followed, or a collection cut short: `where`, a reason `code` and its `error`."""

    where: str
    code: str
    error: str


Event = Union[Found, Refused]
GetFn = Callable[[str, int], tuple[Any, int]]  # (url, at most these bytes) → (parsed document, its size)


def is_collection(doc: Any) -> bool:
    return isinstance(doc, dict) and any(t in COLLECTION_TYPES for t in _types(doc))


def _id(node: Any) -> str | None:
    if isinstance(node, str):
        return node
    if isinstance(node, dict):
        got = node.get("id") or node.get("@id")
        return got if isinstance(got, str) and got else None
    return None


def members(doc: dict[str, Any]) -> list[tuple[str, str | None]]:
    """A collection's members in order: (kind "collection" or "manifest", id; None when it has none)."""
    out: list[tuple[str, str | None]] = []
    for key in ("collections", "manifests"):  # v2
        for node in doc.get(key) or () if isinstance(doc.get(key), list) else ():
            out.append((key[:-1], _id(node)))
    for key in ("members", "items"):  # v2 members, v3 items
        for node in doc.get(key) or () if isinstance(doc.get(key), list) else ():
            types = _types(node) if isinstance(node, dict) else []
            kind = "collection" if any(t in COLLECTION_TYPES for t in types) else "manifest"
            out.append((kind, _id(node)))
    return out


def walk(url: str, doc: dict[str, Any], get: GetFn, size: int = 0) -> Iterator[Event]:
    """The manifests collection `doc` (fetched from `url`, `size` bytes) lists, depth first in order,
    and what was refused on the way; `get` fetches a member within the bytes left."""
    spent = size
    manifests = 0
    seen: set[str] = {url, *filter(None, [_id(doc)])}

    def visit(where: str, node: dict[str, Any], ancestors: frozenset[str], depth: int) -> Iterator[Event]:
        nonlocal spent, manifests
        for kind, member in members(node):
            if member is None:
                yield Refused(where, "invalid_collection", f"{where}: a member without an id is passed over")
                continue
            if member in ancestors:
                what = "itself" if member == where or member == _id(node) else f"{member}, which contains it"
                yield Refused(where, "collection_loop", f"{where} lists {what}: a loop, not followed")
                continue
            if member in seen:
                continue  # reached by another path: read once
            seen.add(member)
            if kind == "collection" and depth >= MAX_DEPTH:
                yield Refused(member, "collection_too_deep",
                              f"{member} is deeper than {MAX_DEPTH} collections within collections: not followed")
                continue
            if kind == "manifest" and manifests >= MAX_MANIFESTS:
                yield Refused(url, "collection_too_large", f"{url} lists more than {MAX_MANIFESTS} manifests: "
                                                           "the rest are not read")
                return
            left = MAX_TOTAL_BYTES - spent
            if left <= 0:
                yield Refused(url, "collection_too_large", f"{url}: its documents passed {MAX_TOTAL_BYTES // 2**20} MiB "
                                                           "in all: the rest are not read")
                return
            try:
                got, n = get(member, left)
            except ClipGazeError as exc:
                yield Refused(member, exc.code, exc.message)
                continue
            spent += n
            if is_collection(got):  # whatever its listing said it was
                inner = frozenset({*ancestors, member, *filter(None, [_id(got)])})
                yield from visit(member, got, inner, depth + 1)
            else:
                manifests += 1
                yield Found(member, got)

    yield from visit(url, doc, frozenset(seen), 1)


__all__ = ["Found", "Refused", "is_collection", "members", "walk", "MAX_DEPTH", "MAX_MANIFESTS", "MAX_TOTAL_BYTES"]
