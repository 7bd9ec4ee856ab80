from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import add, create, draw_shape, remove
from indexer.engine import Engine
from indexer.errors import Conflict, InvalidInput, NotFound, NotIndexed, ReadOnly
from indexer.schema import AnalyzeJson, parse_json
from indexer.catalog import catalog


def _open_clip_probabilities(toy, image, phrases):
    """GUIDE §1's reference: encode_image, encode_text, normalise, logit_scale.exp(), softmax."""
    m = toy.model
    with torch.inference_mode():
        img = m.encode_image(toy.preprocess(image).unsqueeze(0))
        txt = m.encode_text(toy.tokenize(phrases))
        img = img / img.norm(dim=-1, keepdim=True)
        txt = txt / txt.norm(dim=-1, keepdim=True)
        return (m.logit_scale.exp() * img @ txt.T).softmax(dim=-1)[0].numpy()


def test_analysis_equals_open_clip_direct_computation_within_1e_5(engine: Engine, toy):
    image = draw_shape("green", "square")
    result = engine.analyze(image, ["movements", "surfaces"], top_k=1000)
    for name in ("movements", "surfaces"):
        phrases = [p.phrase for p in catalog().get(name).phrases()]
        ref = dict(zip(phrases, _open_clip_probabilities(toy, image, phrases)))
        res = result["results"][name]
        assert res["softmax_over"] == len(phrases)
        assert len(res["matches"]) == len(phrases)
        for m in res["matches"]:
            assert abs(m["probability"] - ref[m["phrase"]]) < 1e-5
            assert m["logit"] == pytest.approx(toy.logit_scale * m["cosine"], abs=1e-4)
    assert result["model"]["logit_scale"] == pytest.approx(toy.logit_scale)


def test_the_toy_model_reads_its_own_world(engine: Engine):
    create(engine, "shapes", [f"a {c} {s}" for c in ("red", "blue", "green") for s in ("circle", "square", "triangle")])
    top = engine.analyze(draw_shape("red", "circle"), ["shapes"], top_k=1)["results"]["shapes"]["matches"][0]
    assert top["phrase"] == "a red circle" and top["probability"] > 0.5


def test_second_index_run_embeds_nothing_and_writes_nothing(engine: Engine):
    first = engine.index(["movements", "qualities"])
    assert first.embedded == 193 + 7 and sorted(first.indexes_written) == ["movements", "qualities"]
    second = engine.index(["movements", "qualities"])
    assert second.embedded == 0 and second.indexes_written == []


def test_phrases_shared_between_vocabularies_are_embedded_once(engine: Engine):
    engine.index(["ci-movements"])
    before = engine.store.stats()["embeddings"]
    create(engine, "mine", ["impressionism", "something new"])
    assert engine.store.stats()["embeddings"] == before + 1


def test_a_corrupt_or_missing_index_file_is_rebuilt_silently(engine: Engine):
    engine.index(["surfaces"])
    vocab = engine.store.get_vocabulary("surfaces")
    path = engine.files.path(engine.model_key, vocab)
    expected = engine.analyze(draw_shape(), ["surfaces"])["results"]
    for damage in (lambda: path.write_bytes(b"not a faiss index"), lambda: path.unlink()):
        damage()
        fresh = Engine(engine.store.home, "toy", loader=engine._loader, auto_embed_limit=0)  # nothing may be re-embedded
        assert fresh.analyze(draw_shape(), ["surfaces"])["results"] == expected
        assert path.is_file()


def test_the_service_refuses_to_embed_a_whole_list_on_request(engine: Engine):
    strict = Engine(engine.store.home, "toy", loader=engine._loader, auto_embed_limit=100)
    with pytest.raises(NotIndexed, match="clip-gaze index --vocab movements"):
        strict.analyze(draw_shape(), ["movements"])


def test_custom_vocabulary_writes_are_idempotent_and_versioned(engine: Engine):
    created = create(engine, "saints", [{"term": "saint jerome", "external_id": "ICON-1", "metadata": {"century": 4}}],
                     templates=["{}", "depicting {}"])
    assert created.added == 2
    again = add(engine, "saints", ["saint jerome"])
    assert (again.added, again.unchanged, again.version) == (0, 2, created.version)
    more = add(engine, "saints", [{"term": "saint agnes", "external_id": "ICON-2"}])
    assert more.added == 2 and more.version == created.version + 1
    match = engine.analyze(draw_shape(), ["saints"], top_k=4)["results"]["saints"]
    assert match["softmax_over"] == 4
    jerome = [m for m in match["matches"] if m["term"] == "saint jerome"]
    assert {m["external_id"] for m in jerome} == {"ICON-1"} and jerome[0]["metadata"] == {"century": 4}
    assert remove(engine, "saints", external_ids=["ICON-2"]).removed == 2
    assert remove(engine, "saints", terms=["saint jerome"]).removed == 2
    assert engine.analyze(draw_shape(), ["saints"])["results"]["saints"]["softmax_over"] == 0


