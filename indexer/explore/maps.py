"""A collection's map: its layout computed for the collection's version by a background job (a row of
the jobs table, kind `map`, leased like an add), stored per collection and model (`store.maps`); a
layout for an earlier version is answered, with the job, while the next is computed. When few pictures
were added since the stored layout, they are placed into it (`layout`), not laid out anew."""

from __future__ import annotations

import io
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ..store.image_store import CollectionRow, ImageStore
from ..store.maps import MapStore, StoredMap
from .frame import Frame, Frames
from .layout import MAX_PLACED, FittedModels, layout, place_by_neighbours

log = logging.getLogger("clip_gaze.maps")


@dataclass
class Layout:
    """A layout as the answers use it: per content hash (`at`: its row), x and y (rows of `coords`)."""

    version: int | None
    method: str | None
    at: dict[str, int]
    coords: npt.NDArray[np.float32]

    @classmethod
    def of(cls, version: int | None, method: str | None, shas: list[str], coords: npt.NDArray[np.float32]) -> "Layout":
        return cls(version, method, {s: i for i, s in enumerate(shas)}, np.asarray(coords, np.float32).reshape(-1, 2))

    @property
    def xy(self) -> dict[str, tuple[float, float]]:
        return {s: (float(self.coords[i, 0]), float(self.coords[i, 1])) for s, i in self.at.items()}


def encode_points(sha: list[str], xy: npt.NDArray[np.float32]) -> bytes:
    import pyarrow as pa

    table = pa.table({"sha256": pa.array(sha, pa.string()), "x": pa.array(xy[:, 0], pa.float32()),
                      "y": pa.array(xy[:, 1], pa.float32())})
    out = io.BytesIO()
    with pa.ipc.new_stream(out, table.schema) as writer:
        writer.write_table(table)
    return out.getvalue()


def decode_points(data: bytes | None) -> tuple[list[str], npt.NDArray[np.float32]]:
    if not data:
        return [], np.empty((0, 2), np.float32)
    import pyarrow as pa

    table = pa.ipc.open_stream(data).read_all()
    xy = np.stack([table.column("x").to_numpy(), table.column("y").to_numpy()], axis=1).astype(np.float32)
    return table.column("sha256").to_pylist(), xy


def compute(frame: Frame, before: Layout | None, fitted: FittedModels) -> tuple[list[str], npt.NDArray[np.float32], str]:
    """The layout of the frame's distinct contents: placed into `before` when few are new, else anew."""
    first: dict[str, int] = {}
    for i, sha in enumerate(frame.sha256):
        first.setdefault(sha, i)
    shas = list(first)
    rows = np.fromiter(first.values(), dtype=np.int64, count=len(first))
    matrix = frame.matrix[rows] if len(rows) else np.empty((0, 0), np.float32)
    old = before.at if before is not None and before.method not in (None, "trivial") else {}
    new = [i for i, s in enumerate(shas) if s not in old]
    kept = [i for i, s in enumerate(shas) if s in old]
    if old and kept and len(new) <= MAX_PLACED * len(kept):
        assert before is not None
        xy = np.empty((len(shas), 2), np.float32)
        xy[kept] = before.coords[[old[shas[i]] for i in kept]]
        base = (before.method or "umap").split("+")[0]  # type: ignore[union-attr]
        if not new:
            return shas, xy, before.method or "umap"  # type: ignore[union-attr]
        model = fitted.get(frame.collection_id, frame.model_key)
        if model is not None:
            xy[new] = model.place(matrix[new])
            return shas, xy, f"{base}+transform"
        xy[new] = place_by_neighbours(matrix[kept], xy[kept], matrix[new])
        return shas, xy, f"{base}+neighbours"
    xy, method, model = layout(matrix)
    fitted.keep(frame.collection_id, frame.model_key, frame.version, model)
    return shas, xy, method


