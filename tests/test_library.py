from __future__ import annotations

import re

import pytest

import clip_gaze
from conftest import draw_shape, encode
from indexer.errors import InvalidInput


def test_list_constants_hold_the_templated_phrases_of_0_3_0():
    assert "by paul cézanne" in clip_gaze.ARTISTS_BY_TRAINING_PREVALENCE
    assert clip_gaze.ARTISTS_BY_TRAINING_PREVALENCE[116] == "by paul cézanne"  # ranked order kept
    assert "tonalism movement" in clip_gaze.MOVEMENTS and "on canvas" in clip_gaze.SURFACES
    assert "paul cézanne" in clip_gaze.ARTISTS_BY_NAME
    assert clip_gaze.SCULTPURE_MATERIALS == clip_gaze.SCULPTURE_MATERIALS  # 0.3.0's spelling still works
    lengths = {name: len(getattr(clip_gaze, name)) for name in
               ("ARTISTS_BY_NAME", "ARTISTS_BY_TRAINING_PREVALENCE", "MOVEMENTS", "PAINTING_MATERIALS",
                "SCULPTURE_MATERIALS", "PRINTING_TECHNIQUES", "SURFACES", "TOOLS", "QUALITIES", "SITES")}
    assert lengths == {"ARTISTS_BY_NAME": 5854, "ARTISTS_BY_TRAINING_PREVALENCE": 957, "MOVEMENTS": 193,
                       "PAINTING_MATERIALS": 25, "SCULPTURE_MATERIALS": 38, "PRINTING_TECHNIQUES": 29,
                       "SURFACES": 19, "TOOLS": 24, "QUALITIES": 7, "SITES": 19}


def test_probabilities_keep_the_prompt_order_and_sum_to_one():
    prompts = ["a red circle", "a blue square", "a green triangle", "a red circle"]  # 0.3.0 kept duplicates
    out = clip_gaze.probabilities(draw_shape("blue", "square"), prompts)
    assert [p for p, _ in out] == prompts
    assert sum(p for _, p in out) == pytest.approx(1.0, abs=1e-6)
    assert max(out, key=lambda e: e[1])[0] == "a blue square"
    assert out[0][1] == pytest.approx(out[3][1])
    assert clip_gaze.probabilities(draw_shape(), []) == []


def test_gaze_formats_the_best_five_like_0_3_0(tmp_path):
    path = tmp_path / "x.png"
    draw_shape("red", "circle").save(path)
    prompts = [f"a {c} {s}" for c in ("red", "blue", "green") for s in ("circle", "square", "triangle")]
    best = clip_gaze.gaze(str(path), prompts)
    assert len(best) == 5 and all(re.fullmatch(r".+ \(\d\d+%\)", b) for b in best)
    assert best[0].startswith("a red circle (")
    raw = clip_gaze.gaze(encode(draw_shape("red", "circle")), prompts, only_show_best=None, format_output=False)
    assert len(raw) == 9 and raw[0][0] == "a red circle" and raw[0][1] >= raw[1][1]


def test_repeated_calls_reuse_stored_phrase_embeddings(toy, monkeypatch):
    calls = []
    original = toy.encode_texts
    monkeypatch.setattr(toy, "encode_texts", lambda phrases, **kw: calls.append(len(phrases)) or original(phrases, **kw))
    engine = clip_gaze.get_engine()
    engine._model = toy
    clip_gaze.probabilities(draw_shape(), clip_gaze.MOVEMENTS)
    clip_gaze.probabilities(draw_shape("green"), clip_gaze.MOVEMENTS)
    assert calls == [193]  # encoded once; the second call encoded only the image
    assert engine.store.stats()["embeddings"] == 193


def test_empty_prompts_are_refused():
    with pytest.raises(InvalidInput, match="empty"):
        clip_gaze.probabilities(draw_shape(), ["ok", " "])


def test_the_error_classes_are_exported_and_are_what_the_functions_raise(tmp_path):
    from indexer import errors

    for name in ("ClipGazeError", "InvalidInput", "InvalidImage", "ImageTooLarge", "NotFound", "ModelUnavailable", "Busy"):
        assert getattr(clip_gaze, name) is getattr(errors, name) and name in clip_gaze.__all__
    with pytest.raises(clip_gaze.InvalidImage, match="not a picture|unsupported|damaged|decode"):
        clip_gaze.gaze(b"plain text, not a picture", ["a red circle", "a blue square"])
    with pytest.raises(clip_gaze.InvalidInput):
        clip_gaze.gaze(str(tmp_path / "missing.png"), ["a red circle"])
    with pytest.raises(clip_gaze.NotFound) as raised:
        clip_gaze.explain(draw_shape(), "no-such-vocabulary")
    assert raised.value.code == "unknown_vocabulary"
    with pytest.raises(clip_gaze.ApiError) as unreachable:
        clip_gaze.Client("http://127.0.0.1:9", retries=0).health()
    assert (unreachable.value.status, unreachable.value.code) == (0, "unreachable")
