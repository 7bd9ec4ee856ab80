"""One picture under several models, side by side, with how far they agree (POST /v1/compare-models,
`clip-gaze analyze --model a,b`, `clip_gaze.compare_models`).

Each model reads the picture as /v1/analyze (or /v1/compare, for ad-hoc phrases) would under it: its own
preprocessing and input size, its own embeddings of the phrases (stored once per model), its own logit
scale. The agreement of two models is taken over the whole list, not only what is shown: every phrase's
cosine under each (`agreement`).
"""

from __future__ import annotations

import itertools
import time
from typing import Callable, Sequence

import numpy as np
import numpy.typing as npt

from ..engine import Engine
from ..errors import InvalidInput
from ..pictures.decode import DecodedImage
from ..pictures.reader import ImageSource
from ..schema import DEFAULT_TOP_K, Analysis, compare_phrases
from ..schema.compare_models import ADHOC, Agreement, CompareModelsAnswer, ModelReading
from .agreement import overlap, spearman

Named = tuple[str, Engine]  # a model as served (its name) and its engine


def compare_models(
    engines: Sequence[Named], image: ImageSource | str, vocabularies: Sequence[str] | None = None,
    phrases: Sequence[str] | None = None, top_k: int = DEFAULT_TOP_K, fetch: Callable[[Engine, str], DecodedImage] | None = None,
) -> CompareModelsAnswer:
    """`image` (bytes, a file, a PIL image; a URL as text when `fetch` is given) under each engine, over
    `vocabularies` (the default set if neither they nor `phrases` are given) or exactly `phrases`."""
    if not engines:
        raise InvalidInput("name at least one model to compare", code="invalid_input")
    if phrases is not None and vocabularies:
        raise InvalidInput("compare models over vocabularies or over phrases, not both", code="invalid_input")
    t0 = time.perf_counter()
    adhoc = compare_phrases(list(phrases)) if phrases is not None else None
    first = engines[0][1]
    names = None if adhoc is not None else first.resolve(vocabularies)  # unknown names refused before any reading
    pictures = _pictures(engines, image, fetch)
    readings: list[ModelReading] = []
    scores: list[dict[str, tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]]] = []  # per model: list → (ids, cosines)
    for (name, engine), picture in zip(engines, pictures):
        if adhoc is not None:
            analysis = engine.compare(picture, adhoc)
            emb = engine.embed_images([picture])[0]
            full = {ADHOC: (np.arange(len(adhoc), dtype=np.int64), engine.embedder.lookup(adhoc) @ emb)}
        else:
            assert names is not None
            analysis = engine.analyze(picture, names, top_k)
            full = _cosines(engine, engine.embed_images([picture])[0], names)
        readings.append(_reading(name, analysis))
        scores.append(full)
    agreement = {key: [_agree(readings[i].name, readings[j].name, scores[i][key], scores[j][key], top_k, adhoc,
                              engines[i][1] if adhoc is None else None)
                       for i, j in itertools.combinations(range(len(engines)), 2)]
                 for key in scores[0]}
    return CompareModelsAnswer(image=pictures[0].info(), models=readings, agreement=agreement,
                               timing_ms=round((time.perf_counter() - t0) * 1000, 2))


def _pictures(engines: Sequence[Named], image: ImageSource | str,
              fetch: Callable[[Engine, str], DecodedImage] | None) -> list[DecodedImage]:
    """The picture for each engine: read by each (its input size) from bytes or a file; a URL fetched once,
    by the engine with the largest input, and handed to the others."""
    if isinstance(image, str) and fetch is not None:
        largest = max((engine for _, engine in engines), key=lambda e: e.spec.image_size())
        fetched = fetch(largest, image)
        return [fetched for _ in engines]
    return [engine.read(image) for _, engine in engines]


def _reading(name: str, analysis: Analysis) -> ModelReading:
    return ModelReading(name=name, model=analysis.model, results=analysis.results, timing_ms=analysis.timing_ms)


def _cosines(engine: Engine, emb: npt.NDArray[np.float32],
             names: Sequence[str]) -> dict[str, tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]]:
    """Every phrase's cosine with the picture, per vocabulary, ordered by phrase id."""
    versions = engine.store.versions()
    engine.indexes.prepare(names, versions)
    out = {}
    for name in names:
        idx = engine.indexes.get(name, versions)
        order = np.argsort(idx.ids, kind="mergesort")
        out[name] = (idx.ids[order], (np.asarray(idx.matrix, dtype=np.float32) @ emb)[order])
    return out


def _agree(a: str, b: str, left: tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]],
           right: tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]], top_k: int, adhoc: Sequence[str] | None,
           engine: Engine | None) -> Agreement:
    ids_a, cos_a = left
    ids_b, cos_b = right
    if not np.array_equal(ids_a, ids_b):  # a list edited between the two readings: compare what both hold
        common, ia, ib = np.intersect1d(ids_a, ids_b, return_indices=True)
        ids_a, cos_a, cos_b = common, cos_a[ia], cos_b[ib]
    share, k, shared = overlap(cos_a, cos_b, top_k)
    if adhoc is not None:
        texts = [adhoc[int(ids_a[i])] for i in shared]
    else:
        assert engine is not None
        rows = engine.store.phrase_rows(ids_a[shared]) if shared else {}
        texts = [rows[int(ids_a[i])]["phrase"] for i in shared]
    rho = spearman(cos_a, cos_b)
    return Agreement(models=[a, b], spearman=None if rho is None else round(rho, 6), top_k_overlap=share,
                     k=k, shared=texts)


__all__ = ["compare_models"]
