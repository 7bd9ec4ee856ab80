"""A IIIF Change Discovery API 1.0 stream, read (`read_changes`): an Activity Streams
`OrderedCollection` whose `last` page is read first, then each page's `prev`, newest first, until an
activity is at or before `after` (the `endTime` of the last sync of that stream) or the first page.

Each page is an `OrderedCollectionPage` whose `orderedItems` are activities, oldest first: `type`
Create, Update, Delete, Remove, Add, Move or Refresh, an `object` (`id`, `type`; a Move's `target` too)
and an `endTime`. The newest activity per object wins (`plan`): Create, Update and Add of a `Manifest`
add or refresh its pictures, Delete and Remove take them away, a Move does both (the object away, its
target in); activities of other objects (a Collection), of manifests not named by an http(s) URL (a
stream never makes the server read its own files), a Refresh and activities without a time are
counted as ignored, never acted on.

A stream that lies about its pages is refused with a reason (FetchError-like `InvalidInput`, code
`invalid_change_stream`) before anything is applied: a page reached twice (a loop through `prev`), a
document that is not a page, more than `MAX_PAGES` pages or `MAX_BYTES` bytes in all. Every fetch
goes through the fetch guard (`fetch`: private addresses refused unless CLIP_GAZE_FETCH_ALLOW admits
them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from ..errors import InvalidInput
from .fetch import FetchError, FetchPolicy, fetch_document, guard, parse_json
from .fetch import _parse as parse_url
from .iiif_image import _types

MAX_PAGES = 10_000  # pages read from one stream in one sync
MAX_BYTES = 256 * 1024 * 1024  # every page of one sync together (and the collection document)
MAX_PAGE_BYTES = 32 * 1024 * 1024  # one page
ADDS = ("Create", "Update", "Add")
REMOVALS = ("Delete", "Remove")
MANIFEST_TYPES = ("Manifest", "sc:Manifest")
CODE = "invalid_change_stream"

GetFn = Callable[[str, int], tuple[Any, int]]  # (url, at most these bytes) → (parsed document, its size)


@dataclass(frozen=True)
class Change:
    """What a sync does to one manifest: `action` "add" (Create, Add), "refresh" (Update) or "remove"."""

    manifest: str
    action: str
    end_time: str  # the activity's, normalised (`instant`)
    activity: str  # its type as the stream gave it

    def as_json(self) -> dict[str, str]:
        return {"manifest": self.manifest, "action": self.action, "end_time": self.end_time, "activity": self.activity}


@dataclass
class Changes:
    """What a stream holds after `after`: the activities read (newest first), how many were ignored,
    the pages read, and the newest `endTime` seen (the next sync reads only what is newer)."""

    activities: list[tuple[str, str, str, str | None]] = field(default_factory=list)  # (end_time, type, object, target)
    ignored: int = 0
    pages: int = 0
    newest: str | None = None

    def plan(self) -> list[Change]:
        """The newest activity per manifest, oldest first (a Move: its object removed, its target added)."""
        latest: dict[str, Change] = {}
        for end, kind, obj, target in sorted(self.activities, key=lambda a: a[0]):  # stable: a page's order on ties
            if kind == "Move":
                latest.pop(obj, None)
                latest[obj] = Change(obj, "remove", end, kind)
                if target:
                    latest.pop(target, None)
                    latest[target] = Change(target, "add", end, kind)
                continue
            action = "refresh" if kind == "Update" else "add" if kind in ADDS else "remove"
            latest.pop(obj, None)  # re-inserted: the dict keeps the order of each manifest's newest activity
            latest[obj] = Change(obj, action, end, kind)
        return list(latest.values())


def instant(text: Any) -> str | None:
    """An `endTime` as one comparable text: UTC, ISO 8601 with microseconds and `Z`; None if it is not a time."""
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _id(node: Any) -> str | None:
    if isinstance(node, str) and node:
        return node
    if isinstance(node, dict):
        got = node.get("id") or node.get("@id")
        return got if isinstance(got, str) and got else None
    return None


def _web(ident: str | None) -> str | None:
    return ident if ident is not None and ident.lower().startswith(("http://", "https://")) else None


def _refuse(message: str) -> InvalidInput:
    return InvalidInput(message, code=CODE)


def fetcher(policy: FetchPolicy) -> GetFn:
    """Documents fetched through the guard, each within the bytes left (and `MAX_PAGE_BYTES`)."""
    def get(url: str, left: int) -> tuple[Any, int]:
        got = fetch_document(url, policy, (), max(1, min(MAX_PAGE_BYTES, left)))
        return parse_json(got), len(got.data)
    return get


def admitted(url: str, policy: FetchPolicy) -> None:
    """Refuses now (before a job is started) a stream the fetch guard never admits: with credentials, or
    on an address that is not public and not in CLIP_GAZE_FETCH_ALLOW (`url_refused`, 403). Anything
    else (a host that does not resolve now, a URL the fetcher cannot read) is left to the sync, which
    records why it failed."""
    try:
        target = parse_url(url, url[:200])
        guard(target.host, target.port, policy, url)
    except FetchError as exc:
        if exc.code == "url_refused":
            raise


def read_changes(url: str, get: GetFn, after: str | None = None) -> Changes:
    """The activities of stream `url` newer than `after` (an `instant`), from its `last` page back
    (see the module's docstring); `InvalidInput` (`invalid_change_stream`, or the fetch's own code)
    when the stream cannot be read whole, so nothing of it is applied."""
    doc, spent = get(url, MAX_BYTES)
    if not isinstance(doc, dict) or "OrderedCollection" not in _types(doc):
        raise _refuse(f"{url} is not a IIIF Change Discovery stream (an OrderedCollection)")
    page_url = _id(doc.get("last"))
    if page_url is None:
        raise _refuse(f"{url}: the stream names no `last` page")
    found = Changes()
    seen = {url}
    while page_url is not None:
        if page_url in seen:
            raise _refuse(f"{url}: page {page_url} is reached twice (a loop through `prev`)")
        seen.add(page_url)
        if found.pages >= MAX_PAGES:
            raise _refuse(f"{url} has more than {MAX_PAGES} pages to read: refused")
        left = MAX_BYTES - spent
        if left <= 0:
            raise _refuse(f"{url}: its pages passed {MAX_BYTES // 2**20} MiB in all: refused")
        page, size = get(page_url, left)
        spent += size
        found.pages += 1
        items = page.get("orderedItems") if isinstance(page, dict) else None
        if not isinstance(page, dict) or "OrderedCollectionPage" not in _types(page) or not isinstance(items, list):
            raise _refuse(f"{page_url} is not a page of a change stream (an OrderedCollectionPage with orderedItems)")
        reached = False
        for item in reversed(items):
            end = instant(item.get("endTime")) if isinstance(item, dict) else None
            if end is None:
                found.ignored += 1
                continue
            if after is not None and end <= after:
                reached = True
                continue
            found.newest = max(found.newest or end, end)
            kind = next((t for t in _types(item) if t in (*ADDS, *REMOVALS, "Move")), None)
            obj = item.get("object")
            target = _web(_id(item.get("target"))) if kind == "Move" else None
            if kind is None or _web(_id(obj)) is None or \
                    not any(t in MANIFEST_TYPES for t in _types(obj if isinstance(obj, dict) else {})):
                found.ignored += 1  # a manifest is named by its http(s) URL: never a path of this server
                continue
            found.activities.append((end, kind, str(_id(obj)), target))
        if reached:
            break
        page_url = _id(page.get("prev"))
    return found


__all__ = ["ADDS", "CODE", "Change", "Changes", "MAX_BYTES", "MAX_PAGES", "MAX_PAGE_BYTES", "REMOVALS", "admitted", "fetcher",
           "instant", "read_changes"]
