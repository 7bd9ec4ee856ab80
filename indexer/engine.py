"""The engine: one model, one store, in-memory indexes that follow the store's versions.

The CLI, the Python library and every service worker each hold one Engine. The model loads
lazily (or in `warm_up`); indexes load from their files and reload when a vocabulary's version
changes, so a write made by any process is seen on the next request.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np
import numpy.typing as npt

from . import build
from .errors import Conflict, InvalidInput, NotFound, NotIndexed, ReadOnly
from .kernels import cosines
from .models import LoadedModel, ModelSpec, load_model, parse_model
from .scoring import Scores, scores_from_cosines
from .store import Store, VocabularyRow, WriteResult
from .vocab import (
    PhraseSpec,
    apply_templates,
    catalog,
    parse_phrase_items,
    validate_description,
    validate_name,
    validate_phrase,
    validate_templates,
)

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

MAX_TOP_K = 1000
MAX_PHRASES_PER_WRITE = 50_000
MAX_COMPARE_PHRASES = 5_000


@dataclass(frozen=True)
class LoadedIndex:
    vocab: VocabularyRow
    ids: npt.NDArray[np.int64]
    matrix: npt.NDArray[np.floating]


class Engine:
    def __init__(
        self,
        home: Path | str,
        model: str | ModelSpec | None = None,
        *,
        device: str = "auto",
        threads: int = 0,
        loader: Callable[..., LoadedModel] = load_model,
        compact: bool = False,
        auto_embed_limit: int | None = None,
        progress: build.ProgressFactory | None = None,
    ):
        self.store = Store(home)
        self.spec = model if isinstance(model, ModelSpec) else parse_model(model)
        self.model_key = self.spec.key()
        self.compact = compact
        self.auto_embed_limit = auto_embed_limit
        self.progress = progress
        self._device = device
        self._threads = threads
        self._loader = loader
        self._model: LoadedModel | None = None
        self._model_lock = threading.Lock()
        self._index_lock = threading.Lock()
        self._indexes: dict[str, LoadedIndex] = {}
        self._text_cache: OrderedDict[str, npt.NDArray[np.float32]] = OrderedDict()
        self._text_cache_lock = threading.Lock()

    # -- model ----------------------------------------------------------------------------------
    @property
    def model(self) -> LoadedModel:
        if self._model is None:
            with self._model_lock:
                if self._model is None:
                    self._model = self._loader(self.spec, device=self._device, threads=self._threads)
        return self._model

    @property
    def model_loaded(self) -> bool:
        return self._model is not None

    @property
    def indexes_loaded(self) -> list[str]:
        """Names of the vocabularies whose index is in memory."""
        return list(self._indexes)

    def model_json(self) -> dict[str, Any]:
        return self.model.describe()

    # -- vocabularies ---------------------------------------------------------------------------
    def default_vocabularies(self) -> list[str]:
        return list(catalog().default)

    def resolve(self, names: Iterable[str] | None) -> list[str]:
        """Vocabulary names (default set if none), known built-ins brought into the store."""
        wanted = [n.strip() for n in (names or []) if n and n.strip()] or self.default_vocabularies()
        wanted = list(dict.fromkeys(wanted))
        known = self.store.versions()
        builtin = catalog().vocabularies
        missing_builtins = [n for n in wanted if n not in known and n in builtin]
        if missing_builtins:
            build.sync_builtins(self.store, missing_builtins)
            known = self.store.versions()
        unknown = [n for n in wanted if n not in known]
        if unknown:
            raise NotFound(
                f"unknown vocabular{'y' if len(unknown) == 1 else 'ies'}: {', '.join(unknown)} "
                "(see `clip-gaze vocab list` or GET /v1/vocabularies)",
                code="unknown_vocabulary",
            )
        return wanted

    def index_vocabularies(self, names: Sequence[str] | None = None, force: bool = False) -> build.IndexReport:
        names = self.resolve(names)
        return build.index(self.store, self.model, names, progress=self.progress, force=force)

    def loaded_index(self, name: str, versions: dict[str, tuple[int, int]] | None = None) -> LoadedIndex:
        """The in-memory index of a vocabulary at its current version: from memory, its file, or rebuilt."""
        versions = versions if versions is not None else self.store.versions()
        current = versions.get(name)
        cached = self._indexes.get(name)
        if cached is not None and current == (cached.vocab.id, cached.vocab.version):
            return cached
        with self._index_lock:
            cached = self._indexes.get(name)
            if cached is not None and current == (cached.vocab.id, cached.vocab.version):
                return cached
            vocab = self.store.get_vocabulary(name)
            data = self.store.read_index(self.store.index_path(self.model_key, vocab), expected=vocab.size)
            if data is None:
                data = self._rebuild(vocab)
            ids, mat = data
            matrix = mat.astype(np.float16) if self.compact else mat
            loaded = LoadedIndex(vocab, ids, matrix)
            self._indexes[name] = loaded
            for gone in set(self._indexes) - set(versions):
                del self._indexes[gone]
            return loaded

    def _embed_unindexed(self, names: Sequence[str], versions: dict[str, tuple[int, int]]) -> None:
        """Before scoring: embed, in one pass, what vocabularies without a current index still lack."""
        stale = [
            n for n in names
            if (c := self._indexes.get(n)) is None or versions.get(n) != (c.vocab.id, c.vocab.version)
        ]
        todo = [n for n in stale if not self.store.index_path(self.model_key, (n, *versions[n])).is_file()]
        if todo:
            self._embed_missing(todo)

    def _embed_missing(self, names: Sequence[str]) -> None:
        """Embed these vocabularies' missing phrases, unless there are more than this engine may embed."""
        missing = len(self.store.missing_phrases(self.model_key, names))
        if not missing:
            return
        if self.auto_embed_limit is not None and missing > self.auto_embed_limit:
            raise NotIndexed(
                f"{', '.join(names)} not indexed for model {self.spec.name} ({missing} phrases to embed); "
                f"run `clip-gaze index --vocab {','.join(names)} --model {self.spec.name}`"
            )
        build.embed_missing(self.store, self.model, names, self.progress, model_key=self.model_key)

    def _rebuild(self, vocab: VocabularyRow) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        ids, mat, missing = self.store.vectors(self.model_key, vocab.id)
        if missing:
            self._embed_missing([vocab.name])
            ids, mat, missing = self.store.vectors(self.model_key, vocab.id)
        self.store.write_index(self.model_key, vocab, ids, mat)
        return ids, mat

    def warm_up(self, names: Sequence[str] | None = None) -> None:
        """Load the model and the indexes of `names` (default: every vocabulary with an index file)."""
        _ = self.model
        versions = self.store.versions()
        if names is None:
            names = [n for n, v in versions.items() if self.store.index_path(self.model_key, (n, *v)).is_file()]
        for name in names:
            self.loaded_index(name, versions)

    # -- scoring --------------------------------------------------------------------------------
    def embed_images(self, images: Sequence["Image.Image"]) -> npt.NDArray[np.float32]:
        return self.model.encode_images(images)

    def score(
        self, embeddings: npt.NDArray[np.float32], names: Sequence[str], top_k: int = 10
    ) -> list[dict[str, Any]]:
        """For each image embedding, {vocabulary: {softmax_over, matches}}; one product per vocabulary."""
        top_k = check_top_k(top_k)
        embeddings = np.atleast_2d(embeddings)
        versions = self.store.versions()
        out: list[dict[str, Any]] = [{} for _ in range(len(embeddings))]
        self._embed_unindexed(names, versions)
        scale = self.model.logit_scale
        for name in names:
            idx = self.loaded_index(name, versions)
            cos_all = cosines(idx.matrix, embeddings)
            per_image = [scores_from_cosines(cos_all[:, j], scale, top_k) for j in range(len(embeddings))]
            rows = self.store.phrase_rows(np.unique(np.concatenate([idx.ids[s.indices] for s in per_image])))
            for j, s in enumerate(per_image):
                out[j][name] = _vocab_result(s, [rows[int(i)] for i in idx.ids[s.indices]])
        return out

    def analyze(
        self, image: "Image.Image", names: Iterable[str] | None = None, top_k: int = 10
    ) -> dict[str, Any]:
        return self.analyze_many([image], names, top_k)[0]

    def analyze_many(
        self, images: Sequence["Image.Image"], names: Iterable[str] | None = None, top_k: int = 10,
        embed: Callable[[Sequence["Image.Image"]], npt.NDArray[np.float32]] | None = None,
    ) -> list[dict[str, Any]]:
        """One image embedding per image, reused across every requested vocabulary."""
        resolved = self.resolve(names)
        check_top_k(top_k)
        t0 = time.perf_counter()
        embeddings = (embed or self.embed_images)(images)
        t1 = time.perf_counter()
        results = self.score(embeddings, resolved, top_k)
        t2 = time.perf_counter()
        model = self.model_json()
        return [
            {
                "model": model,
                "results": r,
                "timing_breakdown_ms": {"embed_image": round((t1 - t0) * 1000 / max(1, len(images)), 2),
                                        "score": round((t2 - t1) * 1000 / max(1, len(images)), 2)},
            }
            for r in results
        ]

    def text_embeddings(self, phrases: Sequence[str], persist: bool) -> npt.NDArray[np.float32]:
        """Embeddings of ad-hoc phrases: from the store, then a small in-memory cache, then the model.

        With `persist` the new ones are stored (the library's repeated calls reuse them); without,
        nothing is written (the API's /v1/compare).
        """
        found = self.store.cached_embeddings(self.model_key, phrases)
        with self._text_cache_lock:
            for p in phrases:
                if p not in found and p in self._text_cache:
                    found[p] = self._text_cache[p]
        todo = [p for p in dict.fromkeys(phrases) if p not in found]
        if todo:
            vectors = self.model.encode_texts(todo)
            if persist:
                self.store.put_embeddings(self.model_key, todo, vectors)
            with self._text_cache_lock:
                for p, v in zip(todo, vectors):
                    found[p] = v
                    self._text_cache[p] = v
                    self._text_cache.move_to_end(p)
                while len(self._text_cache) > 20_000:
                    self._text_cache.popitem(last=False)
        return np.stack([found[p] for p in phrases]) if phrases else np.empty((0, 0), dtype=np.float32)

    def compare(
        self, image: "Image.Image", phrases: Sequence[str], persist: bool = False,
        embed: Callable[[Sequence["Image.Image"]], npt.NDArray[np.float32]] | None = None,
    ) -> dict[str, Any]:
        """Softmax over exactly these phrases (in any order; duplicates refused)."""
        phrases = check_compare_phrases(phrases)
        t0 = time.perf_counter()
        emb = (embed or self.embed_images)([image])[0]
        t1 = time.perf_counter()
        matrix = self.text_embeddings(phrases, persist=persist)
        s = scores_from_cosines(matrix @ emb, self.model.logit_scale)
        t2 = time.perf_counter()
        rows = [{"term": phrases[i], "phrase": phrases[i], "external_id": None, "metadata": None} for i in s.indices]
        return {
            "model": self.model_json(),
            "results": {"compare": _vocab_result(s, rows)},
            "timing_breakdown_ms": {"embed_image": round((t1 - t0) * 1000, 2), "score": round((t2 - t1) * 1000, 2)},
        }

    # -- writes ---------------------------------------------------------------------------------
    def create_vocabulary(
        self, name: str, phrases: object = None, templates: object = None, description: object = None
    ) -> WriteResult:
        name = validate_name(name)
        if name in catalog().vocabularies:
            raise Conflict(f"{name!r} is the name of a built-in vocabulary; choose another", code="vocabulary_exists")
        tpl = validate_templates(templates)
        desc = validate_description(description)
        items = parse_phrase_items(phrases, MAX_PHRASES_PER_WRITE) if phrases not in (None, []) else []
        specs = apply_templates(items, tpl)
        if self.store.find_vocabulary(name) is not None:  # fail before embedding; the write checks again
            raise Conflict(f"a vocabulary named {name!r} already exists", code="vocabulary_exists")
        vectors = self._embed_new(specs)  # before the write: a model failure stores nothing
        result = self.store.create_vocabulary(name, tpl, desc, specs, self.model_key, vectors)
        self._refresh_index(name)
        return result

    def add_phrases(self, name: str, phrases: object) -> WriteResult:
        self.resolve([validate_name(name)])
        vocab = self.store.get_vocabulary(name)
        items = parse_phrase_items(phrases, MAX_PHRASES_PER_WRITE)
        specs = apply_templates(items, vocab.templates)
        if vocab.builtin:  # say so before spending time on embeddings
            raise ReadOnly(f"{name!r} is a built-in vocabulary and cannot be changed; create your own with `vocab create`")
        vectors = self._embed_new(specs)
        result = self.store.add_phrases(name, specs, self.model_key, vectors)
        if result.added:
            self._refresh_index(name)
        return result

    def remove_phrases(self, name: str, terms: object = None, external_ids: object = None) -> WriteResult:
        terms_l = _string_list(terms, "terms")
        ids_l = _string_list(external_ids, "external_ids")
        if not terms_l and not ids_l:
            raise InvalidInput("give 'terms' or 'external_ids' to remove", code="invalid_input")
        self.resolve([validate_name(name)])
        result = self.store.remove_phrases(name, terms_l, ids_l)
        if result.removed:
            self._refresh_index(name)
        return result

    def delete_vocabulary(self, name: str) -> WriteResult:
        self.resolve([validate_name(name)])
        result = self.store.delete_vocabulary(name)
        self._indexes.pop(name, None)
        return result

    def _embed_new(self, specs: Sequence[PhraseSpec]) -> npt.NDArray[np.float32]:
        """Embeddings for every phrase (stored ones reused, new ones encoded), in order."""
        if not specs:
            return np.empty((0, 0), dtype=np.float32)
        phrases = [s.phrase for s in specs]
        found = self.store.cached_embeddings(self.model_key, phrases)
        todo = [p for p in dict.fromkeys(phrases) if p not in found]
        if todo:
            found.update(zip(todo, self.model.encode_texts(todo, progress=None)))
        return np.stack([found[p] for p in phrases])

    def _refresh_index(self, name: str) -> None:
        """Write the new version's index file now, so other workers load it instead of rebuilding."""
        vocab = self.store.get_vocabulary(name)
        ids, mat, missing = self.store.vectors(self.model_key, vocab.id)
        if not missing:
            self.store.write_index(self.model_key, vocab, ids, mat)


