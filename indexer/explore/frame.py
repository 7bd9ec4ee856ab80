"""A collection's embedded pictures at one version, in the order every explorer answer uses (the
pictures' ids: the order they were stored), with their embeddings as one matrix: read once per
collection version and model, kept until the collection changes."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ..store.image_store import CollectionRow, ImageStore

CHUNK = 8192


@dataclass
class Frame:
    collection: str
    collection_id: int
    version: int
    model_key: str
    sha256: list[str]
    external_id: list[str | None]
    source: list[str]
    metadata_text: list[str | None]
    matrix: npt.NDArray[np.float32]
    _metadata: list[dict[str, Any] | None] | None = field(default=None, repr=False)
    _positions: dict[str, int] | None = field(default=None, repr=False)
    _columns: dict[str, npt.NDArray[np.object_]] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.sha256)

    @property
    def metadata(self) -> list[dict[str, Any] | None]:
        if self._metadata is None:
            self._metadata = [json.loads(m) if m else None for m in self.metadata_text]
        return self._metadata

    def column(self, name: str) -> npt.NDArray[np.object_]:
        """A column's value for each picture as text (None where a picture has none): `external_id`,
        `source` or a metadata column; kept, so filters and facets on it compare arrays."""
        found = self._columns.get(name)
        if found is None:
            if name in ("external_id", "source", "sha256"):
                texts = [None if v is None else str(v) for v in getattr(self, name)]
            else:
                texts = [as_text(m[name]) if m is not None and name in m else None for m in self.metadata]
            found = self._columns[name] = np.array(texts, dtype=object)
        return found

    def position(self, sha256: str) -> int | None:
        """The first picture with this content."""
        if self._positions is None:
            positions: dict[str, int] = {}
            for i, sha in enumerate(self.sha256):
                positions.setdefault(sha, i)
            self._positions = positions
        return self._positions.get(sha256)


def as_text(value: Any) -> str:
    """A metadata value as the explorer compares and counts it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class Frames:
    """The frame of each collection at its current version (one kept per collection and model)."""

    def __init__(self, images: ImageStore):
        self.images = images
        self._frames: dict[tuple[str, str], Frame] = {}
        self._lock = threading.Lock()

    def get(self, row: CollectionRow, model_key: str) -> Frame:
        key = (row.name, model_key)
        with self._lock:
            found = self._frames.get(key)
            if found is not None and found.version == row.version and found.collection_id == row.id:
                return found
            found = read_frame(self.images, row, model_key)
            self._frames[key] = found
            return found


def read_frame(images: ImageStore, row: CollectionRow, model_key: str) -> Frame:
    sha: list[str] = []
    ext: list[str | None] = []
    src: list[str] = []
    meta: list[str | None] = []
    blocks: list[npt.NDArray[np.float32]] = []
    for names, rows, matrix in images._embedded_rows("i.external_id, i.source, i.sha256, i.metadata", row.id, model_key, CHUNK):
        ext.extend(r[0] for r in rows)
        src.extend(r[1] for r in rows)
        sha.extend(r[2] for r in rows)
        meta.extend(r[3] for r in rows)
        blocks.append(matrix)
    matrix = np.concatenate(blocks) if blocks else np.empty((0, 0), np.float32)
    return Frame(row.name, row.id, row.version, model_key, sha, ext, src, meta, matrix)


__all__ = ["CHUNK", "Frame", "Frames", "as_text", "read_frame"]
