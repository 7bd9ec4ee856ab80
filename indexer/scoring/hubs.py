"""What is distinctive: a phrase's score for a picture set against how it scores on a reference collection.

Some phrases ("hubs") score high for almost every picture: in CLIP, picture embeddings share a common
direction, and a phrase that leans towards it wins whatever is shown. A plain softmax then names the
hub for every picture. With a collection as reference, each phrase's logit is compared with its own
logits over the reference pictures, so a phrase wins where it is unusually strong, not where it is
always strong. Two corrections:

- ``zscore`` (the default): ``(logit - mean_j) / spread_j``, with ``mean_j`` and ``spread_j`` the mean
  and standard deviation of phrase j's logits over the reference pictures. The spread is moderated
  (shrunk half-way towards the vocabulary's average spread, as moderated t-statistics do), so a phrase
  that scores nearly the same on every picture is not magnified by a tiny spread. The z-score is put
  back on the logit scale (multiplied by the vocabulary's average spread), so the softmax over the
  corrected logits is about as sharp as the model's own.
- ``nnn``: Nearest Neighbor Normalization (Chowdhury et al., EMNLP 2024): ``logit - alpha × mean of
  phrase j's k highest logits over the reference pictures`` (the authors' defaults: k = 256, alpha = 0.5;
  k is capped at the number of reference pictures).

The statistics are computed once per (model, vocabulary version, collection version, method) from the
collection's stored embeddings, streamed in chunks (nothing is encoded), and kept in memory.

Wiring: the engine holds one `HubCorrection` (its statistics with it). Where it computes
``cos = cosines(idx.matrix, embeddings)`` for a vocabulary's loaded index ``idx``,
``hubs.scores(idx, cos, collection, top_k)`` returns the same `Scores` as ``scores_from_cosines``
(raw cosines; corrected logits and probabilities) and a `RelativeInfo` saying which correction was
used over how many reference pictures.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import numpy.typing as npt

from ..errors import Conflict, InvalidInput, NotIndexed
from ..schema import DEFAULT_HUB_METHOD, HUB_METHODS, HubMethod, RelativeInfo
from .kernels import cosines
from .softmax import RowScores, Scores, scores_from_cosine_rows, scores_from_cosines

if TYPE_CHECKING:  # pragma: no cover
    from ..store.image_store import ImageStore
    from ..vocabularies.index_cache import LoadedIndex

Method = HubMethod
METHODS = HUB_METHODS
DEFAULT_METHOD: Method = DEFAULT_HUB_METHOD
NNN_K = 256  # the reference implementation's defaults (multimodal-interpretability/nnn, NNNRanker)
NNN_ALPHA = 0.5
CHUNK = 4096  # reference pictures scored at a time


@dataclass(frozen=True)
class Reference:
    """Per-phrase statistics of one vocabulary's logits over a collection's pictures, in index order."""

    method: str
    collection: str
    pictures: int
    offset: npt.NDArray[np.float32]  # subtracted from each phrase's logit
    scale: npt.NDArray[np.float32]  # then multiplied by this (1 for nnn)
    parameters: dict[str, float]

    def info(self) -> RelativeInfo:
        return RelativeInfo(method=self.method, collection=self.collection, reference_pictures=self.pictures,
                            parameters=dict(self.parameters))

    def correct(self, logits: npt.NDArray[np.floating], row: int | None = None) -> npt.NDArray[np.float32]:
        """Corrected logits: `logits` is (pictures, phrases) or (phrases,), in the index's row order; with
        `row`, (pictures,) logits of that one phrase."""
        offset, scale = (self.offset, self.scale) if row is None else (self.offset[row], self.scale[row])
        out = (np.asarray(logits, dtype=np.float32) - offset) * scale
        return out.astype(np.float32, copy=False)


def check_method(method: str) -> Method:
    if method not in METHODS:
        raise InvalidInput(f"unknown correction {method!r}: use {' or '.join(METHODS)}", code="invalid_input")
    return method  # type: ignore[return-value]


def compute(chunks: Any, matrix: npt.NDArray[np.floating], logit_scale: float, collection: str,
            method: str = DEFAULT_METHOD, k: int = NNN_K, alpha: float = NNN_ALPHA) -> Reference:
    """The statistics from reference picture embeddings (an iterable of (pictures, dim) blocks) against
    a vocabulary's phrase embeddings `matrix` (phrases, dim). Pure numpy."""
    method = check_method(method)
    n_phrases = int(matrix.shape[0])
    count = 0
    total = np.zeros(n_phrases, dtype=np.float64)
    squares = np.zeros(n_phrases, dtype=np.float64)
    top: npt.NDArray[np.float32] | None = None  # nnn: each phrase's k highest logits so far (rows)
    for block in chunks:
        if len(block) == 0:
            continue
        logits = cosines(matrix, block).T * np.float32(logit_scale)  # (pictures, phrases)
        count += logits.shape[0]
        if method == "zscore":
            total += logits.sum(axis=0, dtype=np.float64)
            squares += np.square(logits, dtype=np.float64).sum(axis=0)
        else:
            both = logits if top is None else np.concatenate([top, logits])
            keep = min(int(k), both.shape[0])
            top = np.partition(both, both.shape[0] - keep, axis=0)[both.shape[0] - keep:]
    if count == 0:
        raise Conflict(f"the reference collection {collection!r} holds no pictures", code="empty_collection")
    if method == "zscore":
        mean = total / count
        var = np.maximum(squares / count - mean * mean, 0.0)
        average = float(np.mean(var)) if n_phrases else 0.0
        moderated = np.sqrt((var + average) / 2.0)  # half-way towards the vocabulary's average spread
        spread = float(np.sqrt(average))
        scale = np.where(moderated > 0, spread / np.where(moderated > 0, moderated, 1.0), 1.0)
        return Reference("zscore", collection, count, mean.astype(np.float32), scale.astype(np.float32),
                         {"average_spread": round(spread, 6)})
    assert top is not None
    bias = top.astype(np.float64).mean(axis=0) * float(alpha)
    return Reference("nnn", collection, count, bias.astype(np.float32), np.ones(n_phrases, dtype=np.float32),
                     {"k": int(min(int(k), count)), "alpha": float(alpha)})


