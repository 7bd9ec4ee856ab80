"""The in-memory indexes of one model, kept current with the store.

One freshness rule: an index in memory is current while the store's (vocabulary id, version) for its
name is the one it was loaded at. Otherwise it comes from its file, or is rebuilt from SQLite (and
the file written) when the file is missing, stale or damaged. Every process that serves reads sees
every write on its next request.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import numpy.typing as npt

from ..errors import NotIndexed
from ..store.index_files import IndexFiles
from ..store.phrase_store import Store, VocabularyRow

Versions = dict[str, tuple[int, int]]


@dataclass(frozen=True)
class LoadedIndex:
    vocab: VocabularyRow
    ids: npt.NDArray[np.int64]
    matrix: npt.NDArray[np.floating]


class IndexCache:
    def __init__(self, store: Store, files: IndexFiles, model_key: str, embed: Callable[[Sequence[str]], int],
                 compact: bool = False):
        self.store = store
        self.files = files
        self.model_key = model_key
        self.compact = compact
        self._embed = embed  # embeds what vocabularies lack, before an index is built
        self._indexes: dict[str, LoadedIndex] = {}
        self._lock = threading.Lock()

    @property
    def loaded(self) -> list[str]:
        return list(self._indexes)

    def _current(self, name: str, versions: Versions) -> LoadedIndex | None:
        cached = self._indexes.get(name)
        if cached is not None and versions.get(name) == (cached.vocab.id, cached.vocab.version):
            return cached
        return None

    def prepare(self, names: Sequence[str], versions: Versions) -> None:
        """Before scoring several vocabularies: embed, in one pass, what those with neither a current
        index in memory nor an index file still lack."""
        todo = [
            n for n in names
            if self._current(n, versions) is None and not self.files.path(self.model_key, (n, *versions[n])).is_file()
        ]
        if todo:
            self._embed(todo)

    def get(self, name: str, versions: Versions) -> LoadedIndex:
        """The index of a vocabulary at its current version: from memory, its file, or rebuilt."""
        found = self._current(name, versions)
        if found is not None:
            return found
        with self._lock:
            found = self._current(name, versions)
            if found is not None:
                return found
            vocab = self.store.get_vocabulary(name)
            data = self.files.read(self.files.path(self.model_key, vocab), expected=vocab.size)
            if data is None:
                data = self._rebuild(vocab)
            ids, mat = data
            loaded = LoadedIndex(vocab, ids, mat.astype(np.float16) if self.compact else mat)
            self._indexes[name] = loaded
            for gone in set(self._indexes) - set(versions):
                del self._indexes[gone]
            return loaded

    def _rebuild(self, vocab: VocabularyRow) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        ids, mat, missing = self.store.vectors(self.model_key, vocab.id)
        if missing:
            self._embed([vocab.name])
            ids, mat, missing = self.store.vectors(self.model_key, vocab.id)
        self.files.write(self.model_key, vocab, ids, mat)
        return ids, mat

    def write(self, names: Sequence[str], force: bool = False) -> list[str]:
        """`clip-gaze index`: the index file of each vocabulary whose file is missing, stale or
        damaged (every one with `force`), from the store; returns the names written."""
        written = []
        for name in names:
            vocab = self.store.get_vocabulary(name)
            path = self.files.path(self.model_key, vocab)
            if not force and self.files.read(path, expected=vocab.size) is not None:
                continue
            ids, mat, missing = self.store.vectors(self.model_key, vocab.id)
            if missing:
                raise NotIndexed(f"{missing} phrases of {name!r} have no embedding for {self.model_key}; "
                                 f"run `clip-gaze index --vocab {name}`")
            self.files.write(self.model_key, vocab, ids, mat)
            written.append(name)
        return written

    def refresh(self, name: str) -> None:
        """After a write: the new version's index file, now, so other workers load it rather than rebuild."""
        vocab = self.store.get_vocabulary(name)
        ids, mat, missing = self.store.vectors(self.model_key, vocab.id)
        if not missing:
            self.files.write(self.model_key, vocab, ids, mat)

    def drop(self, name: str) -> None:
        self._indexes.pop(name, None)
