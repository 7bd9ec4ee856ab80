"""Interrogation (README "The prompt a generator would answer to"): on the toy model with a toy candidate
list of its world (the 32 "a {colour} {shape}" phrases and the two grounds), pictures drawn by
tests/shapes.py's independent rasteriser.

- the chain from no caption names the right colour and shape for ≥ 90 % of held-out pictures;
- the prefix reuse changes nothing: choices equal the plain full-encode chain's;
- the prompt's cosine equals open_clip's own encode within 1e-5, and so does every part's;
- every mode is deterministic; every surface answers; bad input gets one error.
"""

from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import shapes
from conftest import encode
from indexer.engine import Engine
from indexer.errors import ClipGazeError
from indexer.interrogate.chain import Prompts, join, run_chain
from indexer.interrogate.collection import sidecar_name
from indexer.interrogate.modes import Options, interrogate
from indexer.interrogate.prefix import TorchPrefixEncoder
from indexer.schema import CreateVocabulary

WORDS = [f"a {c} {s}" for c in shapes.COLOURS for s in shapes.SHAPES] + ["on a light background", "on a dark background"]


@pytest.fixture
def toy_words(engine: Engine) -> Engine:
    engine.create_vocabulary(CreateVocabulary(name="toy-words", phrases=WORDS))
    return engine


