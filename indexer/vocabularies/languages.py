"""Scoring within languages: a vocabulary's loaded index cut to its phrases in the languages a request
names (RFC 4647 basic filtering, `schema.languages.picks`), so the softmax runs over them alone."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Sequence

import numpy as np
import numpy.typing as npt

from ..errors import UnknownReference
from ..schema.languages import picks
from ..store.phrase_store import Store
from .index_cache import LoadedIndex

KEPT = 64  # masks held (vocabulary version × languages asked for)


class LanguageViews:
    def __init__(self, store: Store):
        self.store = store
        self._masks: OrderedDict[tuple[int, int, int, tuple[str, ...]], npt.NDArray[np.bool_]] = OrderedDict()
        self._lock = threading.Lock()

    def mask(self, idx: LoadedIndex, languages: Sequence[str]) -> npt.NDArray[np.bool_]:
        """Which rows of the index are phrases in `languages`; refused when none is."""
        key = (idx.vocab.id, idx.vocab.version, len(idx.ids), tuple(languages))
        with self._lock:
            found = self._masks.get(key)
        if found is not None:
            return found
        tags = self.store.phrase_languages(idx.vocab.id)
        mask = np.fromiter((picks(languages, tags.get(int(i))) for i in idx.ids), dtype=bool, count=len(idx.ids))
        if not mask.any():
            held = sorted(set(tags.values()))
            raise UnknownReference(  # well-formed, but names no phrase there (422)
                f"vocabulary {idx.vocab.name!r} has no phrase in {', '.join(languages)} (its languages: "
                f"{', '.join(held) if held else 'none given'}); ask without languages to score every phrase",
                code="no_phrases_in_language")
        with self._lock:
            self._masks[key] = mask
            while len(self._masks) > KEPT:
                self._masks.popitem(last=False)
        return mask

    def view(self, idx: LoadedIndex, languages: Sequence[str] | None) -> LoadedIndex:
        """The index of the phrases in `languages` (all of it without any)."""
        if not languages:
            return idx
        mask = self.mask(idx, languages)
        return idx if mask.all() else LoadedIndex(idx.vocab, idx.ids[mask], idx.matrix[mask])


__all__ = ["LanguageViews"]
