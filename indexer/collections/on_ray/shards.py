"""Shards: what the Ray distributor's writing tasks leave on the driver's disk, and how the driver
merges them into the store.

Ray's own `write_parquet` writes each file in place (pyarrow's `write_dataset` into the final name),
so a killed writer could leave half a file: shards are written by `ShardSink` instead, whole to a
temporary dot file renamed when complete (`atomic_path`). The driver merges each whole shard into
SQLite as soon as it appears, through the add's runner (`AddRun.record`: one transaction per shard),
then deletes it. A driver killed at any moment therefore leaves whole shards and whole SQLite
transactions; the next run of the same add merges what an earlier one left (`merge_leftovers`).
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import numpy.typing as npt

from ...atomic import atomic_path
from ...errors import Conflict
from ...schema.explore import Thumbnail
from ...store.image_store import Picture
from ..ingest import AddRun
from .workers import shard_schema

SHARDS = "ray-shards"  # under CLIP_GAZE_HOME: ray-shards/<collection>/<run id>/<shard>.parquet


def shards_folder(home: Path, collection: str) -> Path:
    return Path(home) / SHARDS / collection


def _datasink_base() -> type:
    from ray.data import Datasink

    return Datasink  # type: ignore[no-any-return]


def make_shard_sink(folder: Path, model_key: str, collection: str, min_rows: int) -> Any:
    """A Datasink that writes each write task's rows as one Parquet shard, to a temporary name (a dot
    file) renamed once whole and synced: a shard is there entirely or not at all."""

    class ShardSink(_datasink_base()):  # type: ignore[misc]
        def get_name(self) -> str:
            return "ClipGazeShards"

        @property
        def min_rows_per_write(self) -> int:
            return min_rows

        def write(self, blocks: Any, ctx: Any) -> int:
            import pyarrow as pa
            import pyarrow.parquet as pq
            from ray.data.block import BlockAccessor

            tables = [BlockAccessor.for_block(b).to_arrow() for b in blocks]
            tables = [t for t in tables if t.num_rows]
            if not tables:
                return 0
            schema = shard_schema().with_metadata({"clip_gaze_model": model_key, "clip_gaze_collection": collection})
            table = pa.concat_tables([t.select(schema.names).cast(shard_schema()) for t in tables]).replace_schema_metadata(schema.metadata)
            with atomic_path(folder / f"{int(ctx.task_idx):06d}-{uuid.uuid4().hex[:12]}.parquet", hidden=True) as tmp:
                pq.write_table(table, tmp)
            return int(table.num_rows)

    return ShardSink()


class Merger:
    """Merges whole shards into the store, one transaction per shard, and deletes each once merged.
    Rows for sources already stored with an embedding for the shard's model are skipped (but for files
    the run reads again as changed: `_skips`); an embedding already stored for a sha256 is not
    replaced. Merging a shard twice changes nothing. Shards of the run's model count in its report; a
    leftover shard of another model is stored, not counted."""

    def __init__(self, run: AddRun):
        self.run = run
        self._done: dict[str, set[str]] = {}  # model key → sources stored with an embedding
        self.shards = 0
        self.embeddings = 0  # new embeddings written
        self.seconds = 0.0

    def done(self, model_key: str) -> set[str]:
        if model_key not in self._done:
            self._done[model_key] = self.run.images.embedded_sources(self.run.collection_id, model_key)
        return self._done[model_key]

    def _skips(self, source: str, done: set[str], model_key: str) -> bool:
        """A row whose source is stored is skipped, but for a file the run reads again because it
        changed (`AddRun.stale`): its first re-read row is merged (refreshed), later ones skipped."""
        if source not in done:
            return False
        run = self.run
        return model_key != run.model_key or source not in run.stale or source in run.recorded

    def merge(self, path: Path, count_encoded: bool = True) -> None:
        import pyarrow.parquet as pq

        t0 = time.perf_counter()
        try:
            table = pq.read_table(path)
        except FileNotFoundError:  # merged and deleted by a run that overlapped
            return
        model_key = (table.schema.metadata or {}).get(b"clip_gaze_model", b"").decode()
        done = self.done(model_key)
        pictures: list[Picture] = []
        vectors: dict[str, npt.NDArray[np.float32]] = {}
        encoded = 0
        thumbnails: dict[str, Thumbnail] = {}
        for r in table.to_pylist():
            encoded += bool(count_encoded and r["encoded"])
            if r["sha256"] and r.get("thumbnail"):
                thumbnails[r["sha256"]] = webp_thumbnail(r["thumbnail"])
            if self._skips(r["source"], done, model_key):
                continue
            meta = json.loads(r["metadata"]) if r["metadata"] else None
            pictures.append(Picture(r["source"], r["external_id"], meta, r["sha256"], r["width"], r["height"],
                                    r["error_code"], r["error"]))
            if r["sha256"] and r["embedding"] is not None:
                vectors[r["sha256"]] = np.frombuffer(r["embedding"], dtype="<f4").astype(np.float32, copy=False)
        images = self.run.images
        for sha in images.cached(model_key, list(vectors)) if vectors else ():
            del vectors[sha]  # already stored: kept as it is
        if model_key == self.run.model_key:
            self.run.record(pictures, vectors, encoded=encoded)
        else:
            images.record(self.run.collection_id, self.run.provenance(pictures), model_key, vectors)
        self.run.thumbnails.put(thumbnails)
        done.update(p.source for p in pictures if p.sha256)
        self.shards += 1
        self.embeddings += len(vectors)
        path.unlink(missing_ok=True)
        self.seconds += time.perf_counter() - t0

    def merge_folder(self, folder: Path, count_encoded: bool = True) -> None:
        """Every whole shard of `folder` (dot files are shards being written, or half-written by a
        writer that died: never read), oldest first."""
        if not folder.is_dir():
            return
        shards = sorted((p for p in folder.glob("*.parquet") if p.is_file()), key=lambda p: (p.stat().st_mtime, p.name))
        for path in shards:
            self.merge(path, count_encoded)

    def merge_leftovers(self, folder: Path) -> None:
        """Shards of earlier runs that were killed before merging them: merged now, not redone (they
        count as added by this run, not as encoded)."""
        for run in sorted(p for p in folder.iterdir() if p.is_dir()):
            self.merge_folder(run, count_encoded=False)
            for tmp in run.glob(".*.tmp"):  # half-written by a writer that died with its run
                tmp.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                run.rmdir()


def webp_thumbnail(data: bytes) -> Thumbnail:
    """A thumbnail a reading task made (WebP), its size read from its header."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return Thumbnail("image/webp", img.width, img.height, data)


@contextlib.contextmanager
def run_lock(folder: Path, collection: str) -> Iterator[None]:
    """One Ray add per collection at a time (the lock goes with the process, even on SIGKILL)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Conflict(f"another `collection add --engine ray` of {collection!r} is running", code="add_running") from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


__all__ = ["SHARDS", "Merger", "make_shard_sink", "run_lock", "shards_folder"]
