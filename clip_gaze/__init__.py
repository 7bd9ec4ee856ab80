"""clip-gaze: see images the way CLIP sees them.

    >>> from clip_gaze import gaze, ARTISTS_BY_TRAINING_PREVALENCE
    >>> gaze("painting.jpg", ARTISTS_BY_TRAINING_PREVALENCE)
    ['by paul cézanne (82%)', ...]

Each score is a *relative likelihood*: the softmax, over the whole list given, of the model's
logit_scale × cosine(image, phrase). It changes when phrases are added to or removed from the list;
it is not a measure of how accurate a phrase is.

The list constants hold the phrases exactly as clip-gaze 0.3.0 gave them to CLIP
("by paul cézanne", "tonalism movement", "on canvas"); they load on first use.
"""

from __future__ import annotations

from typing import Any

from indexer import __version__ as __version__  # one version for the whole package
from indexer.errors import (  # what gaze(), probabilities() and explain() raise (pure Python: imports nothing heavy)
    Busy,
    ClipGazeError,
    Conflict,
    ImageTooLarge,
    InvalidImage,
    InvalidInput,
    ModelUnavailable,
    NotExportable,
    NotFound,
    NotIndexed,
    ReadOnly,
    UnknownReference,
)

ERRORS = (ClipGazeError, InvalidInput, InvalidImage, ImageTooLarge, NotFound, UnknownReference, ReadOnly, Conflict,
          NotIndexed, ModelUnavailable, Busy, NotExportable)

_CONSTANTS = {
    "ARTISTS_BY_NAME": "artists",
    "ARTISTS_BY_TRAINING_PREVALENCE": "artists-prevalence",
    "MOVEMENTS": "movements",
    "PAINTING_MATERIALS": "painting-materials",
    "SCULPTURE_MATERIALS": "sculpture-materials",
    "SCULTPURE_MATERIALS": "sculpture-materials",  # 0.3.0's spelling, kept so old code runs
    "PRINTING_TECHNIQUES": "printing-techniques",
    "SURFACES": "surfaces",
    "TOOLS": "tools",
    "QUALITIES": "qualities",
    "SITES": "sites",
}

__all__ = ["gaze", "probabilities", "explain", "interrogate", "compare_models", "Client", "ApiError", *[e.__name__ for e in ERRORS],
           *[c for c in _CONSTANTS if c != "SCULTPURE_MATERIALS"]]


def __getattr__(name: str) -> Any:
    if name in _CONSTANTS:
        from indexer.catalog import catalog

        value = [p.phrase for p in catalog().get(_CONSTANTS[name]).phrases()]
        globals()[name] = value
        return value
    if name in ("gaze", "probabilities", "get_engine", "compare_models"):
        from . import library

        return getattr(library, name)
    if name == "explain":  # the function, not its module (clip_gaze/explain.py; that module is callable too)
        from .explain import explain

        globals()["explain"] = explain
        return explain
    if name == "interrogate":
        from .interrogate import interrogate

        globals()["interrogate"] = interrogate
        return interrogate
    if name in ("Client", "ApiError"):
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module 'clip_gaze' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
