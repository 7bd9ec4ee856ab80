"""Pictures removed from a collection (`clip-gaze collection remove`, a change stream's Delete): by
external id, source or the IIIF manifest they were read from, in one transaction."""

from __future__ import annotations

from typing import Sequence

from .image_store import ImageStore
from .phrase_store import timestamp


def remove_pictures(images: ImageStore, collection_id: int, external_ids: Sequence[str] = (),
                    sources: Sequence[str] = (), manifests: Sequence[str] = ()) -> int:
    """The collection's pictures (stored or failed) with these external ids, sources or manifests,
    removed in one transaction (their embeddings stay, keyed by content); the collection's version
    moves on when any went. Returns how many went."""
    keys = [("external_id", v) for v in external_ids] + [("source", v) for v in sources] + \
           [("manifest", v) for v in manifests]
    if not keys:
        return 0
    with images.store.transaction() as db:
        changes = db.conn.total_changes
        for column in ("external_id", "source", "manifest"):
            db.conn.executemany(f"DELETE FROM collection_images WHERE collection_id = ? AND {column} = ?",
                                [(collection_id, v) for c, v in keys if c == column])
        gone = int(db.conn.total_changes - changes)
        if gone:
            db.execute("UPDATE collections SET version = version + 1, updated_at = ? WHERE id = ?",
                       [timestamp(), collection_id])
        return gone


__all__ = ["remove_pictures"]
