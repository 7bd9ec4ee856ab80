"""Searching a collection: the pictures closest to a query embedding (a phrase's or a picture's), by
the cosine of their stored embeddings, through FAISS: exact up to `EXACT_LIMIT` pictures, an
approximate (IVF) index above, calibrated to its recall when built. An index is built once per
collection version and model, and kept until the collection changes."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ..schema.collections import SearchHit
from ..store.image_store import CollectionRow, ImageStore, Picture

EXACT_LIMIT = 200_000  # pictures searched exactly; an approximate index above
CHUNK = 8192  # pictures read at a time to build an index


@dataclass(frozen=True)
class SearchIndex:
    """One collection version's pictures (in index order) and their FAISS index."""

    index: Any
    pictures: list[Picture]

    def __len__(self) -> int:
        return len(self.pictures)

    @property
    def exact(self) -> bool:
        return len(self.pictures) <= EXACT_LIMIT

    def hits(self, query: npt.NDArray[np.floating], top_k: int) -> list[SearchHit]:
        k = min(top_k, len(self.pictures))
        hits: list[SearchHit] = []
        if k:
            sims, found = self.index.search(np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32), k)
            for rank, (sim, i) in enumerate(zip(sims[0], found[0]), 1):
                if i < 0:
                    continue
                p = self.pictures[int(i)]
                hits.append(SearchHit(rank=rank, cosine=float(sim), external_id=p.external_id, source=p.source,
                                      sha256=p.sha256 or "", width=p.width, height=p.height, metadata=p.metadata))
        return hits


class SearchIndexes:
    """The search index of each collection at its current version (one at a time per collection)."""

    def __init__(self, images: ImageStore):
        self.images = images
        self._indexes: dict[tuple[str, int, str], SearchIndex] = {}
        self._lock = threading.Lock()

    def get(self, row: CollectionRow, model_key: str) -> SearchIndex:
        key = (row.name, row.version, model_key)
        with self._lock:
            found = self._indexes.get(key)
            if found is None:
                pictures: list[Picture] = []
                blocks: list[npt.NDArray[np.float32]] = []
                for chunk in self.images.vectors(row.id, model_key, CHUNK):
                    pictures.extend(chunk.pictures)
                    blocks.append(chunk.matrix)
                dim = blocks[0].shape[1] if blocks else 1
                found = SearchIndex(build_search_index(np.concatenate(blocks) if blocks else np.empty((0, dim), np.float32)),
                                    pictures)
                self._indexes = {k: v for k, v in self._indexes.items() if k[0] != row.name}
                self._indexes[key] = found
            return found


def build_search_index(matrix: npt.NDArray[np.float32], exact_limit: int = EXACT_LIMIT, target_recall: float = 0.97) -> Any:
    """FAISS over L2-normalised rows, by inner product: exact (flat) up to `exact_limit` rows; above,
    an inverted-file index (√n lists) whose number of probed lists is calibrated at build time:
    doubled until the recall@10 of 64 of the collection's own vectors, against exact search, reaches
    `target_recall` (how well an approximate index does depends on how clustered the pictures are)."""
    import faiss

    n, dim = matrix.shape
    data = np.ascontiguousarray(matrix, dtype=np.float32)
    if n <= exact_limit:
        index = faiss.IndexFlatIP(dim)
        index.add(data)
        return index
    rng = np.random.default_rng(0)
    nlist = int(np.sqrt(n))
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.train(data[rng.choice(n, size=min(n, 40 * nlist), replace=False)])
    ivf.add(data)
    sample = data[rng.choice(n, size=64, replace=False)]
    exact = faiss.IndexFlatIP(dim)
    exact.add(data)
    _, truth = exact.search(sample, 11)  # each sample finds itself first: its 10 neighbours follow
    del exact
    ivf.nprobe = 8
    while True:
        _, found = ivf.search(sample, 11)
        recall = float(np.mean([len(set(t[1:]) & set(f[1:])) / 10 for t, f in zip(truth, found)]))
        if recall >= target_recall or ivf.nprobe >= nlist:
            return ivf
        ivf.nprobe = min(nlist, ivf.nprobe * 2)


__all__ = ["EXACT_LIMIT", "SearchIndex", "SearchIndexes", "build_search_index"]