def test_another_engine_sees_a_write_on_its_next_call(engine: Engine):
    create(engine, "mine", ["a red circle"])
    other = Engine(engine.store.home, "toy", loader=engine._loader)
    assert other.analyze(draw_shape(), ["mine"])["results"]["mine"]["softmax_over"] == 1
    add(engine, "mine", ["a blue square"])
    assert other.analyze(draw_shape(), ["mine"])["results"]["mine"]["softmax_over"] == 2


def test_builtin_vocabularies_are_read_only(engine: Engine):
    engine.resolve(["movements"])
    with pytest.raises(ReadOnly):
        add(engine, "movements", ["x"])
    with pytest.raises(ReadOnly):
        engine.delete_vocabulary("movements")
    with pytest.raises(Conflict):
        create(engine, "movements", ["x"])


def test_bad_writes_store_nothing(engine: Engine):
    with pytest.raises(InvalidInput):
        create(engine, "mine", ["fine", ""])
    assert engine.store.find_vocabulary("mine") is None
    create(engine, "mine", ["fine"])
    with pytest.raises(Conflict):
        create(engine, "mine", ["other"])
    with pytest.raises(InvalidInput):
        add(engine, "mine", ["ok", "x" * 400])
    assert engine.store.get_vocabulary("mine").size == 1
    with pytest.raises(NotFound):
        add(engine, "nope", ["x"])


def test_a_model_failure_during_a_write_stores_nothing(engine: Engine, monkeypatch):
    create(engine, "mine", ["fine"])
    version = engine.store.get_vocabulary("mine").version

    def broken(*a, **k):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(engine.model, "encode_texts", broken)
    with pytest.raises(RuntimeError):
        add(engine, "mine", ["new one"])
    row = engine.store.get_vocabulary("mine")
    assert (row.size, row.version) == (1, version)


def test_unknown_vocabularies_are_named(engine: Engine):
    with pytest.raises(NotFound, match="nope, nada"):
        engine.analyze(draw_shape(), ["movements", "nope", "nada"])


def test_top_k_is_checked_once_at_the_boundary():
    for bad in (0, -1, 1001, "3", True, None):
        with pytest.raises(InvalidInput) as exc:
            parse_json(AnalyzeJson, json.dumps({"image_base64": "aGk=", "top_k": bad}))
        assert exc.value.code == "invalid_top_k"
    assert parse_json(AnalyzeJson, '{"image_base64": "aGk="}').top_k == 10


def test_compare_is_a_softmax_over_exactly_the_phrases(engine: Engine, toy):
    image = draw_shape("blue", "square")
    phrases = ["a blue square", "a red circle", "a green triangle"]
    res = engine.compare(image, phrases)["results"]["compare"]
    ref = dict(zip(phrases, _open_clip_probabilities(toy, image, phrases)))
    assert res["softmax_over"] == 3 and res["matches"][0]["phrase"] == "a blue square"
    for m in res["matches"]:
        assert abs(m["probability"] - ref[m["phrase"]]) < 1e-5
    assert engine.store.stats()["embeddings"] == 0  # compare stores nothing unless asked
    with pytest.raises(InvalidInput, match="twice"):
        engine.compare(image, ["a", "a"])


def test_float16_compact_indexes_stay_within_1e_3(engine: Engine):
    image = draw_shape("purple", "square")
    full = engine.analyze(image, ["artists-prevalence"], top_k=1000)["results"]["artists-prevalence"]["matches"]
    compact = Engine(engine.store.home, "toy", loader=engine._loader, compact=True)
    half = compact.analyze(image, ["artists-prevalence"], top_k=1000)["results"]["artists-prevalence"]["matches"]
    p_full = {m["phrase"]: m["probability"] for m in full}
    assert max(abs(p_full[m["phrase"]] - m["probability"]) for m in half) < 1e-3
    assert np.isclose(sum(p_full.values()), 1.0)
