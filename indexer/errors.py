"""Domain errors. Each carries a machine `code` and the HTTP `status` the API answers with.

Library code raises these and never prints or exits; the CLI turns them into one readable line,
the service into the JSON error body.
"""

from __future__ import annotations


class ClipGazeError(Exception):
    """Base of every error clip-gaze reports to a user."""

    status: int = 400
    code: str = "bad_request"
    retry_after: int | None = None  # seconds, sent as Retry-After with the error

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class InvalidInput(ClipGazeError):
    status = 400
    code = "invalid_input"


class InvalidImage(InvalidInput):
    code = "invalid_image"


class ImageTooLarge(InvalidInput):
    status = 413
    code = "image_too_large"


class NotFound(ClipGazeError):
    """What a request names does not exist. Named in the URL's path, the resource itself is missing (404);
    named in a request's body, the service answers UnknownReference (422) with the same code."""

    status = 404
    code = "not_found"


class UnknownReference(ClipGazeError):
    """A well-formed request whose body names something that does not exist (a vocabulary to score,
    a reference collection): 422, with the code of the NotFound it stands for (e.g. unknown_vocabulary)."""

    status = 422
    code = "unknown_reference"

    @classmethod
    def of(cls, exc: NotFound) -> UnknownReference:
        return cls(exc.message, code=exc.code)


class UnsupportedLanguage(ClipGazeError):
    """A well-formed language tag that the model cannot read (NLLB-CLIP reads the 200 of NLLB-200): 422."""

    status = 422
    code = "unsupported_language"


class ReadOnly(ClipGazeError):
    status = 403
    code = "read_only"


class Conflict(ClipGazeError):
    status = 409
    code = "conflict"


class NotIndexed(ClipGazeError):
    status = 409
    code = "not_indexed"


class ModelUnavailable(ClipGazeError):
    status = 503
    code = "model_unavailable"


class Busy(ClipGazeError):
    """Too much work queued: try again shortly (the API sends Retry-After)."""

    status = 503
    code = "busy"
    retry_after = 2


class NotExportable(ModelUnavailable):
    """The model cannot be served on ONNX Runtime (its tokenizer, preprocessing or towers cannot be
    reproduced or exported); with CLIP_GAZE_BACKEND=auto, torch serves it instead."""

    code = "not_exportable"
