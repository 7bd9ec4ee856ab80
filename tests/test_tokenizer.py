"""indexer.models.tokenizer.BpeTokenizer against open_clip's own tokenizer: token for token, on every phrase
the built-in vocabularies embed and on unicode edge cases."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from indexer.errors import NotExportable
from indexer.models.tokenizer import BpeTokenizer, clean_lower
from indexer.catalog import catalog

open_clip = pytest.importorskip("open_clip")
from open_clip.tokenizer import SimpleTokenizer, _clean_lower  # noqa: E402

EDGE_CASES = [
    "",
    " ",
    "\t\n  \r\n",
    "by paul cézanne",
    "by paul ce\u0301zanne",  # NFD: combining acute accent
    "by paul c\u00e9zanne",  # NFC
    "a\u0300\u0301\u0302\u0303 stacked combining marks",
    "Ångström, Æsir, Œuvre, Straße, ĳ",
    "葛飾北斎 神奈川沖浪裏",
    "東京 2020, 서울, ひらがな カタカナ",
    "emoji 🎨🖼️👩‍🎨 and flags 🇫🇷🏴󠁧󠁢󠁳󠁣󠁴󠁿, skin tones 👍🏽",
    "العربية فن الخط",
    "עברית אמנות",
    "mixed עברית and english and العربية",
    "rock &amp; roll",
    "&lt;b&gt;bold&lt;/b&gt;",
    "<b>tags</b> &amp; entities",
    "&amp;amp;amp;amp; deeply escaped",
    "caf&eacute; &#233; &#x00e9; &nbsp;space",
    "Ã©lÃ¨ve mojibake",
    "âœ” No problems",
    "the Mona Lisa’s smile “quoted”",
    "tabs\tand\nnewlines\r\nand    many   spaces",
    "  leading and trailing  ",
    "ſ long s, it'ſ, IT'S, it'S",
    "ﬁne ﬂowers ﬀ ﬃ ﬄ ﬅ ﬆ",
    "İstanbul, ıi, I\u0307, DİYARBAKIR",
    "zero\u200bwidth\u200cnon\u200djoiner\u2060word\ufeffbom",
    "ＦＵＬＬ－ＷＩＤＴＨ ｌａｔｉｎ １２３",
    "numbers 12345 3.14 1,000,000 ½ ² ① ٣ ४",
    "punctuation!!! ??? ... --- ___ ~~~ @#$%^*()",
    "<start_of_text> literal special tokens <end_of_text>",
    "<START_OF_TEXT> upper case <End_Of_Text>",
    "<ſtart_of_text>",
    "don't won't I'm you're we've they'll she'd",
    "DON'T WON'T I'M YOU'RE WE'VE THEY'LL SHE'D",
    "control\x00chars\x07\x0b\x1b[31mred\x1b[0m\x7f\x85 c1",
    "KELVIN \u212a sign, Å angstrom sign",
    "\u2028line separator\u2029paragraph",
    "surrogate-free 𝕄𝕒𝕥𝕙 𝒮𝒸𝓇𝒾𝓅𝓉",
    "ß ẞ ǅ ǈ ǋ ΣΑΣ σς",
    "\u00a0non-breaking\u00a0spaces\u3000ideographic",
    "a" * 500,
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    " ".join(["word"] * 80),  # 80 tokens: truncated, the end token forced into the last place
    " ".join(["word"] * 75),  # exactly 77 with start and end
    " ".join(["word"] * 76),  # one over
    "🎨" * 40,  # multi-token characters hit the limit
    "x" * 10000,
]

def _random_texts(n: int, seed: int = 0) -> list[str]:
    """Strings mixing the characters that make cleaning and splitting interesting."""
    rng = random.Random(seed)
    pool = list("abcXYZ09 '&;#<>/_-.,!?\t\n\r\x0b\x0c\x1c\x1f\x00\x7f\x1b[m") + [
        "&amp;", "&lt;", "&#233;", "&eacute;", "é", "e\u0301", "ſ", "ﬁ", "İ", "ı", "\u200d", "\u200b",
        "Ａ", "１", "🎨", "👩‍🎨", "中", "ع", "ש", "Ã©", "â€™", "\u2019", "\u201c", "\xa0", "\x85", "\u3000",
        "'s", "'S", "'ll", "<start_of_text>", "<end_of_text>", "ß", "K", "ǅ",
    ]
    out = []
    for _ in range(n):
        out.append("".join(rng.choice(pool) for _ in range(rng.randint(0, 30))))
    for _ in range(n // 4):  # any code point, surrogates excluded
        out.append("".join(chr(rng.choice([rng.randint(0, 0x2FFF), rng.randint(0xE000, 0x1FFFF)])) for _ in range(rng.randint(1, 12))))
    return out


def _builtin_phrases() -> list[str]:
    """Every phrase the built-in vocabularies embed (as ImageStore.sync_builtin stores them)."""
    return [p.phrase for v in catalog().vocabularies.values() for p in v.phrases()]


@pytest.fixture(scope="module")
def reference() -> Any:
    return open_clip.get_tokenizer("ViT-B-32")


@pytest.fixture(scope="module")
def ours(reference: Any) -> BpeTokenizer:
    return BpeTokenizer.from_open_clip(reference)


def test_every_builtin_phrase(reference: Any, ours: BpeTokenizer) -> None:
    phrases = _builtin_phrases()
    assert len(phrases) > 100_000 and len(catalog().vocabularies) >= 16
    expected = reference(phrases).numpy()
    got = ours(phrases)
    assert got.dtype == np.int64 and got.shape == expected.shape
    assert np.array_equal(got, expected)


@pytest.mark.parametrize("text", EDGE_CASES, ids=range(len(EDGE_CASES)))
def test_edge_case(reference: Any, ours: BpeTokenizer, text: str) -> None:
    assert clean_lower(text) == _clean_lower(text)
    assert np.array_equal(ours(text), reference(text).numpy())


def test_random_texts(reference: Any, ours: BpeTokenizer) -> None:
    texts = _random_texts(2000)
    for text in texts:
        assert clean_lower(text) == _clean_lower(text), repr(text)
    assert np.array_equal(ours(texts), reference(texts).numpy())


def test_truncation_forces_end_token(ours: BpeTokenizer) -> None:
    rows = ours([" ".join(["word"] * n) for n in (74, 75, 76, 200)])
    assert rows.shape == (4, 77)
    assert list(ours.lengths(rows)) == [76, 77, 77, 77]
    assert (rows[1:, -1] == ours.eot_token_id).all() and rows[0, -1] == 0
    assert (rows[:, 0] == ours.sot_token_id).all()


def test_shapes_and_lengths(ours: BpeTokenizer) -> None:
    assert ours([]).shape == (0, 77)
    assert ours.lengths(ours([])).shape == (0,)
    one = ours("a photo of a cat")
    assert one.shape == (1, 77) and one.dtype == np.int64
    assert list(ours.lengths(one)) == [7]
    assert list(ours.lengths(ours(["", "cat", "<end_of_text> literal"]))) == [2, 3, 2]
    with pytest.raises(ValueError):
        ours.lengths(np.zeros((2, 77), dtype=np.int64))


def test_context_length(reference: Any) -> None:
    short = BpeTokenizer(BpeTokenizer.from_open_clip(reference).bpe_path, context_length=8)
    texts = ["a photo of a very very very long cat", "cat", ""]
    assert np.array_equal(short(texts), reference(texts, context_length=8).numpy())


def test_json_round_trip(ours: BpeTokenizer, tmp_path: Path) -> None:
    data = json.loads(json.dumps(ours.to_json()))
    assert data["bpe_file"] == "bpe_simple_vocab_16e6.txt.gz" and "/" not in data["bpe_file"]
    assert data["context_length"] == 77 and data["clean"] == "lower"
    assert (data["sot_token_id"], data["eot_token_id"]) == (49406, 49407)
    (tmp_path / data["bpe_file"]).write_bytes(ours.bpe_path.read_bytes())
    back = BpeTokenizer.from_json(data, tmp_path)
    assert back.bpe_path == tmp_path / data["bpe_file"]
    texts = ["by paul cézanne", "a photo of a cat"]
    assert np.array_equal(back(texts), ours(texts))
    with pytest.raises(ValueError):
        BpeTokenizer.from_json({**data, "clean": "canonicalize"}, tmp_path)
    with pytest.raises(ValueError):
        BpeTokenizer.from_json({**data, "bpe_file": "../" + data["bpe_file"]}, tmp_path)
    with pytest.raises(ValueError):
        BpeTokenizer.from_json({**data, "eot_token_id": 3}, tmp_path)
    with pytest.raises(FileNotFoundError):
        BpeTokenizer.from_json(data, tmp_path / "elsewhere")


@pytest.mark.parametrize(
    "make",
    [
        lambda: SimpleTokenizer(clean="canonicalize"),
        lambda: SimpleTokenizer(clean="whitespace"),
        lambda: SimpleTokenizer(reduction_mask="simple"),
        lambda: SimpleTokenizer(additional_special_tokens=["<mask>"]),
        lambda: object.__new__(open_clip.tokenizer.HFTokenizer),  # built without its files: only its type matters
        lambda: object.__new__(open_clip.tokenizer.SigLipTokenizer),
        lambda: type("SimpleTokenizer", (), {})(),  # a look-alike from another module
    ],
    ids=["canonicalize", "whitespace", "reduction", "extra-special", "hf", "siglip", "look-alike"],
)
def test_not_exportable(make: Any) -> None:
    with pytest.raises(NotExportable):
        BpeTokenizer.from_open_clip(make())

