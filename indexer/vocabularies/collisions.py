"""Phrases a model cannot tell apart: distinct texts its tokenizer reads as the same tokens (SigLIP's
`canonicalize` lower-cases and drops punctuation, so "St. Jerome" and "st jerome" are one input; CLIP's
tokenizer lower-cases, so "Rembrandt" and "rembrandt" are). They would be two rows with one embedding,
each taking half of what is one phrase's share of the softmax; a write keeps the first and reports the
others (`WriteAnswer.collisions`)."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from ..catalog import PhraseSpec, split_key
from ..schema import Collision
from ..store.phrase_store import spec_key

Tokenize = Callable[[list[str]], Any]  # texts → (n, context) token ids (a torch tensor or a numpy array)
CHUNK = 4096


def _keys(tokenize: Tokenize, texts: Sequence[str]) -> list[bytes]:
    out: list[bytes] = []
    for start in range(0, len(texts), CHUNK):
        tokens = np.asarray(tokenize(list(texts[start : start + CHUNK])), dtype=np.int64)
        out.extend(row.tobytes() for row in tokens)
    return out


def without_collisions(tokenize: Tokenize | None, existing: Sequence[str], specs: Sequence[PhraseSpec],
                       model_key: str = "") -> tuple[list[PhraseSpec], list[Collision]]:
    """`specs` less those that tokenize exactly as a phrase stored already (`existing`) or as an earlier
    one of them, with the collisions found (the phrase kept, the phrases dropped). A phrase whose text is
    stored already is kept (adding it again is a no-op). Without a tokenizer, nothing is dropped.

    For a model that reads languages (`model_key`, NLLB-CLIP), phrases and `existing` are keys
    (`spec_key`: the text and its language), tokenized with the language's code: the same words in two
    languages are two inputs, not a collision."""
    if tokenize is None or not specs:
        return list(specs), []
    stored = set(existing)
    keyed = [(spec_key(model_key, s), s) for s in specs]
    fresh = [k for k, s in keyed if k not in stored]
    if not fresh:
        return list(specs), []
    owner: dict[bytes, str] = dict(zip(_keys(tokenize, list(existing)), existing)) if existing else {}
    dropped: dict[str, list[str]] = {}
    tokens = iter(_keys(tokenize, fresh))
    kept: list[PhraseSpec] = []
    for key, spec in keyed:
        if key in stored:
            kept.append(spec)
            continue
        first = owner.setdefault(next(tokens), key)
        if first != key:
            dropped.setdefault(first, []).append(key)
        else:
            kept.append(spec)
    return kept, [Collision(kept=split_key(k)[0], dropped=[split_key(d)[0] for d in ds]) for k, ds in dropped.items()]


def model_tokenizer(model: Any) -> Tokenize | None:
    """The tokenizer of a `ClipModel` (torch's and ONNX Runtime's both have `tokenize`), or None."""
    tokenize = getattr(model, "tokenize", None)
    return tokenize if callable(tokenize) else None


__all__ = ["model_tokenizer", "without_collisions"]
