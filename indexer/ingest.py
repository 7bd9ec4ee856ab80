"""The embedding stage of a collection: sources → batches of pictures → embeddings → the store.

Loading (reading or fetching) and decoding run in a bounded pool of threads ahead of the encoder, so
they overlap with it; pictures are encoded in batches; each batch (its pictures, its failures and
the embeddings of new content) is one transaction, so a run killed at any moment, even by SIGKILL,
keeps every whole batch and a rerun does only what is missing. Content already embedded with the
model (in any collection, or by any request) is not encoded again.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
import numpy.typing as npt

from .embedder import ProgressFactory
from .errors import ClipGazeError
from .image_store import ImageStore, Picture
from .images import DecodedImage
from .sources import Item, PictureRef, SourceFailure

EmbedFn = Callable[[Sequence[DecodedImage]], npt.NDArray[np.float32]]
ReadFn = Callable[[PictureRef], DecodedImage]


@dataclass
class IngestReport:
    total: int = 0
    added: int = 0  # pictures stored by this run
    skipped: int = 0  # already stored with an embedding for this model
    relabelled: int = 0  # of those, how many got a new external id or metadata from the source
    failed: int = 0
    encoded: int = 0  # pictures the model encoded (new content)
    errors: list[Picture] = field(default_factory=list)  # the first few, for a summary


def ingest(
    items: Iterable[Item],
    *,
    images: ImageStore,
    collection_id: int,
    model_key: str,
    read: ReadFn,
    embed: EmbedFn,
    batch_size: int = 16,
    workers: int = 4,
    progress: ProgressFactory | None = None,
    on_batch: Callable[[IngestReport], None] | None = None,
) -> IngestReport:
    items = list(items)
    done = images.embedded_sources(collection_id, model_key)
    todo = [it for it in items if not (isinstance(it, PictureRef) and it.source in done)]
    stored = [Picture(it.source, it.external_id, it.metadata) for it in items if isinstance(it, PictureRef) and it.source in done]
    report = IngestReport(total=len(items), skipped=len(stored), relabelled=images.relabel(collection_id, stored))
    bar = progress(len(todo), "adding pictures") if progress and todo else nullcontext(None)
    window = max(workers, 2 * batch_size)
    batch: list[tuple[PictureRef, DecodedImage]] = []
    failures: list[Picture] = []

    def flush() -> None:
        embeddings: dict[str, npt.NDArray[np.float32]] = {}
        if batch:
            shas = [d.sha256 for _, d in batch]
            known = images.cached(model_key, shas)
            new = {d.sha256: d for _, d in batch if d.sha256 not in known}
            if new:
                vectors = embed(list(new.values()))
                embeddings = dict(zip(new, vectors))
                report.encoded += len(new)
        pictures = [Picture(ref.source, ref.external_id, ref.metadata, d.sha256, d.width, d.height) for ref, d in batch]
        images.record(collection_id, pictures + failures, model_key, embeddings)
        report.added += len(batch)
        report.failed += len(failures)
        report.errors.extend(failures[: max(0, 20 - len(report.errors))])
        if b is not None:
            b.update(len(batch) + len(failures))
        batch.clear()
        failures.clear()
        if on_batch is not None:
            on_batch(report)

    def fail(item: PictureRef | SourceFailure, code: str, error: str) -> None:
        failures.append(Picture(item.source, item.external_id, item.metadata, error_code=code, error=error))

    with bar as b, ThreadPoolExecutor(max_workers=workers, thread_name_prefix="clip-gaze-read") as pool:
        pending: deque[tuple[PictureRef, Future[DecodedImage]]] = deque()
        queue = iter(todo)

        def top_up() -> None:
            while len(pending) < window:
                item = next(queue, None)
                if item is None:
                    return
                if isinstance(item, SourceFailure):
                    fail(item, item.code, item.error)
                    continue
                pending.append((item, pool.submit(read, item)))

        top_up()
        while pending:
            ref, future = pending.popleft()
            try:
                batch.append((ref, future.result()))
            except ClipGazeError as exc:
                fail(ref, exc.code, exc.message)
            except Exception as exc:  # a reader's bug or a library's surprise: recorded, never fatal
                fail(ref, "read_failed", f"{ref.source}: {type(exc).__name__}: {exc}")
            top_up()
            if len(batch) >= batch_size or len(failures) >= batch_size:
                flush()
        flush()
    return report

