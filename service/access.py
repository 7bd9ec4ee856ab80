"""Who is calling, and what they may see (issue 23).

`current()` is the caller of this request, read once from its `Authorization: Bearer …` header: a
token of CLIP_GAZE_API_TOKENS (every scope), an API key of the store (`indexer.store.keys`: its scopes
and grants), or nobody (the scopes of CLIP_GAZE_ANONYMOUS). `service.guard` refuses what the caller's
scopes do not allow, before the view, from the scope the route's OpenAPI operation declares.

Private collections and vocabularies are seen only by admin callers and keys granted them. Every route
asks the one question `visible_collection(name)` / `visible_vocabulary(name)` (the guard for a name in
the path, the views for names in a body or a listing); a caller who may not see one is answered exactly
as for a name that does not exist: 404 `unknown_collection` or `unknown_vocabulary` (422 when a body
named it), with the same message.

The address of a caller (for callers without a key, and the audit): the peer's, unless the peer is a
trusted proxy; then the address that proxy appended to X-Forwarded-For (nginx's
$proxy_add_x_forwarded_for, deploy/nginx/clip-gaze.conf.template), the header's last entry (earlier
ones are whatever the client sent). Trusted: loopback peers (a proxy on this machine), and the peers
gunicorn's own FORWARDED_ALLOW_IPS lists (addresses, networks or `*`; the same rule gunicorn applies to
X-Forwarded-Proto). A peer on a private network is not trusted by itself: the server may be reachable
there without a proxy, and any host on that network could then name itself a fresh caller per request.
In docker-compose nginx reaches the API over the compose network, so the API is given
FORWARDED_ALLOW_IPS there (only nginx reaches its port); without it every client behind nginx shares
nginx's address, one caller.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Union

from flask import current_app, g, has_request_context, request

from indexer.errors import UnknownReference
from indexer.settings import SCOPES
from indexer.catalog import catalog
from indexer.store.image_store import ImageStore, unknown_collection
from indexer.store.keys import KeyStore
from indexer.store.phrase_store import Store
from indexer.vocabularies.listing import unknown_vocabularies


@dataclass(frozen=True)
class Caller:
    """Who makes this request and what they may do."""

    name: str  # as the audit names it: a key's name, token#N, (anonymous)
    ident: str  # as limits count callers: key:NAME, token:HASH or addr:ADDRESS
    scopes: frozenset[str]
    full: bool = False  # an admin key or a CLIP_GAZE_API_TOKENS token: every scope, every collection and vocabulary
    keyed: bool = False  # sent a key that was accepted
    refused: bool = False  # sent a key that was not (unknown, expired, revoked, or no Bearer key at all)
    collections: frozenset[str] | None = None  # granted (None: no grant; any public one)
    vocabularies: frozenset[str] | None = None

    def may(self, scope: str) -> bool:
        return self.full or scope in self.scopes

    def grants(self, kind: Literal["collection", "vocabulary"], name: str) -> bool | None:
        """Whether its grant names `name` (None: it has no grant of that kind)."""
        granted = self.collections if kind == "collection" else self.vocabularies
        return None if granted is None else name in granted


def _settings_tokens() -> tuple[str, ...]:
    return tuple(getattr(current_app.config["CLIP_GAZE_SETTINGS"], "api_tokens", ()))


def anonymous_scopes() -> frozenset[str]:
    return frozenset(getattr(current_app.config["CLIP_GAZE_SETTINGS"], "anonymous", ()))


def store() -> Store:
    """The store of this server (its keys, its audit trail)."""
    from .state import state

    return state().engine.store


def key_store() -> KeyStore | None:
    """The keys of this server's store (None in an app without one, as some tests make)."""
    held = current_app.extensions.get("clip_gaze")
    return KeyStore(held.engine.store) if held is not None else None


def has_keys() -> bool:
    """Whether any caller could hold a key: a token configured, or an active key in the store."""
    if _settings_tokens():
        return True
    keys = key_store()
    return keys is not None and keys.any_active()


def bearer() -> str | None:
    """The request's bearer credential, '' for an Authorization header that holds none, None without one."""
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, value = header.strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else ""


def _identify() -> Caller:
    anonymous = anonymous_scopes()
    address = "addr:" + client_address()
    given = bearer()
    if given is None:
        return Caller("(anonymous)", address, anonymous)
    tokens = _settings_tokens()
    matched = [hmac.compare_digest(given.encode(), t.encode()) for t in tokens]  # every one compared: constant time
    if any(matched):
        ident = "token:" + hashlib.sha256(given.encode()).hexdigest()[:16]
        return Caller(f"token#{matched.index(True) + 1}", ident, frozenset(SCOPES), full=True, keyed=True)
    keys = key_store() if given else None
    key = keys.authenticate(given) if keys is not None else None
    if key is None:
        return Caller("(refused)", address, anonymous, refused=True)
    full = "admin" in key.scopes
    return Caller(key.name, "key:" + key.name, frozenset(key.scopes) | anonymous, full=full, keyed=True,
                  collections=None if full or key.collections is None else frozenset(key.collections),
                  vocabularies=None if full or key.vocabularies is None else frozenset(key.vocabularies))


