"""Does CLIP agree with people? `clip-gaze evaluate`: a vocabulary's answers for the pictures of a
labels file (`labels`), grouped by term (`terms`), measured against the labels and ratings
(`metrics`), and written as a report (`report`).

Pictures are read and embedded through the engine (`reader`, `embed_images`), so a picture's
embedding is stored by content hash and a second evaluation, against any vocabulary, encodes
nothing. With a reference collection, the same figures after the hub correction (`scoring.hubs`).
Labels that are not terms of the vocabulary and pictures that cannot be read are listed, never fatal.
"""

from __future__ import annotations

import base64
import io
import time
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import numpy.typing as npt

from ..errors import ClipGazeError, InvalidInput
from ..pictures.sources import PictureRef
from ..schema.collections import PictureInfo
from ..schema.evaluate import Bootstrap, Evaluation, MissingLabel, Prediction, RelativeMetrics, TopTerm
from ..scoring.hubs import DEFAULT_METHOD, Reference, check_method
from ..scoring.kernels import cosines
from ..vocabularies.index_cache import LoadedIndex
from . import report
from .labels import LabelledPicture, LabelsFile, read_labels
from .metrics import measure, truth_of
from .terms import Scored, Terms, concat, score_block

if TYPE_CHECKING:  # pragma: no cover
    from ..engine import Engine
    from ..pictures.decode import DecodedImage
    from ..vocabularies.embedder import ProgressFactory

PHRASE_ROWS_CHUNK = 20_000  # phrase ids per SQL query


def evaluate(
    engine: "Engine",
    labels: "str | Path | LabelsFile",
    vocabulary: str,
    *,
    relative_to: str | None = None,
    method: str = DEFAULT_METHOD,
    resamples: int = 1000,
    seed: int = 0,
    report_dir: str | Path | None = None,
    batch_size: int = 32,
    progress: "ProgressFactory | None" = None,
) -> Evaluation:
    """`clip-gaze evaluate`: the vocabulary's answers for the pictures of `labels` against their labels
    (and ratings); with `relative_to`, the same after the hub correction against that collection.
    `labels` may be a LabelsFile already read (`labels.from_reviews`: a collection's pictures, whose
    stored embeddings are used as they are)."""
    t0 = time.perf_counter()
    if resamples < 0:
        raise InvalidInput("resamples must be 0 or more", code="invalid_input")
    check_method(method)
    [name] = engine.resolve([vocabulary])
    vocab_info = engine.vocabulary(name)
    file = labels if isinstance(labels, LabelsFile) else read_labels(labels, engine.limits.fetch)
    if relative_to:
        engine.images.get(relative_to)  # an unknown collection is refused before any work
    _ = engine.model  # a model problem stops here, before any picture is read

    # pictures: read, embedded once per model (stored by content hash), scored in batches; the index
    # (and the reference's statistics) are made when the first picture has been read
    scale = np.float32(engine.model.logit_scale)
    v: _Vocabulary | None = None
    errors = list(file.failures)
    evaluated: list[LabelledPicture] = []
    shas: list[str] = []
    plain: list[Scored] = []
    corrected: list[Scored] = []
    with progress(len(file.pictures), "reading pictures") if progress else nullcontext(None) as b:
        for start in range(0, len(file.pictures), batch_size):
            batch = file.pictures[start : start + batch_size]
            known = engine.images.cached(engine.model_key, [p.sha256 for p in batch if p.sha256])  # a collection's
            from_store = [p for p in batch if p.sha256 in known]
            read: list[LabelledPicture] = []
            decoded: list[DecodedImage] = []
            for picture in batch:
                if picture.sha256 in known:
                    continue
                try:
                    decoded.append(engine.reader.read_ref(picture.ref))
                    read.append(picture)
                except ClipGazeError as exc:
                    errors.append(PictureInfo(source=picture.ref.source, external_id=picture.external_id,
                                              error_code=exc.code, error=exc.message))
            if from_store or decoded:
                v = v or _Vocabulary.of(engine, name, file, relative_to, method)
                vectors = [known[str(p.sha256)] for p in from_store] + (list(engine.embed_images(decoded)) if decoded else [])
                logits = cosines(v.idx.matrix, np.stack(vectors).astype(np.float32)).T * scale
                plain.append(score_block(logits, v.terms, v.wanted))
                if v.reference is not None:
                    corrected.append(score_block(v.reference.correct(logits), v.terms, v.wanted))
                evaluated.extend(from_store + read)
                shas.extend([str(p.sha256) for p in from_store] + [d.sha256 for d in decoded])
            if b is not None:
                b.update(len(batch))
    if v is None:
        first = f" (first: {errors[0].source}: {errors[0].error})" if errors else ""
        raise InvalidInput(f"no picture of {file.path} could be read: {len(errors)} failed{first}", code="invalid_labels")

    terms, wanted, reference = v.terms, v.wanted, v.reference
    truth = truth_of(evaluated, terms, v.classes, v.rated)
    scored = concat(plain, len(wanted))
    metrics = measure(truth, scored, terms, evaluated, shas, resamples, seed)
    rel = rel_scored = None
    if reference is not None:
        rel_scored = concat(corrected, len(wanted))
        rel = RelativeMetrics(**reference.info().model_dump(),
                              metrics=measure(truth, rel_scored, terms, evaluated, shas, resamples, seed))

    predictions = []
    for i, picture in enumerate(evaluated):
        labels_here = [terms.names[int(c)] for c in truth.classes[truth.Y[i]]]
        top = [TopTerm(term=terms.names[int(t)], phrase=terms.phrases[int(ph)], probability=float(p))
               for t, ph, p in zip(scored.top[i], scored.top_phrase[i], scored.top_p[i])]
        best = None
        if rel_scored is not None:
            best = TopTerm(term=terms.names[int(rel_scored.top[i, 0])], phrase=terms.phrases[int(rel_scored.top_phrase[i, 0])],
                           probability=float(rel_scored.top_p[i, 0]))
        predictions.append(Prediction(
            source=picture.ref.source, external_id=picture.external_id, sha256=shas[i], labels=labels_here,
            term=top[0].term, phrase=top[0].phrase, probability=top[0].probability,
            correct=(top[0].term in labels_here) if labels_here else None, top=top, relative=best,
        ))
    kind = "ratings" if not len(v.classes) and len(v.rated) else ("multi-label" if truth.multi else "single-label")
    answer = Evaluation(
        model=engine.model_info(), vocabulary=vocab_info, labels=str(file.path), kind=kind, terms=len(terms.names),
        softmax_over=len(terms.phrases), size=len(file.pictures) + len(file.failures), evaluated=len(evaluated),
        failed=len(errors), bootstrap=Bootstrap(resamples=resamples, seed=seed), metrics=metrics, relative=rel,
        missing_labels=[MissingLabel(label=k, pictures=n) for k, n in sorted(v.missing.items(), key=lambda kv: (-kv[1], kv[0]))],
        errors=errors, predictions=predictions, timing_ms=0.0,
    )
    if report_dir is not None:
        sources = {e.source for m in (metrics, rel.metrics if rel else None) if m for pair in m.worst_confusions for e in pair.examples}
        thumbs = thumbnails(engine, [p.ref for p in evaluated if p.ref.source in sources])
        answer.report = report.write(answer, Path(report_dir), thumbs)
    answer.timing_ms = round((time.perf_counter() - t0) * 1000, 2)
    return answer


