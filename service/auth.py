"""The refusals of access (issue 23), and `can_write` for answers that show more to writers.

Who may call a route is declared once, as the scope of its OpenAPI operation (service/openapi.py), and
enforced from there by `service.guard` before the view: views need no decorator. `require_token` (the
write scope) remains for code that checks it again.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

from indexer.errors import ClipGazeError

from .access import current

F = TypeVar("F", bound=Callable[..., Any])


class Unauthorized(ClipGazeError):
    """No key, or a key that is not accepted: the answer never says which part of it was wrong."""

    status = 401
    code = "unauthorized"


class Forbidden(ClipGazeError):
    """A key that was accepted, without the scope the route needs."""

    status = 403
    code = "forbidden"


class WritesDisabled(ClipGazeError):
    """A server with no key and no token at all: nobody may write."""

    status = 403
    code = "writes_disabled"


class KeyInQuery(ClipGazeError):
    """A credential in the URL's query string (URLs end up in logs, histories and referrers)."""

    status = 400
    code = "key_in_query"


class RateLimited(ClipGazeError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


def can_write() -> bool:
    """Whether this request's caller may write (an accepted key or token with the write scope, or anonymous
    callers where CLIP_GAZE_ANONYMOUS allows it). Answers show the server's folders only to such callers."""
    return current().may("write")


def require_token(view: F) -> F:
    """The view needs the write scope (the guard already checks each route's declared scope)."""
    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not current().may("write"):
            raise Forbidden("this needs a key with the write scope")
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
