"""What the service says of itself (health, batching, what runs the model), the index report of
`clip-gaze index`, and the one error body of every API error."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from .analysis import ServedModel
from .fields import Answer


class Batching(Answer):
    batches: int
    images: int


class Backends(Answer):
    """What runs the model, e.g. `onnx (CPUExecutionProvider)` or `torch (cpu)`."""

    images: str = Field(description="What encodes pictures")
    texts: str = Field(description="What encodes phrases")
    explanations: str = Field(description="What decomposes pictures for /v1/explain (torch: loaded on first use when ONNX Runtime serves)")


class Health(Answer):
    ok: Literal[True] = True
    status: Literal["loading", "ready", "error"]
    model_loaded: bool
    model: str
    error: str | None = None
    batching: Batching
    backends: Backends | None = Field(None, description="What runs the model; null until it is loaded")
    models: list[ServedModel] = Field([], description="Every model served (CLIP_GAZE_MODELS), the default first: its "
                                                     "state and the memory it costs")


class IndexReport(Answer):
    model: str
    vocabularies: list[str] = []
    synced: list[str] = []
    embedded: int = 0
    indexes_written: list[str] = []


class ErrorBody(Answer):
    """Every error the API gives, whatever the status."""

    model_config = ConfigDict(extra="forbid")
    ok: Literal[False] = False
    status: int
    code: str = Field(description="A machine-readable code, e.g. unknown_vocabulary")
    error: str = Field(description="A readable message")


__all__ = ["Backends", "Batching", "ErrorBody", "Health", "IndexReport"]
