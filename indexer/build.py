"""Indexing steps: bring built-in lists into the store, write index files (embedding: `embedder`)."""

from __future__ import annotations

from typing import Sequence

from .errors import NotIndexed
from .index_files import IndexFiles
from .store import Store
from .vocab import catalog


def sync_builtins(store: Store, names: Sequence[str]) -> list[str]:
    """Bring the named built-in vocabularies into the store (no model needed). Returns those that changed."""
    cat = catalog()
    return [n for n in names if n in cat.vocabularies and store.sync_builtin(cat.vocabularies[n])]


def write_indexes(store: Store, files: IndexFiles, model_key: str, names: Sequence[str], force: bool = False) -> list[str]:
    """Write the index file of each vocabulary whose file is missing, stale or damaged."""
    written = []
    for name in names:
        vocab = store.get_vocabulary(name)
        path = files.path(model_key, vocab)
        if not force and files.read(path, expected=vocab.size) is not None:
            continue
        ids, mat, missing = store.vectors(model_key, vocab.id)
        if missing:
            raise NotIndexed(f"{missing} phrases of {name!r} have no embedding for {model_key}; run `clip-gaze index --vocab {name}`")
        files.write(model_key, vocab, ids, mat)
        written.append(name)
    return written
