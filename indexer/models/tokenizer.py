"""open_clip's CLIP tokenizer (`open_clip.tokenizer.SimpleTokenizer`, clean='lower', no reduction),
reproduced without torch or open_clip: the same ftfy/html cleaning, the same regex, the same byte-level
BPE over the same merges file, the same truncation (the end token forced into the last place).

The output equals `open_clip.get_tokenizer(arch)(texts).numpy()` token for token (tests compare them
on every built-in phrase and on unicode edge cases).
"""

from __future__ import annotations

import gzip
import html
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import ftfy
import numpy as np
import numpy.typing as npt
import regex

from ..errors import NotExportable

DEFAULT_BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
SPECIAL_TOKENS = ("<start_of_text>", "<end_of_text>")
# open_clip's pattern, verbatim (IGNORECASE matters: "'s" also matches "'S" and "'ſ", whose case folds to s).
_PATTERN = "|".join(SPECIAL_TOKENS) + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
_FLAGS = regex.IGNORECASE
_N_MERGES = 49152 - 256 - 2  # open_clip reads lines 1 .. 48894 of the merges file
BPE_CACHE_SIZE = 1 << 17  # words; the built-in vocabularies hold about 40,000 distinct ones

# Text that ftfy.fix_text and html.unescape leave exactly as it is: printable ASCII without "&"
# (no HTML entity, no mojibake, no control or terminal escape characters) and ordinary line
# white space (which ftfy may only turn into other white space, and whitespace_clean collapses).
_PLAIN = regex.compile(r"[\t\n\x0c\r\x20-\x25\x27-\x7e]*")


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from utf-8 bytes to printable unicode characters."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


# bytes decoded as latin-1 (one character per byte) translate to the byte encoder's characters
_BYTE_TABLE = {b: c for b, c in bytes_to_unicode().items()}


def clean_lower(text: str) -> str:
    """open_clip's `_clean_lower`: ftfy.fix_text, html.unescape twice, white space collapsed, lower case."""
    if _PLAIN.fullmatch(text) is not None:  # fast path: ftfy and html.unescape are the identity here
        return " ".join(text.split()).lower()
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).strip().lower()


def _read_merges(path: Path) -> list[tuple[str, ...]]:
    with gzip.open(path) as fh:
        lines = fh.read().decode("utf-8").split("\n")
    return [tuple(line.split()) for line in lines[1 : _N_MERGES + 1]]


