"""Pictures removed from a collection (`clip-gaze collection remove`, a change stream's Delete): by
external id, source or the IIIF manifest they were read from, in one transaction, with what hangs on
them: people's reviews of content the collection no longer holds. Thumbnails and embeddings stay,
keyed by content (another collection may hold it); a collection answers only for pictures it holds."""

from __future__ import annotations

from typing import Sequence

from .image_store import ImageStore
from .phrase_store import timestamp


def remove_pictures(images: ImageStore, collection_id: int, external_ids: Sequence[str] = (),
                    sources: Sequence[str] = (), manifests: Sequence[str] = ()) -> int:
    """The collection's pictures (stored or failed) with these external ids, sources or manifests,
    removed in one transaction (their embeddings stay, keyed by content); the collection's version
    moves on when any went (its map, scores and search indexes are computed again). The reviews of
    content the collection no longer holds go with them.
    Returns how many went."""
    keys = [("external_id", v) for v in external_ids] + [("source", v) for v in sources] + \
           [("manifest", v) for v in manifests]
    if not keys:
        return 0
    with images.store.transaction() as db:
        changes = db.conn.total_changes
        shas: set[str] = set()
        for column in ("external_id", "source", "manifest"):
            values = [v for c, v in keys if c == column]
            for start in range(0, len(values), 500):
                chunk = values[start:start + 500]
                marks = ",".join("?" * len(chunk))
                where = f"collection_id = ? AND {column} IN ({marks})"
                shas.update(r[0] for r in db.execute(f"SELECT DISTINCT sha256 FROM collection_images WHERE {where} "
                                                     "AND sha256 IS NOT NULL", [collection_id, *chunk]).fetchall())
                db.execute(f"DELETE FROM collection_images WHERE {where}", [collection_id, *chunk])
        gone = int(db.conn.total_changes - changes)
        if gone:
            db.execute("UPDATE collections SET version = version + 1, updated_at = ? WHERE id = ?",
                       [timestamp(), collection_id])
        for sha in sorted(shas):
            if db.execute("SELECT 1 FROM collection_images WHERE collection_id = ? AND sha256 = ? LIMIT 1",
                          [collection_id, sha]).fetchone() is None:
                db.execute("DELETE FROM reviews WHERE collection_id = ? AND sha256 = ?", [collection_id, sha])
        return gone


__all__ = ["remove_pictures"]