class Maps:
    """Maps of the collections of one store, for one model; jobs run in threads of this process."""

    def __init__(self, images: ImageStore, frames: Frames, model_key: str, model_name: str):
        self.images = images
        self.store = MapStore(images.store)
        self.frames = frames
        self.model_key = model_key
        self.model_name = model_name
        self.fitted = FittedModels()
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._decoded: dict[int, Layout] = {}  # collection id → its stored layout, decoded

    def stored(self, row: CollectionRow) -> tuple[Layout | None, StoredMap | None]:
        found = self.store.get(row.id, self.model_key, points=False)
        if found is None or found.version is None:
            return None, found
        kept = self._decoded.get(row.id)
        if kept is not None and (kept.version, kept.method) == (found.version, found.method):
            return kept, found
        found = self.store.get(row.id, self.model_key)
        assert found is not None
        layout_ = Layout.of(found.version, found.method, *decode_points(found.points))
        self._decoded[row.id] = layout_
        return layout_, found

    def compute_now(self, row: CollectionRow) -> Layout:
        """The layout of the collection's current version, computed here and stored (the CLI's way)."""
        frame = self.frames.get(row, self.model_key)
        before, _ = self.stored(row)
        if before is not None and before.version == frame.version:
            return before
        shas, xy, method = compute(frame, before, self.fitted)
        self.store.put(row.id, self.model_key, frame.version, method, len(shas), encode_points(shas, xy))
        return Layout.of(frame.version, method, shas, xy)

    def ensure(self, row: CollectionRow) -> tuple[Layout | None, str | None]:
        """The stored layout, and the id of the job computing the current version's when it is not that
        one (started here when no live job computes it)."""
        before, stored = self.stored(row)
        if before is not None and before.version == row.version:
            return before, None
        from ..collections.jobs import LEASE, Leases, run_owner

        owner = run_owner()
        job_id = self.images.create_job("map", row.name, None, owner, time.time() + LEASE)
        chosen = self.store.claim_job(row.id, self.model_key, row.version, job_id)
        if chosen != job_id:
            self.images.update_job(job_id, state="done", owner=None, lease_until=None,
                                   error=None, reason=f"another job ({chosen}) computes this map")
            return before, chosen
        leases = Leases.of(self.images)
        leases.hold(owner)

        def run() -> None:
            try:
                self.images.update_job(job_id, held_by=owner, state="running", total=row.size)
                layout_ = self.compute_now(self.images.get(row.name))
                self.images.update_job(job_id, held_by=owner, state="done", done=len(layout_.at), owner=None,
                                       lease_until=None)
            except Exception as exc:  # reported by the job
                log.exception("map job %s failed", job_id)
                self.images.update_job(job_id, held_by=owner, state="failed", owner=None, lease_until=None,
                                       error=str(getattr(exc, "message", exc)))
            finally:
                leases.drop(owner)
                with self._lock:
                    self._threads.pop(job_id, None)
                self.images.store.close()

        thread = threading.Thread(target=run, name=f"clip-gaze-map-{job_id}", daemon=True)
        with self._lock:
            self._threads[job_id] = thread
        thread.start()
        return before, job_id

    def wait(self, timeout: float | None = None) -> None:
        """Until the map jobs of this process end (tests, the CLI)."""
        with self._lock:
            threads = list(self._threads.values())
        for t in threads:
            t.join(timeout)


def points_of(frame: Frame, found: Layout | None) -> tuple[list[int], Any, Any]:
    """The frame's pictures that the layout places (positions), and their x and y."""
    if found is None:
        return [], np.empty(0, np.float32), np.empty(0, np.float32)
    rows = [found.at.get(s, -1) for s in frame.sha256]
    keep = [i for i, r in enumerate(rows) if r >= 0]
    xy = found.coords[[rows[i] for i in keep]] if keep else np.empty((0, 2), np.float32)
    return keep, xy[:, 0], xy[:, 1]


__all__ = ["Layout", "Maps", "compute", "decode_points", "encode_points", "points_of"]
