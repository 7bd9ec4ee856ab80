"""API keys (migration 008): who may call the service, with which scopes, on which private collections
and vocabularies, until when.

A key's secret is `cgk_<id>_<random>`: 256 random bits after a public id of 48. Only the SHA-256 of
the whole secret is stored; a key is looked up by its id and its hash compared in constant time, so
neither the store nor its backups hold a secret, and a wrong secret takes as long to refuse as a right
one to accept. What the service tells a caller of a refused key is the same whether its id, its secret,
its expiry or its revocation was wrong (`authenticate` answers None for all of them).

The audit trail of writes is beside them (`audit`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Sequence

from ..errors import Conflict, InvalidInput, NotFound
from ..schema.access import KeyInfo
from ..settings import SCOPES
from .phrase_store import Store, timestamp

PREFIX = "cgk_"
_SECRET = re.compile(r"cgk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
LAST_USED_EVERY = 60.0  # seconds: a key's last use is written at most this often


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def expiry(text: str | None, now: datetime | None = None) -> str | None:
    """`90d`, `12h`, `2w` from now, or an ISO 8601 date or time (UTC unless it says otherwise), as stored."""
    if not text:
        return None
    now = now or datetime.now(timezone.utc)
    found = re.fullmatch(r"(\d{1,5})([hdw])", text.strip())
    if found:
        return (now + int(found.group(1)) * _UNITS[found.group(2)]).isoformat(timespec="seconds")
    at = parse_time(text, "expires")
    if at <= now:
        raise InvalidInput(f"expires {text!r} is in the past", code="invalid_expiry", status=422)  # well-formed
    return at.isoformat(timespec="seconds")


def parse_time(text: str, what: str) -> datetime:
    try:
        at = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"{what}: {text[:40]!r} is neither a duration (90d, 12h, 2w) nor an ISO 8601 date or time",
                           code="invalid_expiry" if what == "expires" else "invalid_time") from None
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class Key:
    """A stored key, without its secret."""

    name: str
    scopes: tuple[str, ...]
    collections: tuple[str, ...] | None  # granted (private ones seen, the only ones changed); None: no grant
    vocabularies: tuple[str, ...] | None
    created_at: str
    expires_at: str | None = None
    last_used_at: str | None = None
    revoked_at: str | None = None

    def state(self, now: datetime | None = None) -> str:
        if self.revoked_at:
            return "revoked"
        if self.expires_at and parse_time(self.expires_at, "expires") <= (now or datetime.now(timezone.utc)):
            return "expired"
        return "active"

    def info(self) -> KeyInfo:
        return KeyInfo(name=self.name, scopes=list(self.scopes),  # type: ignore[arg-type]
                       collections=list(self.collections) if self.collections is not None else None,
                       vocabularies=list(self.vocabularies) if self.vocabularies is not None else None,
                       created_at=self.created_at, expires_at=self.expires_at, last_used_at=self.last_used_at,
                       revoked_at=self.revoked_at, state=self.state())  # type: ignore[arg-type]


def _names(value: str | None) -> tuple[str, ...] | None:
    return tuple(json.loads(value)) if value is not None else None


class KeyStore:
    """The keys of a store's database."""

    def __init__(self, store: Store):
        self.store = store

    @staticmethod
    def _key(r: Any) -> Key:
        return Key(name=r["name"], scopes=tuple(s for s in r["scopes"].split(",") if s),
                   collections=_names(r["collections"]), vocabularies=_names(r["vocabularies"]),
                   created_at=r["created_at"], expires_at=r["expires_at"], last_used_at=r["last_used_at"],
                   revoked_at=r["revoked_at"])

    def create(self, name: str, scopes: Sequence[str], collections: Sequence[str] | None = None,
               vocabularies: Sequence[str] | None = None, expires: str | None = None) -> tuple[Key, str]:
        """A new key and its secret (the only time the secret exists outside the caller's hands). A
        revoked key's name may be used again; an active or expired one's may not."""
        wrong = [s for s in scopes if s not in SCOPES]
        if wrong or not scopes:
            raise InvalidInput(f"scopes must be among {', '.join(SCOPES)}, not {', '.join(wrong) or 'none'}",
                               code="invalid_scope")
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        full = f"{PREFIX}{key_id}_{secret}"
        now = timestamp()
        row = {"name": name, "key_id": key_id, "secret_hash": digest(full),
               "scopes": ",".join(s for s in SCOPES if s in scopes),
               "collections": json.dumps(sorted(set(collections))) if collections is not None else None,
               "vocabularies": json.dumps(sorted(set(vocabularies))) if vocabularies is not None else None,
               "created_at": now, "expires_at": expiry(expires), "last_used_at": None, "revoked_at": None}
        with self.store.transaction() as db:
            found = list(db.query("SELECT revoked_at FROM api_keys WHERE name = ?", [name]))
            if found and not found[0]["revoked_at"]:
                raise Conflict(f"a key named {name!r} exists; revoke it first or choose another name", code="key_exists")
            db.execute("DELETE FROM api_keys WHERE name = ?", [name])
            db.table("api_keys").insert(row)
        return self.get(name), full

    def all(self) -> list[Key]:
        return [self._key(r) for r in self.store.db.query("SELECT * FROM api_keys ORDER BY name")]

    def get(self, name: str) -> Key:
        rows = list(self.store.db.query("SELECT * FROM api_keys WHERE name = ?", [name]))
        if not rows:
            raise NotFound(f"no key named {name!r} (see `clip-gaze keys list`)", code="unknown_key")
        return self._key(rows[0])

    def revoke(self, name: str) -> Key:
        """Refused from now on, by every worker (each request reads the store); listed as revoked."""
        key = self.get(name)
        if key.revoked_at is None:
            with self.store.transaction() as db:
                db.execute("UPDATE api_keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL", [timestamp(), name])
        return self.get(name)

    def any_active(self) -> bool:
        """Whether some key could be accepted now (neither revoked nor expired)."""
        now = datetime.now(timezone.utc)
        return any(self._key(r).state(now) == "active"
                   for r in self.store.db.query("SELECT * FROM api_keys WHERE revoked_at IS NULL"))

    def authenticate(self, secret: str) -> Key | None:
        """The active key whose secret this is, else None (whatever was wrong). Its last use is noted."""
        found = _SECRET.fullmatch(secret)
        if found is None:
            hmac.compare_digest(digest(secret), digest(""))  # as long as a lookup, for any text
            return None
        rows = list(self.store.db.query("SELECT * FROM api_keys WHERE key_id = ?", [found.group(1)]))
        stored = rows[0]["secret_hash"] if rows else digest("")
        if not hmac.compare_digest(digest(secret), stored) or not rows:
            return None
        key = self._key(rows[0])
        if key.state() != "active":
            return None
        self._used(key)
        return key

    def _used(self, key: Key) -> None:
        now = datetime.now(timezone.utc)
        if key.last_used_at and (now - parse_time(key.last_used_at, "last_used")).total_seconds() < LAST_USED_EVERY:
            return
        with self.store.transaction() as db:
            db.execute("UPDATE api_keys SET last_used_at = ? WHERE name = ?", [now.isoformat(timespec="seconds"), key.name])


__all__ = ["Key", "KeyStore", "PREFIX", "digest", "expiry", "parse_time"]