class HubCorrection:
    """The hub correction of one model over the collections of one image store: each vocabulary's
    statistics over a reference collection are computed once per (vocabulary version, collection
    version, method) from the stored embeddings and kept here, replaced when either changes."""

    def __init__(self, images: "ImageStore", model_key: str, model_name: str, logit_scale: Callable[[], float]):
        self.images = images
        self.model_key = model_key
        self.model_name = model_name
        self._logit_scale = logit_scale  # the model's, read when first needed (loading it is the engine's)
        # (vocabulary id, collection id, method, k, alpha) → ((versions), statistics)
        self._cache: dict[tuple[Any, ...], tuple[tuple[int, ...], Reference]] = {}
        self._lock = threading.Lock()

    def reference(self, idx: "LoadedIndex", collection: str, method: str = DEFAULT_METHOD,
                  k: int = NNN_K, alpha: float = NNN_ALPHA) -> Reference:
        """The statistics of the vocabulary of `idx` over the pictures of `collection` (cached per version)."""
        method = check_method(method)
        row = self.images.get(collection)  # unknown_collection
        key = (idx.vocab.id, row.id, method, int(k), float(alpha))
        versions = (idx.vocab.version, len(idx.ids), row.version)
        with self._lock:
            found = self._cache.get(key)
        if found is not None and found[0] == versions:
            return found[1]
        missing = self.images.count_unembedded(row.id, self.model_key)
        if missing:
            raise NotIndexed(
                f"{missing} pictures of {collection!r} have no embedding for model {self.model_name}; add the "
                f"collection's sources again with this model before using it as a reference"
            )
        chunks = (c.matrix for c in self.images.vectors(row.id, self.model_key, CHUNK))
        ref = compute(chunks, idx.matrix, self._logit_scale(), collection, method, k, alpha)
        with self._lock:
            self._cache[key] = (versions, ref)  # replaces an older version's statistics
        return ref

    def scores(self, idx: "LoadedIndex", cos: npt.NDArray[np.floating], collection: str, top_k: int | None,
               method: str = DEFAULT_METHOD) -> tuple[list[Scores], RelativeInfo]:
        """Per picture, the top-k of the corrected softmax: `cos` is (phrases, pictures), as `Engine.score`
        computes it (``cosines(idx.matrix, embeddings)``). Cosines stay raw; logits and probabilities are
        corrected. Positions index the rows of `idx`, as with `scores_from_cosines`."""
        ref = self.reference(idx, collection, method)
        cos = np.atleast_2d(np.asarray(cos, dtype=np.float32))
        corrected = ref.correct(cos.T * np.float32(self._logit_scale()))  # (pictures, phrases)
        out = []
        for j in range(corrected.shape[0]):
            s = scores_from_cosines(corrected[j], 1.0, top_k)
            out.append(replace(s, cosines=cos[s.indices, j].astype(np.float64)))
        return out, ref.info()

    def row_scores(self, idx: "LoadedIndex", cos_rows: npt.NDArray[np.floating], collection: str, top_k: int,
                   method: str = DEFAULT_METHOD) -> tuple[RowScores, RelativeInfo]:
        """`scores` for many pictures at once: `cos_rows` is (pictures, phrases), as collection analysis
        computes it (``cosines(idx.matrix, chunk.matrix).T``); the answer is `scores_from_cosine_rows`'."""
        ref = self.reference(idx, collection, method)
        cos_rows = np.asarray(cos_rows, dtype=np.float32)
        s = scores_from_cosine_rows(ref.correct(cos_rows * np.float32(self._logit_scale())), 1.0, top_k)
        return replace(s, cosines=np.take_along_axis(cos_rows, s.indices, axis=1).astype(np.float64)), ref.info()


__all__ = ["DEFAULT_METHOD", "METHODS", "HubCorrection", "Reference", "check_method", "compute"]
