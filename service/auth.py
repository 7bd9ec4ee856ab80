"""Bearer tokens for writes (CLIP_GAZE_API_TOKENS)."""

from __future__ import annotations

import functools
import hmac
from typing import Any, Callable, TypeVar

from flask import current_app, request

from indexer.errors import ClipGazeError

F = TypeVar("F", bound=Callable[..., Any])


class Unauthorized(ClipGazeError):
    status = 401
    code = "unauthorized"


class Forbidden(ClipGazeError):
    status = 403
    code = "writes_disabled"


def token_ok(tokens: tuple[str, ...], header: str | None) -> bool:
    if not header or not header.startswith("Bearer "):
        return False
    given = header[len("Bearer "):].strip().encode()
    return any(hmac.compare_digest(given, t.encode()) for t in tokens)


def can_write() -> bool:
    """Whether this request carries a token that may write (as `require_token` checks it: in constant
    time for each token). Answers show the server's folders only to such callers."""
    tokens: tuple[str, ...] = current_app.config["CLIP_GAZE_SETTINGS"].api_tokens
    return bool(tokens) and token_ok(tokens, request.headers.get("Authorization"))


def require_token(view: F) -> F:
    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        tokens: tuple[str, ...] = current_app.config["CLIP_GAZE_SETTINGS"].api_tokens
        if not tokens:
            raise Forbidden("writes are disabled on this server: set CLIP_GAZE_API_TOKENS to allow them")
        if not token_ok(tokens, request.headers.get("Authorization")):
            raise Unauthorized("this needs 'Authorization: Bearer <token>' with a token from CLIP_GAZE_API_TOKENS")
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
