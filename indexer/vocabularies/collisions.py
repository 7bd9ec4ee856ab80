"""Phrases a model cannot tell apart: distinct texts its tokenizer reads as the same tokens (SigLIP's
`canonicalize` lower-cases and drops punctuation, so "St. Jerome" and "st jerome" are one input; CLIP's
tokenizer lower-cases, so "Rembrandt" and "rembrandt" are). They would be two rows with one embedding,
each taking half of what is one phrase's share of the softmax; a write keeps the first and reports the
others (`WriteAnswer.collisions`)."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from ..catalog import PhraseSpec
from ..schema import Collision

Tokenize = Callable[[list[str]], Any]  # texts → (n, context) token ids (a torch tensor or a numpy array)
CHUNK = 4096


def _keys(tokenize: Tokenize, texts: Sequence[str]) -> list[bytes]:
    out: list[bytes] = []
    for start in range(0, len(texts), CHUNK):
        tokens = np.asarray(tokenize(list(texts[start : start + CHUNK])), dtype=np.int64)
        out.extend(row.tobytes() for row in tokens)
    return out


def without_collisions(tokenize: Tokenize | None, existing: Sequence[str],
                       specs: Sequence[PhraseSpec]) -> tuple[list[PhraseSpec], list[Collision]]:
    """`specs` less those that tokenize exactly as a phrase stored already (`existing`) or as an earlier
    one of them, with the collisions found (the phrase kept, the phrases dropped). A phrase whose text is
    stored already is kept (adding it again is a no-op). Without a tokenizer, nothing is dropped."""
    if tokenize is None or not specs:
        return list(specs), []
    stored = set(existing)
    fresh = [s for s in specs if s.phrase not in stored]
    if not fresh:
        return list(specs), []
    owner: dict[bytes, str] = dict(zip(_keys(tokenize, list(existing)), existing)) if existing else {}
    dropped: dict[str, list[str]] = {}
    keys = iter(_keys(tokenize, [s.phrase for s in fresh]))
    kept: list[PhraseSpec] = []
    for spec in specs:
        if spec.phrase in stored:
            kept.append(spec)
            continue
        key = next(keys)
        first = owner.setdefault(key, spec.phrase)
        if first != spec.phrase:
            dropped.setdefault(first, []).append(spec.phrase)
        else:
            kept.append(spec)
    return kept, [Collision(kept=k, dropped=d) for k, d in dropped.items()]


def model_tokenizer(model: Any) -> Tokenize | None:
    """The tokenizer of a `ClipModel` (torch's and ONNX Runtime's both have `tokenize`), or None."""
    tokenize = getattr(model, "tokenize", None)
    return tokenize if callable(tokenize) else None


__all__ = ["model_tokenizer", "without_collisions"]
