"""Collections: a museum's pictures embedded once, then scored against any vocabulary and searched.

The engine holds one `Collections`; it takes and returns the models of `schema_collections`.
Scoring reads stored embeddings in chunks (nothing is encoded again; a vocabulary added next year
re-scores the whole collection in seconds) and streams its rows, so memory stays bounded. Search
runs through FAISS over the collection's embeddings: exact up to `EXACT_LIMIT` pictures, an
approximate (IVF) index above, with the recall measured in bench/collection.py.
"""

from __future__ import annotations

import dataclasses

import threading
import time
from queue import Full, Queue
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence, TypeVar

import numpy as np
import numpy.typing as npt

from .errors import InvalidInput, NotIndexed
from .fetch import FetchPolicy
from .image_store import CollectionRow, ImageStore, Picture, VectorColumns
from .images import DecodedImage, PixelBudget
from .ingest import IngestReport, ingest
from .kernels import cosines
from .schema_collections import (
    AddReport,
    AddSources,
    AnalysisRow,
    CollectionInfo,
    CollectionView,
    CreateCollection,
    JobInfo,
    PictureInfo,
    SearchAnswer,
    SearchHit,
)
from .scoring import scores_from_cosine_columns
from .sources import PictureRef, expand, loader

if TYPE_CHECKING:  # pragma: no cover
    from .embedder import ProgressFactory
    from .engine import Engine, ImageSource

T = TypeVar("T")

EXACT_LIMIT = 200_000  # pictures searched exactly; an approximate index above
CHUNK = 8192  # pictures scored at a time


def picture_info(p: Picture) -> PictureInfo:
    return PictureInfo(source=p.source, external_id=p.external_id, sha256=p.sha256, width=p.width, height=p.height,
                       metadata=p.metadata, error_code=p.error_code, error=p.error)


