"""Does CLIP agree with people? A vocabulary's answers measured against human labels or ratings.

A labels file is a CSV/TSV or JSON Lines file read like a collection source (`sources.expand`): an
`image` column (a path relative to the file, an absolute path, or a URL), an optional `external_id`,
and either `label` (a term of the vocabulary; `|` separates several, or a JSON list) or `term` and
`rating` (graded judgements; one row per picture and term). Pictures are read and embedded through the
engine (`read`, `embed_images`), so a picture's embedding is stored by content hash and a second
evaluation, against any vocabulary, encodes nothing.

A label matches a vocabulary *term*, not a templated phrase: exactly, else ignoring case and repeated
white space, else a phrase's `external_id`. A term with several templates has several phrases; its
probability is the sum of its phrases' probabilities (the softmax runs over every phrase, as in
`analyze`). The best term is the one with the highest such sum.

Metrics come from scikit-learn (precision, recall and F1 per term, their macro means, the confusion
matrix, average precision, the reliability curve) and scipy (Spearman); each headline figure has a
bootstrap 95 % interval (pictures resampled with replacement, a fixed seed). Labels that are not terms
of the vocabulary and pictures that cannot be read are listed, never fatal.
"""

from __future__ import annotations

import base64
import io
import math
import time
import unicodedata
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import numpy.typing as npt

from . import relative
from .errors import ClipGazeError, InvalidInput
from .kernels import cosines
from .schema_collections import PictureInfo
from .schema_evaluate import (
    Bootstrap,
    CalibrationBin,
    ClassMetrics,
    Confusion,
    ConfusionPair,
    Evaluation,
    Example,
    Interval,
    Metrics,
    MissingLabel,
    Prediction,
    RelativeMetrics,
    TopTerm,
    Winner,
)
from .sources import PictureRef, SourceFailure, expand

if TYPE_CHECKING:  # pragma: no cover
    from .embedder import ProgressFactory
    from .engine import Engine
    from .images import DecodedImage

LABEL_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson")
OTHER = "(any other term)"
TOP = 5  # terms kept per picture (top-5 accuracy)
BINS = 10  # calibration bins
MAX_CONFUSION = 100  # terms shown in the confusion matrix (the most frequent labels)
EXTRA_COLUMNS = 5  # terms that are no label but win most often, shown as columns of their own
WINNERS = 10
WORST = 8  # confusions listed, each with up to EXAMPLES pictures
EXAMPLES = 4
PHRASE_ROWS_CHUNK = 20_000  # phrase ids per SQL query


# -- the labels file --------------------------------------------------------------------------------
@dataclass
class LabelledPicture:
    ref: PictureRef
    row: int
    external_id: str | None = None
    labels: list[str] = field(default_factory=list)
    ratings: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class LabelsFile:
    path: Path
    pictures: list[LabelledPicture]
    failures: list[PictureInfo]
    has_labels: bool
    has_ratings: bool


def _split_labels(value: Any) -> list[str]:
    if isinstance(value, list):
        parts = [str(v) for v in value if v is not None]
    else:
        parts = str(value).split("|")
    return [p.strip() for p in parts if p.strip()]


def _rating(value: Any, where: str) -> float:
    if isinstance(value, bool):
        raise InvalidInput(f"{where}: rating {value!r} is not a number", code="invalid_labels")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{where}: rating {value!r} is not a number", code="invalid_labels") from None
    if not math.isfinite(number):
        raise InvalidInput(f"{where}: rating {value!r} is not a finite number", code="invalid_labels")
    return number


