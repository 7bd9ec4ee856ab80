"""The figures of an evaluation: how the model's best terms agree with people's labels and ratings.

Metrics come from scikit-learn (precision, recall and F1 per term, their macro means, the confusion
matrix, average precision, the reliability curve) and scipy (Spearman); each headline figure has a
bootstrap 95 % interval (pictures resampled with replacement, a fixed seed).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ..schema.evaluate import (
    CalibrationBin,
    ClassMetrics,
    Confusion,
    ConfusionPair,
    Example,
    Interval,
    Metrics,
    Winner,
)
from .labels import LabelledPicture
from .terms import Scored, Terms

OTHER = "(any other term)"
BINS = 10  # calibration bins
MAX_CONFUSION = 100  # terms shown in the confusion matrix (the most frequent labels)
EXTRA_COLUMNS = 5  # terms that are no label but win most often, shown as columns of their own
WINNERS = 10
WORST = 8  # confusions listed, each with up to EXAMPLES pictures
EXAMPLES = 4


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


def measure(truth: Truth, scored: Scored, terms: Terms, pictures: list[LabelledPicture], shas: list[str],
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


def truth_of(pictures: list[LabelledPicture], terms: Terms, classes: npt.NDArray[np.int64], rated: npt.NDArray[np.int64]) -> Truth:
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


__all__ = ["Truth", "measure", "truth_of"]
