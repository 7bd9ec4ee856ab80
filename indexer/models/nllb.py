"""NLLB-CLIP reads a phrase with its language: NLLB's tokenizer puts the language's code (`nld_Latn`)
before the phrase's tokens (`[code] tokens </s>`, or `tokens </s> [code]` in its legacy mode), and the
text tower pools that first token. open_clip sets the language by mutating the tokenizer
(`HFTokenizer.set_language` → `set_src_lang_special_tokens`, which replaces its post-processor): one
tokenizer shared by a server's threads would then read one phrase in another's language (and with
transformers 5.25 it has no effect: the tokenizer goes back to its `src_lang` on every call).

`PhraseLanguageTokenizer` never does: it keeps its own copy of the Rust tokenizer, never changed after it
is made, encodes each phrase without special tokens, and adds the phrase's own code itself, exactly as
the NLLB tokenizer would with that language set (tests compare them token for token, and from many
threads). A phrase's language is its stored BCP-47 tag (`language_code`: `nl` → `nld_Latn`, `de-CH` →
`deu_Latn`, `zh-Hant` → `zho_Hant`); a phrase without one is read as English (`eng_Latn`, the NLLB
tokenizer's own default). Which phrase goes with which language travels in the phrase's embedding
key (`catalog.phrase_key`): the same text in two languages is two inputs, embedded apart.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..catalog import split_key
from ..errors import UnsupportedLanguage

DEFAULT_CODE = "eng_Latn"  # the NLLB tokenizer's own default source language

# ISO 639-1 → the ISO 639-3 code NLLB names a language by (where NLLB picks a particular variety: arb
# for Arabic, pes for Persian, zsm for Malay, nob for Norwegian, ekk for Estonian, lvs for Latvian)
ISO_639_3 = {
    "af": "afr", "am": "amh", "ar": "arb", "as": "asm", "az": "azj", "be": "bel", "bg": "bul", "bn": "ben",
    "bo": "bod", "bs": "bos", "ca": "cat", "cs": "ces", "cy": "cym", "da": "dan", "de": "deu", "el": "ell",
    "en": "eng", "eo": "epo", "es": "spa", "et": "est", "eu": "eus", "fa": "pes", "fi": "fin", "fj": "fij",
    "fo": "fao", "fr": "fra", "ga": "gle", "gd": "gla", "gl": "glg", "gn": "grn", "gu": "guj", "ha": "hau",
    "he": "heb", "hi": "hin", "hr": "hrv", "ht": "hat", "hu": "hun", "hy": "hye", "id": "ind", "ig": "ibo",
    "is": "isl", "it": "ita", "ja": "jpn", "jv": "jav", "ka": "kat", "kk": "kaz", "km": "khm", "kn": "kan",
    "ko": "kor", "ky": "kir", "lb": "ltz", "lo": "lao", "lt": "lit", "lv": "lvs", "mi": "mri", "mk": "mkd",
    "ml": "mal", "mn": "khk", "mr": "mar", "ms": "zsm", "mt": "mlt", "my": "mya", "nb": "nob", "ne": "npi",
    "nl": "nld", "nn": "nno", "no": "nob", "oc": "oci", "pa": "pan", "pl": "pol", "ps": "pbt", "pt": "por",
    "ro": "ron", "ru": "rus", "sd": "snd", "si": "sin", "sk": "slk", "sl": "slv", "sm": "smo", "so": "som",
    "sq": "als", "sr": "srp", "sv": "swe", "sw": "swh", "ta": "tam", "te": "tel", "tg": "tgk", "th": "tha",
    "tk": "tuk", "tl": "tgl", "tr": "tur", "tt": "tat", "ug": "uig", "uk": "ukr", "ur": "urd", "uz": "uzn",
    "vi": "vie", "xh": "xho", "yi": "ydd", "yo": "yor", "zh": "zho", "zu": "zul",
}
DEFAULT_SCRIPT = {"zho": "Hans"}  # where NLLB has a language in several scripts: the one a bare tag means
HANT_REGIONS = {"TW", "HK", "MO"}  # zh-TW, zh-HK, zh-MO are written in traditional characters


def language_code(tag: str | None, codes: Sequence[str]) -> str:
    """The NLLB code of a BCP-47 `tag` (in its canonical case), among the tokenizer's `codes`;
    `DEFAULT_CODE` for None. UnsupportedLanguage (422) for a language NLLB does not read."""
    if tag is None:
        return DEFAULT_CODE
    parts = tag.split("-")
    lang = ISO_639_3.get(parts[0].lower(), parts[0].lower())
    script = next((p for p in parts[1:] if len(p) == 4 and p.isalpha()), None)
    region = next((p for p in parts[1:] if len(p) == 2 and p.isalpha()), None)
    written = sorted(c for c in codes if c.split("_")[0] == lang)
    if script is None and lang == "zho" and region in HANT_REGIONS:
        script = "Hant"
    if script is None and len(written) == 1:
        return written[0]
    script = script or DEFAULT_SCRIPT.get(lang)
    code = f"{lang}_{script}" if script else None
    if code is not None and code in codes:
        return code
    if len(written) > 1 and script is None:
        raise UnsupportedLanguage(f"NLLB writes language {tag!r} in several scripts ({', '.join(written)}): give the script "
                           f"in the tag, e.g. '{parts[0]}-{written[0].split('_')[1]}'")
    raise UnsupportedLanguage(f"NLLB-CLIP does not read language {tag!r} (it reads the 200 languages of NLLB-200, e.g. nl, de, "
                       f"fr, en, zh-Hant)")


def sets_language(tokenizer: Any) -> bool:
    """Whether open_clip's tokenizer sets a language (NLLB's `set_src_lang_special_tokens`)."""
    return callable(getattr(getattr(tokenizer, "tokenizer", None), "set_src_lang_special_tokens", None))


class PhraseLanguageTokenizer:
    """open_clip's HFTokenizer for NLLB, each phrase in its own language, safe to share between threads.

    Called with keys (`catalog.phrase_key`) or plain texts; returns (n, context_length) int64 ids as open_clip's
    tokenizer does with that language set (a torch tensor)."""

    reads_languages = True

    def __init__(self, hf_tokenizer: Any):
        from tokenizers import Tokenizer
        from transformers.models.nllb.tokenization_nllb import FAIRSEQ_LANGUAGE_CODES

        inner = hf_tokenizer.tokenizer
        self.open_clip = hf_tokenizer  # kept for what reads it (never called here: it is not thread-safe)
        self.context_length = int(hf_tokenizer.context_length)
        self.clean_fn = hf_tokenizer.clean_fn
        self.strip_sep_token = bool(getattr(hf_tokenizer, "strip_sep_token", False))
        tok = Tokenizer.from_str(inner.backend_tokenizer.to_str())  # our own copy: nothing changes it after this
        tok.no_truncation()
        tok.no_padding()
        self._tok = tok
        self.legacy = bool(getattr(inner, "legacy_behaviour", False))
        self.eos_id = int(inner.eos_token_id)
        self.pad_id = int(inner.pad_token_id)
        self.sep_id = inner.sep_token_id
        ids = {code: tok.token_to_id(code) for code in FAIRSEQ_LANGUAGE_CODES}
        self.code_ids: dict[str, int] = {c: int(i) for c, i in ids.items() if i is not None}

    def code(self, language: str | None) -> str:
        return language_code(language, list(self.code_ids))

    def ids(self, texts: Sequence[str], languages: Sequence[str | None]) -> np.ndarray:
        """(n, context_length) int64 ids of `texts`, each read in its language (a BCP-47 tag or None)."""
        room = self.context_length - 2  # the language code and </s>; truncation cuts the phrase's own tokens
        out = np.full((len(texts), self.context_length), self.pad_id, dtype=np.int64)
        codes = [self.code_ids[self.code(lang)] for lang in languages]  # every language checked before encoding
        encoded = self._tok.encode_batch([self.clean_fn(t) for t in texts], add_special_tokens=False)
        for row, (enc, code) in enumerate(zip(encoded, codes)):
            body = enc.ids[:room]
            seq = [*body, self.eos_id, code] if self.legacy else [code, *body, self.eos_id]
            out[row, : len(seq)] = seq
        if self.strip_sep_token and self.sep_id is not None:
            out[out == int(self.sep_id)] = 0
        return out

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> Any:
        import torch

        if context_length not in (None, self.context_length):
            raise ValueError("the context length is the model's")
        keys = [texts] if isinstance(texts, str) else list(texts)
        pairs = [split_key(k) for k in keys]
        return torch.from_numpy(self.ids([t for t, _ in pairs], [lang for _, lang in pairs]))


__all__ = ["DEFAULT_CODE", "PhraseLanguageTokenizer", "language_code", "sets_language"]
