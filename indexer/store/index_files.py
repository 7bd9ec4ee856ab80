"""FAISS index files: caches derived from the store, one per model and vocabulary version.

Each is an `IndexIDMap2` over an `IndexFlatIP` (FAISS id == the phrase's row id in SQLite), written
atomically (temporary file, fsync, rename, fsync of the folder) and named by the vocabulary's id and
version, so a stale file is never read as current. A missing, damaged or wrong-sized file reads as
None and is rebuilt from SQLite: losing one loses nothing.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..atomic import atomic_path
from .phrase_store import VocabularyRow

log = logging.getLogger(__name__)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


class IndexFiles:
    def __init__(self, root: Path):
        self.root = root

    def path(self, model_key: str, vocab: VocabularyRow | tuple[str, int, int]) -> Path:
        """The file of (model, vocabulary @ version); `vocab` may be (name, id, version)."""
        name, vid, version = (vocab.name, vocab.id, vocab.version) if isinstance(vocab, VocabularyRow) else vocab
        return self.root / slug(model_key) / f"{slug(name)}.{vid}.v{version}.faiss"

    def write(self, model_key: str, vocab: VocabularyRow, ids: npt.NDArray[np.int64], mat: npt.NDArray[np.float32]) -> Path:
        """Write the FAISS index for (model, vocabulary @ version) atomically; drop older versions."""
        import faiss

        index = faiss.IndexIDMap2(faiss.IndexFlatIP(int(mat.shape[1])))
        if len(ids):
            index.add_with_ids(np.ascontiguousarray(mat, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64))
        path = self.path(model_key, vocab)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            faiss.write_index(index, str(tmp))
        for old in path.parent.glob(f"{slug(vocab.name)}.{vocab.id}.v*.faiss"):
            if old != path:
                old.unlink(missing_ok=True)
        return path

    @staticmethod
    def read(path: Path, expected: int | None = None) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]] | None:
        """(ids, vectors) from an index file, or None if it is missing, corrupt or the wrong size."""
        import faiss

        if not path.is_file():
            return None
        try:
            index: Any = faiss.read_index(str(path))  # an IndexIDMap2; it owns the flat index below
            flat: Any = faiss.downcast_index(index.index)
            ids = faiss.vector_to_array(index.id_map).astype(np.int64)
            mat = faiss.rev_swig_ptr(flat.get_xb(), index.ntotal * index.d).reshape(index.ntotal, index.d).copy()
        except Exception as exc:  # faiss raises RuntimeError on a damaged file
            log.warning("index %s is unreadable (%s); it will be rebuilt from the store", path, exc)
            return None
        if expected is not None and len(ids) != expected:
            log.warning("index %s holds %d phrases, the store %d; it will be rebuilt", path, len(ids), expected)
            return None
        return ids, mat

    def drop(self, name: str, vocabulary_id: int) -> None:
        """Every model's files of a deleted vocabulary."""
        for path in self.root.glob(f"*/{slug(name)}.{vocabulary_id}.v*.faiss"):
            path.unlink(missing_ok=True)
