"""Candidate phrases from vocabularies, ranked by their stored embeddings: the exact top (or bottom) k
over every phrase of the lists (no approximate chunked top-k), ties in a fixed order (the lists' order,
then the phrase's place in its list), each distinct phrase text once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..errors import InvalidInput
from ..scoring.kernels import cosines
from .prefix import F32

if TYPE_CHECKING:  # pragma: no cover
    from ..engine import Engine


@dataclass(frozen=True)
class Candidate:
    phrase: str
    vocabulary: str
    term: str
    external_id: str | None
    stored_cosine: float  # with the stored (serving model's) embedding


def ranked(engine: "Engine", names: Sequence[str], image: F32, k: int | None, lowest: bool = False,
           per_list: bool = False) -> list[Candidate]:
    """The `k` phrases of `names` (None: all) most similar to `image` (`lowest`: least), best first;
    `per_list`: the `k` best of each list, list by list."""
    versions = engine.store.versions()
    engine.indexes.prepare(list(names), versions)
    picked: list[tuple[float, int, int, str, int]] = []  # (sort key, list rank, position, list, phrase id)
    for rank, name in enumerate(names):
        idx = engine.indexes.get(name, versions)
        cos = cosines(idx.matrix, image)[:, 0].astype(np.float64)
        key = cos if lowest else -cos
        n = len(key) if k is None else min(k, len(key))
        if n == 0:
            continue
        top = np.argpartition(key, n - 1)[:n] if n < len(key) else np.arange(len(key))
        top = top[np.lexsort((top, key[top]))]
        picked.extend((float(key[i]), rank, int(i), name, int(idx.ids[i])) for i in top)
    if not per_list:
        picked.sort(key=lambda t: (t[0], t[1], t[2]))
    rows = engine.store.phrase_rows(np.array([p[4] for p in picked], dtype=np.int64)) if picked else {}
    out: list[Candidate] = []
    seen: set[str] = set()
    counts: dict[str, int] = {}
    for sort_key, _rank, _pos, name, pid in picked:
        row = rows[pid]
        if row["phrase"] in seen:
            continue
        if k is not None and (counts.get(name, 0) if per_list else len(out)) >= k:
            continue
        seen.add(row["phrase"])
        counts[name] = counts.get(name, 0) + 1
        out.append(Candidate(row["phrase"], name, row["term"], row["external_id"],
                             -sort_key if not lowest else sort_key))
    return out


def require(candidates: Sequence[Candidate], names: Sequence[str]) -> None:
    if not candidates:
        raise InvalidInput(f"no candidate phrases: {', '.join(names) or 'no vocabularies'} hold none", code="no_candidates")


__all__ = ["Candidate", "ranked", "require"]
