"""The greedy chain (clip-interrogator's `chain`, exact and deterministic) and the token ids of prompts.

Each step appends to the prompt so far the candidate phrase that most raises (negative: lowers) the
cosine between the picture and the whole prompt, every remaining candidate encoded after the prompt
so far (`prefix`). The first `forced` steps are taken even when they do not help; after them the chain
stops at the first step that does not improve; the best prompt seen is returned. Ties go to the
candidate given first (the caller's order is fixed), and a candidate that would take the prompt over
the model's context is never tried: no prompt is ever truncated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import numpy.typing as npt
import regex

from .prefix import F32, PrefixEncoder

SEPARATOR = ", "
# Text the tokenizer's cleaning leaves as it is (printable ASCII without "&"): there, a prompt ending in
# a letter or a digit, then ", " and a phrase, tokenizes as the prompt's tokens followed by those of
# ", phrase" (the word pattern cannot join across the comma). Elsewhere the whole text is tokenized.
_PLAIN = regex.compile(r"[\x20-\x25\x27-\x7e]*")


class Prompts:
    """Token ids of prompts for one tokenizer: [start] + the text's tokens (+ [end])."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.sot = int(tokenizer.sot_token_id)
        self.eot = int(tokenizer.eot_token_id)
        self.context = int(tokenizer.context_length)
        self._tails: dict[str, list[int]] = {}

    def head(self, text: str) -> list[int]:
        """[start] + the tokens of `text` (no end token, not truncated)."""
        return [self.sot, *self.tokenizer.encode(text)] if text else [self.sot]

    def row(self, text: str) -> list[int]:
        return [*self.head(text), self.eot]

    def fits(self, text: str) -> bool:
        return len(self.row(text)) <= self.context

    def joined(self, prefix: str, head: list[int], phrase: str) -> list[int]:
        """The whole row of `prefix, phrase` (`head` = self.head(prefix)), with its end token."""
        if not prefix:
            return self.row(phrase)
        if _PLAIN.fullmatch(prefix) and _PLAIN.fullmatch(phrase) and prefix[-1].isalnum() and phrase[:1].strip():
            tail = self._tails.get(phrase)
            if tail is None:
                tail = self._tails[phrase] = self.tokenizer.encode(SEPARATOR + phrase)
            return [*head, *tail, self.eot]
        return self.row(join(prefix, phrase))


def join(prefix: str, phrase: str) -> str:
    return f"{prefix}{SEPARATOR}{phrase}" if prefix else phrase


@dataclass
class Step:
    phrase: int  # index of the candidate chosen
    cosine: float  # of the prompt with it
    taken: bool  # appended (improved, or a forced step)


@dataclass
class Chained:
    start: str
    start_cosine: float | None  # None for an empty start
    chosen: list[int] = field(default_factory=list)  # candidate indices of the best prompt, in order
    cosines: list[float] = field(default_factory=list)  # the best prompt's cosine after each of them
    steps: list[Step] = field(default_factory=list)

    @property
    def prompt_parts(self) -> int:
        return len(self.chosen)


def cosine_of(embeddings: F32, image: F32) -> npt.NDArray[np.float64]:
    return np.asarray(embeddings, dtype=np.float64) @ np.asarray(image, dtype=np.float64)


def run_chain(encoder: PrefixEncoder, prompts: Prompts, image: F32, candidates: Sequence[str], start: str = "",
              forced: int = 8, max_steps: int = 32, reverse: bool = False) -> Chained:
    """The chain over `candidates` (texts, in a fixed order) from `start` (see the module's docstring)."""
    sign = -1.0 if reverse else 1.0
    head = prompts.head(start)
    start_cos = float(cosine_of(encoder.texts([[*head, prompts.eot]]), image)[0]) if start else None
    current, current_score = start, (sign * start_cos if start_cos is not None else -np.inf)
    best_score = current_score
    out = Chained(start, start_cos)
    path: list[int] = []
    path_cos: list[float] = []
    remaining = list(range(len(candidates)))
    for step in range(max_steps):
        rows, which = [], []
        for i in remaining:
            row = prompts.joined(current, head, candidates[i])
            if len(row) <= prompts.context:
                rows.append(row)
                which.append(i)
        if not rows:
            break
        cos = cosine_of(encoder.after(head, rows), image)
        j = int(np.argmax(sign * cos))  # the first of equals: the candidates' order breaks ties
        score, chosen = float(sign * cos[j]), which[j]
        taken = score > current_score or step < forced
        out.steps.append(Step(chosen, float(cos[j]), taken))
        if not taken:
            break
        current, current_score, head = join(current, candidates[chosen]), score, rows[j][:-1]
        path.append(chosen)
        path_cos.append(float(cos[j]))
        remaining.remove(chosen)
        if score > best_score:
            best_score = score
            out.chosen, out.cosines = list(path), list(path_cos)
    return out


__all__ = ["Chained", "Prompts", "SEPARATOR", "Step", "cosine_of", "join", "run_chain"]