class BpeTokenizer:
    """CLIP's byte-level BPE tokenizer: texts -> (n, context_length) int64 token ids."""

    def __init__(self, bpe_path: Path | str, context_length: int = 77):
        if int(context_length) < 2:
            raise ValueError(f"context_length must be at least 2, not {context_length}")
        self._bpe_path = Path(bpe_path)
        self.context_length = int(context_length)
        merges = _read_merges(self._bpe_path)
        vocab = list(bytes_to_unicode().values())
        vocab = vocab + [v + "</w>" for v in vocab]
        vocab.extend("".join(merge) for merge in merges)
        vocab.extend(SPECIAL_TOKENS)
        self.encoder: dict[str, int] = dict(zip(vocab, range(len(vocab))))
        self.bpe_ranks: dict[tuple[str, ...], int] = dict(zip(merges, range(len(merges))))
        self.vocab_size = len(self.encoder)
        self.sot_token_id = self.encoder[SPECIAL_TOKENS[0]]
        self.eot_token_id = self.encoder[SPECIAL_TOKENS[1]]
        self._pat = regex.compile(_PATTERN, _FLAGS)
        self._specials = {t: (self.encoder[t],) for t in SPECIAL_TOKENS}
        # one cache per tokenizer (its merges), of a word's token ids
        self._word_ids: Callable[[str], tuple[int, ...]] = lru_cache(maxsize=BPE_CACHE_SIZE)(self._word_ids_uncached)

    @property
    def bpe_path(self) -> Path:
        return self._bpe_path

    def __repr__(self) -> str:
        return f"BpeTokenizer({str(self._bpe_path)!r}, context_length={self.context_length})"

    # -- BPE -----------------------------------------------------------------------------------

    def bpe(self, token: str) -> list[str]:
        """The BPE symbols of one byte-encoded word (open_clip's SimpleTokenizer.bpe, split)."""
        word: tuple[str, ...] = tuple(token[:-1]) + (token[-1] + "</w>",)
        if len(word) == 1:
            return [word[0]]
        ranks = self.bpe_ranks
        while True:
            best = None
            best_rank = -1
            for pair in zip(word, word[1:]):
                rank = ranks.get(pair)
                if rank is not None and (best is None or rank < best_rank):
                    best, best_rank = pair, rank
            if best is None:
                break
            first, second = best
            new_word: list[str] = []
            i = 0
            n = len(word)
            while i < n:
                try:
                    j = word.index(first, i)
                except ValueError:
                    new_word.extend(word[i:])
                    break
                new_word.extend(word[i:j])
                i = j
                if i < n - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(first)
                    i += 1
            word = tuple(new_word)
            if len(word) == 1:
                break
        return list(word)

    def _word_ids_uncached(self, token: str) -> tuple[int, ...]:
        special = self._specials.get(token)
        if special is not None:
            return special
        encoded = token.encode("utf-8").decode("latin-1").translate(_BYTE_TABLE)
        encoder = self.encoder
        return tuple(encoder[symbol] for symbol in self.bpe(encoded))

    def encode(self, text: str) -> list[int]:
        """The token ids of one text, without start and end tokens."""
        ids: list[int] = []
        word_ids = self._word_ids
        for token in self._pat.findall(clean_lower(text)):
            ids.extend(word_ids(token))
        return ids

    # -- batches -------------------------------------------------------------------------------

    def __call__(self, texts: str | Sequence[str]) -> npt.NDArray[np.int64]:
        if isinstance(texts, str):
            texts = [texts]
        n_ctx = self.context_length
        sot, eot = self.sot_token_id, self.eot_token_id
        out = np.zeros((len(texts), n_ctx), dtype=np.int64)
        for row, text in enumerate(texts):
            ids = self.encode(text)
            if len(ids) > n_ctx - 2:
                ids = ids[: n_ctx - 2]
            ids.insert(0, sot)
            ids.append(eot)
            out[row, : len(ids)] = ids
        return out

    def lengths(self, tokens: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """Per row, the number of tokens up to and including the (first) end token: the position
        CLIP pools its text embedding from (`argmax` of the ids) plus one."""
        tokens = np.asarray(tokens)
        if tokens.ndim != 2:
            raise ValueError(f"tokens must be 2-dimensional (n, context_length), not of shape {tokens.shape}")
        is_end = tokens == self.eot_token_id
        if tokens.shape[0] and not is_end.any(axis=1).all():
            raise ValueError("every row of tokens must hold the end token")
        return (is_end.argmax(axis=1) + 1).astype(np.int64)

    # -- (de)serialisation -----------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "clip-bpe",
            "bpe_file": self._bpe_path.name,
            "context_length": self.context_length,
            "sot_token_id": self.sot_token_id,
            "eot_token_id": self.eot_token_id,
            "vocab_size": self.vocab_size,
            "clean": "lower",
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], directory: Path) -> "BpeTokenizer":
        """The tokenizer `to_json` described; its bpe file is looked up in `directory`."""
        if data.get("kind", "clip-bpe") != "clip-bpe":
            raise ValueError(f"not a CLIP BPE tokenizer: kind {data.get('kind')!r}")
        if data.get("clean", "lower") != "lower":
            raise ValueError(f"unsupported clean mode {data.get('clean')!r} (only 'lower')")
        name = str(data["bpe_file"])
        if Path(name).name != name or name in ("", ".", ".."):
            raise ValueError(f"bpe_file must be a bare file name, not {name!r}")
        tok = cls(Path(directory) / name, context_length=int(data["context_length"]))
        for key in ("sot_token_id", "eot_token_id", "vocab_size"):
            if key in data and int(data[key]) != getattr(tok, key):
                raise ValueError(f"{name} gives {key} {getattr(tok, key)}, the description says {data[key]}")
        return tok

    @classmethod
    def from_open_clip(cls, tokenizer: Any) -> "BpeTokenizer":
        """The equivalent of `open_clip.get_tokenizer(arch)`, which must be a SimpleTokenizer with
        the default clean function ('lower'), no reduction and no extra special tokens."""
        import sys

        kind = type(tokenizer)
        name = f"{kind.__module__}.{kind.__qualname__}"
        if name != "open_clip.tokenizer.SimpleTokenizer":
            raise NotExportable(f"tokenizer {name} is not open_clip's SimpleTokenizer (CLIP BPE)")
        clean = getattr(getattr(tokenizer, "clean_fn", None), "__name__", None)
        if clean != "_clean_lower":
            raise NotExportable(f"tokenizer cleans text with {clean}, only the default 'lower' is supported")
        if getattr(tokenizer, "reduction_fn", None) is not None:
            raise NotExportable("tokenizer uses a reduction (random/shuffle/syntax mask), which is not supported")
        context_length = getattr(tokenizer, "context_length", None)
        if not isinstance(context_length, int) or context_length < 2:
            raise NotExportable(f"tokenizer has no usable context length ({context_length!r})")
        pat = getattr(tokenizer, "pat", None)
        if getattr(pat, "pattern", None) != _PATTERN or (getattr(pat, "flags", 0) & _FLAGS) != _FLAGS:
            raise NotExportable("tokenizer splits words with another pattern (extra special tokens?)")
        module = sys.modules[kind.__module__]
        bpe_path = Path(str(module.__file__)).resolve().parent / DEFAULT_BPE_FILE
        if not bpe_path.is_file():
            raise NotExportable(f"open_clip's bpe file is missing: {bpe_path}")
        tok = cls(bpe_path, context_length=context_length)
        if tokenizer.encoder != tok.encoder or tokenizer.bpe_ranks != tok.bpe_ranks:
            raise NotExportable("tokenizer was built from another bpe file than open_clip's default")
        if (tokenizer.sot_token_id, tokenizer.eot_token_id) != (tok.sot_token_id, tok.eot_token_id):
            raise NotExportable("tokenizer has other start/end token ids")
        return tok
