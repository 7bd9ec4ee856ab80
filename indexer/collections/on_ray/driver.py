"""Collections on Ray Data: `clip-gaze collection add|analyze --engine ray`, beyond one machine: the
second distributor of `ingest`'s stages (the first runs them in threads of this process).

Adding. The driver expands the sources (`Collections.run`, as a local add does), merges whatever
whole shards an earlier, interrupted run left behind, and plans the add (`AddRun.plan`: failures
recorded, stored sources relabelled). The pictures still to read become a Ray Dataset:

    refs ─► read and decode (Ray tasks, a fraction of a CPU each) ─► encode (an actor pool: each
    actor loads the model once; a GPU each where the cluster has GPUs)
    ─► Parquet shards under CLIP_GAZE_HOME/ray-shards/<collection>/<run>/ ─► the driver merges each
    whole shard into SQLite (one transaction per shard) as soon as it appears, then deletes it.

Tasks and actors build what they need from `WorkerSettings`; content already embedded with the
model (the driver ships the sha256s it holds) is not encoded again. The same pictures and embeddings
land in the same store as a local add's, and the report counts the same way.

Analysing. The driver checks the request like `collection analyze` does (unknown vocabularies,
missing embeddings), puts the vocabularies' index matrices and the collection's stored embeddings
(in chunks of `local.CHUNK` pictures) in Ray's object store, scores each chunk in a Ray task with the
same kernels as the local path, and writes the rows it gets back, in order, with
`tables.write_blocks` (Parquet, CSV or JSON Lines, atomically): the scoring is spread out, the
writing is the driver's.
"""

from __future__ import annotations

import contextlib
import json
import math
import secrets
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import numpy.typing as npt

from ...models.protocol import ModelLoader
from ...pictures.sources import PictureRef
from ...schema.collections import AddReport, AddSources, AnalysisRow
from ...store.image_store import ImageStore
from ...store.reviews import Reviews
from ..local import CHUNK, Collections
from ..tables import PhraseColumns, check_output, with_verdicts, write_blocks
from .session import RETRIES, plan, ray_errors, ray_session, require_ray, retries_named
from .shards import Merger, make_shard_sink, run_lock, shards_folder
from .workers import Encoder, VocabIndex, WorkerSettings, read_pictures, score_chunk, worker_settings

if TYPE_CHECKING:  # pragma: no cover
    from ...engine import Engine


# -- adding -----------------------------------------------------------------------------------------
def ray_add(
    collections: Collections,
    name: str,
    request: AddSources,
    *,
    address: str | None = None,
    batch_size: int = 16,
    shard_rows: int | None = None,
    num_cpus: int | None = None,
    threads: int | None = None,
    loader: ModelLoader | None = None,
) -> AddReport:
    """`Collections.add` on Ray Data (see the module's docstring). Pictures recovered from an earlier
    run's shards count as added by this run, but not as encoded."""
    require_ray()
    engine = collections.engine
    run = collections.run(name, request)
    folder = shards_folder(engine.store.home, name)
    with run_lock(folder, name):
        merger = Merger(run)
        merger.merge_leftovers(folder)
        refs = run.plan()
        if refs:
            settings = worker_settings(engine, threads, loader)
            with ray_session(address, num_cpus) as rt:
                _run(rt, settings, run.images, merger, refs, folder, engine.model_key, name, batch_size,
                     shard_rows or 8 * batch_size)
    return run.finish()


def _known_shas(images: ImageStore, model_key: str) -> npt.NDArray[np.bytes_]:
    """The sha256 of every picture embedded with the model, sorted (binary search in the tasks)."""
    rows = images.db.execute("SELECT sha256 FROM image_embeddings WHERE model = ? ORDER BY sha256", [model_key])
    return np.array([r[0].encode() for r in rows], dtype="S64")


def ref_rows(refs: Sequence[PictureRef]) -> list[dict[str, Any]]:
    """The refs as the reading tasks' rows (`workers.read_pictures` rebuilds each ref from its row):
    source, kind, external id, region (a region of a picture is read as that region), metadata as JSON."""
    return [{"source": r.source, "kind": r.kind, "external_id": r.external_id, "region": r.region,
             "metadata": json.dumps(r.metadata, ensure_ascii=False) if r.metadata else None} for r in refs]


