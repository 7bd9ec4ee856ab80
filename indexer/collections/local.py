"""Collections: a museum's pictures embedded once, then scored against any vocabulary and searched.

`Collections(engine)` is made beside the engine by the faces (the CLI, the service), which hand it
the engine it works through; it takes and returns the models of `schema.collections`. Adding runs
`ingest`'s stages in this process (on Ray: `on_ray`).

Scoring reads stored embeddings in chunks (nothing is encoded again; a vocabulary added next year
re-scores the whole collection in seconds) and streams its rows, so memory stays bounded. Search
runs through FAISS over the collection's embeddings (`search`): exact up to `search.EXACT_LIMIT`
pictures, an approximate (IVF) index above, with the recall measured in bench/collection.py.
"""

from __future__ import annotations

import dataclasses
import threading
from queue import Full, Queue
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence, TypeVar

import numpy as np
import numpy.typing as npt


from ..errors import ClipGazeError, Conflict, InvalidInput, NotIndexed, UnknownReference
from ..pictures.decode import DecodedImage
from ..pictures.thumbnails import fetch_iiif_thumbnail, make_thumbnail
from ..schema.explore import Thumbnail
from ..pictures.sources import PictureRef, expand
from ..schema.collections import (
    AddReport,
    AddSources,
    AnalysisRow,
    CollectionInfo,
    CollectionView,
    CreateCollection,
    JobAnswer,
    JobInfo,
    SearchAnswer,
    SearchHit,
    SearchTerms,
)
from ..scoring.kernels import cosines
from ..scoring.softmax import scores_from_cosine_columns, scores_from_cosines
from ..store.image_store import CollectionRow, VectorColumns
from ..schema.sync import RemovalAnswer, RemovePictures, SyncChanges, SyncReport
from ..store.picture_removal import remove_pictures
from ..store.reviews import Reviews
from ..store.syncs import SyncStore
from ..vocabularies.index_cache import LoadedIndex
from ..pictures.change_stream import admitted, fetcher
from .feeds import SyncRun
from .ingest import AddRun, add_locally, picture_info
from .callbacks import CallbackPolicy, Deliveries
from .jobs import Jobs, run_owner
from .search import SearchIndexes
from .tables import PhraseColumns, analysis_block

if TYPE_CHECKING:  # pragma: no cover
    from ..engine import Engine
    from ..pictures.reader import ImageSource
    from ..vocabularies.embedder import ProgressFactory

T = TypeVar("T")

CHUNK = 8192  # pictures scored at a time
SYNC_INTERRUPTED = "the server stopped while it ran; sync again to finish"