def read_labels(path: str | Path, policy: Any = None) -> LabelsFile:
    """The pictures of a labels file with their labels and ratings (a picture named on several rows
    gathers them); rows without a picture are returned as failures."""
    from .fetch import FetchPolicy

    path = Path(path).expanduser()
    if not path.is_file():
        raise InvalidInput(f"no such labels file: {path}", code="file_not_found")
    if not path.name.lower().endswith(LABEL_SUFFIXES):
        raise InvalidInput(f"{path}: a labels file is a .csv, .tsv or .jsonl file with an `image` column",
                           code="invalid_labels")
    pictures: dict[str, LabelledPicture] = {}
    failures: list[PictureInfo] = []
    has_labels = has_ratings = False
    for row, item in enumerate(expand(str(path), policy or FetchPolicy()), 1):
        if isinstance(item, SourceFailure):
            if item.source == str(path):  # the file itself: no `image` column, not UTF-8, not JSON
                raise InvalidInput(item.error, code="invalid_labels")
            failures.append(PictureInfo(source=item.source, external_id=item.external_id, error_code=item.code, error=item.error))
            continue
        meta = dict(item.metadata or {})
        where = f"{path}, row {row}"
        picture = pictures.setdefault(item.source, LabelledPicture(item, row))
        picture.external_id = picture.external_id or item.external_id
        if "label" in meta:
            has_labels = True
            picture.labels.extend(label for label in _split_labels(meta["label"]) if label not in picture.labels)
        if "term" in meta or "rating" in meta:
            if "term" not in meta or "rating" not in meta:
                raise InvalidInput(f"{where}: a rating needs both `term` and `rating`", code="invalid_labels")
            has_ratings = True
            term = str(meta["term"]).strip()
            if term:
                picture.ratings.setdefault(term, []).append(_rating(meta["rating"], where))
    if not has_labels and not has_ratings:
        raise InvalidInput(
            f"{path} has no `label` column (terms of the vocabulary, `|` between several) and no `term` and `rating` "
            "columns", code="invalid_labels")
    return LabelsFile(path, list(pictures.values()), failures, has_labels, has_ratings)


# -- terms ------------------------------------------------------------------------------------------
def _loose(text: str) -> str:
    return unicodedata.normalize("NFC", " ".join(text.split())).casefold()


@dataclass
class Terms:
    """A vocabulary's index rows grouped by term: term i's phrases are `phrases_of[i]` (index rows)."""

    names: list[str]
    phrase_term: npt.NDArray[np.int64]
    phrases: list[str]
    phrases_of: list[npt.NDArray[np.int64]]
    order: npt.NDArray[np.int64]
    starts: npt.NDArray[np.int64]
    exact: dict[str, int]
    loose: dict[str, int]
    by_external_id: dict[str, int]

    @classmethod
    def of(cls, rows: Sequence[dict[str, Any]]) -> "Terms":
        names: list[str] = []
        index: dict[str, int] = {}
        by_external_id: dict[str, int] = {}
        phrase_term = np.empty(len(rows), dtype=np.int64)
        for i, r in enumerate(rows):
            t = index.setdefault(r["term"], len(names))
            if t == len(names):
                names.append(r["term"])
            phrase_term[i] = t
            if r.get("external_id"):
                by_external_id.setdefault(str(r["external_id"]), t)
        order = np.argsort(phrase_term, kind="stable")
        sorted_terms = phrase_term[order]
        starts = np.flatnonzero(np.r_[True, sorted_terms[1:] != sorted_terms[:-1]]) if len(rows) else np.zeros(0, np.int64)
        phrases_of = np.split(order, starts[1:]) if len(rows) else []
        loose: dict[str, int] = {}
        for t, name in enumerate(names):
            loose.setdefault(_loose(name), t)
        return cls(names, phrase_term, [r["phrase"] for r in rows], phrases_of, order, starts.astype(np.int64),
                   index, loose, by_external_id)

    def match(self, label: str) -> int | None:
        found = self.exact.get(label)
        if found is None:
            found = self.loose.get(_loose(label))
        if found is None:
            found = self.by_external_id.get(label)
        return found


# -- scoring ----------------------------------------------------------------------------------------
@dataclass
class Scored:
    """What the metrics need of every evaluated picture, for one way of scoring (plain or corrected)."""

    top: npt.NDArray[np.int64]  # (pictures, TOP) best terms, best first
    top_p: npt.NDArray[np.float64]  # their probabilities
    top_phrase: npt.NDArray[np.int64]  # (pictures, TOP) each best term's most probable phrase (index row)
    columns: npt.NDArray[np.float64]  # (pictures, len(wanted)) the wanted terms' probabilities


def _score_block(logits: npt.NDArray[np.float32], terms: Terms, wanted: npt.NDArray[np.int64]) -> Scored:
    peak = logits.max(axis=1, keepdims=True)
    e = np.exp((logits - peak).astype(np.float64))
    p = e / e.sum(axis=1, keepdims=True)  # (pictures, phrases): the softmax over every phrase
    pt = np.add.reduceat(p[:, terms.order], terms.starts, axis=1)  # (pictures, terms): sums of their phrases
    k = min(TOP, pt.shape[1])
    part = np.argpartition(-pt, k - 1, axis=1)[:, :k]
    top = np.take_along_axis(part, np.argsort(-np.take_along_axis(pt, part, axis=1), axis=1, kind="stable"), axis=1)
    top_phrase = np.empty_like(top)
    for i in range(top.shape[0]):
        for j in range(k):
            rows = terms.phrases_of[int(top[i, j])]
            top_phrase[i, j] = rows[int(np.argmax(p[i, rows]))]
    return Scored(top.astype(np.int64), np.take_along_axis(pt, top, axis=1), top_phrase.astype(np.int64), pt[:, wanted])


