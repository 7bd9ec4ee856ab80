"""NLLB-CLIP reads each phrase in its own language (issue 25, part 2): the phrase's stored BCP-47 tag
mapped to NLLB's code, set per phrase without mutating a tokenizer shared between threads.

Offline: a real `transformers.NllbTokenizer` built here from a tiny vocabulary (its 202 language codes
are its own), and a tiny random-weight NLLB-CLIP (an M2M100 encoder as open_clip's HF text tower, built
from a config through open_clip's real HF path). A test instrument: it proves the plumbing and the
exactness, not what the real NLLB-CLIP reads."""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from indexer.catalog import phrase_key
from indexer.engine import Engine
from indexer.errors import UnsupportedLanguage
from indexer.models.nllb import PhraseLanguageTokenizer, language_code
from indexer.models.registry import ModelSpec
from indexer.models.torch_model import LoadedModel

CONTEXT = 12
WORDS = ["▁a", "▁een", "▁ein", "▁red", "▁rode", "▁roter", "▁rood", "▁circle", "▁cirkel", "▁Kreis"]
TEXTS = ["a red circle", "een rode cirkel", "ein roter Kreis ist sehr rund und schön, wirklich", "x", "rood"]
TAGS = [None, "en", "nl", "nl-BE", "de", "de-CH", "fr", "zh-Hant"]
CODES = {None: "eng_Latn", "en": "eng_Latn", "nl": "nld_Latn", "nl-BE": "nld_Latn", "de": "deu_Latn",
         "de-CH": "deu_Latn", "fr": "fra_Latn", "zh-Hant": "zho_Hant"}


def _nllb_folder(folder: Path, legacy: bool = False) -> Path:
    from transformers import NllbTokenizer

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "▁": 4}
    for token in [*"abcdefghijklmnopqrstuvwxyzKöé,", *WORDS]:
        vocab.setdefault(token, len(vocab))
    NllbTokenizer(vocab=vocab, merges=[], legacy_behaviour=legacy).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _nllb_folder(tmp_path_factory.mktemp("nllb") / "nllb-tiny")


def _open_clip_tokenizer(folder: Path) -> Any:
    from open_clip.tokenizer import HFTokenizer

    return HFTokenizer(str(folder), context_length=CONTEXT)


def _nllb_with(tokenizer: Any, code: str, texts: list[str]) -> np.ndarray:
    """What the NLLB tokenizer itself gives with its source language set (`src_lang`, its own setter)."""
    tokenizer.tokenizer.src_lang = code
    return tokenizer(texts).numpy()  # type: ignore[no-any-return]


def test_bcp47_tags_map_to_nllb_codes():
    from transformers.models.nllb.tokenization_nllb import FAIRSEQ_LANGUAGE_CODES as codes

    for tag, code in CODES.items():
        assert language_code(tag, codes) == code
    assert language_code("zh", codes) == "zho_Hans" and language_code("zh-TW", codes) == "zho_Hant"
    assert language_code("nld", codes) == "nld_Latn" and language_code("ar", codes) == "arb_Arab"
    assert language_code("ja", codes) == "jpn_Jpan" and language_code("no", codes) == "nob_Latn"
    for bad in ("la", "x-private", "ace"):  # Latin is not among NLLB-200's; Acehnese is in two scripts
        with pytest.raises(UnsupportedLanguage) as err:
            language_code(bad, codes)
        assert err.value.code == "unsupported_language"
    assert "ace_Arab, ace_Latn" in str(_raised(lambda: language_code("ace", codes)))


def _raised(call: Any) -> Exception:
    try:
        call()
    except Exception as exc:  # noqa: BLE001
        return exc
    raise AssertionError("no error")


@pytest.mark.parametrize("legacy", [False, True])
def test_each_phrase_is_tokenized_as_nllb_does_in_its_language(tmp_path: Path, legacy: bool):
    hf = _open_clip_tokenizer(_nllb_folder(tmp_path / "t", legacy=legacy))
    ours = PhraseLanguageTokenizer(hf)
    keys = [phrase_key(t, tag) for tag in TAGS for t in TEXTS]  # every language in one call
    got = ours(keys).numpy()
    want = np.concatenate([_nllb_with(hf, CODES[tag], TEXTS) for tag in TAGS])
    assert got.shape == (len(keys), CONTEXT) and (got == want).all()  # truncation included (the long German)
    n = len(TEXTS)
    assert (got[:n] == got[n : 2 * n]).all()  # untagged is English (eng_Latn, the NLLB tokenizer's default)
    assert (got[:n] != got[2 * n : 3 * n]).any(axis=1).all()  # English and Dutch differ for every phrase


