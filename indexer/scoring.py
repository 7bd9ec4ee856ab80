"""Relative likelihoods: an exact softmax over a whole vocabulary, and top-k. Pure numpy.

For an image embedding q and phrase embeddings X (rows, both L2-normalised):
    cosine_i      = X_i · q
    logit_i       = logit_scale * cosine_i
    probability_i = exp(logit_i) / sum_j exp(logit_j)       (over every phrase of the vocabulary)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating]


@dataclass(frozen=True)
class Scores:
    """The top-k of one softmax: positions into the scored matrix, best first."""

    indices: npt.NDArray[np.int64]
    probabilities: npt.NDArray[np.float64]
    cosines: npt.NDArray[np.float64]
    logits: npt.NDArray[np.float64]
    softmax_over: int


def normalise(x: FloatArray) -> npt.NDArray[np.float32]:
    """L2-normalise rows (or a single vector) in float32."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    norm[norm == 0] = 1.0
    return (x / norm).astype(np.float32, copy=False)


def scores_from_cosines(cos: FloatArray, logit_scale: float, top_k: int | None = None) -> Scores:
    """Softmax of `logit_scale * cos` over every entry; the best `top_k` (all if None)."""
    cos = np.asarray(cos, dtype=np.float32).reshape(-1)
    n = int(cos.shape[0])
    logits = cos * np.float32(logit_scale)
    peak = float(logits.max()) if n else 0.0
    log_z = peak + float(np.log(np.exp(logits - peak, dtype=np.float64).sum())) if n else 0.0
    k = n if top_k is None else max(0, min(int(top_k), n))
    if 0 < k < n:
        part = np.argpartition(logits, n - k)[n - k :]
        order = part[np.argsort(-logits[part], kind="stable")]
    else:
        order = np.argsort(-logits, kind="stable")[:k]
    top_logits = logits[order].astype(np.float64)
    return Scores(
        indices=order.astype(np.int64),
        probabilities=np.exp(top_logits - log_z),
        cosines=cos[order].astype(np.float64),
        logits=top_logits,
        softmax_over=n,
    )
