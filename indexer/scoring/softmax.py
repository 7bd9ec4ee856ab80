"""Relative likelihoods: an exact softmax over a whole vocabulary, and top-k. Pure numpy.

For an image embedding q and phrase embeddings X (rows, both L2-normalised):
    cosine_i      = X_i · q
    logit_i       = logit_scale * cosine_i
    probability_i = exp(logit_i) / sum_j exp(logit_j)       (over every phrase of the vocabulary)
and, for a model trained with a sigmoid loss (SigLIP: it has a logit_bias), each phrase's own
    sigmoid_i     = 1 / (1 + exp(-(logit_i + logit_bias)))  (independent of the other phrases)
"""

from __future__ import annotations

import sys
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


def sigmoids(cos: FloatArray, logit_scale: float, logit_bias: float | None) -> npt.NDArray[np.float64] | None:
    """σ(logit_scale·cos + logit_bias), elementwise, for a model with a logit bias; None without one.
    The logit is formed in float32 as open_clip forms it, the sigmoid taken in float64 (stable for any sign)."""
    if logit_bias is None:
        return None
    z = (np.asarray(cos, dtype=np.float32) * np.float32(logit_scale) + np.float32(logit_bias)).astype(np.float64)
    return np.exp(-np.logaddexp(0.0, -z))  # type: ignore[no-any-return]


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


@dataclass(frozen=True)
class RowScores:
    """The top-k of one softmax per row (one picture each): arrays of shape (rows, k), best first."""

    indices: npt.NDArray[np.int64]
    probabilities: npt.NDArray[np.float64]
    cosines: npt.NDArray[np.float64]
    logits: npt.NDArray[np.float64]
    softmax_over: int


def scores_from_cosine_rows(cos: FloatArray, logit_scale: float, top_k: int) -> RowScores:
    """`scores_from_cosines` for many pictures at once: `cos` is (pictures, phrases)."""
    cos = np.asarray(cos, dtype=np.float32)
    b, n = cos.shape
    k = max(0, min(int(top_k), n))
    logits = cos * np.float32(logit_scale)
    peak = logits.max(axis=1, keepdims=True) if n else np.zeros((b, 1), dtype=np.float32)
    # exp(logit - peak) ≤ 1 is exact to float32's 6e-8; the normalising sum is taken in float64.
    log_z = peak.astype(np.float64) + np.log(np.exp(logits - peak).sum(axis=1, keepdims=True, dtype=np.float64))
    torch = sys.modules.get("torch")  # used when something has loaded it already: its top-k is 3× numpy's
    if 0 < k < n and torch is not None:
        order = torch.topk(torch.from_numpy(logits), k, dim=1, sorted=True).indices.numpy()
    elif 0 < k < n:
        part = np.argpartition(logits, n - k, axis=1)[:, n - k :]
        order = np.take_along_axis(part, np.argsort(-np.take_along_axis(logits, part, axis=1), axis=1, kind="stable"), axis=1)
    else:
        order = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    top_logits = np.take_along_axis(logits, order, axis=1).astype(np.float64)
    return RowScores(
        indices=order.astype(np.int64),
        probabilities=np.exp(top_logits - log_z),
        cosines=np.take_along_axis(cos, order, axis=1).astype(np.float64),
        logits=top_logits,
        softmax_over=n,
    )


def scores_from_cosine_columns(cos: FloatArray, logit_scale: float, top_k: int) -> RowScores:
    """`scores_from_cosine_rows(cos.T, …)` for `cos` in the layout `kernels.cosines` returns it,
    (phrases, pictures), bit for bit: the same softmax (its float64 sum runs over the phrases in the same
    order) and the same matches (ties, which no order defines, aside), without transposing anything and
    with a faster top-k. The top-k: the k-th largest of the maxima of 32 or more groups of phrases is a
    lower bound on each picture's k-th largest logit, so only the phrases at or above it (about k + 1 a
    picture) are sorted. Falls back to `scores_from_cosine_rows` where that does not pay (few phrases,
    a large k) or cannot hold (a NaN)."""
    cos = np.asarray(cos, dtype=np.float32)
    n, b = cos.shape
    k = max(0, min(int(top_k), n))
    groups = max(32, 4 * k)
    if k == 0 or b == 0 or n < 2 * groups:
        return scores_from_cosine_rows(cos.T, logit_scale, top_k)
    logits = cos * np.float32(logit_scale)
    bounds = np.linspace(0, n, groups + 1).astype(np.int64)
    maxima = np.empty((groups, b), dtype=np.float32)
    for g in range(groups):
        np.max(logits[bounds[g] : bounds[g + 1]], axis=0, out=maxima[g])
    peak = maxima.max(axis=0)
    floor = np.partition(maxima, groups - k, axis=0)[groups - k]
    flat = np.flatnonzero(logits >= floor)  # row-major: by phrase, then picture
    rows, cols = np.divmod(flat, b)
    counts = np.bincount(cols, minlength=b)
    if counts.min() < k:  # a NaN compares false
        return scores_from_cosine_rows(cos.T, logit_scale, top_k)
    # one sort by (picture, logit descending); a stable sort keeps equal logits in phrase order
    bits = (logits.reshape(-1)[flat] + np.float32(0)).view(np.uint32)  # + 0: -0.0 sorts as 0.0
    ascending = np.where(bits >> 31 == 1, ~bits, bits | np.uint32(1 << 31))
    keys = (cols.astype(np.uint64) << np.uint64(32)) | (~ascending).astype(np.uint64)
    ranked = np.argsort(keys, kind="stable")
    starts = np.cumsum(counts) - counts
    order = rows[ranked[starts[:, None] + np.arange(k)]]  # (pictures, k), best first
    pictures = np.arange(b)[:, None]
    top_logits = logits[order, pictures].astype(np.float64)
    top_cosines = cos[order, pictures].astype(np.float64)
    np.subtract(logits, peak, out=logits)  # logits are not needed any more: exp(logit - peak) in place
    np.exp(logits, out=logits)
    log_z = peak.astype(np.float64) + np.log(logits.sum(axis=0, dtype=np.float64))
    return RowScores(
        indices=order.astype(np.int64),
        probabilities=np.exp(top_logits - log_z[:, None]),
        cosines=top_cosines,
        logits=top_logits,
        softmax_over=n,
    )
