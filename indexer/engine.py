"""The engine: the facade the CLI, the library and the service touch.

It holds one model (loaded lazily, or in `warm_up`; a `ClipModel`, on ONNX Runtime or torch), one
store with its image store (the picture-embedding cache), a picture reader with the process's limits,
the vocabularies (listing, editing), a phrase embedder, the in-memory indexes and the hub correction.
It takes and returns the typed models of `indexer.schema`. A request goes one way down (decode →
encode → score) and back; in a server the engine batches image encodings from concurrent requests
itself (`batch_window_ms`).

Features over the engine (collections, explanations, evaluations) are handed it: `Collections(engine)`,
`explain_image(engine, …)`, `evaluate(engine, …)`; the engine knows none of them.
"""

from __future__ import annotations

import functools
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import numpy.typing as npt

from .errors import ClipGazeError
from .models import backends
from .models.batching import ImageBatcher
from .models.memory import LoadCost, measured
from .models.protocol import ClipModel, ModelLoader
from .models.registry import ModelSpec, list_presets, parse_model, preset_info
from .models.torch_model import LoadedModel, load_model
from .pictures.decode import DecodedImage, PixelBudget
from .pictures.fetch import FetchError
from .pictures.fetch_many import FetchMany
from .pictures.reader import ImageLimits, ImageSource, PictureReader
from .schema import (
    DEFAULT_TOP_K,
    AddPhrases,
    Analysis,
    Backends,
    BatchAnswer,
    BatchFailure,
    Batching,
    BatchItem,
    CreateVocabulary,
    IndexReport,
    Match,
    ModelInfo,
    ModelsAnswer,
    PageQuery,
    RemovePhrases,
    Vocabulary,
    VocabularyPage,
    VocabularyResult,
    WriteAnswer,
    compare_phrases,
)
from .scoring.hubs import HubCorrection
from .scoring.kernels import cosines
from .scoring.softmax import Scores, scores_from_cosines, sigmoids
from .settings import Settings
from .store.image_store import ImageStore
from .store.index_files import IndexFiles
from .store.phrase_store import Store
from .vocabularies.editing import Editor
from .vocabularies.embedder import PhraseEmbedder, ProgressFactory
from .vocabularies.index_cache import IndexCache
from .vocabularies.languages import LanguageViews
from .vocabularies.listing import Listing, sync_builtins