class Collections:
    """The collections of the engine's store, for the engine's model."""

    def __init__(self, engine: "Engine", resume_jobs: bool = True, webhook_secret: str = ""):
        self.engine = engine
        self.images = engine.images
        self._search = SearchIndexes(self.images)
        self.jobs = Jobs(self.images, lambda name, request: self.run(name, request, claim=True),
                         lambda run, on_batch: add_locally(run, read=self.read_prepared, embed=self.engine.encode_pictures,
                                                           on_batch=on_batch), resume=resume_jobs)
        self.jobs.register("sync", SyncChanges, lambda name, request: self.sync_run(name, request),
                           lambda run, checkpoint: run.execute(checkpoint), interrupted=SYNC_INTERRUPTED)
        # job callbacks (`callbacks`): checked when a job is asked for, delivered by this process's thread
        self.deliveries = Deliveries.of(self.images)
        self.deliveries.configure(CallbackPolicy(engine.limits.fetch, webhook_secret),
                                  lambda job_id: JobAnswer(job=self.job(job_id)).model_dump_json().encode())
        self.jobs.check_callback, self.jobs.ended = self.deliveries.check, self.deliveries.wake

    # -- managing ---------------------------------------------------------------------------------
    @staticmethod
    def _info(row: CollectionRow) -> CollectionInfo:
        return CollectionInfo(name=row.name, description=row.description, size=row.size, failed=row.failed,
                              version=row.version, created_at=row.created_at, updated_at=row.updated_at,
                              private=row.private)

    def create(self, request: CreateCollection) -> CollectionInfo:
        return self._info(self.images.create(request.name, request.description, request.private))

    def all(self) -> list[CollectionInfo]:
        return [self._info(r) for r in self.images.all()]

    def get(self, name: str) -> CollectionInfo:
        return self._info(self.images.get(name))

    def view(self, name: str, errors: bool = False, offset: int = 0, limit: int = 100) -> CollectionView:
        row = self.images.get(name)
        pictures = self.images.pictures(row.id, errors=errors, offset=offset, limit=limit + 1)
        return CollectionView(collection=self._info(row), pictures=[picture_info(p) for p in pictures[:limit]],
                              next_offset=offset + limit if len(pictures) > limit else None)

    def delete(self, name: str) -> CollectionInfo:
        return self._info(self.images.delete(name))

    def remove(self, name: str, request: RemovePictures) -> RemovalAnswer:
        """The pictures of `name` with the request's external ids or sources, removed (`picture_removal`)."""
        row = self.images.get(name)
        gone = remove_pictures(self.images, row.id, external_ids=request.external_ids, sources=request.sources)
        return RemovalAnswer(collection=self.get(name), removed=gone)

    # -- adding -----------------------------------------------------------------------------------
    def read(self, ref: PictureRef) -> DecodedImage:
        """A picture's bytes (file, URL or IIIF at the model's size), decoded within the limits."""
        return self.engine.reader.read_ref(ref)

    def read_prepared(self, ref: PictureRef) -> DecodedImage:
        """`read`, and the model's preprocessing too: in the read pool, so the encoder never waits for it."""
        decoded = self.read(ref)
        return dataclasses.replace(decoded, pixels=self.engine.model.image_array(decoded.image),
                                   thumbnail=self.thumbnail(ref, decoded))

    def thumbnail(self, ref: PictureRef, decoded: DecodedImage) -> Thumbnail:
        """The picture's thumbnail: a IIIF picture's asked of its Image service at that size (made here
        from the decoded picture when the service cannot size it), any other made from the decoded picture."""
        if ref.kind == "iiif" and ref.region is None:
            try:
                return fetch_iiif_thumbnail(ref.location, self.engine.limits.fetch)
            except ClipGazeError:
                pass
        return make_thumbnail(decoded.image)

    def run(self, name: str, request: AddSources, claim: bool = False) -> AddRun:
        """An add of the request's sources to collection `name` (expanded now), for the engine's model;
        with `claim`, one that claims what it reads (concurrent adds read each source once)."""
        row = self.images.get(name)
        _ = self.engine.model  # a model that cannot load stops here, not as a failure recorded per picture
        policy = self.engine.limits.fetch
        items = (item for source in request.sources for item in expand(source, policy))
        return AddRun(self.images, row.id, self.engine.model_key, items, collection=name, model=self.engine.spec.name,
                      owner=run_owner() if claim else None)

    def add(
        self,
        name: str,
        request: AddSources,
        progress: "ProgressFactory | None" = None,
        on_batch: Callable[[AddReport], None] | None = None,
        batch_size: int = 16,
    ) -> AddReport:
        return add_locally(self.run(name, request, claim=True), read=self.read_prepared, embed=self.engine.encode_pictures,
                           batch_size=batch_size, progress=progress, on_batch=on_batch)

    def start_add(self, name: str, request: AddSources) -> JobInfo:
        """`add` as a background job of this process (`jobs`: leased, stopped at a checkpoint, resumed);
        its state is in the store, so any worker answers for it."""
        self.images.get(name)
        job_id = self.jobs.start(name, request, callback_url=request.callback_url)
        if request.callback_url is not None:
            self.deliveries.start()
        return self.job(job_id)

    # -- change feeds -----------------------------------------------------------------------------
    def sync_run(self, name: str, request: SyncChanges, after_step: Callable[[int], None] | None = None) -> SyncRun:
        """A sync of collection `name` with the request's IIIF Change Discovery stream (`feeds`)."""
        row = self.images.get(name)
        _ = self.engine.model  # a model that cannot load stops here
        policy = self.engine.limits.fetch

        def add(items: list[Any], again: set[str], on_batch: Callable[[AddReport], None] | None) -> AddReport:
            run = AddRun(self.images, row.id, self.engine.model_key, items, collection=name, model=self.engine.spec.name,
                         owner=run_owner())
            run.stale |= again  # an Update: its stored pictures read again
            return add_locally(run, read=self.read_prepared, embed=self.engine.encode_pictures, on_batch=on_batch)

        return SyncRun(self.images, row.id, name, request.changes, fetcher(policy), lambda url: expand(url, policy), add,
                       after_step=after_step)

    def sync(self, name: str, request: SyncChanges, after_step: Callable[[int], None] | None = None) -> SyncReport:
        """The collection brought in step with the stream, in this process (`feeds.SyncRun`)."""
        return self.sync_run(name, request, after_step).execute()

    def start_sync(self, name: str, request: SyncChanges) -> JobInfo:
        """`sync` as a background job (leased, stopped at a checkpoint, resumed like an add)."""
        self.images.get(name)
        admitted(request.changes, self.engine.limits.fetch)  # a private address: 403 url_refused, no job
        for job_id in SyncStore(self.images).running_jobs(name, request.changes):
            if self.job(job_id).state in ("queued", "running"):  # one whose worker is gone is taken first
                raise Conflict(f"a sync of {request.changes} into {name!r} is under way (job {job_id}); follow it at "
                               f"/v1/jobs/{job_id}", code="sync_running")
        job_id = self.jobs.start(name, request, callback_url=request.callback_url, kind="sync")
        if request.callback_url is not None:
            self.deliveries.start()
        return self.job(job_id)

    def job(self, job_id: str) -> JobInfo:
        """The job as stored; one whose worker is gone is resumed (or interrupted) here first."""
        return self.jobs.info(job_id)

    # -- scoring ----------------------------------------------------------------------------------
    def _embedded(self, row: CollectionRow) -> None:
        missing = self.images.count_unembedded(row.id, self.engine.model_key)
        if missing:
            raise NotIndexed(
                f"{missing} pictures of {row.name!r} have no embedding for model {self.engine.spec.name}; "
                f"add the collection's sources again with this model (`clip-gaze collection add {row.name} SOURCE --model …`)"
            )

    def analyze(self, name: str, vocabularies: Sequence[str] | None = None, top_k: int = 5,
                relative_to: str | None = None) -> Iterator[AnalysisRow]:
        """One row per picture and match (see `analyze_blocks`; refusals come before the first row)."""
        return (AnalysisRow(**values)
                for block in self.analyze_blocks(name, vocabularies, top_k, relative_to) for values in block.to_pylist())

    def analyze_blocks(self, name: str, vocabularies: Sequence[str] | None = None, top_k: int = 5,
                       relative_to: str | None = None) -> Iterator[Any]:
        """The rows of `analyze` as Arrow tables (AnalysisRow's columns, see `tables.analysis_block`), a
        block per chunk of pictures and vocabulary, computed from the stored embeddings. Unknown names
        and missing embeddings are refused here, before the first block."""
        row = self.images.get(name)
        self._embedded(row)
        engine = self.engine
        names = engine.resolve(vocabularies)
        versions = engine.store.versions()
        engine.indexes.prepare(names, versions)
        indexes = {n: engine.indexes.get(n, versions) for n in names}
        if relative_to is not None:
            for idx in indexes.values():
                engine.hubs.reference(idx, relative_to)  # refusals (and the statistics) before the first block
        return self._blocks(row, indexes, engine.model.logit_scale, top_k, relative_to)

    def _blocks(self, row: CollectionRow, indexes: dict[str, LoadedIndex], scale: float, top_k: int,
                relative_to: str | None = None) -> Iterator[Any]:
        def read() -> Iterator[VectorColumns]:
            try:
                yield from self.images.vector_columns(row.id, self.engine.model_key, CHUNK)
            finally:
                self.engine.store.close()  # the reading thread's own connection

        phrases: dict[str, PhraseColumns] = {}  # read once per vocabulary, at its first chunk
        verdicts = Reviews(self.engine.store).verdicts(row.id)  # people's verdicts, on the rows they concern
        for chunk in ahead(read()):
            for vocab, idx in indexes.items():
                cos = cosines(idx.matrix, chunk.matrix)  # (phrases, pictures)
                if relative_to is not None:
                    scores, _ = self.engine.hubs.row_scores(idx, cos.T, relative_to, top_k)
                else:
                    scores = scores_from_cosine_columns(cos, scale, top_k)
                del cos
                if vocab not in phrases:
                    phrases[vocab] = PhraseColumns.read(self.engine.store, vocab, idx.ids)
                yield analysis_block(phrases[vocab], chunk.external_id, chunk.source, chunk.sha256, scores, verdicts,
                                     scale, self.engine.logit_bias)

    # -- search -----------------------------------------------------------------------------------
    def search(self, name: str, text: str | None = None, image: "ImageSource | None" = None, top_k: int = 10,
               query: SearchTerms | None = None) -> SearchAnswer:
        """The collection's pictures closest to a query (cosine of their embeddings): a phrase or a
        picture; or, with `query`, the mean of its positives (phrases, stored pictures by sha256, the
        picture) minus the mean of its negatives, normalised ("more like these, less like those"),
        with its cut-offs (`min_cosine`; `min_probability`, the first phrase's probability within
        `vocabulary`, the phrase added to the list when it is not one of its phrases)."""
        q = query or SearchTerms()
        texts = ([text] if text is not None else []) + list(q.q)
        if not texts and image is None and not q.like:
            raise InvalidInput("search with a phrase, a picture or a stored picture (like)", code="invalid_input")
        if q.min_probability is not None and (q.vocabulary is None or not texts):
            raise InvalidInput("min_probability is a phrase's probability within a vocabulary: give a phrase and "
                               "`vocabulary`", code="invalid_input")
        row = self.images.get(name)
        self._embedded(row)
        engine = self.engine
        positives: list[npt.NDArray[np.float32]] = []
        negatives: list[npt.NDArray[np.float32]] = []
        labels = list(texts)
        if texts:
            positives.extend(engine.embedder.lookup(texts))
        if q.unlike_text:
            negatives.extend(engine.embedder.lookup(list(q.unlike_text)))
        if image is not None:
            decoded = engine.read(image)
            positives.append(engine.encode_pictures([decoded])[0])
            labels.append(decoded.sha256)
        for shas, into in ((q.like, positives), (q.unlike, negatives)):
            found = self.images.cached(engine.model_key, list(shas))
            for sha in shas:
                if sha not in found:
                    raise UnknownReference(f"no stored picture {sha!r} to search by", code="unknown_picture")
                into.append(found[sha])
        labels += list(q.like)
        vector = np.mean(positives, axis=0) - (np.mean(negatives, axis=0) if negatives else 0)
        vector = (vector / max(float(np.linalg.norm(vector)), 1e-12)).astype(np.float32)
        index = self._search.get(row, engine.model_key)
        cut = q.min_cosine is not None or q.min_probability is not None
        hits = index.hits(vector, max(top_k * 4, 200) if cut else top_k)
        softmax_over = None
        if q.min_cosine is not None:
            hits = [h for h in hits if h.cosine >= q.min_cosine]
        if q.vocabulary is not None and texts:
            hits, softmax_over = self._with_probability(hits, q.vocabulary, texts[0], q.min_probability)
        hits = [h.model_copy(update={"rank": i}) for i, h in enumerate(hits[:top_k], 1)]
        label = " + ".join(labels) + "".join(f" - {t}" for t in q.unlike_text) + "".join(f" - {s}" for s in q.unlike)
        return SearchAnswer(collection=name, model=engine.model_info(), query=label, searched=len(index),
                            exact=index.exact, hits=hits, min_cosine=q.min_cosine, min_probability=q.min_probability,
                            vocabulary=q.vocabulary, softmax_over=softmax_over)

    def _with_probability(self, hits: list[SearchHit], vocabulary: str, phrase: str,
                          minimum: float | None) -> tuple[list[SearchHit], int]:
        """Hits with the phrase's probability within the vocabulary (and the phrase), those under `minimum` left out."""
        engine = self.engine
        names = engine.resolve([vocabulary])
        versions = engine.store.versions()
        engine.indexes.prepare(names, versions)
        idx = engine.indexes.get(names[0], versions)
        texts = [r["phrase"] for r in engine.store.phrase_rows(idx.ids).values()]
        matrix = idx.matrix if phrase in texts else np.vstack([idx.matrix, engine.embedder.lookup([phrase])[0][None, :]])
        target = engine.embedder.lookup([phrase])[0]
        embeddings = self.images.cached(engine.model_key, [h.sha256 for h in hits])
        out = []
        for h in hits:
            s = scores_from_cosines(cosines(matrix, embeddings[h.sha256][None, :])[:, 0], engine.model.logit_scale, None)
            p = float(s.probabilities[list(s.indices).index(int(np.argmax(matrix @ target)))])
            if minimum is None or p >= minimum:
                out.append(h.model_copy(update={"probability": p}))
        return out, len(matrix)


def ahead(items: Iterator[T], depth: int = 1) -> Iterator[T]:
    """`items`, produced in a thread up to `depth` ahead of the consumer: reading the next chunk from
    SQLite (which lets go of the GIL while it works, on the thread's own connection) overlaps with
    scoring this one. The thread's errors are raised here; a consumer that stops early stops it."""
    queue: "Queue[tuple[bool, Any]]" = Queue(maxsize=depth)
    stop = threading.Event()

    def offer(entry: tuple[bool, Any]) -> bool:
        while not stop.is_set():
            try:
                queue.put(entry, timeout=0.05)
                return True
            except Full:
                pass
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer((True, item)):
                    break
            else:
                offer((False, None))
        except BaseException as exc:  # handed to the consumer
            offer((False, exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="clip-gaze-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            more, item = queue.get()
            if not more:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        stop.set()
        thread.join()


__all__ = ["CHUNK", "Collections", "ahead"]