def _concat(parts: list[Scored], wanted: int) -> Scored:
    if not parts:
        return Scored(np.zeros((0, TOP), np.int64), np.zeros((0, TOP)), np.zeros((0, TOP), np.int64), np.zeros((0, wanted)))
    return Scored(*(np.concatenate([getattr(s, f) for s in parts]) for f in ("top", "top_p", "top_phrase", "columns")))


# -- metrics ----------------------------------------------------------------------------------------
@dataclass
class Truth:
    """The human side, over the evaluated pictures: labels as an indicator matrix over the label terms,
    and ratings as (picture, column, rating) triples."""

    classes: npt.NDArray[np.int64]  # term ids of the label terms (columns of Y)
    Y: npt.NDArray[np.bool_]  # (pictures, classes)
    multi: bool
    rated_picture: npt.NDArray[np.int64]
    rated_column: npt.NDArray[np.int64]  # into Scored.columns
    rating: npt.NDArray[np.float64]


def _ece(correct: npt.NDArray[np.bool_], confidence: npt.NDArray[np.float64]) -> tuple[float | None, list[CalibrationBin]]:
    """Expected calibration error over BINS equal-width bins, and the bins (sklearn's calibration_curve)."""
    from sklearn.calibration import calibration_curve

    edges = np.linspace(0.0, 1.0, BINS + 1)
    if len(correct) == 0:
        return None, []
    conf = np.clip(confidence, 0.0, 1.0)
    acc, mean_conf = calibration_curve(correct.astype(int), conf, n_bins=BINS, strategy="uniform", pos_label=1)
    counts = np.bincount(np.searchsorted(edges[1:-1], conf), minlength=BINS)  # calibration_curve's own binning
    nonzero = counts > 0
    ece = float(np.sum(counts[nonzero] / len(conf) * np.abs(acc - mean_conf)))
    bins, filled = [], iter(zip(acc, mean_conf))
    for b in range(BINS):
        a, c = next(filled) if nonzero[b] else (None, None)
        bins.append(CalibrationBin(low=float(edges[b]), high=float(edges[b + 1]), count=int(counts[b]),
                                   confidence=None if c is None else float(c), accuracy=None if a is None else float(a)))
    return ece, bins


def _spearman(ratings: npt.NDArray[np.float64], scores: npt.NDArray[np.float64]) -> float | None:
    from scipy.stats import spearmanr

    if len(ratings) < 3 or np.ptp(ratings) == 0 or np.ptp(scores) == 0:
        return None
    rho = spearmanr(ratings, scores).statistic
    return float(rho) if np.isfinite(rho) else None


