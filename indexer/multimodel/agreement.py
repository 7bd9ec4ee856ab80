"""How far two models agree on a list: Spearman's ρ over every phrase, and top-k overlap (numpy only)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def average_ranks(values: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """1-based ranks of `values`, tied values sharing the mean of their ranks (as scipy's rankdata)."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(values)]
    mean_rank = (starts + ends + 1) / 2.0  # ranks starts+1 … ends, averaged
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def spearman(a: npt.NDArray[np.floating], b: npt.NDArray[np.floating]) -> float | None:
    """Spearman's ρ: Pearson's correlation of the two average-rank vectors. None with fewer than two
    values; 0.0 where one side ranks everything alike (no order to agree with)."""
    if len(a) != len(b):
        raise ValueError("two rankings of one list have the same length")
    if len(a) < 2:
        return None
    ra, rb = average_ranks(a) - (len(a) + 1) / 2.0, average_ranks(b) - (len(b) + 1) / 2.0
    den = float(np.sqrt((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / den) if den > 0 else 0.0


def top_k(scores: npt.NDArray[np.floating], k: int) -> npt.NDArray[np.intp]:
    """Positions of the k highest scores, best first (ties: the earlier position first)."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")[:k]


def overlap(a: npt.NDArray[np.floating], b: npt.NDArray[np.floating], k: int) -> tuple[float, int, list[int]]:
    """(share of a's k best that are among b's k best, k used, those positions in a's order)."""
    k = max(0, min(k, len(a)))
    if k == 0:
        return 0.0, 0, []
    best_b = set(top_k(b, k).tolist())
    shared = [int(i) for i in top_k(a, k) if int(i) in best_b]
    return len(shared) / k, k, shared


__all__ = ["average_ranks", "overlap", "spearman", "top_k"]
