"""`gaze()` and `probabilities()`, compatible with clip-gaze 0.3.0, over clip-gaze's engine.

Unlike 0.3.0, phrase embeddings are stored (in CLIP_GAZE_HOME) and reused: a repeated call encodes
only the image.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Sequence, Union

from PIL import Image

from indexer.engine import Engine
from indexer.models import parse_model
from indexer.scoring import scores_from_cosines
from indexer.settings import Settings
from indexer.vocab import validate_phrase
from service.images import decode_file, decode_image, to_rgb

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
            engine = Engine(key[0], spec, device=key[2], threads=settings.threads)
            _engines[key] = engine
        return engine


def load_image(image: ImageLike, max_pixels: int | None = None) -> Image.Image:
    """A PIL image, a path or encoded bytes → an RGB PIL image (limits applied to files and bytes)."""
    limit = max_pixels or Settings.from_env().max_pixels
    if isinstance(image, Image.Image):
        return to_rgb(image)
    if isinstance(image, (bytes, bytearray)):
        return decode_image(bytes(image), limit).image
    return decode_file(image, limit).image


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
    clean = [validate_phrase(p, f"prompts[{i}]") for i, p in enumerate(prompts)]
    engine = get_engine(model=model, device=None if device in (None, "cuda") else device)
    emb = engine.embed_images([load_image(image)])[0]
    matrix = engine.text_embeddings(clean, persist=True)
    s = scores_from_cosines(matrix @ emb, engine.model.logit_scale)
    probs = [0.0] * len(prompts)
    for rank, i in enumerate(s.indices):
        probs[int(i)] = float(s.probabilities[rank])
    return list(zip(prompts, probs))


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