def held_out(n: int, seed: int = 24) -> list[tuple[str, str, object]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        c, s = str(rng.choice(list(shapes.COLOURS))), str(rng.choice(shapes.SHAPES))
        out.append((c, s, shapes.render(c, s, shapes.background_for(c, rng), int(rng.integers(64, 200)), rng)))
    return out


def open_clip_cosine(engine: Engine, image: object, prompt: str) -> float:
    m = engine.torch_model
    with torch.inference_mode():
        text = torch.nn.functional.normalize(m.model.encode_text(m.tokenizer([prompt])), dim=-1)[0].numpy()
        pic = torch.nn.functional.normalize(m.model.encode_image(m.image_tensor(image).unsqueeze(0)), dim=-1)[0].numpy()
    return float(np.dot(text.astype(np.float64), pic.astype(np.float64)))


def test_the_chain_names_the_right_colour_and_shape(toy_words: Engine) -> None:
    pictures = held_out(30)
    right = 0
    for colour, shape, image in pictures:
        found = interrogate(toy_words, image, Options(vocabularies=["toy-words"]))
        first = found.parts[0].phrase.split()
        right += colour in first and shape in first and colour in found.prompt and shape in found.prompt
        assert found.start == "" and found.mode == "best" and found.steps >= 1
    assert right >= 0.9 * len(pictures)


def test_prefix_reuse_changes_nothing_and_cosines_are_open_clips(toy_words: Engine) -> None:
    for _, _, image in held_out(6, seed=5):
        for mode in ("best", "negative", "fast", "classic"):
            options = dict(mode=mode, vocabularies=["toy-words", "ci-negative"] if mode == "negative" else ["toy-words"])
            reused = interrogate(toy_words, image, Options(**options))  # type: ignore[arg-type]
            plain = interrogate(toy_words, image, Options(**options, reuse=False))  # type: ignore[arg-type]
            assert [p.phrase for p in reused.parts] == [p.phrase for p in plain.parts]
            assert plain.reused_prefix == 0
            if mode in ("best", "negative"):
                assert reused.reused_prefix > 0.9 * reused.text_encodes
            assert abs(reused.cosine - open_clip_cosine(toy_words, image, reused.prompt)) < 1e-5
            prompt = ""
            for part in reused.parts:  # every part's cosine is that of the prompt up to it
                prompt = join(prompt, part.phrase)
                assert abs(part.cosine_after - open_clip_cosine(toy_words, image, prompt)) < 1e-5
            assert abs(sum(p.gain for p in reused.parts) - reused.cosine) < 1e-6


def test_a_prefix_whose_tokens_change_runs_after_the_start_it_shares(toy: object) -> None:
    enc = TorchPrefixEncoder(toy)  # type: ignore[arg-type]
    prompts = Prompts(toy.tokenizer)  # type: ignore[attr-defined]
    image = toy.encode_images([shapes.render("red", "star", "light", 96, np.random.default_rng(1))])[0]  # type: ignore[attr-defined]
    chained = run_chain(enc, prompts, image, WORDS, start="painted in (1650)", forced=2, max_steps=3)
    assert enc.counts.diverged >= len(WORDS)  # the first step: ")" then "," is one token, the prefix changed
    assert enc.counts.whole == 1  # the start alone; the candidates ran after the tokens they share with it
    plain = run_chain(TorchPrefixEncoder(toy, reuse=False), prompts, image, WORDS, start="painted in (1650)",  # type: ignore[arg-type]
                      forced=2, max_steps=3)
    assert chained.chosen == plain.chosen and np.allclose(chained.cosines, plain.cosines, atol=1e-6)


def test_modes_are_deterministic_and_differ(toy_words: Engine) -> None:
    _, _, image = held_out(1, seed=9)[0]
    prompts = {}
    for mode in ("best", "classic", "fast", "negative"):
        a = interrogate(toy_words, image, Options(mode=mode, vocabularies=["toy-words"]))
        b = interrogate(toy_words, image, Options(mode=mode, vocabularies=["toy-words"]))
        assert a.prompt == b.prompt and a.cosine == b.cosine and a.parts == b.parts
        assert a.tokens <= a.context_length == 77
        prompts[mode] = a
    assert prompts["fast"].steps == 0 and prompts["fast"].text_encodes <= len(prompts["fast"].parts) + 1
    assert prompts["classic"].parts[0].vocabulary == "toy-words"
    assert prompts["negative"].negative_prompt == prompts["negative"].prompt
    assert prompts["negative"].cosine < prompts["best"].cosine


def test_the_caption_starts_the_prompt_and_forced_steps_are_taken(toy_words: Engine) -> None:
    _, _, image = held_out(1, seed=3)[0]
    found = interrogate(toy_words, image, Options(vocabularies=["toy-words"], caption="a museum object", forced=5))
    assert found.prompt.startswith("a museum object") and found.parts[0].vocabulary is None
    assert found.steps >= 5


def test_bad_input(toy_words: Engine) -> None:
    _, _, image = held_out(1)[0]
    cases = [
        (Options(mode="best-ever"), "invalid_mode"),
        (Options(vocabularies=["no-such-list"]), "unknown_vocabulary"),
        (Options(vocabularies=["toy-words"], caption=", ".join(["a"] * 50)), "caption_too_long"),
        (Options(vocabularies=["toy-words"], forced=-1), "invalid_input"),
    ]
    for options, code in cases:
        with pytest.raises(ClipGazeError) as exc:
            interrogate(toy_words, image, options)
        assert exc.value.code == code
    toy_words.create_vocabulary(CreateVocabulary(name="empty-list", phrases=[]))
    with pytest.raises(ClipGazeError) as exc:
        interrogate(toy_words, image, Options(vocabularies=["empty-list"]))
    assert exc.value.code == "no_candidates"


def test_start_vocabularies_read_the_picture(toy_words: Engine) -> None:
    _, _, image = held_out(1, seed=4)[0]
    found = interrogate(toy_words, image, Options(mode="fast", vocabularies=["toy-words"], start_vocabularies=["toy-words"]))
    assert found.start == found.parts[0].phrase and found.parts[0].vocabulary == "toy-words"


# -- surfaces ----------------------------------------------------------------------------------------
def test_rest_api(service_app_client: object) -> None:
    client, engine = service_app_client  # type: ignore[misc]
    engine.create_vocabulary(CreateVocabulary(name="toy-words", phrases=WORDS))
    png = encode(held_out(1)[0][2])  # type: ignore[arg-type]
    r = client.post("/v1/interrogate", data={"image": (io.BytesIO(png), "x.png"), "vocabularies": "toy-words",
                                             "mode": "fast"}, content_type="multipart/form-data")
    assert r.status_code == 200, r.json
    body = r.json
    assert body["ok"] and body["mode"] == "fast" and body["prompt"] and body["parts"][0]["gain"] > 0
    assert {"phrase", "vocabulary", "term", "external_id", "cosine_after", "gain"} <= set(body["parts"][0])
    r = client.post("/v1/interrogate", json={"image_base64": base64.b64encode(png).decode(), "vocabularies": ["toy-words"],
                                             "mode": "negative"})
    assert r.status_code == 200 and r.json["negative_prompt"] == r.json["prompt"]
    for payload, status, code in (
        ({"mode": "worst"}, 400, None),
        ({"vocabularies": ["nope"]}, 422, "unknown_vocabulary"),
        ({"vocabularies": ["toy-words"], "caption": ", ".join(["a"] * 50)}, 400, "caption_too_long"),
    ):
        r = client.post("/v1/interrogate", json={"image_base64": base64.b64encode(png).decode(), **payload})
        assert r.status_code == status and r.json["ok"] is False, r.json
        assert code is None or r.json["code"] == code


@pytest.fixture
def service_app_client(toy_loader: object, monkeypatch: pytest.MonkeyPatch) -> object:
    from conftest import service_engine
    from service import create_app

    engine = service_engine(toy_loader, monkeypatch, "tok")  # type: ignore[arg-type]
    return create_app(engine=engine).test_client(), engine


def test_cli_and_library(run: object, tmp_path: Path) -> None:
    import clip_gaze

    png = tmp_path / "shape.png"
    png.write_bytes(encode(held_out(1)[0][2]))  # type: ignore[arg-type]
    words = tmp_path / "words.txt"
    words.write_text("\n".join(WORDS), encoding="utf-8")
    assert run("vocab", "create", "toy-words", "--file", str(words)).exit_code == 0  # type: ignore[operator]
    r = run("interrogate", str(png), "--vocab", "toy-words", "--json")  # type: ignore[operator]
    assert r.exit_code == 0, r.output
    answer = json.loads(r.output.strip().splitlines()[-1])
    found = clip_gaze.interrogate(png, vocabularies="toy-words")
    assert answer["prompt"] == found.prompt and answer["file"] == str(png)
    r = run("interrogate", str(png), "--vocab", "toy-words", "--mode", "classic")  # type: ignore[operator]
    assert r.exit_code == 0 and "mode classic" in r.output
    r = run("interrogate", str(png), "--vocab", "nope")  # type: ignore[operator]
    assert r.exit_code == 1 and r.output.count("Error:") == 1 and "nope" in r.output


def test_collection_interrogate_writes_rows_and_sidecars_and_resumes(run: object, tmp_path: Path) -> None:
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for i, (c, s, image) in enumerate(held_out(4)):
        image.save(pictures / f"{i}-{c}-{s}.png")  # type: ignore[attr-defined]
    words = tmp_path / "words.txt"
    words.write_text("\n".join(WORDS), encoding="utf-8")
    assert run("vocab", "create", "toy-words", "--file", str(words)).exit_code == 0  # type: ignore[operator]
    assert run("collection", "create", "shapes").exit_code == 0  # type: ignore[operator]
    assert run("collection", "add", "shapes", str(pictures)).exit_code == 0  # type: ignore[operator]
    out, side = tmp_path / "prompts.csv", tmp_path / "captions"
    r = run("collection", "interrogate", "shapes", "--vocab", "toy-words", "--mode", "fast", "--out", str(out),  # type: ignore[operator]
            "--sidecars", str(side))
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert len(rows) == 4 and sorted(p.name for p in side.iterdir()) == sorted(f"{p.stem}.txt" for p in pictures.iterdir())
    for row in rows:
        assert (side / f"{Path(row['source']).stem}.txt").read_text(encoding="utf-8").strip() == row["prompt"]
    r = run("collection", "interrogate", "shapes", "--vocab", "toy-words", "--mode", "fast", "--out", str(out))  # type: ignore[operator]
    assert r.exit_code == 0 and "4 already there" in r.output
    assert len(list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))) == 4
    jl = tmp_path / "prompts.jsonl"
    assert run("collection", "interrogate", "shapes", "--vocab", "toy-words", "--out", str(jl)).exit_code == 0  # type: ignore[operator]
    assert len(jl.read_text(encoding="utf-8").splitlines()) == 4
    r = run("collection", "interrogate", "shapes", "--out", str(tmp_path / "p.txt"))  # type: ignore[operator]
    assert r.exit_code == 1 and "Error:" in r.output