def test_sharing_the_tokenizer_between_threads_never_mixes_languages(folder: Path):
    hf = _open_clip_tokenizer(folder)
    ours = PhraseLanguageTokenizer(hf)
    expected = {(t, tag): _nllb_with(_open_clip_tokenizer(folder), CODES[tag], [t])[0] for t in TEXTS for tag in TAGS}
    before = hf.tokenizer.src_lang
    wrong: list[str] = []
    start = threading.Barrier(8)

    def work(seed: int) -> None:
        rng = random.Random(seed)
        start.wait()
        for _ in range(150):
            pairs = [(rng.choice(TEXTS), rng.choice(TAGS)) for _ in range(rng.randint(1, 6))]
            got = ours([phrase_key(t, tag) for t, tag in pairs]).numpy()
            wrong.extend(f"{t}@{tag}" for (t, tag), row in zip(pairs, got) if not (row == expected[(t, tag)]).all())

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []
    assert hf.tokenizer.src_lang == before  # the shared Hugging Face tokenizer was never touched


# -- a tiny NLLB-CLIP, end to end -------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_nllb(folder: Path) -> LoadedModel:
    import open_clip
    import torch
    from transformers import M2M100Config

    from indexer.models.registry import local_text_cfg

    vocab_size = len(_open_clip_tokenizer(folder).tokenizer)
    M2M100Config(vocab_size=vocab_size, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                 decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
                 pad_token_id=1, bos_token_id=0, eos_token_id=2).save_pretrained(str(folder))
    config = folder.parent / "nllb-tiny-test.json"
    config.write_text(json.dumps({"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
                                  "text_cfg": {"hf_model_name": "nllb-tiny", "hf_tokenizer_name": "nllb-tiny",
                                               "hf_proj_type": "linear", "hf_pooler_type": "cls_pooler",
                                               "context_length": CONTEXT}}))
    open_clip.add_model_config(str(config))
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms("nllb-tiny-test", pretrained=None,
                                                                 text_cfg=local_text_cfg(str(config)))
    model.eval()
    spec = ModelSpec("nllb-tiny-test", "random", config=str(config))
    return LoadedModel(spec, model, preprocess, _open_clip_tokenizer(folder), "cpu")


def test_a_phrase_is_embedded_in_its_language_as_open_clip_computes_it(tiny_nllb: LoadedModel, folder: Path,
                                                                       clean_environ: Path):
    import torch

    assert isinstance(tiny_nllb.tokenizer, PhraseLanguageTokenizer)
    from indexer.errors import NotExportable
    from indexer.models.hf_tokenizer import tokenizer_for

    with pytest.raises(NotExportable, match="NLLB"):
        tokenizer_for(tiny_nllb.tokenizer)  # ONNX Runtime does not serve it: torch does
    engine = Engine(clean_environ, tiny_nllb.spec, loader=lambda spec, **_: tiny_nllb, backend="torch")
    from indexer.schema import CreateVocabulary, parse

    engine.create_vocabulary(parse(CreateVocabulary, {"name": "nl", "language": "nl", "phrases": ["rood", "een rode cirkel"]}))
    engine.create_vocabulary(parse(CreateVocabulary, {"name": "de", "language": "de", "phrases": ["rood", "ein roter Kreis"]}))
    engine.create_vocabulary(parse(CreateVocabulary, {"name": "bare", "phrases": ["rood"]}))
    store = engine.store
    vectors = {}
    for name in ("nl", "de", "bare"):
        ids, mat, missing = store.vectors(engine.model_key, store.get_vocabulary(name).id)
        assert missing == 0
        vectors[name] = dict(zip(ids.tolist(), mat))
    rows = store.phrase_rows([i for v in vectors.values() for i in v])
    by = {(rows[i]["phrase"], rows[i]["language"]): vec for v in vectors.values() for i, vec in v.items()}
    reference = _open_clip_tokenizer(folder)
    for (text, tag), vec in by.items():  # open_clip's own computation with the NLLB tokenizer's language set
        with torch.inference_mode():
            tokens = torch.from_numpy(_nllb_with(reference, CODES[tag], [text]))
            want = torch.nn.functional.normalize(tiny_nllb.model.encode_text(tokens).float(), dim=-1)[0].numpy()
        assert np.abs(vec - want).max() < 1e-5, (text, tag)
    assert np.abs(by[("rood", "nl")] - by[("rood", "de")]).max() > 1e-3  # one text, two languages: two inputs
    assert np.abs(by[("rood", "nl")] - by[("rood", None)]).max() > 1e-3
    # the same words in two languages are no collision; an unknown language stores nothing
    more = engine.add_phrases("nl", parse_add({"phrases": [{"term": "rood", "language": "nl"}, "een rode cirkel"]}))
    assert more.added == 0 and more.collisions == []
    with pytest.raises(UnsupportedLanguage) as err:
        engine.add_phrases("nl", parse_add({"phrases": [{"term": "rubrum", "language": "la"}]}))
    assert err.value.code == "unsupported_language" and engine.vocabulary("nl").size == 2
    picture = np.zeros((32, 32, 3), dtype=np.uint8)
    from PIL import Image

    result = engine.analyze(Image.fromarray(picture), ["nl"]).results["nl"]
    assert result.softmax_over == 2 and {m.language for m in result.matches} == {"nl"}


def parse_add(body: dict[str, Any]) -> Any:
    from indexer.schema import AddPhrases, parse

    return parse(AddPhrases, body)
