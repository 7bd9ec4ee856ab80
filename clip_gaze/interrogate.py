"""`interrogate()`: the prompt a generator built on CLIP would answer to, each part scored.

    >>> from clip_gaze import interrogate
    >>> found = interrogate("painting.jpg", mode="best")
    >>> found.prompt, found.cosine           # the prompt, and cosine(picture, prompt) as open_clip encodes it
    >>> [(p.phrase, p.gain) for p in found.parts]

The cosine is CLIP's reading of the picture against the prompt, not a promise of what a generator draws.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from indexer.interrogate.modes import Options
from indexer.interrogate.modes import interrogate as _interrogate

from .library import ImageLike, caption_text, get_engine

if TYPE_CHECKING:  # pragma: no cover
    from indexer.schema.interrogate import Interrogation


def interrogate(image: ImageLike, mode: str = "best", caption: str | None = None, *,
                vocabularies: Sequence[str] | str | None = None, start_vocabularies: Sequence[str] | str | None = None,
                forced: int = 8, max_steps: int | None = None, pool: int = 2048, captioner: str | None = None,
                model: str | None = None) -> "Interrogation":
    """The prompt for `image` in `mode` (best, classic, fast, negative) over `vocabularies` (default:
    clip-interrogator's lists in clip-gaze, ci-artists, ci-flavors, ci-mediums, ci-movements, ci-sites),
    from `caption`, else from a BLIP `captioner` (repo id or folder), else from the best phrases of
    `start_vocabularies` (default: the model preset's; "" or [] starts empty)."""
    engine = get_engine(model=model)
    if isinstance(vocabularies, str):
        vocabularies = [v.strip() for v in vocabularies.split(",") if v.strip()]
    if isinstance(start_vocabularies, str):
        start_vocabularies = [v.strip() for v in start_vocabularies.split(",") if v.strip()]
    text = caption_text(caption)
    options = Options(mode=mode, caption=text, vocabularies=vocabularies, start_vocabularies=start_vocabularies,
                      forced=forced, max_steps=max_steps, pool=pool, captioner=captioner)
    return _interrogate(engine, image, options)


__all__ = ["interrogate"]