@dataclass
class _Vocabulary:
    """The vocabulary's index grouped by term, the label and rated terms, and the reference's statistics."""

    idx: LoadedIndex
    terms: Terms
    classes: npt.NDArray[np.int64]  # term ids of the labels, in order of appearance
    rated: npt.NDArray[np.int64]  # term ids of the rated terms
    wanted: npt.NDArray[np.int64]  # both: the columns kept of every picture's term probabilities
    missing: Counter[str]  # labels and rated terms that are not terms of the vocabulary
    reference: Reference | None

    @classmethod
    def of(cls, engine: "Engine", name: str, file: LabelsFile, relative_to: str | None, method: str) -> "_Vocabulary":
        versions = engine.store.versions()
        engine.indexes.prepare([name], versions)
        idx = engine.indexes.get(name, versions)
        if not len(idx.ids):
            raise InvalidInput(f"the vocabulary {name!r} has no phrases", code="invalid_input")
        terms = Terms.of(_phrase_rows(engine, idx.ids))
        reference = engine.hubs.reference(idx, relative_to, method) if relative_to else None
        missing: Counter[str] = Counter()
        label_terms: dict[int, None] = {}
        rated_terms: dict[int, None] = {}
        for picture in file.pictures:
            for text, found in [(x, label_terms) for x in picture.labels] + [(x, rated_terms) for x in picture.ratings]:
                t = terms.match(text)
                if t is None:
                    missing[text] += 1
                else:
                    found.setdefault(t)
        classes = np.array(list(label_terms), dtype=np.int64)
        rated = np.array(list(rated_terms), dtype=np.int64)
        return cls(idx, terms, classes, rated, np.concatenate([classes, rated]).astype(np.int64), missing, reference)


def _phrase_rows(engine: "Engine", ids: npt.NDArray[np.int64]) -> list[dict[str, Any]]:
    """The index rows' phrases (term, phrase, external id) in index order."""
    found: dict[int, dict[str, Any]] = {}
    for start in range(0, len(ids), PHRASE_ROWS_CHUNK):
        found.update(engine.store.phrase_rows(ids[start : start + PHRASE_ROWS_CHUNK]))
    return [found[int(i)] for i in ids]



def thumbnails(engine: "Engine", refs: Sequence[PictureRef], size: int = 128) -> dict[str, str]:
    """Small JPEG data: URLs of these pictures, read again (a picture that fails now is left out)."""
    out: dict[str, str] = {}
    for ref in refs:
        try:
            image = engine.reader.read_ref(ref).image.copy()
        except ClipGazeError:
            continue
        image.thumbnail((size, size))
        buf = io.BytesIO()
        image.convert("RGB").save(buf, format="JPEG", quality=80)
        out[ref.source] = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    return out


__all__ = ["Evaluation", "LabelsFile", "Terms", "evaluate", "read_labels", "thumbnails"]


__all__ = ["evaluate", "thumbnails"]