class _Figures:
    """The headline figures for any resample of the evaluated pictures (a bootstrap draws many)."""

    def __init__(self, truth: Truth, scored: Scored, class_column: dict[int, int]):
        self.truth, self.scored = truth, scored
        n = len(scored.top)
        col = np.full(n, -1, dtype=np.int64)  # each picture's best term as a column of Y (-1: not a label term)
        for i, t in enumerate(scored.top[:, 0]):
            col[i] = class_column.get(int(t), -1)
        self.pred_col = col
        Y = truth.Y
        self.labelled: npt.NDArray[np.bool_] = np.asarray(Y.any(axis=1), dtype=bool)
        self.correct = np.array([col[i] >= 0 and bool(Y[i, col[i]]) for i in range(n)], dtype=bool)
        hit = np.zeros(n, dtype=bool)
        for j in range(scored.top.shape[1] if Y.shape[1] else 0):
            cj = np.array([class_column.get(int(t), -1) for t in scored.top[:, j]], dtype=np.int64)
            hit |= (cj >= 0) & Y[np.arange(n), np.maximum(cj, 0)]
        self.hit5 = hit
        self.label_scores = scored.columns[:, : len(truth.classes)]

    def per_class(self, s: npt.NDArray[np.int64]) -> tuple[Any, ...]:
        from sklearn.metrics import precision_recall_fscore_support

        Y = self.truth.Y[s]
        present = np.flatnonzero(Y.any(axis=0))
        if self.truth.multi:
            predicted = np.zeros_like(Y)
            rows = np.flatnonzero(self.pred_col[s] >= 0)
            predicted[rows, self.pred_col[s][rows]] = True
            p, r, f, support = precision_recall_fscore_support(Y[:, present], predicted[:, present], average=None,
                                                               zero_division=0)
        else:
            p, r, f, support = precision_recall_fscore_support(Y.argmax(axis=1), self.pred_col[s], labels=present,
                                                               average=None, zero_division=0)
        return present, p, r, f, support

    def average_precision(self, s: npt.NDArray[np.int64], present: npt.NDArray[np.int64]) -> list[float]:
        from sklearn.metrics import average_precision_score

        Y, scores = self.truth.Y[s], self.label_scores[s]
        return [float(average_precision_score(Y[:, c], scores[:, c])) for c in present]

    def __call__(self, sample: npt.NDArray[np.int64]) -> dict[str, float | None]:
        s = sample[self.labelled[sample]]
        out: dict[str, float | None] = {k: None for k in ("top1", "top5", "balanced_accuracy", "macro_f1", "map", "ece", "spearman")}
        if len(s):
            out["top1"] = float(self.correct[s].mean())
            out["top5"] = float(self.hit5[s].mean())
            present, _p, r, f, _support = self.per_class(s)
            out["balanced_accuracy"] = float(np.mean(r))
            out["macro_f1"] = float(np.mean(f))
            if self.truth.multi:
                out["map"] = float(np.mean(self.average_precision(s, present)))
            out["ece"] = _ece(self.correct[s], self.scored.top_p[s, 0])[0]
        t = self.truth
        if len(t.rating):
            weights = np.bincount(sample, minlength=len(self.labelled))[t.rated_picture]
            pairs = np.repeat(np.arange(len(t.rating)), weights)
            out["spearman"] = _spearman(t.rating[pairs], self.scored.columns[t.rated_picture[pairs], t.rated_column[pairs]])
        return out


def _intervals(figures: _Figures, n: int, resamples: int, seed: int) -> dict[str, Interval]:
    from sklearn import config_context

    point = figures(np.arange(n))
    draws: dict[str, list[float]] = {k: [] for k in point}
    rng = np.random.default_rng(seed)
    with config_context(skip_parameter_validation=True, assume_finite=True):  # validated once, for the point figures
        for _ in range(resamples if n else 0):
            for k, v in figures(rng.integers(0, n, n)).items():
                if v is not None and np.isfinite(v):
                    draws[k].append(v)
    out = {}
    for k, v in point.items():
        if v is None or len(draws[k]) < 2:
            out[k] = Interval(value=v)
        else:
            low, high = np.percentile(draws[k], [2.5, 97.5])
            out[k] = Interval(value=v, low=float(low), high=float(high))
    return out


def _confusion(truth: Truth, figures: _Figures, scored: Scored, terms: Terms, labelled: npt.NDArray[np.int64],
               present: npt.NDArray[np.int64]) -> Confusion:
    """Rows: the MAX_CONFUSION most frequent labels; columns: those, then the terms that are no label but
    win most often (a hub shows as a column of its own), then every other term together."""
    from sklearn.metrics import confusion_matrix

    shown = [int(c) for c in sorted(present, key=lambda c: (-int(truth.Y[labelled, c].sum()), int(c)))[:MAX_CONFUSION]]
    rows = labelled[np.isin(truth.Y[labelled].argmax(axis=1), shown)]
    label_terms = {int(t) for t in truth.classes}
    outsiders = Counter(int(t) for t in scored.top[rows, 0] if int(t) not in label_terms)
    extra = [t for t, _ in outsiders.most_common(EXTRA_COLUMNS)]
    names = [terms.names[int(truth.classes[c])] for c in shown] + [terms.names[t] for t in extra]
    position = {("class", c): i for i, c in enumerate(shown)} | {("term", t): len(shown) + i for i, t in enumerate(extra)}
    y_true = [position[("class", int(c))] for c in truth.Y[rows].argmax(axis=1)]
    y_pred = [position.get(("class", int(c)), position.get(("term", int(t)), len(names)))
              for c, t in zip(figures.pred_col[rows], scored.top[rows, 0])]
    matrix = confusion_matrix(y_true, y_pred, labels=list(range(len(names) + 1)))[: len(shown)]
    return Confusion(labels=names[: len(shown)], predicted=names + [OTHER], matrix=matrix.tolist())