class Collections:
    def __init__(self, engine: "Engine", fetch_policy: FetchPolicy):
        self.engine = engine
        self.images = ImageStore(engine.store)
        self.policy = fetch_policy
        self._search: dict[tuple[str, int], Any] = {}
        self._lock = threading.Lock()

    # -- managing ---------------------------------------------------------------------------------
    @staticmethod
    def _info(row: CollectionRow) -> CollectionInfo:
        return CollectionInfo(name=row.name, description=row.description, size=row.size, failed=row.failed,
                              version=row.version, created_at=row.created_at, updated_at=row.updated_at)

    def create(self, request: CreateCollection) -> CollectionInfo:
        return self._info(self.images.create(request.name, request.description))

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

    # -- adding -----------------------------------------------------------------------------------
    def read(self, ref: PictureRef, budget: PixelBudget | None = None) -> DecodedImage:
        """A picture's bytes (file, URL or IIIF at the model's size), decoded within the limits."""
        load = loader(self.policy, self.engine.spec.image_size())
        return self.engine.read(load(ref), name=ref.source, budget=budget)

    def read_prepared(self, ref: PictureRef) -> DecodedImage:
        """`read`, and the model's preprocessing too: in the read pool, so the encoder never waits for it."""
        decoded = self.read(ref)
        return dataclasses.replace(decoded, pixels=self.engine.model.image_array(decoded.image))

    def add(
        self,
        name: str,
        request: AddSources,
        progress: "ProgressFactory | None" = None,
        on_batch: Callable[[IngestReport], None] | None = None,
        batch_size: int = 16,
    ) -> AddReport:
        row = self.images.get(name)
        _ = self.engine.model  # a model that cannot load stops here, not as a failure recorded per picture
        t0 = time.perf_counter()
        items = (item for source in request.sources for item in expand(source, self.policy))
        report = ingest(items, images=self.images, collection_id=row.id, model_key=self.engine.model_key,
                        read=self.read_prepared, embed=self.engine.encode_pictures, batch_size=batch_size,
                        progress=progress, on_batch=on_batch)
        return AddReport(collection=name, model=self.engine.spec.name, total=report.total, added=report.added,
                         skipped=report.skipped, relabelled=report.relabelled, failed=report.failed, encoded=report.encoded,
                         seconds=round(time.perf_counter() - t0, 3), errors=[picture_info(p) for p in report.errors])

    def start_add(self, name: str, request: AddSources) -> JobInfo:
        """`add` as a background job in this process; its state is in the store, so any worker answers for it."""
        self.images.get(name)
        job_id = self.images.create_job("add_sources", name)

        def run() -> None:
            self.images.update_job(job_id, state="running")
            try:
                report = self.add(name, request, on_batch=lambda r: self.images.update_job(
                    job_id, total=r.total, done=r.added, failed=r.failed, skipped=r.skipped))
                self.images.update_job(job_id, state="done", total=report.total, done=report.added,
                                       failed=report.failed, skipped=report.skipped)
            except Exception as exc:  # reported by the job, never lost
                self.images.update_job(job_id, state="failed", error=str(getattr(exc, "message", exc)))

        threading.Thread(target=run, name=f"clip-gaze-job-{job_id}", daemon=True).start()
        return self.job(job_id)

    def job(self, job_id: str) -> JobInfo:
        return JobInfo(**self.images.job(job_id))

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
            from . import relative

            for idx in indexes.values():
                relative.reference(engine, idx, relative_to)  # refusals (and the statistics) before the first block
        return self._blocks(row, indexes, engine.model.logit_scale, top_k, relative_to)

    def _blocks(self, row: CollectionRow, indexes: dict[str, Any], scale: float, top_k: int,
                relative_to: str | None = None) -> Iterator[Any]:
        from . import relative
        from .tables import PhraseColumns, analysis_block

        def read() -> Iterator[VectorColumns]:
            try:
                yield from self.images.vector_columns(row.id, self.engine.model_key, CHUNK)
            finally:
                self.engine.store.close()  # the reading thread's own connection

        phrases: dict[str, PhraseColumns] = {}  # read once per vocabulary, at its first chunk
        for chunk in ahead(read()):
            for vocab, idx in indexes.items():
                cos = cosines(idx.matrix, chunk.matrix)  # (phrases, pictures)
                if relative_to is not None:
                    scores, _ = relative.row_scores(self.engine, idx, cos.T, relative_to, top_k)
                else:
                    scores = scores_from_cosine_columns(cos, scale, top_k)
                del cos
                if vocab not in phrases:
                    phrases[vocab] = PhraseColumns.read(self.engine.store, vocab, idx.ids)
                yield analysis_block(phrases[vocab], chunk.external_id, chunk.source, chunk.sha256, scores)

    # -- search -----------------------------------------------------------------------------------
    def search(self, name: str, text: str | None = None, image: "ImageSource | None" = None, top_k: int = 10) -> SearchAnswer:
        """The collection's pictures closest to a phrase or a picture (cosine of their embeddings)."""
        if (text is None) == (image is None):
            raise InvalidInput("search with a phrase or a picture (one of them)", code="invalid_input")
        row = self.images.get(name)
        self._embedded(row)
        if text is not None:
            query, label = self.engine.embedder.lookup([text])[0], text
        else:
            decoded = self.engine.read(image)  # type: ignore[arg-type]
            query, label = self.engine.encode_pictures([decoded])[0], decoded.sha256
        index, pictures = self._search_index(row)
        k = min(top_k, len(pictures))
        hits: list[SearchHit] = []
        if k:
            sims, found = index.search(np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32), k)
            for rank, (sim, i) in enumerate(zip(sims[0], found[0]), 1):
                if i < 0:
                    continue
                p = pictures[int(i)]
                hits.append(SearchHit(rank=rank, cosine=float(sim), external_id=p.external_id, source=p.source,
                                      sha256=p.sha256 or "", width=p.width, height=p.height, metadata=p.metadata))
        return SearchAnswer(collection=name, model=self.engine.model_info(), query=label, searched=len(pictures),
                            exact=len(pictures) <= EXACT_LIMIT, hits=hits)

    def _search_index(self, row: CollectionRow) -> tuple[Any, list[Picture]]:
        key = (row.name, row.version)
        with self._lock:
            cached = self._search.get(key)
            if cached is None:
                pictures: list[Picture] = []
                blocks: list[npt.NDArray[np.float32]] = []
                for chunk in self.images.vectors(row.id, self.engine.model_key, CHUNK):
                    pictures.extend(chunk.pictures)
                    blocks.append(chunk.matrix)
                dim = blocks[0].shape[1] if blocks else 1
                cached = (build_search_index(np.concatenate(blocks) if blocks else np.empty((0, dim), np.float32)), pictures)
                self._search = {k: v for k, v in self._search.items() if k[0] != row.name}
                self._search[key] = cached
            return cached


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


def build_search_index(matrix: npt.NDArray[np.float32], exact_limit: int = EXACT_LIMIT, target_recall: float = 0.97) -> Any:
    """FAISS over L2-normalised rows, by inner product: exact (flat) up to `exact_limit` rows; above,
    an inverted-file index (√n lists) whose number of probed lists is calibrated at build time:
    doubled until the recall@10 of 64 of the collection's own vectors, against exact search, reaches
    `target_recall` (how well an approximate index does depends on how clustered the pictures are)."""
    import faiss

    n, dim = matrix.shape
    data = np.ascontiguousarray(matrix, dtype=np.float32)
    if n <= exact_limit:
        index = faiss.IndexFlatIP(dim)
        index.add(data)
        return index
    rng = np.random.default_rng(0)
    nlist = int(np.sqrt(n))
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.train(data[rng.choice(n, size=min(n, 40 * nlist), replace=False)])
    ivf.add(data)
    sample = data[rng.choice(n, size=64, replace=False)]
    exact = faiss.IndexFlatIP(dim)
    exact.add(data)
    _, truth = exact.search(sample, 11)  # each sample finds itself first: its 10 neighbours follow
    del exact
    ivf.nprobe = 8
    while True:
        _, found = ivf.search(sample, 11)
        recall = float(np.mean([len(set(t[1:]) & set(f[1:])) / 10 for t, f in zip(truth, found)]))
        if recall >= target_recall or ivf.nprobe >= nlist:
            return ivf
        ivf.nprobe = min(nlist, ivf.nprobe * 2)