class Engine:
    def __init__(
        self,
        home: Path | str,
        model: str | ModelSpec | None = None,
        *,
        device: str = "auto",
        threads: int = 0,
        backend: str = "auto",
        loader: ModelLoader | None = None,
        compact: bool = False,
        auto_embed_limit: int | None = None,
        progress: ProgressFactory | None = None,
        notice: Callable[[str], None] | None = None,
        limits: ImageLimits | None = None,
        batch_window_ms: float | None = None,
    ):
        self.store = Store(home)
        self.images = ImageStore(self.store)  # collections' pictures, and every picture's embedding by content
        self.spec = model if isinstance(model, ModelSpec) else parse_model(model)
        self.model_key = self.spec.key()
        self.device, self.threads, self.backend = device, threads, backend
        self._loader: ModelLoader = loader or functools.partial(backends.load, home=self.store.home, backend=backend,
                                                                progress=notice)
        self._model: ClipModel | None = None
        self.load_cost: LoadCost | None = None  # what loading the model cost (memory.measured)
        self._torch: LoadedModel | None = None
        self._model_lock = threading.Lock()
        self._batch_window_ms = batch_window_ms
        self._batcher: ImageBatcher | None = None
        self.limits = limits or ImageLimits.from_settings(Settings.from_env({}))  # the settings' defaults
        self._reader: PictureReader | None = None
        self.listing = Listing(self.store)
        self.embedder = PhraseEmbedder(self.store, self.model_key, lambda: self.model, progress, auto_embed_limit, self.spec.name)
        self.files = IndexFiles(self.store.home / "indexes")
        self.indexes = IndexCache(self.store, self.files, self.model_key, self.embedder.embed_vocabularies, compact)
        self.editor = Editor(self.listing, self.embedder, self.indexes, self.files)
        self.languages = LanguageViews(self.store)  # scoring within the languages a request names
        self.hubs = HubCorrection(self.images, self.model_key, self.spec.name, lambda: self.model.logit_scale)

    @classmethod
    def from_settings(cls, settings: Settings, model: str | ModelSpec | None = None, **kw: Any) -> "Engine":
        """An engine with the limits and options of `settings` (keyword arguments override)."""
        options: dict[str, Any] = dict(device=settings.device, threads=settings.threads, backend=settings.backend,
                                       compact=settings.compact_indexes, limits=ImageLimits.from_settings(settings))
        return cls(settings.home, model or settings.model, **{**options, **kw})

    # -- model ----------------------------------------------------------------------------------
    @property
    def model(self) -> ClipModel:
        """The model that encodes pictures and phrases (`LoadedModel` on torch, `OnnxModel` on ONNX
        Runtime; loaded on first use)."""
        if self._model is None:
            with self._model_lock:
                if self._model is None:
                    loaded, self.load_cost = measured(
                        lambda: self._loader(self.spec, device=self.device, threads=self.threads),
                        lambda: backends.export_path(self.store.home, self.spec))
                    self._model = loaded
        return self._model

    @property
    def torch_model(self) -> LoadedModel:
        """open_clip's own model, for what needs torch (explanations): the serving model when torch
        serves, else loaded beside it on first use."""
        model = self.model
        if isinstance(model, LoadedModel):
            return model
        if self._torch is None:
            with self._model_lock:
                if self._torch is None:
                    self._torch = load_model(self.spec, device=self.device, threads=self.threads)
        return self._torch

    @property
    def model_loaded(self) -> bool:
        return self._model is not None

    def backends(self) -> Backends | None:
        """What runs what, once the model is loaded (None before)."""
        if self._model is None:
            return None
        serving = backends.describe(self._model)
        explaining = serving if isinstance(self._model, LoadedModel) else (
            backends.describe(self._torch) if self._torch is not None else "torch (loaded on first use)")
        return Backends(images=serving, texts=serving, explanations=explaining)

    def model_info(self) -> ModelInfo:
        """The model as clients see it (a checkpoint by file name and fingerprint, never its path)."""
        if self._model is None:
            return self.spec.info()
        return self.spec.info(self._model.logit_scale, self.logit_bias)

    @property
    def logit_bias(self) -> float | None:
        """The model's learned logit bias (sigmoid-trained models: SigLIP), else None; loads the model."""
        return getattr(self.model, "logit_bias", None)

    def models(self) -> ModelsAnswer:
        return ModelsAnswer(model=self.model_info(), models=[preset_info(p) for p in list_presets()])

    @property
    def batching(self) -> Batching:
        b = self._batcher
        return Batching(batches=b.batches if b else 0, images=b.items if b else 0)

    # -- pictures -------------------------------------------------------------------------------
    @property
    def reader(self) -> PictureReader:
        """Pictures for this model's input size (read from its config: no weights are loaded)."""
        if self._reader is None:
            self._reader = PictureReader(self.limits, target=self.spec.image_size())
        return self._reader

    def read(self, source: ImageSource, name: str | None = None, budget: PixelBudget | None = None) -> DecodedImage:
        """A picture from bytes, a file, a PIL image or an already decoded one, within the limits."""
        return self.reader.read(source, name, budget)

    def fetch_picture(self, url: str, budget: PixelBudget | None = None) -> DecodedImage:
        """A picture from a URL: an image, or a IIIF Image API service (asked for the model's size), within
        the fetch timeout: one deadline for every fetch it makes (a IIIF service's info.json and picture,
        redirects included)."""
        return self.reader.fetch(url, budget)

    def _fetching(self, url: str, budget: PixelBudget | None, deadline: float | None) -> Callable[[], DecodedImage]:
        reader = self.reader
        if deadline is not None and deadline <= time.monotonic():
            raise FetchError(f"{url}: not fetched within the request's {reader.limits.fetch.timeout:g} s for its URLs",
                             url=url, code="fetch_timeout")
        return reader.fetching(url, budget, deadline)

    def embed_images(self, images: Sequence[DecodedImage]) -> npt.NDArray[np.float32]:
        """Each picture's embedding: stored ones by content hash (a picture is encoded once per model,
        whatever brings it), the others encoded and stored."""
        if not images:
            return np.empty((0, 0), dtype=np.float32)
        known = self.images.cached(self.model_key, [d.sha256 for d in images])
        new = {d.sha256: d for d in images if d.sha256 not in known}
        if new:
            found = dict(zip(new, self.encode_pictures(list(new.values()))))
            self.images.put(self.model_key, found)
            known.update(found)
        return np.stack([known[d.sha256] for d in images])

    def encode_pictures(self, images: Sequence[DecodedImage]) -> npt.NDArray[np.float32]:
        """The model's embeddings of these pictures: preprocessed in the calling thread (unless read
        ahead with their pixels), encoded together with concurrent requests' pictures when batching."""
        model = self.model
        if not images:
            return np.empty((0, 0), dtype=np.float32)
        arrays = np.stack([d.pixels if d.pixels is not None else model.image_array(d.image) for d in images])
        if self._batch_window_ms is None:
            return model.encode_image_arrays(arrays)
        if self._batcher is None:
            with self._model_lock:
                if self._batcher is None:
                    self._batcher = ImageBatcher(model.encode_image_arrays, window_ms=self._batch_window_ms)
        return self._batcher.submit(arrays)

    # -- vocabularies (`listing`, `editor`) -------------------------------------------------------
    def default_vocabularies(self) -> list[str]:
        return self.listing.default()

    def resolve(self, names: Sequence[str] | None) -> list[str]:
        """Vocabulary names (the default set if none), known built-ins brought into the store."""
        return self.listing.resolve(names)

    def vocabularies(self) -> list[Vocabulary]:
        """Every vocabulary, built-in ones (brought into the store once per engine) and custom ones."""
        return self.listing.all()

    def vocabulary(self, name: str) -> Vocabulary:
        return self.listing.get(name)

    def vocabulary_page(self, name: str, page: PageQuery = PageQuery()) -> VocabularyPage:
        return self.listing.page(name, page)

    def create_vocabulary(self, request: CreateVocabulary) -> WriteAnswer:
        return self.editor.create(request)

    def add_phrases(self, name: str, request: AddPhrases) -> WriteAnswer:
        return self.editor.add(name, request)

    def remove_phrases(self, name: str, request: RemovePhrases) -> WriteAnswer:
        return self.editor.remove(name, request)

    def delete_vocabulary(self, name: str) -> WriteAnswer:
        return self.editor.delete(name)

    def needs_indexing(self, names: Sequence[str] | None = None) -> int:
        """How many phrases of these vocabularies (default set) have no embedding for this model."""
        return len(self.store.missing_phrases(self.model_key, self.resolve(names)))

    def index(self, names: Sequence[str] | None = None, force: bool = False) -> IndexReport:
        """`clip-gaze index`: built-ins synced, missing phrases embedded, index files written."""
        names = self.resolve(names)
        report = IndexReport(model=self.spec.name, vocabularies=list(names))
        report.synced = sync_builtins(self.store, names)
        report.embedded = self.embedder.embed_vocabularies(names, check_limit=False)
        report.indexes_written = self.indexes.write(names, force=force)
        return report

    def warm_up(self, names: Sequence[str] | None = None) -> None:
        """Load the model and the indexes of `names` (default: every vocabulary with an index file)."""
        _ = self.model
        versions = self.store.versions()
        if names is None:
            names = [n for n, v in versions.items() if self.files.path(self.model_key, (n, *v)).is_file()]
        for name in names:
            self.indexes.get(name, versions)

    # -- analysis -------------------------------------------------------------------------------
    def analyze(self, image: ImageSource, vocabularies: Sequence[str] | None = None, top_k: int = DEFAULT_TOP_K,
                relative_to: str | None = None, languages: Sequence[str] | None = None) -> Analysis:
        return self.analyze_many([image], vocabularies, top_k, relative_to, languages)[0]

    def analyze_many(
        self, images: Sequence[ImageSource], vocabularies: Sequence[str] | None = None, top_k: int = DEFAULT_TOP_K,
        relative_to: str | None = None, languages: Sequence[str] | None = None,
    ) -> list[Analysis]:
        """One image embedding per picture, reused across every vocabulary asked for. With
        `relative_to`, each phrase is set against how it scores across that collection's pictures; with
        `languages`, each softmax runs over the vocabulary's phrases in those languages alone."""
        names = self._names(vocabularies, relative_to)
        budget = self.reader.budget()
        decoded = [self.read(im, budget=budget) for im in images]
        results, timing = self._score_images(decoded, names, top_k, relative_to, languages)
        model = self.model_info()
        return [_analysis(model, d, r, {"decode": d.decode_ms, **timing}) for d, r in zip(decoded, results)]

    def analyze_batch(
        self, uploads: Sequence[tuple[str, bytes | str]], vocabularies: Sequence[str] | None = None, top_k: int = DEFAULT_TOP_K,
        relative_to: str | None = None, fetches: int = 8, fetched: Callable[[], None] | None = None,
        languages: Sequence[str] | None = None,
    ) -> BatchAnswer:
        """Several pictures (bytes, or a URL as text); a bad picture gets its own error entry.

        URLs are fetched `fetches` at a time, beside the uploads' decoding, under one deadline for the
        whole batch (the fetch timeout, CLIP_GAZE_FETCH's 30 s): a batch of slow URLs answers within it,
        each URL not fetched by then its own `fetch_timeout` entry, the others scored. `fetched` is called
        once every fetch has ended, which may be after the answer (a slow URL runs to the deadline): at
        once when there are none, or when the batch fails before fetching."""
        t_start = time.perf_counter()
        urls = [(i, name, data) for i, (name, data) in enumerate(uploads) if isinstance(data, str)]
        try:
            names = self._names(vocabularies, relative_to)
            budget = self.reader.budget()
            many = FetchMany(lambda url, deadline: self._fetching(url, budget, deadline), [u for _, _, u in urls],
                             fetches, self.reader.limits.fetch.timeout, fetched)  # none: `fetched` at once
        except BaseException:
            if fetched is not None:
                fetched()
            raise
        items: list[BatchItem | BatchFailure] = []
        good: list[tuple[int, str, DecodedImage]] = []

        def failed(i: int, name: str, exc: ClipGazeError) -> None:
            items.append(BatchFailure(index=i, name=name, status=exc.status, code=exc.code, error=exc.message))

        with many:
            for i, (name, data) in enumerate(uploads):
                if isinstance(data, bytes):
                    try:
                        good.append((i, name, self.read(data, name, budget)))
                    except ClipGazeError as exc:
                        failed(i, name, exc)
            for (i, name, _), outcome in zip(urls, many.results()):
                if isinstance(outcome, ClipGazeError):
                    failed(i, name, outcome)
                else:
                    good.append((i, name, outcome))
        good.sort(key=lambda g: g[0])
        if good:
            results, _ = self._score_images([d for _, _, d in good], names, top_k, relative_to, languages)
            for (i, name, decoded), res in zip(good, results):
                items.append(BatchItem(index=i, name=name, image=decoded.info(), results=res))
        items.sort(key=lambda it: it.index)
        return BatchAnswer(
            model=self.model_info(), count=len(items), failed=sum(1 for it in items if not it.ok), results=items,
            timing_ms=round((time.perf_counter() - t_start) * 1000, 2),
        )

    def _names(self, vocabularies: Sequence[str] | None, relative_to: str | None) -> list[str]:
        """The vocabularies asked for, and the reference collection checked, before any picture is read."""
        names = self.resolve(vocabularies)
        if relative_to is not None:
            self.images.get(relative_to)  # unknown_collection
        return names

    def _score_images(
        self, decoded: Sequence[DecodedImage], names: Sequence[str], top_k: int, relative_to: str | None = None,
        languages: Sequence[str] | None = None,
    ) -> tuple[list[dict[str, VocabularyResult]], dict[str, float]]:
        t0 = time.perf_counter()
        embeddings = self.embed_images(decoded)
        t1 = time.perf_counter()
        results = self.score(embeddings, names, top_k, relative_to, languages)
        t2 = time.perf_counter()
        n = max(1, len(decoded))
        return results, {"embed_image": (t1 - t0) * 1000 / n, "score": (t2 - t1) * 1000 / n}

    def score(self, embeddings: npt.NDArray[np.float32], names: Sequence[str], top_k: int,
              relative_to: str | None = None, languages: Sequence[str] | None = None) -> list[dict[str, VocabularyResult]]:
        """For each image embedding, {vocabulary: result}; one matrix product per vocabulary. With
        `relative_to`, logits and probabilities are corrected against that collection (`hubs`); with
        `languages`, only the phrases in them are scored (`LanguageViews`)."""
        embeddings = np.atleast_2d(embeddings)
        versions = self.store.versions()
        out: list[dict[str, VocabularyResult]] = [{} for _ in range(len(embeddings))]
        self.indexes.prepare(names, versions)
        scale, bias = self.model.logit_scale, self.logit_bias
        for name in names:
            idx = self.languages.view(self.indexes.get(name, versions), languages)
            cos_all = cosines(idx.matrix, embeddings)
            info = None
            if relative_to is not None:
                per_image, info = self.hubs.scores(idx, cos_all, relative_to, top_k)
            else:
                per_image = [scores_from_cosines(cos_all[:, j], scale, top_k) for j in range(len(embeddings))]
            rows = self.store.phrase_rows(np.unique(np.concatenate([idx.ids[s.indices] for s in per_image])))
            for j, s in enumerate(per_image):
                result = _vocab_result(s, [rows[int(i)] for i in idx.ids[s.indices]], sigmoids(s.cosines, scale, bias))
                out[j][name] = result.model_copy(update={"relative_to": info, "languages": list(languages) if languages else None})
        return out

    def compare(self, image: ImageSource, phrases: Sequence[str], persist: bool = False) -> Analysis:
        """Softmax over exactly these phrases (validated: 1 to the limit, no duplicates)."""
        phrases = compare_phrases(list(phrases))
        decoded = self.read(image)
        t1 = time.perf_counter()
        emb = self.embed_images([decoded])[0]
        t2 = time.perf_counter()
        s = scores_from_cosines(self.embedder.lookup(phrases, persist=persist) @ emb, self.model.logit_scale)
        t3 = time.perf_counter()
        rows = [{"term": phrases[i], "phrase": phrases[i], "external_id": None, "metadata": None} for i in s.indices]
        timing = {"decode": decoded.decode_ms, "embed_image": (t2 - t1) * 1000, "score": (t3 - t2) * 1000}
        sig = sigmoids(s.cosines, self.model.logit_scale, self.logit_bias)
        return _analysis(self.model_info(), decoded, {"compare": _vocab_result(s, rows, sig)}, timing)

    def probabilities(self, image: ImageSource, phrases: Sequence[str]) -> list[float]:
        """Each phrase's relative likelihood among `phrases` (duplicates allowed), in the order given;
        phrase embeddings are stored so a repeated call encodes only the image."""
        if not phrases:
            return []
        emb = self.embed_images([self.read(image)])[0]
        s = scores_from_cosines(self.embedder.lookup(phrases, persist=True) @ emb, self.model.logit_scale)
        probs = [0.0] * len(phrases)
        for rank, i in enumerate(s.indices):
            probs[int(i)] = float(s.probabilities[rank])
        return probs


def _analysis(model: ModelInfo, decoded: DecodedImage, results: dict[str, VocabularyResult], timing: dict[str, float]) -> Analysis:
    breakdown = {k: round(v, 2) for k, v in timing.items()}
    return Analysis(model=model, image=decoded.info(), results=results,
                    timing_ms=round(sum(breakdown.values()), 2), timing_breakdown_ms=breakdown)


def _vocab_result(s: Scores, rows: Sequence[dict[str, Any]], sig: npt.NDArray[np.float64] | None = None) -> VocabularyResult:
    return VocabularyResult(
        softmax_over=s.softmax_over,
        matches=[
            Match(phrase=row["phrase"], term=row["term"], probability=float(s.probabilities[k]), cosine=float(s.cosines[k]),
                  logit=float(s.logits[k]), sigmoid=None if sig is None else float(sig[k]),
                  external_id=row["external_id"], metadata=row["metadata"], language=row.get("language"))
            for k, row in enumerate(rows)
        ],
    )


__all__ = ["Engine", "ImageSource"]