def _metrics(truth: Truth, scored: Scored, terms: Terms, pictures: list[LabelledPicture], shas: list[str],
             resamples: int, seed: int) -> Metrics:
    class_column = {int(t): c for c, t in enumerate(truth.classes)}
    figures = _Figures(truth, scored, class_column)
    n = len(scored.top)
    ci = _intervals(figures, n, resamples, seed)
    labelled = np.flatnonzero(figures.labelled)
    per_class: list[ClassMetrics] = []
    confusion = None
    calibration: list[CalibrationBin] = []
    if len(labelled):
        present, p, r, f, support = figures.per_class(labelled)
        ap = figures.average_precision(labelled, present) if truth.multi else [None] * len(present)
        predicted = Counter(int(c) for c in figures.pred_col[labelled] if c >= 0)
        per_class = [ClassMetrics(term=terms.names[int(truth.classes[c])], support=int(support[k]), predicted=predicted.get(int(c), 0),
                                  precision=float(p[k]), recall=float(r[k]), f1=float(f[k]), average_precision=ap[k])
                     for k, c in enumerate(present)]
        calibration = _ece(figures.correct[labelled], scored.top_p[labelled, 0])[1]
        if not truth.multi:
            confusion = _confusion(truth, figures, scored, terms, labelled, present)
    wins = Counter(int(t) for t in scored.top[:, 0])
    winners = []
    for t, count in wins.most_common(WINNERS):
        c = class_column.get(t)
        hits = int(np.sum(truth.Y[scored.top[:, 0] == t, c])) if c is not None else 0
        winners.append(Winner(term=terms.names[t], wins=count, share=count / max(1, n), labelled=hits))
    pairs: dict[tuple[int, int], list[int]] = {}
    for i in labelled:
        if figures.correct[i]:
            continue
        for k in np.flatnonzero(truth.Y[i]):
            pairs.setdefault((int(truth.classes[k]), int(scored.top[i, 0])), []).append(int(i))
    worst = []
    for (label, term), members in sorted(pairs.items(), key=lambda kv: (-len(kv[1]), terms.names[kv[0][0]], terms.names[kv[0][1]]))[:WORST]:
        members.sort(key=lambda i: -scored.top_p[i, 0])
        examples = [Example(source=pictures[i].ref.source, external_id=pictures[i].external_id, sha256=shas[i],
                            probability=float(scored.top_p[i, 0])) for i in members[:EXAMPLES]]
        worst.append(ConfusionPair(label=terms.names[label], term=terms.names[term], count=len(members), examples=examples))
    return Metrics(
        pictures=len(labelled), top1=ci["top1"], top5=ci["top5"], balanced_accuracy=ci["balanced_accuracy"],
        macro_f1=ci["macro_f1"], mean_average_precision=ci["map"] if truth.multi else None, ece=ci["ece"],
        rated_pairs=len(truth.rating), spearman=ci["spearman"] if len(truth.rating) else None,
        per_class=per_class, confusion=confusion, calibration=calibration, winners=winners, worst_confusions=worst,
    )


