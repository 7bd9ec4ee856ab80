"""Phrase embeddings for one model: from the store, else a small in-memory cache, else the model."""

from __future__ import annotations

import random
import threading
from collections import OrderedDict
from contextlib import nullcontext
from typing import Any, Callable, ContextManager, Protocol, Sequence

import numpy as np
import numpy.typing as npt

from ..errors import NotIndexed
from ..models.protocol import ClipModel
from ..store.phrase_store import Store

CHUNK = 4096  # phrases embedded and committed together: an interrupted run keeps what it finished
MEMORY_CACHE = 20_000  # ad-hoc phrases (compare) kept in memory when not stored


class Progress(Protocol):
    def update(self, n: int) -> Any: ...


ProgressFactory = Callable[[int, str], ContextManager[Progress]]


class PhraseEmbedder:
    def __init__(
        self,
        store: Store,
        model_key: str,
        model: Callable[[], ClipModel],
        progress: ProgressFactory | None = None,
        auto_embed_limit: int | None = None,
        model_name: str = "",
    ):
        self.store = store
        self.model_key = model_key
        self._model = model
        self.progress = progress
        self.auto_embed_limit = auto_embed_limit
        self._model_name = model_name or model_key
        self._memory: OrderedDict[str, npt.NDArray[np.float32]] = OrderedDict()
        self._lock = threading.Lock()

    def model(self) -> ClipModel:
        """The model that embeds (loaded on first use)."""
        return self._model()

    def lookup(self, phrases: Sequence[str], persist: bool = False) -> npt.NDArray[np.float32]:
        """Embeddings of `phrases`, in order. New ones are stored with `persist` (the library's repeated
        calls reuse them); without it nothing is written (comparisons, writes that store them
        themselves in their own transaction)."""
        if not phrases:
            return np.empty((0, 0), dtype=np.float32)
        found = self.store.cached_embeddings(self.model_key, phrases)
        with self._lock:
            for p in phrases:
                if p not in found and p in self._memory:
                    found[p] = self._memory[p]
        todo = [p for p in dict.fromkeys(phrases) if p not in found]
        if todo:
            vectors = self._model().encode_texts(todo)
            if persist:
                self.store.put_embeddings(self.model_key, todo, vectors)
            with self._lock:
                for p, v in zip(todo, vectors):
                    found[p] = v
                    self._memory[p] = v
                    self._memory.move_to_end(p)
                while len(self._memory) > MEMORY_CACHE:
                    self._memory.popitem(last=False)
        return np.stack([found[p] for p in phrases])

    def embed_vocabularies(self, names: Sequence[str], check_limit: bool = True) -> int:
        """Embed and store every phrase of these vocabularies that has no embedding for the model yet.

        Phrases are sorted by length (so batches trim well) and cut into chunks that are committed one
        by one; the chunks run in shuffled order so a progress bar's rate, and so its ETA, is honest.
        With `check_limit`, more than `auto_embed_limit` missing phrases is refused (a server never
        embeds a whole built-in list on request: that is `clip-gaze index`'s job)."""
        missing = self.store.missing_phrases(self.model_key, names)
        if not missing:
            return 0
        if check_limit and self.auto_embed_limit is not None and len(missing) > self.auto_embed_limit:
            raise NotIndexed(
                f"{', '.join(names)} not indexed for model {self._model_name} ({len(missing)} phrases to embed); "
                f"run `clip-gaze index --vocab {','.join(names)} --model {self._model_name}`"
            )
        model = self._model()
        missing.sort(key=len)
        chunks = [missing[i : i + CHUNK] for i in range(0, len(missing), CHUNK)]
        random.Random(0).shuffle(chunks)
        bar = self.progress(len(missing), "embedding phrases") if self.progress else nullcontext(None)
        with bar as b:
            for chunk in chunks:
                vectors = model.encode_texts(chunk, progress=b.update if b is not None else None)
                self.store.put_embeddings(self.model_key, chunk, vectors)
        return len(missing)