def current() -> Caller:
    """This request's caller, identified once per request."""
    if not has_request_context():
        raise RuntimeError("access.current() outside a request")
    found = g.get("clip_gaze_caller")
    if found is None:
        found = g.clip_gaze_caller = _identify()
    return found  # type: ignore[no-any-return]


# -- what a caller may see ------------------------------------------------------------------------------
def _images() -> ImageStore:
    from .state import state

    return state().engine.images


def visible_collection(name: str, private: bool | None = None) -> bool:
    """Whether this caller may see collection `name` (False where there is none). `private`: its flag, if known."""
    caller = current()
    if private is None:
        private = _images().private(name)
        if private is None:
            return False
    return not private or caller.full or bool(caller.grants("collection", name))


def visible_vocabulary(name: str, private: bool | None = None) -> bool:
    """Whether this caller may see vocabulary `name` as far as privacy goes (a missing one is left to the
    view, which answers for it as it always did)."""
    caller = current()
    if private is None:
        private = name in _images().store.private_vocabularies()
    return not private or caller.full or bool(caller.grants("vocabulary", name))


def hidden_collection(name: str) -> bool:
    """Whether collection `name` exists, private, and this caller may not see it (a missing one is not hidden)."""
    private = _images().private(name)
    return bool(private) and not visible_collection(name, private)


def require_collection(name: str) -> None:
    """404 unknown_collection, as for a missing name, unless collection `name` exists and this caller may see it."""
    if not visible_collection(name):
        raise unknown_collection(name)


def require_vocabulary(name: str) -> None:
    """404 unknown_vocabulary, as for a missing name, unless vocabulary `name` exists (or is a built-in one,
    brought into the store when first asked for) and this caller may see it."""
    if name not in catalog().vocabularies and name not in _images().store.versions() or not visible_vocabulary(name):
        raise unknown_vocabularies([name])


def hidden_vocabularies(names: Iterable[str]) -> list[str]:
    """Of `names`, those this caller may not see (private ones not granted)."""
    caller = current()
    if caller.full:
        return []
    private = _images().store.private_vocabularies()
    return [n for n in names if n in private and not caller.grants("vocabulary", n)]


def check_named(vocabularies: Sequence[str] | None = None, relative_to: str | None = None) -> None:
    """Names a request's body gives (vocabularies to score, a reference collection): one this caller may
    not see is refused as a name that does not exist would be (422, its code kept)."""
    hidden = hidden_vocabularies(vocabularies or [])
    if hidden:
        known = _images().store.versions()
        raise UnknownReference.of(unknown_vocabularies([n for n in vocabularies or [] if n in hidden or (n not in known and n not in catalog().vocabularies)]))
    if relative_to is not None and hidden_collection(relative_to):
        raise UnknownReference.of(unknown_collection(relative_to))


# -- the caller's address -------------------------------------------------------------------------------
def client_address() -> str:
    peer = request.remote_addr or "?"
    forwarded = request.headers.get("X-Forwarded-For", "")
    if forwarded and _is_proxy(peer, _trusted_proxies()):
        last = forwarded.split(",")[-1].strip()
        if last:
            return last
    return peer


Proxies = Union[Literal["*"], tuple[Union[ipaddress.IPv4Network, ipaddress.IPv6Network], ...]]


@functools.lru_cache(maxsize=8)
def _parse_proxies(listed: str) -> Proxies:
    """FORWARDED_ALLOW_IPS as gunicorn reads it: comma-separated addresses or networks, or `*` (entries
    that are neither are left out)."""
    entries = [e.strip() for e in listed.split(",") if e.strip()]
    if "*" in entries:
        return "*"
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            continue
    return tuple(networks)


def _trusted_proxies() -> Proxies:
    return _parse_proxies(os.environ.get("FORWARDED_ALLOW_IPS", ""))


def _is_proxy(address: str, trusted: Proxies = ()) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback or trusted == "*":
        return True
    return any(ip.version == net.version and ip in net for net in trusted)


__all__ = ["Caller", "check_named", "client_address", "current", "has_keys", "hidden_collection", "hidden_vocabularies", "key_store",
           "require_collection", "require_vocabulary", "visible_collection", "visible_vocabulary"]
