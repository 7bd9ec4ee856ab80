"""`where`: the filters that the explorer's scores and facets share, so that facets cross-filter.

A `where` is conditions joined by ` and ` (several `where` parameters are joined so too), each one of:
- `COLUMN=VALUE`: a metadata column (or `external_id`, `source`) equal to VALUE, compared as text;
- `VOCABULARY:PHRASE>0.3`: the picture's probability of PHRASE (a phrase or term of VOCABULARY) within
  that vocabulary above a threshold in [0, 1] (`>=`, `<`, `<=` too);
- `top:VOCABULARY=PHRASE`: the vocabulary's best phrase for the picture is PHRASE (a phrase or term).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from ..errors import InvalidInput

OPS = (">=", "<=", ">", "<", "=")
_SPLIT = re.compile(r"\s+and\s+", re.IGNORECASE)
_VOCAB = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class Column:
    column: str
    value: str


@dataclass(frozen=True)
class Above:
    vocabulary: str
    phrase: str
    op: str
    threshold: float


@dataclass(frozen=True)
class Top:
    vocabulary: str
    phrase: str


Condition = Column | Above | Top


def _bad(text: str, why: str) -> InvalidInput:
    return InvalidInput(f"where: {text!r} {why}; write COLUMN=VALUE, VOCABULARY:PHRASE>0.3 or top:VOCABULARY=PHRASE, "
                        "joined by ' and '", code="invalid_where")


def _vocabulary(name: str, text: str) -> str:
    name = name.strip()
    if not _VOCAB.match(name):
        raise _bad(text, f"names no vocabulary ({name!r})")
    return name


def parse_one(text: str) -> Condition:
    text = text.strip()
    if not text:
        raise _bad(text, "is empty")
    found = min(((text.find(op), -len(op), op) for op in OPS if text.find(op) > 0), default=None)
    if found is None:
        raise _bad(text, "has no comparison")
    at, _, op = found
    left, right = text[:at].strip(), text[at + len(op):].strip()
    if not left or not right:
        raise _bad(text, "lacks a side")
    if left.lower().startswith("top:"):
        if op != "=":
            raise _bad(text, "compares a best phrase with other than '='")
        return Top(_vocabulary(left[4:], text), right)
    if ":" in left and op != "=":
        vocab, phrase = left.split(":", 1)
        try:
            threshold = float(right)
        except ValueError:
            raise _bad(text, "compares a probability with no number") from None
        if not 0.0 <= threshold <= 1.0:
            raise _bad(text, "has a threshold outside [0, 1] (a probability within the vocabulary)")
        if not phrase.strip():
            raise _bad(text, "names no phrase")
        return Above(_vocabulary(vocab, text), phrase.strip(), op, threshold)
    if op != "=":
        raise _bad(text, "compares a column with other than '='")
    return Column(left, right)


def parse_where(texts: Sequence[str] | str | None) -> list[Condition]:
    """The conditions of one or several `where` texts (none: no filter). Bad input: InvalidInput
    (`invalid_where`), saying which condition and why."""
    if texts is None:
        return []
    if isinstance(texts, str):
        texts = [texts]
    return [parse_one(part) for text in texts if text.strip() for part in _SPLIT.split(text.strip())]


def compare(op: str, values: "object", threshold: float) -> "object":
    """values (a numpy array) op threshold."""
    import numpy as np

    v = np.asarray(values)
    return {">": v > threshold, ">=": v >= threshold, "<": v < threshold, "<=": v <= threshold}[op]


__all__ = ["Above", "Column", "Condition", "Top", "compare", "parse_one", "parse_where"]
