"""Requests and answers of access (issue 23): API keys with scopes and grants, and the audit trail."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

from ..settings import SCOPES
from .fields import MAX_NAME_CHARS, Answer, CollectionName, KeyName, Name, Request

MAX_GRANTS = 1000
MAX_AUDIT_PAGE = 1000

Scope = Literal["read", "analyze", "write", "admin"]
assert set(Scope.__args__) == set(SCOPES)  # type: ignore[attr-defined]
_DURATION = r"\d{1,5}[hdw]"
# A day that exists (year 0001 on; 29 February of leap years only), then optionally a time of day with
# an optional offset: exactly what datetime.fromisoformat reads, so the document's pattern is the rule.
_YEAR = r"(?:[1-9]\d{3}|0[1-9]\d{2}|00[1-9]\d|000[1-9])"
_LEAP_YEAR = r"(?:\d{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
_DAY = (rf"(?:{_YEAR}-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1\d|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31)"
        rf"|{_LEAP_YEAR}-02-29)")
_CLOCK = r"(?:[01]\d|2[0-3]):[0-5]\d(?::[0-5]\d(?:\.\d{1,6})?)?(?:Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)?"
_TIME = rf"{_DAY}(?:T{_CLOCK})?"


def _matching(pattern: str, code: str, what: str) -> Any:
    def check(value: str) -> str:
        if not re.fullmatch(pattern, value):
            raise PydanticCustomError(code, f"{value[:40]!r} is not {what}")
        return value

    return AfterValidator(check)


Expiry = Annotated[str, _matching(f"{_DURATION}|{_TIME}", "invalid_expiry", "a duration (90d, 12h, 2w) or an ISO 8601 date or time"),
                   WithJsonSchema({"type": "string", "pattern": f"^({_DURATION}|{_TIME})$", "maxLength": 40,
                                   "description": "How long the key lasts (90d, 12h, 2w) or until when (an ISO 8601 date or "
                                                  "time, UTC unless it says otherwise)"})]
Since = Annotated[str, _matching(_TIME, "invalid_time", "an ISO 8601 date or time (2026-12-01, 2026-12-01T09:30)"),
                  WithJsonSchema({"type": "string", "pattern": f"^{_TIME}$", "maxLength": 40,
                                  "description": "Entries at or after this ISO 8601 date or time (UTC unless it says otherwise)"})]


class CreateKey(Request):
    """POST /v1/keys (an admin key): the secret is in the answer, once, and stored only as a hash."""

    name: KeyName
    scopes: Annotated[list[Scope], Field(min_length=1, max_length=len(SCOPES))]
    collections: Annotated[list[CollectionName], Field(max_length=MAX_GRANTS)] | None = Field(
        None, description="Private collections the key may see (absent: none), and the only collections it may change")
    vocabularies: Annotated[list[Name], Field(max_length=MAX_GRANTS)] | None = Field(
        None, description="Private vocabularies the key may see (absent: none), and the only vocabularies it may change")
    expires: Expiry | None = None


class KeyInfo(Answer):
    """A key as listed: never its secret, nor the hash of it."""

    name: str = Field(max_length=MAX_NAME_CHARS)
    scopes: list[Scope]
    collections: list[str] | None = Field(None, description="Its grant of collections; null: no private one, any public one")
    vocabularies: list[str] | None = Field(None, description="Its grant of vocabularies; null: no private one, any public one")
    created_at: str
    expires_at: str | None = None
    last_used_at: str | None = Field(None, description="To the minute: when it was last accepted")
    revoked_at: str | None = None
    state: Literal["active", "expired", "revoked"]


class KeyCreated(Answer):
    ok: Literal[True] = True
    key: KeyInfo
    secret: str = Field(description="Send it as 'Authorization: Bearer <secret>'. Shown this once: only its hash is kept")


class KeyList(Answer):
    ok: Literal[True] = True
    keys: list[KeyInfo]


class KeyAnswer(Answer):
    ok: Literal[True] = True
    key: KeyInfo
    revoked: str | None = None


class AuditQuery(Request):
    since: Since | None = None
    after: Annotated[int, Field(ge=0, description="Entries after this id (next_after of the page before)")] = 0
    limit: Annotated[int, Field(ge=1, le=MAX_AUDIT_PAGE)] = 100


class AuditEntry(Answer):
    id: int
    at: str = Field(description="When, UTC, to the second")
    key: str = Field(description="The key's name; token#N for the Nth of CLIP_GAZE_API_TOKENS; (cli) for the command "
                                 "line; (anonymous) where anonymous callers may write")
    address: str | None = Field(None, description="The caller's address, as the rate limit counts it")
    method: str
    path: str
    status: int


class AuditList(Answer):
    ok: Literal[True] = True
    entries: list[AuditEntry]
    next_after: int | None = Field(None, description="Pass as after= for the next page (null: this was the last)")


__all__ = ["AuditEntry", "AuditList", "AuditQuery", "CreateKey", "Expiry", "KeyAnswer", "KeyCreated", "KeyInfo", "KeyList",
           "MAX_GRANTS", "Scope"]
