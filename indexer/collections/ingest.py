"""Adding pictures to a collection: one runner (`AddRun`: what to read, what to record, its one
`AddReport`), run by two distributors of the same stages, read → embed → record: threads in this
process (`add_locally`, here) or Ray Data tasks and actors (`on_ray`).

The rules, the same whichever distributor runs them:
- Sources already stored with an embedding for the model are not read again: their external id and
  metadata follow the latest naming (relabelled); they count as skipped. A file is read again when its
  size or modification time (ns) differs from those stored with it (it was replaced at its path): its
  picture takes the new content's hash, size and embedding (the old content's embedding stays, keyed
  by its hash); it counts as added, and as refreshed. A file stored before sizes and times were kept
  is not read again for that alone: its size and time are stored as they are now (reading every
  picture of an upgraded store again would cost as much as the first add). A changed file whose
  new read fails (deleted or unreadable since it was looked at, or no longer a picture) keeps its
  stored picture as it was, with the size and time stored with it (so the next add tries it again):
  the failure counts in the report (`failed`, `errors`), not in the collection's failures.
- Concurrent adds into one collection (threads, workers, processes) read each source once: a run
  claims in the store the sources it will read (`add_claims`, with a lease its process renews); a
  source another live run claimed is waited for, and counts as skipped once that run stored it (read
  here if that run went without storing it). Ray's distributor claims nothing.
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

import dataclasses
import os
import time
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import numpy.typing as npt

from ..errors import ClipGazeError
from ..pictures.decode import DecodedImage
from ..pictures.sources import Ignored, Item, PictureRef, SourceFailure
from ..schema.collections import AddReport, PictureInfo
from ..store.image_store import ImageStore, Picture
from ..store.thumbnails import ThumbnailStore
from ..vocabularies.embedder import ProgressFactory
from .jobs import LEASE, Leases, dead_owners

EmbedFn = Callable[[Sequence[DecodedImage]], npt.NDArray[np.float32]]
ReadFn = Callable[[PictureRef], DecodedImage]
MAX_ERRORS = 20  # failures listed in a report (all are stored)
POLL = 0.2  # seconds between looks at the sources other runs are reading
Stat = tuple[int, int]  # a file's size and modification time (ns)


def file_stat(ref: PictureRef) -> Stat | None:
    if ref.kind != "file":
        return None
    try:
        st = os.stat(ref.location)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def named_picture(ref: PictureRef) -> Picture:
    """What a naming says of a stored picture (its relabelling): external id, metadata, IIIF provenance."""
    return Picture(ref.source, ref.external_id, ref.metadata, manifest=ref.manifest, image_service=ref.image_service)


def picture_info(p: Picture) -> PictureInfo:
    return PictureInfo(source=p.source, external_id=p.external_id, sha256=p.sha256, width=p.width, height=p.height,
                       metadata=p.metadata, error_code=p.error_code, error=p.error)


class AddRun:
    """One add of `items` (what the sources named) to a collection, for one model. Its `report` is
    counted as the run goes (a job shows it while it runs): `total` namings of pictures and rows,
    `added` namings of pictures stored by this run, `skipped` (already stored with an embedding for the
    model; `relabelled` of those got a new external id or metadata), `failed`, `encoded` (new content);
    `refreshed`, of the added, files read again because they changed at their path; `ignored` files a
    folder held that its rules pass over (hidden, text and metadata), outside `total`.

    With an `owner` (`jobs.run_owner()`), the run claims the sources it reads (see the module's
    docstring). As a job's run (`carry`), each batch also writes the job's counts, carried on from the
    job's earlier runs, in its transaction."""

    def __init__(self, images: ImageStore, collection_id: int, model_key: str, items: Iterable[Item],
                 collection: str = "", model: str = "", owner: str | None = None):
        self.images = images
        self.collection_id = collection_id
        self.model_key = model_key
        self.owner = owner
        self.stats: dict[str, Stat] = {}  # of the files to read, as they were when planned
        self.stale: set[str] = set()  # stored files that changed: read again
        self.waiting: dict[str, PictureRef] = {}  # sources another live run is reading
        self.job: str | None = None
        self.job_owner: str | None = None  # the owner the job's counts are written for (None: any)
        self.carried: dict[str, int] = {}
        self.job_written: dict[str, Any] | None = None  # the job's counts as last stored by this run
        named = list(items)
        self.items = [it for it in named if not isinstance(it, Ignored)]
        self.named: dict[str, list[PictureRef]] = {}  # each source's namings, in order
        for it in self.items:
            if isinstance(it, PictureRef):
                self.named.setdefault(it.source, []).append(it)
        self.namings = Counter({source: len(refs) for source, refs in self.named.items()})
        self.report = AddReport(collection=collection, model=model or model_key, total=len(self.items), added=0,
                                skipped=0, failed=0, encoded=0, refreshed=0, ignored=len(named) - len(self.items),
                                seconds=0.0, errors=[])
        self.recorded: set[str] = set()  # sources stored by this run
        self.thumbnails = ThumbnailStore(images.store)
        self.thumb_only: set[str] = set()  # stored sources read again only for their missing thumbnail
        self.started = time.perf_counter()

    def plan(self) -> list[PictureRef]:
        """The pictures to read, each source once (its last naming, at its first place); the sources
        that name none are recorded as failures, and those already stored are relabelled, now (and
        with an owner, the sources to read are claimed: those another run reads are `waiting`)."""
        stored_stats = self.images.embedded_stats(self.collection_id, self.model_key)
        self.record([Picture(it.source, it.external_id, it.metadata, error_code=it.code, error=it.error,
                             manifest=it.manifest) for it in self.items if isinstance(it, SourceFailure)], {})
        refs = [it for it in self.items if isinstance(it, PictureRef)]
        unkept: list[tuple[str, int, int]] = []
        for ref in {ref.source: ref for ref in refs}.values():
            stat = file_stat(ref)
            if stat is None:
                continue
            self.stats[ref.source] = stat
            if ref.source in stored_stats:
                kept = stored_stats[ref.source]
                if kept == (None, None):
                    unkept.append((ref.source, *stat))
                elif kept != stat:
                    self.stale.add(ref.source)
        self.images.set_file_stats(self.collection_id, unkept)
        done = set(stored_stats) - self.stale
        stored = [named_picture(it) for it in refs if it.source in done and it.source not in self.recorded]
        self.report.skipped = len(stored)
        self.report.relabelled = self.images.relabel(self.collection_id, stored)
        todo = list({it.source: it for it in refs if it.source not in done}.values())
        thumbless = self.thumbnails.missing_sources(self.collection_id) & done
        again = list({it.source: it for it in refs if it.source in thumbless}.values())
        self.thumb_only = {r.source for r in again}
        return self._claim(todo) + again

    def keep_thumbnails(self, decoded: Sequence[DecodedImage]) -> None:
        """The thumbnails made in the read pool, stored by content (those already stored are kept)."""
        self.thumbnails.put({d.sha256: d.thumbnail for d in decoded if d.thumbnail is not None})

    def _claim(self, refs: list[PictureRef]) -> list[PictureRef]:
        """Of `refs`, those this run reads (claimed); those another run claimed wait for it, and those
        another run stored since the plan looked are skipped (checked in the claim's transaction)."""
        if self.owner is None or not refs:
            return refs
        now = time.time()
        theirs, stored = self.images.claim(self.collection_id, [r.source for r in refs], self.owner, now + LEASE, now,
                                           dead_owners(self.images.claim_owners()), self.model_key, self._fresh)
        self._skip(stored)
        self.waiting.update((r.source, r) for r in refs if r.source in theirs)
        return [r for r in refs if r.source not in theirs and r.source not in stored]

    def _fresh(self, source: str, stat: tuple[int | None, int | None]) -> bool:
        """A source stored by another run is this run's to skip, unless it is a changed file stored
        as it was before (not yet refreshed)."""
        return source not in self.stale or stat == self.stats.get(source)

    def _skip(self, sources: set[str]) -> None:
        """Sources another run stored: skipped, relabelled to this run's naming."""
        if sources:
            named = [it for source in sources for it in self.named.get(source, ())]
            self.report.skipped += len(named)
            self.report.relabelled += self.images.relabel(
                self.collection_id, [named_picture(it) for it in named])

    def settle(self) -> list[PictureRef]:
        """The waiting sources whose claim went: those stored count as skipped (relabelled to this
        run's naming); the others come back, claimed for this run to read."""
        if not self.waiting:
            return []
        live = self.images.claimed(self.collection_id, time.time())
        dead = set(dead_owners(set(live.values())))
        gone = [s for s in self.waiting if s not in live or live[s] in dead]
        if not gone:
            return []
        stored = {s for s, stat in self.images.embedded_among(self.collection_id, self.model_key, gone).items()
                  if self._fresh(s, stat)}
        self._skip(stored)
        again = [self.waiting[s] for s in gone if s not in stored]
        for s in gone:
            del self.waiting[s]
        return self._claim(again)

    @contextmanager
    def claiming(self) -> Iterator[None]:
        """While the run runs, its claims' lease is renewed; at its end, what it still claims goes."""
        if self.owner is None:
            yield
            return
        leases = Leases.of(self.images)
        leases.hold(self.owner)
        try:
            yield
        finally:
            leases.drop(self.owner)
            self.images.release_claims(self.owner)

    def carry(self, job_id: str, earlier: dict[str, Any], owner: str | None = None) -> None:
        """This run is job `job_id`'s, resumed after runs that counted `earlier` (the stored job); its
        batches write the job's counts only while `owner` holds the job."""
        self.job = job_id
        self.job_owner = owner
        self.carried = {k: int(earlier.get(k) or 0) for k in ("done", "refreshed")}

    def job_counts(self, report: AddReport | None = None) -> dict[str, Any]:
        """The job's counts: pictures added by its earlier runs are skipped by this one (they are
        stored), so they count as done, not as skipped: done + skipped + failed = total."""
        r = report or self.report
        before = self.carried.get("done", 0)
        done = min(before + r.added, max(0, r.total - r.failed))
        return {"total": r.total, "done": done, "skipped": max(0, r.skipped - before), "failed": r.failed,
                "refreshed": self.carried.get("refreshed", 0) + r.refreshed}

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
        pictures = [dataclasses.replace(p, file_size=stat[0], file_mtime_ns=stat[1])
                    if (stat := self.stats.get(p.source)) and p.sha256 else p for p in self.provenance(pictures)]
        kept: list[str] = []  # changed files whose new read failed: their stored picture stays
        for p in pictures:
            n = self.namings.get(p.source, 1)
            if p.sha256:
                report.added += n
                report.refreshed += n if p.source in self.stale else 0
                self.recorded.add(p.source)
            else:
                report.failed += n
                if len(report.errors) < MAX_ERRORS:
                    report.errors.append(picture_info(p))
                if p.source in self.stale and p.source not in self.recorded:
                    kept.append(p.source)
        job = (self.job, self.job_counts(), self.job_owner) if self.job else None
        held = self.images.record(self.collection_id, [p for p in pictures if p.source not in kept or p.sha256],
                                  self.model_key, embeddings, claims=self.owner, job=job, kept=kept)
        if job is not None:
            self.job_written = job[1] if held else None  # stored with the batch: its checkpoint need not write them

    def provenance(self, pictures: Sequence[Picture]) -> list[Picture]:
        """Pictures with the IIIF manifest and image service their source's last naming gives (whichever
        distributor read them: a Ray shard's rows carry neither)."""
        out = []
        for p in pictures:
            refs = self.named.get(p.source)
            if refs and p.manifest is None and p.image_service is None:
                p = dataclasses.replace(p, manifest=refs[-1].manifest, image_service=refs[-1].image_service)
            out.append(p)
        return out

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
    recorded batch by batch; a picture that cannot be read is recorded as a failure. Then the sources
    other runs were reading are waited for (`run.settle`), and read here if those runs went without
    them. `on_batch` sees the report after each batch (and while waiting); what it raises stops the
    run there, after a whole batch."""
    with run.claiming():
        todo = run.plan()
        if on_batch is not None:
            on_batch(run.report)
        bar = progress(len(todo), "adding pictures") if progress and todo else nullcontext(None)
        with bar as b, ThreadPoolExecutor(max_workers=workers, thread_name_prefix="clip-gaze-read") as pool:
            _read_all(run, todo, pool, read, embed, batch_size, max(workers, 2 * batch_size), b, on_batch)
            while run.waiting:
                more = run.settle()
                if more:
                    _read_all(run, more, pool, read, embed, batch_size, max(workers, 2 * batch_size), b, on_batch)
                else:
                    time.sleep(POLL)
                    if on_batch is not None:
                        on_batch(run.report)
    return run.finish()


def _read_all(run: AddRun, todo: Sequence[PictureRef], pool: ThreadPoolExecutor, read: ReadFn, embed: EmbedFn,
              batch_size: int, window: int, b: Any, on_batch: Callable[[AddReport], None] | None) -> None:
    batch: list[tuple[PictureRef, DecodedImage]] = []
    failures: list[Picture] = []

    def flush() -> None:
        embeddings: dict[str, npt.NDArray[np.float32]] = {}
        run.keep_thumbnails([d for _, d in batch])
        batch[:] = [(ref, d) for ref, d in batch if ref.source not in run.thumb_only]  # stored already: only the thumbnail was missing
        if batch:
            known = run.known([d.sha256 for _, d in batch])
            new = {d.sha256: d for _, d in batch if d.sha256 not in known}
            if new:
                embeddings = dict(zip(new, embed(list(new.values()))))
        pictures = [Picture(ref.source, ref.external_id, ref.metadata, d.sha256, d.width, d.height) for ref, d in batch]
        run.report.warnings += sum(d.warnings for _, d in batch)
        run.record(pictures + failures, embeddings, encoded=len(embeddings))
        if b is not None:
            b.update(len(batch) + len(failures))
        batch.clear()
        failures.clear()
        if on_batch is not None:
            on_batch(run.report)

    pending: deque[tuple[PictureRef, Future[DecodedImage]]] = deque()
    queue = iter(todo)

    def top_up() -> None:
        while len(pending) < window:
            ref = next(queue, None)
            if ref is None:
                return
            pending.append((ref, pool.submit(read, ref)))

    try:
        top_up()
        while pending:
            ref, future = pending.popleft()
            try:
                batch.append((ref, future.result()))
            except ClipGazeError as exc:
                if ref.source in run.thumb_only:  # stored already; its thumbnail waits for the next add
                    top_up()
                    continue
                failures.append(Picture(ref.source, ref.external_id, ref.metadata, error_code=exc.code, error=exc.message))
            except Exception as exc:  # a reader's bug or a library's surprise: recorded, never fatal
                if ref.source in run.thumb_only:
                    top_up()
                    continue
                failures.append(Picture(ref.source, ref.external_id, ref.metadata, error_code="read_failed",
                                        error=f"{ref.source}: {type(exc).__name__}: {exc}"))
            top_up()
            if len(batch) >= batch_size or len(failures) >= batch_size:
                flush()
        if batch or failures:
            flush()
    except BaseException:
        for _, future in pending:  # stopping: reads not started never start
            future.cancel()
        raise


__all__ = ["AddRun", "add_locally", "file_stat", "named_picture", "picture_info"]