def test_sidecar_names() -> None:
    taken: set[str] = set()
    assert sidecar_name("/a/b/picture.jpg", "ab" * 32, taken) == "picture.txt"
    assert sidecar_name("https://x.org/iiif/picture.png?x=1", "cd" * 32, taken) == "picture-cdcdcdcd.txt"


def test_blip_captioner_from_the_cache_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, toy_words: Engine) -> None:
    from blip_tiny import tiny_blip_in_cache

    repo = tiny_blip_in_cache()
    from indexer.interrogate.caption import load_captioner

    captioner = load_captioner(repo)
    _, _, image = held_out(1)[0]
    text = captioner.caption(image)  # type: ignore[arg-type]
    assert isinstance(text, str)
    found = interrogate(toy_words, image, Options(mode="fast", vocabularies=["toy-words"], captioner=repo))
    assert found.start == text
    with pytest.raises(ClipGazeError) as exc:
        load_captioner("Salesforce/not-in-the-cache")
    assert exc.value.code == "model_unavailable" and "cache" in exc.value.message


def test_the_token_tree_shares_starts_and_equals_whole_encodes(toy: object) -> None:
    from indexer.interrogate.tree import build, chunks, common_start

    rows = [[1, 5, 7, 9], [1, 5, 7, 8, 9], [1, 5, 6, 9], [1, 5, 7, 9]]
    assert common_start(rows) == 2 and common_start([[1, 2]]) == 1
    tree = build([r[2:] for r in rows], range(len(rows)))
    assert tree.size == 6 and [len(lv.tokens) for lv in tree.levels] == [2, 3, 1]  # 7 and 6; 9, 8, 9; 9
    assert tree.end_node[0] == tree.end_node[3]  # the same row, one node
    assert sum(t.rows.size for t in chunks([r[2:] for r in rows], 3)) == len(rows)
    enc = TorchPrefixEncoder(toy)  # type: ignore[arg-type]
    prompts = Prompts(toy.tokenizer)  # type: ignore[attr-defined]
    texts = ["a red star", "a red star, a blue circle", "a red star, on a dark background", "a red square (1650)"]
    token_rows = [prompts.row(t) for t in texts]
    assert np.abs(enc.after(prompts.head("a red star"), token_rows) - enc.texts(token_rows)).max() < 1e-5
    assert enc.counts.diverged == 1  # "a red square" does not begin with the prompt so far