def rest_answer(result: dict[str, Any], image: dict[str, Any], decode_ms: float = 0.0, **extra: Any) -> dict[str, Any]:
    """The REST answer shape (GUIDE §4) for one analysed image; `extra` keys go after `ok`."""
    breakdown = {"decode": round(decode_ms, 2), **result["timing_breakdown_ms"]}
    return {"ok": True, **extra, "model": result["model"], "image": image, "results": result["results"],
            "timing_ms": round(sum(breakdown.values()), 2), "timing_breakdown_ms": breakdown}


def check_top_k(top_k: object) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
        raise InvalidInput(f"top_k must be a whole number from 1 to {MAX_TOP_K}, not {top_k!r}", code="invalid_top_k")
    return top_k


def check_compare_phrases(phrases: object) -> list[str]:
    if not isinstance(phrases, (list, tuple)) or not phrases:
        raise InvalidInput("give at least one phrase to compare", code="invalid_phrase")
    if len(phrases) > MAX_COMPARE_PHRASES:
        raise InvalidInput(f"{len(phrases)} phrases; compare takes at most {MAX_COMPARE_PHRASES}", code="too_many")
    clean = [validate_phrase(p, f"phrases[{i}]") for i, p in enumerate(phrases)]
    if len(set(clean)) != len(clean):
        seen: set[str] = set()
        twice = next(p for p in clean if p in seen or seen.add(p))  # type: ignore[func-returns-value]
        raise InvalidInput(f"phrase given twice: {twice!r}", code="invalid_phrase")
    return clean


def _string_list(value: object, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
        raise InvalidInput(f"'{what}' must be a list of strings", code="invalid_input")
    return [str(v) for v in value]


def _vocab_result(s: Scores, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {
        "softmax_over": s.softmax_over,
        "matches": [
            {
                "phrase": row["phrase"],
                "term": row["term"],
                "probability": float(s.probabilities[k]),
                "cosine": float(s.cosines[k]),
                "logit": float(s.logits[k]),
                "external_id": row["external_id"],
                "metadata": row["metadata"],
            }
            for k, row in enumerate(rows)
        ],
    }
