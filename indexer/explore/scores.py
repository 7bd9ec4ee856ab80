"""A vocabulary read over a whole collection, as the explorer colours and counts it: each picture's
best phrase and its probability, and one phrase's probability, within the whole vocabulary (the
softmax over all its phrases of logit_scale × cosine, or of the hub-corrected logits with
`relative_to`), computed from the stored embeddings in chunks as `collection analyze` computes its
rows, and cached per collection version, vocabulary version and reference."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import numpy as np
import numpy.typing as npt

from ..scoring.hubs import Reference
from ..scoring.kernels import cosines
from ..vocabularies.index_cache import LoadedIndex
from .frame import CHUNK, Frame

KEPT = 32  # vocabulary readings kept (each: 8 bytes a picture, and the phrase columns asked for)


@dataclass
class Reading:
    """One vocabulary over one frame: `top` (index into the vocabulary's rows) and its probability, and
    each picture's log of the softmax's denominator (`log_z`), so another phrase's probability is one
    column of logits, not the whole vocabulary again."""

    top: npt.NDArray[np.int32]
    top_probability: npt.NDArray[np.float32]
    log_z: npt.NDArray[np.float64]
    phrases: dict[int, npt.NDArray[np.float32]]  # row → each picture's probability of it


def _logits(frame: Frame, idx: LoadedIndex, start: int, scale: float, ref: Reference | None) -> npt.NDArray[np.float32]:
    """(pictures, phrases) logits of a chunk of the frame, as analysis scores them."""
    cos = cosines(idx.matrix, frame.matrix[start:start + CHUNK]).T
    logits = cos * np.float32(scale)
    return ref.correct(logits) if ref is not None else logits


def _column(frame: Frame, idx: LoadedIndex, row: int, scale: float, ref: Reference | None) -> npt.NDArray[np.float32]:
    """One phrase's logit for every picture of the frame, as `_logits` scores it."""
    logits = cosines(frame.matrix, idx.matrix[row:row + 1])[:, 0] * np.float32(scale)
    return ref.correct(logits, row) if ref is not None else logits


def _log_z(logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    peak = logits.max(axis=1, keepdims=True)
    return peak.astype(np.float64) + np.log(np.exp(logits - peak).sum(axis=1, keepdims=True, dtype=np.float64))


class Readings:
    """Readings of vocabularies over frames, the latest `KEPT` kept."""

    def __init__(self) -> None:
        self._kept: OrderedDict[tuple[object, ...], Reading] = OrderedDict()
        self._lock = threading.Lock()

    def read(self, frame: Frame, idx: LoadedIndex, scale: float, relative: tuple[str, Callable[[], Reference]] | None,
             phrase: int | None = None) -> Reading:
        ref_key = relative[0] if relative else None
        key = (frame.collection_id, frame.version, frame.model_key, idx.vocab.id, idx.vocab.version, len(idx.ids), ref_key)
        with self._lock:
            found = self._kept.get(key)
            if found is not None:
                self._kept.move_to_end(key)
        ref = relative[1]() if relative else None  # cached by the hub correction per version
        if found is None:
            found = self._compute(frame, idx, scale, ref, phrase)
        if phrase is not None and phrase not in found.phrases:
            found.phrases[phrase] = self._phrase(frame, idx, scale, ref, phrase, found.log_z)
        with self._lock:
            self._kept[key] = found
            while len(self._kept) > KEPT:
                self._kept.popitem(last=False)
        return found

    @staticmethod
    def _compute(frame: Frame, idx: LoadedIndex, scale: float, ref: Reference | None, phrase: int | None = None) -> Reading:
        """Each picture's best phrase and its probability (and `phrase`'s, in the same pass)."""
        n = len(frame)
        top = np.zeros(n, np.int32)
        prob = np.zeros(n, np.float32)
        log_zs = np.zeros(n, np.float64)
        asked = np.zeros(n, np.float32) if phrase is not None else None
        for start in range(0, n, CHUNK):
            logits = _logits(frame, idx, start, scale, ref)
            best = logits.argmax(axis=1)  # the first of ties, in index order
            top[start:start + len(best)] = best
            log_z = _log_z(logits)
            log_zs[start:start + len(best)] = log_z[:, 0]
            peak = np.take_along_axis(logits, best[:, None], axis=1).astype(np.float64)
            prob[start:start + len(best)] = np.exp(peak - log_z)[:, 0]
            if asked is not None and phrase is not None:
                asked[start:start + len(best)] = np.exp(logits[:, phrase:phrase + 1].astype(np.float64) - log_z)[:, 0]
        return Reading(top, prob, log_zs, {phrase: asked} if asked is not None and phrase is not None else {})

    @staticmethod
    def _phrase(frame: Frame, idx: LoadedIndex, scale: float, ref: Reference | None, row: int,
                log_z: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
        return np.exp(_column(frame, idx, row, scale, ref).astype(np.float64) - log_z).astype(np.float32)


__all__ = ["KEPT", "Reading", "Readings"]
