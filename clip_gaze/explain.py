"""`explain()`: where in a picture each of CLIP's preferred phrases draws its share from.

    >>> from clip_gaze import explain, MOVEMENTS
    >>> e = explain("painting.jpg", MOVEMENTS, top_k=3)
    >>> e.phrases, e.probabilities          # the best three and their shares of the list
    >>> e.maps[0]                           # rows × cols numpy array over the model's patch grid
    >>> e.overlay(0).save("best.png")       # the map over the picture, with its colour scale

A map splits the phrase's logit minus its list's probability-weighted mean logit (what moves its
share) over the model's patches: it is the model's attribution, not a region the phrase "is" in.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import numpy.typing as npt

from indexer.errors import InvalidInput
from indexer.schema import parse_name

from .library import ImageLike, clean_prompts, get_engine

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from indexer.explain.maps import ExplainedImage
    from indexer.schema.explain import Explanation


@dataclass(frozen=True)
class Explained:
    """The best phrases of one list with their maps (and, with `versus`, the contrast's)."""

    phrases: list[str]
    probabilities: list[float]
    maps: list[npt.NDArray[np.float32]]  # each rows × cols, in logits: the cells' part of relative_logits[i]
    relative_logits: list[float]  # logit − the list's probability-weighted mean logit
    unmapped: list[float]  # the part of relative_logits no patch carries
    vocabulary: str | None  # the vocabulary's name, or None for phrases given
    softmax_over: int
    box: tuple[float, float, float, float]  # the model's input in the original picture's pixels
    contrast: npt.NDArray[np.float32] | None  # logit(best) − logit(versus), split over the grid
    versus: str | None
    answer: "Explanation" = field(repr=False)  # the same explanation as POST /v1/explain answers it
    _image: "ExplainedImage" = field(repr=False)

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, cols) of the model's patch grid."""
        return self.answer.grid.rows, self.answer.grid.cols

    def overlay(self, i: int = 0) -> "Image.Image":
        """The map of phrase `i` (0 = the best) over the picture, with a colour scale."""
        if not -len(self.phrases) <= i < len(self.phrases):
            raise IndexError(f"there are {len(self.phrases)} maps")
        return self._image.overlay(self._key, i % len(self.phrases))

    def overlay_contrast(self) -> "Image.Image":
        """'best phrase rather than versus' over the picture (needs `versus`)."""
        return self._image.overlay_contrast()

    @property
    def _key(self) -> str:
        return next(iter(self._image.maps))


def explain(
    image: ImageLike,
    prompts_or_vocabulary: str | Sequence[str],
    top_k: int = 3,
    versus: str | None = None,
    *,
    model: str | None = None,
) -> Explained:
    """Maps for the `top_k` phrases CLIP prefers for `image`.

    `prompts_or_vocabulary` is a list of phrases (a softmax over exactly those, as `probabilities`
    does, e.g. `MOVEMENTS`) or the name of a vocabulary (`"movements"`). With `versus`, `contrast` maps
    "the best phrase rather than `versus`". The image may be a PIL image, a path or bytes. One forward
    pass of the image tower; phrase embeddings are stored and reused as `gaze()` does.
    """
    from indexer.explain.maps import explain_image

    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise InvalidInput(f"top_k must be a whole number ≥ 1, not {top_k!r}", code="invalid_top_k")
    engine = get_engine(model=model)
    vs = clean_prompts([versus])[0] if versus is not None else None
    if isinstance(prompts_or_vocabulary, str):
        name = parse_name(prompts_or_vocabulary)
        found = explain_image(engine, image, vocabularies=[name], top_k=top_k, versus=vs, persist=True)
        vocabulary: str | None = name
    else:
        phrases = clean_prompts(list(prompts_or_vocabulary))
        if not phrases:
            raise InvalidInput("no phrases to explain", code="invalid_phrase")
        found = explain_image(engine, image, phrases=phrases, top_k=top_k, versus=vs, persist=True)
        vocabulary = None
    key = next(iter(found.maps))
    result = found.answer.results[key]
    c = found.answer.contrast
    g = found.answer.grid.box
    return Explained(
        phrases=[m.phrase for m in result.matches],
        probabilities=[m.probability for m in result.matches],
        maps=list(found.maps[key]),
        relative_logits=[m.relative_logit for m in result.matches],
        unmapped=[m.unmapped for m in result.matches],
        vocabulary=vocabulary,
        softmax_over=result.softmax_over,
        box=(g[0], g[1], g[2], g[3]),
        contrast=found.contrast,
        versus=c.versus if c is not None else None,
        answer=found.answer,
        _image=found,
    )


class _CallableModule(types.ModuleType):
    """Importing this module makes it the package's `explain` attribute (Python sets a submodule on
    its package); calling it calls `explain`, so `clip_gaze.explain(...)` works whichever it is."""

    def __call__(self, *args: Any, **kwargs: Any) -> Explained:
        return explain(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

__all__ = ["Explained", "explain"]
