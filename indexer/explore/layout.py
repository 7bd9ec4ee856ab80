"""2-D layouts of embeddings: UMAP (umap-learn, cosine metric) over the embeddings reduced to 50
dimensions by PCA, scaled into [0, 1]; later pictures placed into an earlier layout with the fitted
UMAP's `transform` where this process keeps it, else at the similarity-weighted mean of their nearest
laid-out neighbours."""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

PCA_DIMS = 50
NEIGHBOURS = 15  # UMAP's n_neighbors (fewer for small collections)
PLACE_K = 10  # neighbours a later picture is placed among
MAX_PLACED = 0.2
PARALLEL_FROM = 20_000  # above this share of new pictures, the layout is computed anew

XY = npt.NDArray[np.float32]


@dataclass
class Fitted:
    """A UMAP fitted by this process, to place later pictures with `transform`."""

    pca: Any  # (mean, components) or None
    umap: Any
    low: npt.NDArray[np.float64]
    span: float

    def place(self, matrix: npt.NDArray[np.float32]) -> XY:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = self.umap.transform(_reduce(matrix, self.pca))
        return np.clip((raw - self.low) / self.span, 0.0, 1.0).astype(np.float32)


def _reduce(matrix: npt.NDArray[np.float32], pca: Any) -> npt.NDArray[np.float32]:
    if pca is None:
        return matrix
    mean, components = pca
    return np.asarray((matrix - mean) @ components.T, dtype=np.float32)


def _scale(raw: npt.NDArray[np.floating]) -> tuple[XY, npt.NDArray[np.float64], float]:
    """Into [0, 1], one scale for both axes (the layout's shape kept), centred."""
    raw = np.asarray(raw, dtype=np.float64)
    low, high = raw.min(axis=0), raw.max(axis=0)
    span = float(max((high - low).max(), 1e-9))
    low = low - (span - (high - low)) / 2
    return ((raw - low) / span).astype(np.float32), low, span


def layout(matrix: npt.NDArray[np.float32], seed: int = 0) -> tuple[XY, str, Fitted | None]:
    """Each row's place in [0, 1]², the method's name, and the fitted model (None under 4 rows: they
    are placed on a circle, in order; UMAP needs neighbours)."""
    n = len(matrix)
    if n == 0:
        return np.empty((0, 2), np.float32), "trivial", None
    if n < 4:
        angles = np.arange(n) * 2 * np.pi / max(n, 1)
        xy = np.stack([0.5 + 0.35 * np.cos(angles), 0.5 + 0.35 * np.sin(angles)], axis=1) if n > 1 else np.full((1, 2), 0.5)
        return xy.astype(np.float32), "trivial", None
    pca = None
    data = np.asarray(matrix, dtype=np.float32)
    if data.shape[1] > PCA_DIMS and n > PCA_DIMS:
        mean = data.mean(axis=0)
        _, _, vt = np.linalg.svd(data[np.random.default_rng(seed).choice(n, min(n, 20_000), replace=False)] - mean,
                                 full_matrices=False)
        pca = (mean, vt[:PCA_DIMS])
        data = _reduce(data, pca)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba's and umap's own notices
        import umap  # type: ignore[import-untyped]

        # Reproducible (a seed: one thread) up to PARALLEL_FROM rows; above, numba's threads and no seed (2.4× faster
        # on 2 cores for 20,000 rows).
        seeded = n < PARALLEL_FROM
        model = umap.UMAP(n_neighbors=max(2, min(NEIGHBOURS, n - 1)), n_components=2, metric="cosine",
                          random_state=seed if seeded else None, init="spectral" if n > 32 else "random", min_dist=0.1,
                          low_memory=True, n_jobs=1 if seeded else -1)
        raw = model.fit_transform(data)
    xy, low, span = _scale(raw)
    return xy, "umap", Fitted(pca, model, low, span)


def place_by_neighbours(laid: npt.NDArray[np.float32], laid_xy: XY, new: npt.NDArray[np.float32], k: int = PLACE_K) -> XY:
    """New rows placed at the similarity-weighted mean of their `k` most similar laid-out rows."""
    if len(new) == 0 or len(laid) == 0:
        return np.full((len(new), 2), 0.5, np.float32)
    k = min(k, len(laid))
    out = np.empty((len(new), 2), np.float32)
    for start in range(0, len(new), 4096):
        sims = new[start:start + 4096] @ laid.T
        near = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        w = np.maximum(np.take_along_axis(sims, near, axis=1), 1e-6)
        out[start:start + len(near)] = (laid_xy[near] * w[:, :, None]).sum(axis=1) / w.sum(axis=1, keepdims=True)
    return out


class FittedModels:
    """The fitted UMAP of each collection and model, as this process computed it."""

    def __init__(self) -> None:
        self._fitted: dict[tuple[int, str], tuple[int, Fitted]] = {}
        self._lock = threading.Lock()

    def keep(self, collection_id: int, model_key: str, version: int, fitted: Fitted | None) -> None:
        with self._lock:
            if fitted is None:
                self._fitted.pop((collection_id, model_key), None)
            else:
                self._fitted[(collection_id, model_key)] = (version, fitted)

    def get(self, collection_id: int, model_key: str) -> Fitted | None:
        with self._lock:
            found = self._fitted.get((collection_id, model_key))
        return found[1] if found else None


__all__ = ["MAX_PLACED", "Fitted", "FittedModels", "layout", "place_by_neighbours"]
