"""Collection maps (migration 005): the latest 2-D layout of a collection's embeddings per model, with
the collection version it was computed for and its points (Arrow IPC: sha256, x, y), and the job that
computes the next one and for which version. Losing a layout loses nothing: it is computed again."""

from __future__ import annotations

from dataclasses import dataclass
from .phrase_store import Store, timestamp


@dataclass(frozen=True)
class StoredMap:
    version: int | None  # the collection version of the layout (None: none computed yet)
    method: str | None
    size: int
    points: bytes | None  # Arrow IPC stream: sha256, x, y
    job_id: str | None  # the job computing the next layout
    job_version: int | None
    created_at: str


class MapStore:
    def __init__(self, store: Store):
        self.store = store

    def get(self, collection_id: int, model_key: str, points: bool = True) -> StoredMap | None:
        """The stored map (without `points`: its points left unread, None)."""
        row = self.store.db.execute(
            f"SELECT version, method, size, {'points' if points else 'NULL'}, job_id, job_version, created_at FROM collection_maps "
            "WHERE collection_id = ? AND model = ?", [collection_id, model_key]).fetchone()
        if row is None:
            return None
        return StoredMap(row[0], row[1], row[2], bytes(row[3]) if row[3] is not None else None, row[4], row[5], row[6])

    def claim_job(self, collection_id: int, model_key: str, version: int, job_id: str) -> str:
        """In one transaction: the job computing the layout of `version`, if one is queued or running
        for it (or a later version), else `job_id`, recorded as that job. Returns the job to follow."""
        with self.store.transaction() as db:
            row = db.execute("SELECT m.job_id, m.job_version, j.state FROM collection_maps m LEFT JOIN jobs j ON j.id = m.job_id "
                             "WHERE m.collection_id = ? AND m.model = ?", [collection_id, model_key]).fetchone()
            if row and row[0] and row[2] in ("queued", "running") and (row[1] or 0) >= version:
                return str(row[0])
            db.execute(
                "INSERT INTO collection_maps (collection_id, model, job_id, job_version, created_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (collection_id, model) DO UPDATE SET job_id = excluded.job_id, job_version = excluded.job_version",
                [collection_id, model_key, job_id, version, timestamp()])
            return job_id

    def put(self, collection_id: int, model_key: str, version: int, method: str, size: int, points: bytes) -> None:
        """A layout computed for `version`, replacing an older one (never a newer one)."""
        with self.store.transaction() as db:
            db.execute(
                "INSERT INTO collection_maps (collection_id, model, version, method, size, points, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (collection_id, model) DO UPDATE SET version = excluded.version, "
                "method = excluded.method, size = excluded.size, points = excluded.points, created_at = excluded.created_at "
                "WHERE collection_maps.version IS NULL OR collection_maps.version <= excluded.version",
                [collection_id, model_key, version, method, size, points, timestamp()])


__all__ = ["MapStore", "StoredMap"]
