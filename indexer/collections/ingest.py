"""Adding pictures to a collection: one runner (`AddRun`: what to read, what to record, its one
`AddReport`), run by two distributors of the same stages, read → embed → record: threads in this
process (`add_locally`, here) or Ray Data tasks and actors (`on_ray`).

The rules, the same whichever distributor runs them:
- Sources already stored with an embedding for the model are not read again: their external id and
  metadata follow the latest naming (relabelled); they count as skipped.
- Rows that name no picture (a bad row, a missing source) are recorded as failures at once.
- A source named twice is read once, as its last naming says; the report counts every naming.
- A picture is keyed by the sha256 of its bytes: content already embedded with the model (in any
  collection, or by any request) is not encoded again; an embedding already stored is never replaced.
- Each batch (its pictures, its failures and the embeddings of new content) is one transaction, so
  a run killed at any moment, even by SIGKILL, keeps every whole batch, and a rerun does only what is
  missing.

Locally, loading (reading or fetching) and decoding run in a bounded pool of threads ahead of the
encoder, so they overlap with it; pictures are encoded in batches.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from typing import Callable, Iterable, Sequence

import numpy as np
import numpy.typing as npt

from ..errors import ClipGazeError
from ..pictures.decode import DecodedImage
from ..pictures.sources import Ignored, Item, PictureRef, SourceFailure
from ..schema.collections import AddReport, PictureInfo
from ..store.image_store import ImageStore, Picture
from ..vocabularies.embedder import ProgressFactory

EmbedFn = Callable[[Sequence[DecodedImage]], npt.NDArray[np.float32]]
ReadFn = Callable[[PictureRef], DecodedImage]
MAX_ERRORS = 20  # failures listed in a report (all are stored)


def picture_info(p: Picture) -> PictureInfo:
    return PictureInfo(source=p.source, external_id=p.external_id, sha256=p.sha256, width=p.width, height=p.height,
                       metadata=p.metadata, error_code=p.error_code, error=p.error)


class AddRun:
    """One add of `items` (what the sources named) to a collection, for one model. Its `report` is
    counted as the run goes (a job shows it while it runs): `total` namings of pictures and rows,
    `added` namings of pictures stored by this run, `skipped` (already stored with an embedding for the
    model; `relabelled` of those got a new external id or metadata), `failed`, `encoded` (new content);
    `ignored` files a folder held that its rules pass over (hidden, text and metadata), outside `total`."""

    def __init__(self, images: ImageStore, collection_id: int, model_key: str, items: Iterable[Item],
                 collection: str = "", model: str = ""):
        self.images = images
        self.collection_id = collection_id
        self.model_key = model_key
        named = list(items)
        self.items = [it for it in named if not isinstance(it, Ignored)]
        self.namings = Counter(it.source for it in self.items if isinstance(it, PictureRef))
        self.report = AddReport(collection=collection, model=model or model_key, total=len(self.items), added=0,
                                skipped=0, failed=0, encoded=0, ignored=len(named) - len(self.items),
                                seconds=0.0, errors=[])
        self.recorded: set[str] = set()  # sources stored by this run
        self.started = time.perf_counter()

    def plan(self) -> list[PictureRef]:
        """The pictures to read, each source once (its last naming, at its first place); the sources
        that name none are recorded as failures, and those already stored are relabelled, now."""
        done = self.images.embedded_sources(self.collection_id, self.model_key)
        self.record([Picture(it.source, it.external_id, it.metadata, error_code=it.code, error=it.error)
                     for it in self.items if isinstance(it, SourceFailure)], {})
        stored = [Picture(it.source, it.external_id, it.metadata) for it in self.items
                  if isinstance(it, PictureRef) and it.source in done and it.source not in self.recorded]
        self.report.skipped = len(stored)
        self.report.relabelled = self.images.relabel(self.collection_id, stored)
        last = {it.source: it for it in self.items if isinstance(it, PictureRef) and it.source not in done}
        return list(last.values())

    def known(self, shas: Sequence[str]) -> dict[str, npt.NDArray[np.float32]]:
        """The stored embeddings of these contents for the model (they are not encoded again)."""
        return self.images.cached(self.model_key, shas)

    def record(self, pictures: Sequence[Picture], embeddings: dict[str, npt.NDArray[np.float32]], encoded: int = 0) -> None:
        """One batch in one transaction: pictures (stored, or failed with their reasons, replacing what
        the source gave before) and the embeddings of new content; counted by their namings."""
        report = self.report
        report.encoded += encoded
        if not pictures:
            return
        self.images.record(self.collection_id, pictures, self.model_key, embeddings)
        for p in pictures:
            n = self.namings.get(p.source, 1)
            if p.sha256:
                report.added += n
                self.recorded.add(p.source)
            else:
                report.failed += n
                if len(report.errors) < MAX_ERRORS:
                    report.errors.append(picture_info(p))

    def finish(self) -> AddReport:
        """The report, with the run's time."""
        self.report.seconds = round(time.perf_counter() - self.started, 3)
        return self.report


