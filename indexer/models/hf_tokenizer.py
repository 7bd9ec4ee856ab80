"""open_clip's `HFTokenizer` (XLM-R, SigLIP and other Hugging Face tokenizers) without torch or
transformers: the model's own `tokenizer.json` run by the `tokenizers` library, after the same
clean function (`whitespace`, `lower` or SigLIP's `canonicalize`), with the same truncation and
padding to the context length, and the same `strip_sep_token`.

The output equals `open_clip`'s HFTokenizer token for token (tests compare them). `tokenizer_for`
picks this or the CLIP BPE tokenizer (`tokenizer.BpeTokenizer`) for an export, `tokenizer_from_json`
reads either back from a manifest.

`canonicalize` lower-cases and drops punctuation, so "St. Jerome" and "st jerome" become one input:
`collisions` finds the phrases of a list that a model cannot tell apart.
"""

from __future__ import annotations

import html
import string
from pathlib import Path
from typing import Any, Mapping, Sequence

import ftfy
import numpy as np
import numpy.typing as npt

from ..errors import NotExportable
from .tokenizer import BpeTokenizer

TOKENIZER_FILE = "tokenizer.json"
CLEAN_MODES = ("whitespace", "lower", "canonicalize")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def _basic(text: str) -> str:
    return html.unescape(html.unescape(ftfy.fix_text(text))).strip()


def clean(text: str, mode: str) -> str:
    """open_clip's clean functions (`_clean_whitespace`, `_clean_lower`, `_clean_canonicalize`)."""
    text = _basic(text)
    if mode == "canonicalize":
        text = text.replace("_", " ").translate(_PUNCTUATION).lower()
        return " ".join(text.split()).strip()
    text = " ".join(text.split()).strip()
    return text.lower() if mode == "lower" else text


