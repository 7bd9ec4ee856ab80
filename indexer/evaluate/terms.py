"""A vocabulary's phrases grouped by term, and each picture's best terms.

A label matches a vocabulary *term*, not a templated phrase: exactly, else ignoring case and repeated
white space, else a phrase's `external_id`. A term with several templates has several phrases; its
probability is the sum of its phrases' probabilities (the softmax runs over every phrase, as in
`analyze`). The best term is the one with the highest such sum.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import numpy.typing as npt

TOP = 5  # terms kept per picture (top-5 accuracy)


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


@dataclass
class Scored:
    """What the metrics need of every evaluated picture, for one way of scoring (plain or corrected)."""

    top: npt.NDArray[np.int64]  # (pictures, TOP) best terms, best first
    top_p: npt.NDArray[np.float64]  # their probabilities
    top_phrase: npt.NDArray[np.int64]  # (pictures, TOP) each best term's most probable phrase (index row)
    columns: npt.NDArray[np.float64]  # (pictures, len(wanted)) the wanted terms' probabilities


def score_block(logits: npt.NDArray[np.float32], terms: Terms, wanted: npt.NDArray[np.int64]) -> Scored:
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


def concat(parts: list[Scored], wanted: int) -> Scored:
    if not parts:
        return Scored(np.zeros((0, TOP), np.int64), np.zeros((0, TOP)), np.zeros((0, TOP), np.int64), np.zeros((0, wanted)))
    return Scored(*(np.concatenate([getattr(s, f) for s in parts]) for f in ("top", "top_p", "top_phrase", "columns")))


__all__ = ["TOP", "Scored", "Terms", "concat", "score_block"]