def add_locally(
    run: AddRun,
    *,
    read: ReadFn,
    embed: EmbedFn,
    batch_size: int = 16,
    workers: int = 4,
    progress: ProgressFactory | None = None,
    on_batch: Callable[[AddReport], None] | None = None,
) -> AddReport:
    """The local distributor: the pictures `run.plan()` names read in a pool of `workers` threads
    (`read`: load and decode, and preprocess when it can), embedded `batch_size` at a time (`embed`),
    recorded batch by batch; a picture that cannot be read is recorded as a failure."""
    todo = run.plan()
    if on_batch is not None:
        on_batch(run.report)
    bar = progress(len(todo), "adding pictures") if progress and todo else nullcontext(None)
    window = max(workers, 2 * batch_size)
    batch: list[tuple[PictureRef, DecodedImage]] = []
    failures: list[Picture] = []

    def flush() -> None:
        embeddings: dict[str, npt.NDArray[np.float32]] = {}
        if batch:
            known = run.known([d.sha256 for _, d in batch])
            new = {d.sha256: d for _, d in batch if d.sha256 not in known}
            if new:
                embeddings = dict(zip(new, embed(list(new.values()))))
        pictures = [Picture(ref.source, ref.external_id, ref.metadata, d.sha256, d.width, d.height) for ref, d in batch]
        run.record(pictures + failures, embeddings, encoded=len(embeddings))
        if b is not None:
            b.update(len(batch) + len(failures))
        batch.clear()
        failures.clear()
        if on_batch is not None:
            on_batch(run.report)

    with bar as b, ThreadPoolExecutor(max_workers=workers, thread_name_prefix="clip-gaze-read") as pool:
        pending: deque[tuple[PictureRef, Future[DecodedImage]]] = deque()
        queue = iter(todo)

        def top_up() -> None:
            while len(pending) < window:
                ref = next(queue, None)
                if ref is None:
                    return
                pending.append((ref, pool.submit(read, ref)))

        top_up()
        while pending:
            ref, future = pending.popleft()
            try:
                batch.append((ref, future.result()))
            except ClipGazeError as exc:
                failures.append(Picture(ref.source, ref.external_id, ref.metadata, error_code=exc.code, error=exc.message))
            except Exception as exc:  # a reader's bug or a library's surprise: recorded, never fatal
                failures.append(Picture(ref.source, ref.external_id, ref.metadata, error_code="read_failed",
                                        error=f"{ref.source}: {type(exc).__name__}: {exc}"))
            top_up()
            if len(batch) >= batch_size or len(failures) >= batch_size:
                flush()
        if batch or failures:
            flush()
    return run.finish()


__all__ = ["AddRun", "add_locally", "picture_info"]