class HfJsonTokenizer:
    """texts → (n, context_length) int64 ids, as open_clip's HFTokenizer gives them."""

    def __init__(self, tokenizer_json: str, context_length: int, clean: str = "whitespace",
                 strip_sep_token: bool = False, sep_token_id: int | None = None, pad_token_id: int = 0):
        from tokenizers import Tokenizer

        if clean not in CLEAN_MODES:
            raise ValueError(f"unknown clean mode {clean!r} (one of {', '.join(CLEAN_MODES)})")
        self.json = tokenizer_json
        self.context_length = int(context_length)
        self.clean = clean
        self.strip_sep_token = bool(strip_sep_token)
        self.sep_token_id = sep_token_id
        self.pad_token_id = int(pad_token_id)
        tok = Tokenizer.from_str(tokenizer_json)
        tok.enable_truncation(max_length=self.context_length)
        tok.no_padding()
        self._tok = tok

    def __call__(self, texts: str | Sequence[str]) -> npt.NDArray[np.int64]:
        if isinstance(texts, str):
            texts = [texts]
        out = np.full((len(texts), self.context_length), self.pad_token_id, dtype=np.int64)
        for row, enc in enumerate(self._tok.encode_batch([clean(t, self.clean) for t in texts])):
            ids = enc.ids[: self.context_length]
            out[row, : len(ids)] = ids
        if self.strip_sep_token and self.sep_token_id is not None:
            out[out == self.sep_token_id] = 0
        return out

    def lengths(self, tokens: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """Per row, the tokens that are not padding (padding is at the end)."""
        tokens = np.asarray(tokens)
        if tokens.ndim != 2:
            raise ValueError(f"tokens must be 2-dimensional (n, context_length), not of shape {tokens.shape}")
        return np.asarray((tokens != self.pad_token_id).sum(axis=1), dtype=np.int64)

    def collisions(self, phrases: Sequence[str]) -> list[list[str]]:
        """Groups of distinct phrases that tokenize alike (one embedding for several rows)."""
        groups: dict[bytes, list[str]] = {}
        for text, ids in zip(phrases, self(list(phrases))):
            groups.setdefault(ids.tobytes(), []).append(text)
        return [g for g in groups.values() if len(set(g)) > 1]

    def to_json(self) -> dict[str, Any]:
        return {"kind": "hf-json", "file": TOKENIZER_FILE, "context_length": self.context_length, "clean": self.clean,
                "strip_sep_token": self.strip_sep_token, "sep_token_id": self.sep_token_id,
                "pad_token_id": self.pad_token_id}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], directory: Path) -> "HfJsonTokenizer":
        name = str(data.get("file", TOKENIZER_FILE))
        if Path(name).name != name or name in ("", ".", ".."):
            raise ValueError(f"file must be a bare file name, not {name!r}")
        sep = data.get("sep_token_id")
        return cls((Path(directory) / name).read_text(encoding="utf-8"), int(data["context_length"]),
                   clean=str(data.get("clean", "whitespace")), strip_sep_token=bool(data.get("strip_sep_token")),
                   sep_token_id=None if sep is None else int(sep), pad_token_id=int(data.get("pad_token_id", 0)))

    @classmethod
    def from_open_clip(cls, tokenizer: Any) -> "HfJsonTokenizer":
        """The equivalent of an open_clip HFTokenizer: its fast tokenizer's own tokenizer.json."""
        kind = type(tokenizer)
        if f"{kind.__module__}.{kind.__qualname__}" != "open_clip.tokenizer.HFTokenizer":
            raise NotExportable(f"tokenizer {kind.__qualname__} is not open_clip's HFTokenizer")
        if getattr(tokenizer, "tokenizer", None) is None or not hasattr(tokenizer, "clean_fn"):
            raise NotExportable("the HFTokenizer holds no Hugging Face tokenizer")
        if getattr(tokenizer, "tokenizer_mode", "") not in ("", None):
            raise NotExportable(f"HFTokenizer mode {tokenizer.tokenizer_mode!r} is not supported")
        if hasattr(tokenizer, "set_lang_fn"):
            raise NotExportable("the tokenizer sets a language per input (NLLB): torch must serve this model")
        mode = {"_clean_whitespace": "whitespace", "_clean_lower": "lower", "_clean_canonicalize": "canonicalize"}.get(
            getattr(tokenizer.clean_fn, "__name__", ""))
        if mode is None:
            raise NotExportable(f"tokenizer cleans text with {tokenizer.clean_fn!r}, which is not supported")
        hf = tokenizer.tokenizer
        backend = getattr(hf, "backend_tokenizer", None)
        if backend is None:
            raise NotExportable("the Hugging Face tokenizer is not a fast one (it has no tokenizer.json)")
        if getattr(hf, "padding_side", "right") != "right":
            raise NotExportable("the tokenizer pads on the left")
        pad = hf.pad_token_id
        return cls(backend.to_str(), int(tokenizer.context_length), clean=mode,
                   strip_sep_token=bool(getattr(tokenizer, "strip_sep_token", False)), sep_token_id=hf.sep_token_id,
                   pad_token_id=0 if pad is None else int(pad))


Tokenizer = BpeTokenizer | HfJsonTokenizer


def tokenizer_for(tokenizer: Any) -> Tokenizer:
    """The torch-free equivalent of an open_clip tokenizer (NotExportable when there is none)."""
    if getattr(tokenizer, "reads_languages", False):  # nllb.PhraseLanguageTokenizer
        raise NotExportable("the tokenizer sets a language per input (NLLB): torch must serve this model")
    if type(tokenizer).__name__ == "HFTokenizer":
        return HfJsonTokenizer.from_open_clip(tokenizer)
    return BpeTokenizer.from_open_clip(tokenizer)


def tokenizer_from_json(data: Mapping[str, Any], directory: Path) -> Tokenizer:
    if data.get("kind") == "hf-json":
        return HfJsonTokenizer.from_json(data, directory)
    return BpeTokenizer.from_json(data, directory)


def write_tokenizer(tokenizer: Tokenizer, directory: Path) -> str:
    """The tokenizer's file into an export's `directory`; its name."""
    if isinstance(tokenizer, HfJsonTokenizer):
        (Path(directory) / TOKENIZER_FILE).write_text(tokenizer.json, encoding="utf-8")
        return TOKENIZER_FILE
    import shutil

    shutil.copyfile(tokenizer.bpe_path, Path(directory) / tokenizer.bpe_path.name)
    return tokenizer.bpe_path.name
