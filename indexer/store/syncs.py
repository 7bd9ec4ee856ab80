"""`SyncStore`: per collection and change stream (table `collection_syncs`, migration 007), the
`end_time` of the last sync applied whole and the sync in flight (`pending`: its plan and how far it
got, JSON), so that a sync killed at any point is finished by the next one."""

from __future__ import annotations

import json
from typing import Any

from .image_store import ImageStore
from .phrase_store import timestamp


class SyncStore:
    def __init__(self, images: ImageStore):
        self.images = images

    def state(self, collection_id: int, stream: str) -> tuple[str | None, dict[str, Any] | None]:
        """The end_time of the last whole sync of `stream` into the collection, and its pending sync."""
        row = self.images.db.execute("SELECT end_time, pending FROM collection_syncs WHERE collection_id = ? AND stream = ?",
                                     [collection_id, stream]).fetchone()
        if row is None:
            return None, None
        try:
            pending = json.loads(row[1]) if row[1] else None
        except ValueError:
            pending = None  # unreadable: planned again from the stream
        return row[0], pending if isinstance(pending, dict) else None

    def set_pending(self, collection_id: int, stream: str, pending: dict[str, Any]) -> None:
        """The sync in flight (its plan, and how far it got), written before (and as) it is applied."""
        with self.images.store.transaction() as db:
            db.execute("INSERT INTO collection_syncs (collection_id, stream, pending) VALUES (?, ?, ?) "
                       "ON CONFLICT (collection_id, stream) DO UPDATE SET pending = excluded.pending",
                       [collection_id, stream, json.dumps(pending, separators=(",", ":"))])

    def manifest_sources(self, collection_id: int, manifest: str) -> set[str]:
        """The sources of the collection's pictures (stored or failed) read from `manifest`."""
        rows = self.images.db.execute("SELECT source FROM collection_images WHERE collection_id = ? AND manifest = ?",
                                      [collection_id, manifest])
        return {r[0] for r in rows}

    def finish(self, collection_id: int, stream: str, end_time: str | None, token: str | None = None) -> None:
        """The pending sync (`token`: its plan's) applied whole: the newer of its end_time and the one kept
        is kept; the pending plan goes if it is this one (a plan another run stored since stays)."""
        with self.images.store.transaction() as db:
            db.execute("INSERT INTO collection_syncs (collection_id, stream, end_time, synced_at) VALUES (?, ?, ?, ?) "
                       "ON CONFLICT (collection_id, stream) DO UPDATE SET "
                       "end_time = CASE WHEN end_time IS NULL OR excluded.end_time > end_time THEN excluded.end_time "
                       "ELSE end_time END, "
                       "pending = CASE WHEN pending IS NULL OR json_extract(pending, '$.token') IS ? THEN NULL ELSE pending END, "
                       "synced_at = excluded.synced_at", [collection_id, stream, end_time, timestamp(), token])

    def running_jobs(self, collection: str, stream: str) -> list[str]:
        """The sync jobs of `stream` into `collection` that are queued or running, as stored."""
        rows = self.images.db.execute("SELECT id FROM jobs WHERE kind = 'sync' AND collection = ? AND state IN "
                                      "('queued', 'running') AND json_extract(request, '$.changes') = ? ORDER BY created_at",
                                      [collection, stream])
        return [r[0] for r in rows]


__all__ = ["SyncStore"]
