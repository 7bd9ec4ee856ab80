"""`gaze()` and `probabilities()`, compatible with clip-gaze 0.3.0, over clip-gaze's engine; and
`compare_models()`, one picture under several models side by side.

Unlike 0.3.0, phrase embeddings are stored (in CLIP_GAZE_HOME) and reused: a repeated call encodes
only the image.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence, Union

from PIL import Image
from pydantic import TypeAdapter, ValidationError

from indexer.engine import Engine
from indexer.models.registry import parse_model
from indexer.schema import Phrase, invalid
from indexer.settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    from indexer.schema.compare_models import CompareModelsAnswer

ImageLike = Union[Image.Image, str, Path, bytes]

_engines: dict[tuple[str, str, str], Engine] = {}
_lock = threading.Lock()


def get_engine(model: str | None = None, home: str | Path | None = None, device: str | None = None) -> Engine:
    """The shared Engine for this model and data directory (settings from the environment)."""
    settings = Settings.from_env()
    spec = parse_model(model or settings.model)
    key = (str(Path(home) if home else settings.home), spec.name, device or settings.device)
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = Engine.from_settings(settings, spec, device=key[2])
            _engines[key] = engine
        return engine


_PHRASE: TypeAdapter[str] = TypeAdapter(Phrase)


def clean_prompts(prompts: Sequence[str]) -> list[str]:
    """0.3.0 took prompts as given; surrounding white space is dropped, anything else is checked."""
    adapter = _PHRASE
    out = []
    for i, p in enumerate(prompts):
        try:
            out.append(adapter.validate_python(p.strip() if isinstance(p, str) else p))
        except ValidationError as exc:
            raise invalid(exc, (f"prompts[{i}]",)) from None
    return out


def caption_text(caption: str | None) -> str | None:
    """A caption given to `interrogate`, checked as a phrase (white space around it dropped)."""
    if caption is None:
        return None
    try:
        return _PHRASE.validate_python(caption.strip() if isinstance(caption, str) else caption)
    except ValidationError as exc:
        raise invalid(exc, ("caption",)) from None


def probabilities(
    image: ImageLike,
    prompts: Sequence[str],
    batch_size: int | None = None,
    device: str | None = None,
    model: str | None = None,
) -> list[tuple[str, float]]:
    """Each prompt with its relative likelihood: softmax over the whole list of
    logit_scale × cosine(image, prompt), in the order given (as clip-gaze 0.3.0).

    `batch_size` is accepted for compatibility; phrases are always batched.
    """
    prompts = list(prompts)
    if not prompts:
        return []
    engine = get_engine(model=model, device=None if device in (None, "cuda") else device)
    return list(zip(prompts, engine.probabilities(image, clean_prompts(prompts))))


def format_tuple(item: tuple[str, float]) -> str:
    """'by paul cézanne (82%)', as 0.3.0 printed it."""
    return f"{item[0]} ({100 * item[1]:02.0f}%)"


def gaze(
    image: ImageLike,
    prompts: Sequence[str],
    only_show_best: int | None = 5,
    format_output: bool = True,
    **kwargs: Any,
) -> list[Any]:
    """The best `only_show_best` prompts, most likely first: as strings like
    'by paul cézanne (82%)', or (prompt, probability) pairs with `format_output=False`.

    Other keyword arguments (`device`, `batch_size`, `model`) go to `probabilities`.
    """
    entries = sorted(probabilities(image, prompts, **kwargs), key=lambda e: e[1], reverse=True)
    if only_show_best:
        entries = entries[:only_show_best]
    return [format_tuple(e) for e in entries] if format_output else entries


def compare_models(
    image: ImageLike,
    models: Sequence[str] | str,
    vocabularies: Sequence[str] | None = None,
    phrases: Sequence[str] | None = None,
    top_k: int = 5,
) -> "CompareModelsAnswer":
    """`image` under each of `models` (a list, or comma-separated), over `vocabularies` (the default set) or
    exactly `phrases`: each model's reading, and for every pair Spearman's ρ over the whole list and the
    top-k overlap (the answer of POST /v1/compare-models)."""
    from indexer.multimodel.side_by_side import compare_models as side_by_side

    names = [m.strip() for m in models.split(",")] if isinstance(models, str) else [m.strip() for m in models]
    names = list(dict.fromkeys(n for n in names if n))
    source = str(image) if isinstance(image, Path) else image
    return side_by_side([(n, get_engine(model=n)) for n in names], source, vocabularies,
                        clean_prompts(phrases) if phrases is not None else None, top_k)
