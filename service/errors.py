"""One JSON error shape for every error the API gives, 404/405/413/500 included:

    {"ok": false, "status": <int>, "code": "<machine_code>", "error": "<readable message>"}

(`indexer.schema.ErrorBody`). No stack trace ever reaches a client; unexpected errors are logged and
answered with a 500. An error that says when to try again (503 busy) carries Retry-After.

Something a request names that does not exist is 404 when the URL's path names it (the resource
asked for is not there), 422 with the same code when the body names it (`named_in_body`: the request
refers to nothing; e.g. `vocabularies` or `relative_to`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from indexer.errors import ClipGazeError, NotFound, UnknownReference
from indexer.schema import ErrorBody

log = logging.getLogger("clip_gaze.service")

_HTTP_MESSAGES = {
    404: "no such endpoint; see GET /openapi.json",
    405: "method not allowed for this endpoint",
    413: "request body too large",
}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    resp = jsonify(ErrorBody(status=status, code=code, error=message).json_dict())
    resp.status_code = status
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


@contextmanager
def named_in_body() -> Iterator[None]:
    """Within it, a NotFound (unknown_vocabulary, unknown_collection) is of a name the request's body gave:
    UnknownReference (422), its code kept. A name in the URL's path is looked up before, outside it (404)."""
    try:
        yield
    except NotFound as exc:
        raise UnknownReference.of(exc) from exc


def _snake(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ClipGazeError)
    def _domain(exc: ClipGazeError) -> Response:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else {}
        if exc.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="clip-gaze"'
        return error_response(exc.status, exc.code, exc.message, headers)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        status = exc.code or 500
        message = _HTTP_MESSAGES.get(status) or (exc.description or exc.name)
        if status == 413:
            limit = app.config.get("MAX_CONTENT_LENGTH")
            if limit:
                message = f"request body too large: the limit is {limit / (1024 * 1024):.0f} MB (CLIP_GAZE_MAX_UPLOAD_MB)"
        headers = {}
        allowed = getattr(exc, "valid_methods", None)
        if status == 405 and allowed:
            headers["Allow"] = ", ".join(allowed)
        return error_response(status, _snake(exc.name), message, headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unexpected error")
        return error_response(500, "internal_error", "internal error; the server log has the details")
