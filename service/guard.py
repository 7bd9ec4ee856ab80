"""The access guard (issue 23): before every view, the request is held against the scope its route
declares in the OpenAPI document (`openapi.operation_for`), so what the document states is what is
enforced, and a route whose operation declares no scope is refused. In order:

1. a credential in the query string (`?key=`, `?token=`, …) is refused (400 `key_in_query`), on any route;
2. `public` operations (health, the document) and the pages pass, whoever calls;
3. a key that is not accepted (unknown, expired, revoked, or not a Bearer key) is 401 `unauthorized` (on a
   server that has no key at all, it is no key);
4. the caller's requests are counted (CLIP_GAZE_RATE_LIMIT; a computing route counts `ANALYZE_COST`):
   429 `rate_limited` with Retry-After beyond it;
5. a caller without a key whose anonymous scopes lack the route's: 401 `unauthorized` (403
   `writes_disabled` on a server that has no key at all);
6. a collection or vocabulary named in the path that this caller may not see: 404, exactly as for one
   that does not exist (`access.require_collection`);
7. a key without the route's scope: 403 `forbidden`. A key with a grant of collections (or vocabularies)
   acts on those only; on any other it may do what an anonymous caller may.

After a write (`write` and `admin` routes) that succeeded, the audit trail records the key that made it.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from typing import Literal

from flask import Flask, Response, request

from indexer.schema import NAME_PATTERN
from indexer.settings import Settings
from indexer.store.audit import Audit

from . import access
from .auth import Forbidden, KeyInQuery, RateLimited, Unauthorized, WritesDisabled
from .openapi import Operation, operation_for

log = logging.getLogger("clip_gaze.service")

# Query parameters that would carry a credential: refused (and never logged: see serve.redacted_request_line).
KEY_PARAMETERS = frozenset({"key", "api_key", "apikey", "api-key", "token", "access_token", "auth", "authorization",
                            "bearer", "secret", "password"})
ANALYZE_COST = 5  # a computing route counts as this many requests of the rate limit
PAGES = ("page", "static")  # endpoints (blueprints) of the pages and their files: no data, anyone
WRITES = ("write", "admin")


class RateLimiter:
    """Requests per minute per caller in this process, as a token bucket: `per_minute` units, refilled
    continuously; a request takes its cost or is refused with the seconds until it would fit."""

    def __init__(self, per_minute: int):
        self.per_minute = per_minute
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # ident → (units left, when)

    def take(self, ident: str, cost: int) -> int:
        """0 if admitted, else the seconds to wait."""
        now = time.monotonic()
        rate = self.per_minute / 60.0
        cost = min(cost, self.per_minute)  # a costly request never waits forever
        with self._lock:
            left, at = self._buckets.get(ident, (float(self.per_minute), now))
            left = min(float(self.per_minute), left + (now - at) * rate)
            if left < cost:
                self._buckets[ident] = (left, now)
                return max(1, math.ceil((cost - left) / rate))
            self._buckets[ident] = (left - cost, now)
            if len(self._buckets) > 10000:  # callers whose bucket is full again are forgotten
                self._buckets = {k: v for k, v in self._buckets.items()
                                 if v[0] + (now - v[1]) * rate < self.per_minute}
            return 0


def _path_name(op: Operation) -> tuple[Literal["collection", "vocabulary"], str] | None:
    name = (request.view_args or {}).get("name")
    if not isinstance(name, str) or not re.fullmatch(NAME_PATTERN, name):
        return None
    if op.path.startswith("/v1/collections/{name}"):
        return "collection", name
    if op.path.startswith("/v1/vocabularies/{name}"):
        return "vocabulary", name
    return None


def check(limiter: RateLimiter | None) -> None:
    """Raises the refusal this request gets, if any (the order of the module's docstring)."""
    rule = request.url_rule
    if rule is None:  # no such route, or not this method: Flask answers 404 or 405
        return
    given = [name for name in request.args if name.lower() in KEY_PARAMETERS]
    if given:
        raise KeyInQuery(f"a key in the query string ({given[0]}=…) is refused: URLs are logged and shared. Send it as "
                         "the header 'Authorization: Bearer <key>'")
    if request.method == "OPTIONS" or (request.endpoint or "").split(".")[0] in PAGES:
        return
    op = operation_for(rule.rule, request.method)
    if op is None or op.scope is None:
        log.error("refused %s %s: its route declares no scope in service/openapi.py", request.method, rule.rule)
        raise Forbidden("this route declares no scope, so nobody may call it (see service/openapi.py)")
    if op.scope == "public":
        return
    caller = access.current()
    if caller.refused and access.has_keys():  # on a server without any key, a bearer means nothing
        raise Unauthorized("this key is not accepted (unknown, expired or revoked); send a valid key as "
                           "'Authorization: Bearer <key>'")
    if limiter is not None:
        wait = limiter.take(caller.ident, ANALYZE_COST if op.scope == "analyze" else 1)
        if wait:
            raise RateLimited(f"too many requests from this caller (CLIP_GAZE_RATE_LIMIT: {limiter.per_minute} a minute, "
                              f"a computing request counting {ANALYZE_COST}); try again in {wait} s", wait)
    if not caller.keyed and not caller.may(op.scope):
        if op.scope in WRITES and not access.has_keys():
            raise WritesDisabled("writes are disabled on this server: set CLIP_GAZE_API_TOKENS, or create a key with "
                                 "`clip-gaze keys create NAME --scopes write`, to allow them")
        raise Unauthorized(f"this needs a key with the {op.scope} scope: send 'Authorization: Bearer <key>'")
    named = _path_name(op)
    if named is not None:  # a name that is no valid name is left to the view (400): no private one is named so
        kind, name = named
        if kind == "collection":
            access.require_collection(name)
        else:
            access.require_vocabulary(name)
        if caller.grants(kind, name) is False and op.scope not in access.anonymous_scopes():
            raise Forbidden(f"this key may not {op.scope} {kind} {name!r}: its grant names other {kind}s")
    if not caller.may(op.scope):
        raise Forbidden(f"this key does not have the {op.scope} scope this needs")


def audit(response: Response) -> Response:
    """A write that succeeded, recorded with the key that made it (never a body, a query or a secret)."""
    rule = request.url_rule
    if rule is None or response.status_code >= 400:
        return response
    op = operation_for(rule.rule, request.method)
    if op is None or op.scope not in WRITES:
        return response
    caller = access.current()
    try:
        Audit(access.store()).record(caller.name, request.method, request.path, response.status_code,
                                     access.client_address())
    except Exception:  # the write is done; a trail that cannot be written says so in the log
        log.exception("could not record %s %s in the audit trail", request.method, request.path)
    return response


def init_app(app: Flask, settings: Settings) -> None:
    limiter = RateLimiter(settings.rate_limit) if settings.rate_limit > 0 else None
    app.before_request(lambda: check(limiter))
    app.after_request(audit)


__all__ = ["ANALYZE_COST", "KEY_PARAMETERS", "RateLimiter", "check", "init_app"]