def _run(rt: Any, settings: WorkerSettings, images: ImageStore, merger: Merger, refs: Sequence[PictureRef],
         folder: Path, model_key: str, collection: str, batch_size: int, shard_rows: int) -> None:
    data = rt.data  # typed Any: Ray's annotations are narrower than what it accepts
    p = plan(rt.cluster_resources(), settings.threads)
    settings = settings.with_threads(p.threads)
    known = {"ref": rt.put(_known_shas(images, model_key))}
    run = folder / f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"
    run.mkdir(parents=True)
    rows = ref_rows(refs)
    ds = data.from_items(rows, override_num_blocks=max(1, min(4096, math.ceil(len(rows) / batch_size))))
    with retries_named():
        ds = ds.map_batches(read_pictures, batch_size=batch_size, batch_format="pyarrow",
                            fn_kwargs={"settings": settings, "known": known}, num_cpus=p.task_cpus, max_retries=RETRIES)
        ds = ds.map_batches(Encoder, batch_size=batch_size, batch_format="pyarrow", fn_constructor_kwargs={"settings": settings},
                            compute=data.ActorPoolStrategy(size=p.actors), num_cpus=p.actor_cpus, num_gpus=p.actor_gpus or None,
                            max_restarts=RETRIES, max_task_retries=RETRIES)
    sink = make_shard_sink(run, model_key, collection, shard_rows)
    finished = threading.Event()
    failure: list[BaseException] = []

    def merge_as_they_come() -> None:
        while not finished.wait(0.25):
            try:
                merger.merge_folder(run)
            except BaseException as exc:  # reported after the write; the shards stay for a rerun
                failure.append(exc)
                return

    merging = threading.Thread(target=merge_as_they_come, name="clip-gaze-ray-merge", daemon=True)
    merging.start()
    try:
        with retries_named(), ray_errors(rt, resume=True):
            ds.write_datasink(sink, ray_remote_args={"num_cpus": p.task_cpus, "max_retries": RETRIES})
    finally:
        finished.set()
        merging.join()
    if failure:
        raise failure[0]
    merger.merge_folder(run)
    with contextlib.suppress(OSError):
        run.rmdir()


# -- analysing --------------------------------------------------------------------------------------
def _vocab_indexes(engine: "Engine", names: Sequence[str]) -> list[VocabIndex]:
    versions = engine.store.versions()
    out = []
    for n in names:
        idx = engine.indexes.get(n, versions)
        out.append(VocabIndex(n, np.asarray(idx.matrix), PhraseColumns.read(engine.store, n, idx.ids)))
    return out


def ray_analyze(
    collections: Collections,
    name: str,
    vocabularies: Sequence[str] | None,
    top_k: int,
    out: str | Path,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
) -> int:
    """`collection analyze` with the scoring in Ray tasks; the driver writes the rows, in the local
    path's order, to `out` (.parquet, .csv or .jsonl). Returns the number of rows."""
    import pyarrow as pa

    require_ray()
    check_output(out)
    engine = collections.engine
    collections.analyze_blocks(name, vocabularies, top_k)  # the same refusals, before any work
    row = collections.images.get(name)
    vocabs = _vocab_indexes(engine, engine.resolve(vocabularies))
    scale = float(engine.model.logit_scale)
    with ray_session(address, num_cpus) as rt:
        refs = []
        for chunk in collections.images.vector_columns(row.id, engine.model_key, CHUNK):
            dim = chunk.matrix.shape[1]
            refs.append(rt.put(pa.table({
                "external_id": pa.array(chunk.external_id, pa.string()),
                "source": pa.array(chunk.source, pa.string()),
                "sha256": pa.array(chunk.sha256, pa.string()),
                "embedding": pa.FixedSizeListArray.from_arrays(pa.array(chunk.matrix.ravel(), pa.float32()), dim),
            })))
        if not refs:
            return write_blocks([], out, AnalysisRow)
        ctx = rt.data.DataContext.get_current()
        keep = ctx.execution_options.preserve_order
        ctx.execution_options.preserve_order = True
        try:
            with retries_named():
                ds = rt.data.from_arrow_refs(refs).map_batches(
                    score_chunk, batch_size=None, batch_format="pyarrow", num_cpus=1, max_retries=RETRIES,
                    fn_kwargs={"vocabs": {"ref": rt.put(vocabs)}, "scale": scale, "top_k": top_k,
                               "bias": engine.logit_bias})
            verdicts = Reviews(engine.store).verdicts(row.id)  # people's verdicts, set by the driver
            blocks = (with_verdicts(b, verdicts) for b in ds.iter_batches(batch_size=None, batch_format="pyarrow"))
            with ray_errors(rt):
                return write_blocks(blocks, out, AnalysisRow)
        finally:
            ctx.execution_options.preserve_order = keep


__all__ = ["ray_add", "ray_analyze", "ref_rows"]