# -- the evaluation ---------------------------------------------------------------------------------
def evaluate(
    engine: "Engine",
    labels: str | Path,
    vocabulary: str,
    *,
    relative_to: str | None = None,
    method: str = relative.DEFAULT_METHOD,
    resamples: int = 1000,
    seed: int = 0,
    report_dir: str | Path | None = None,
    batch_size: int = 32,
    progress: "ProgressFactory | None" = None,
) -> Evaluation:
    """`clip-gaze evaluate`: the vocabulary's answers for the pictures of `labels` against their labels
    (and ratings); with `relative_to`, the same after the hub correction against that collection."""
    t0 = time.perf_counter()
    if resamples < 0:
        raise InvalidInput("resamples must be 0 or more", code="invalid_input")
    relative.check_method(method)
    [name] = engine.resolve([vocabulary])
    vocab_info = engine.vocabulary(name)
    file = read_labels(labels, engine.collections.policy)
    if relative_to:
        engine.collections.images.get(relative_to)  # an unknown collection is refused before any work
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
            decoded: list[DecodedImage] = []
            for picture in batch:
                try:
                    decoded.append(engine.collections.read(picture.ref))
                    evaluated.append(picture)
                except ClipGazeError as exc:
                    errors.append(PictureInfo(source=picture.ref.source, external_id=picture.external_id,
                                              error_code=exc.code, error=exc.message))
            if decoded:
                v = v or _Vocabulary.of(engine, name, file, relative_to, method)
                embeddings = engine.embed_images(decoded)
                logits = cosines(v.idx.matrix, embeddings).T * scale
                plain.append(_score_block(logits, v.terms, v.wanted))
                if v.reference is not None:
                    corrected.append(_score_block(v.reference.correct(logits), v.terms, v.wanted))
                shas.extend(d.sha256 for d in decoded)
            if b is not None:
                b.update(len(batch))
    if v is None:
        first = f" (first: {errors[0].source}: {errors[0].error})" if errors else ""
        raise InvalidInput(f"no picture of {file.path} could be read: {len(errors)} failed{first}", code="invalid_labels")

    terms, wanted, reference = v.terms, v.wanted, v.reference
    truth = _truth(evaluated, terms, v.classes, v.rated)
    scored = _concat(plain, len(wanted))
    metrics = _metrics(truth, scored, terms, evaluated, shas, resamples, seed)
    rel = rel_scored = None
    if reference is not None:
        rel_scored = _concat(corrected, len(wanted))
        rel = RelativeMetrics(**reference.info().model_dump(),
                              metrics=_metrics(truth, rel_scored, terms, evaluated, shas, resamples, seed))

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
        from . import report

        sources = {e.source for m in (metrics, rel.metrics if rel else None) if m for pair in m.worst_confusions for e in pair.examples}
        thumbs = thumbnails(engine, [p.ref for p in evaluated if p.ref.source in sources])
        answer.report = report.write(answer, Path(report_dir), thumbs)
    answer.timing_ms = round((time.perf_counter() - t0) * 1000, 2)
    return answer


@dataclass
class _Vocabulary:
    """The vocabulary's index grouped by term, the label and rated terms, and the reference's statistics."""

    idx: Any
    terms: Terms
    classes: npt.NDArray[np.int64]  # term ids of the labels, in order of appearance
    rated: npt.NDArray[np.int64]  # term ids of the rated terms
    wanted: npt.NDArray[np.int64]  # both: the columns kept of every picture's term probabilities
    missing: Counter[str]  # labels and rated terms that are not terms of the vocabulary
    reference: relative.Reference | None

    @classmethod
    def of(cls, engine: "Engine", name: str, file: LabelsFile, relative_to: str | None, method: str) -> "_Vocabulary":
        versions = engine.store.versions()
        engine.indexes.prepare([name], versions)
        idx = engine.indexes.get(name, versions)
        if not len(idx.ids):
            raise InvalidInput(f"the vocabulary {name!r} has no phrases", code="invalid_input")
        terms = Terms.of(_phrase_rows(engine, idx.ids))
        reference = relative.reference(engine, idx, relative_to, method) if relative_to else None
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


def _truth(pictures: list[LabelledPicture], terms: Terms, classes: npt.NDArray[np.int64], rated: npt.NDArray[np.int64]) -> Truth:
    column = {int(t): c for c, t in enumerate(classes)}
    rated_column = {int(t): len(classes) + c for c, t in enumerate(rated)}
    Y = np.zeros((len(pictures), len(classes)), dtype=bool)
    rp: list[int] = []
    rc: list[int] = []
    rv: list[float] = []
    for i, picture in enumerate(pictures):
        for label in picture.labels:
            t = terms.match(label)
            if t is not None:
                Y[i, column[t]] = True
        for term, values in picture.ratings.items():
            t = terms.match(term)
            if t is not None:
                rp.append(i)
                rc.append(rated_column[t])
                rv.append(float(np.mean(values)))
    multi = bool((Y.sum(axis=1) > 1).any())
    return Truth(classes, Y, multi, np.array(rp, dtype=np.int64), np.array(rc, dtype=np.int64), np.array(rv, dtype=np.float64))


def thumbnails(engine: "Engine", refs: Sequence[PictureRef], size: int = 128) -> dict[str, str]:
    """Small JPEG data: URLs of these pictures, read again (a picture that fails now is left out)."""
    out: dict[str, str] = {}
    for ref in refs:
        try:
            image = engine.collections.read(ref).image.copy()
        except ClipGazeError:
            continue
        image.thumbnail((size, size))
        buf = io.BytesIO()
        image.convert("RGB").save(buf, format="JPEG", quality=80)
        out[ref.source] = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    return out


__all__ = ["Evaluation", "LabelsFile", "Terms", "evaluate", "read_labels", "thumbnails"]