def test_onnx_runtime_runs_the_chain_as_torch_does(toy_words: Engine, clean_environ: Path) -> None:
    from indexer.interrogate.onnx_prefix import OnnxPrefixEncoder
    from indexer.models.onnx_model import OnnxModel

    served = Engine(clean_environ, "toy")  # the default backend, over the linked export: ONNX Runtime
    assert isinstance(served.model, OnnxModel)
    for _, _, image in held_out(3, seed=7):
        a = interrogate(served, image, Options(vocabularies=["toy-words"]))
        b = interrogate(toy_words, image, Options(vocabularies=["toy-words"]))
        assert (a.text_runtime, b.text_runtime) == ("onnxruntime", "torch")
        assert [p.phrase for p in a.parts] == [p.phrase for p in b.parts] and a.reused_prefix > 0.9 * a.text_encodes
        assert abs(a.cosine - open_clip_cosine(toy_words, image, a.prompt)) < 1e-5
    toy = toy_words.torch_model
    graph = next((clean_environ / "onnx").glob("*.prefix"))
    image = toy.encode_images([shapes.render("red", "star", "light", 96, np.random.default_rng(1))])[0]
    prompts = Prompts(toy.tokenizer)
    ort = OnnxPrefixEncoder(graph, eot=prompts.eot)
    a_chain = run_chain(ort, prompts, image, WORDS, start="painted in (1650)", forced=2, max_steps=4)
    b_chain = run_chain(TorchPrefixEncoder(toy, reuse=False), prompts, image, WORDS, start="painted in (1650)", forced=2, max_steps=4)
    assert a_chain.chosen == b_chain.chosen and np.allclose(a_chain.cosines, b_chain.cosines, atol=1e-6)
    assert ort.counts.diverged >= len(WORDS)
    # with torch for what is one row (the prefixes, whole rows, a prompt's cuts): the same chain, fewer graph calls
    hybrid = OnnxPrefixEncoder(graph, eot=prompts.eot, whole=TorchPrefixEncoder(toy))
    c_chain = run_chain(hybrid, prompts, image, WORDS, start="painted in (1650)", forced=2, max_steps=4)
    assert c_chain.chosen == b_chain.chosen and np.allclose(c_chain.cosines, b_chain.cosines, atol=1e-6)
    assert hybrid.counts.prefixes >= 1 and hybrid.counts.by_suffix == ort.counts.by_suffix
    head = prompts.head("painted in (1650), a red star")
    assert np.allclose(hybrid.ends(head, [3, len(head)]), ort.ends(head, [3, len(head)]), atol=1e-6)
    assert np.allclose(hybrid.texts([[*head, prompts.eot]]), ort.texts([[*head, prompts.eot]]), atol=1e-6)
