"""Thumbnails (migration 005): each picture's small image, keyed by the sha256 of its content like its
embeddings, so a picture shared by collections is stored once and the explorer never goes back to the
sources. Made when a picture is added (`collections.ingest`); a re-add makes those missing."""

from __future__ import annotations

from typing import Any, Sequence

from ..schema.explore import Thumbnail
from .phrase_store import Store


class ThumbnailStore:
    def __init__(self, store: Store):
        self.store = store

    @property
    def db(self) -> Any:
        return self.store.db

    def put(self, thumbnails: dict[str, Thumbnail]) -> None:
        """One transaction; a thumbnail already stored for a content is kept."""
        if thumbnails:
            with self.store.transaction() as db:
                db.conn.executemany(
                    "INSERT OR IGNORE INTO thumbnails (sha256, media_type, width, height, data) VALUES (?, ?, ?, ?, ?)",
                    [(sha, t.media_type, t.width, t.height, t.data) for sha, t in thumbnails.items()])

    def get(self, sha256: str) -> Thumbnail | None:
        row = self.db.execute("SELECT media_type, width, height, data FROM thumbnails WHERE sha256 = ?", [sha256]).fetchone()
        return Thumbnail(row[0], row[1], row[2], bytes(row[3])) if row else None

    def have(self, shas: Sequence[str]) -> set[str]:
        """Those of `shas` that have a thumbnail."""
        found: set[str] = set()
        unique = list(dict.fromkeys(shas))
        for start in range(0, len(unique), 500):
            part = unique[start:start + 500]
            rows = self.db.execute(f"SELECT sha256 FROM thumbnails WHERE sha256 IN ({', '.join('?' for _ in part)})", part)
            found.update(r[0] for r in rows)
        return found

    def missing_sources(self, collection_id: int) -> set[str]:
        """Sources of the collection stored with a picture that has no thumbnail."""
        rows = self.db.execute("SELECT i.source FROM collection_images i WHERE i.collection_id = ? AND i.sha256 IS NOT NULL "
                               "AND NOT EXISTS (SELECT 1 FROM thumbnails t WHERE t.sha256 = i.sha256)", [collection_id])
        return {r[0] for r in rows}

    def stats(self, collection_id: int) -> tuple[int, int]:
        """How many of the collection's pictures have a thumbnail, and their bytes together."""
        row = self.db.execute(
            "SELECT count(*), coalesce(sum(length(t.data)), 0) FROM thumbnails t WHERE t.sha256 IN "
            "(SELECT sha256 FROM collection_images WHERE collection_id = ? AND sha256 IS NOT NULL)", [collection_id]).fetchone()
        return int(row[0]), int(row[1])


__all__ = ["Thumbnail", "ThumbnailStore"]
