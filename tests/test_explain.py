"""Explanations (README "Where and why"): the maps are exact, depend on the model's weights, point at
what they claim to, and reach the user through the library, the CLI and the REST API.

The proofs run on the toy model with pictures of its world drawn here, by an independent generator
built on tests/shapes.py's numpy rasteriser (never by the training code): two shapes of different
colour and kind at random places.
"""

from __future__ import annotations

import copy
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import shapes
from conftest import draw_shape, encode
from indexer.engine import Engine
from indexer.errors import ClipGazeError
from indexer.explain.decompose import Explainer, NotExplainable
from indexer.explain.geometry import input_box
from indexer.explain.maps import explain_image
from indexer.settings import Settings
from service import create_app

PHRASES = [f"a {c} {s}" for c in shapes.COLOURS for s in shapes.SHAPES]  # the toy world's 32 phrases


# -- the toy world, two shapes at a time --------------------------------------------------------------------
def two_shapes(rng: np.random.Generator) -> tuple[Image.Image, list[tuple[str, np.ndarray]]]:
    """A picture with two shapes of different colour and kind, apart, at random places; with each
    shape's phrase and its mask (pixels at least half covered)."""
    while True:
        c1, c2 = (str(c) for c in rng.choice(list(shapes.COLOURS), 2, replace=False))
        if {c1, c2} != {"white", "black"}:
            break
    s1, s2 = (str(s) for s in rng.choice(shapes.SHAPES, 2, replace=False))
    background = "dark" if "white" in (c1, c2) else "light" if "black" in (c1, c2) else str(rng.choice(["light", "dark"]))
    size = int(rng.integers(96, 257))
    while True:  # radii within the toy world's range (0.14–0.38 of the side), far enough apart not to touch
        radii = rng.uniform(0.15, 0.22, 2)
        centres = [rng.uniform(r + 0.02, 1 - r - 0.02, 2) for r in radii]
        if math.dist(centres[0], centres[1]) > radii.sum() + 0.05:
            break
    ss = 3
    grid = (np.arange(size * ss) + 0.5) / (size * ss)
    xx, yy = np.meshgrid(grid, grid)
    base = 228 if background == "light" else 38
    img = np.zeros((size, size, 3), np.float32) + np.clip(base + rng.integers(-22, 23, size=3), 0, 255)
    found = []
    for colour, shape, r, (cx, cy) in zip((c1, c2), (s1, s2), radii, centres):
        angle = math.radians(float(rng.uniform(-10, 10))) if shape != "circle" else 0.0
        u, v = xx - cx, yy - cy
        ru, rv = u * math.cos(angle) + v * math.sin(angle), -u * math.sin(angle) + v * math.cos(angle)
        inside = shapes._inside(shape, ru, rv, float(r), float(r) * float(rng.uniform(0.4, 0.48))).astype(np.float32)
        alpha = inside.reshape(size, ss, size, ss).mean(axis=(1, 3))[..., None]
        fg = np.clip(np.array(shapes.COLOURS[colour]) + rng.integers(-15, 16, size=3), 0, 255)
        img = alpha * fg + (1 - alpha) * img
        found.append((f"a {colour} {shape}", alpha[..., 0] >= 0.5))
    img += rng.normal(0, 3.0, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB"), found


@pytest.fixture(scope="module")
def world():
    rng = np.random.default_rng(2024)
    return [two_shapes(rng) for _ in range(60)]  # 120 shapes


@pytest.fixture(scope="module")
def text(toy):
    return toy.encode_texts(PHRASES)


def relative_map(toy, text, decomposition, phrase: str) -> np.ndarray:
    """The map of `phrase` within the 32 phrases: its logit minus their probability-weighted mean."""
    logits = toy.logit_scale * text @ decomposition.embedding
    p = np.exp(logits - logits.max())
    p /= p.sum()
    maps, _ = decomposition.contributions(text[PHRASES.index(phrase)] - p @ text, toy.logit_scale)
    return maps[0]


def decompose(toy, pictures, model=None):
    return Explainer(model or toy.model).decompose(torch.stack([toy.image_tensor(p) for p in pictures]))


# -- 1. exact --------------------------------------------------------------------------------------------------
def test_the_parts_rebuild_the_embedding_and_add_back_to_the_logits(toy, text, world):
    decs = decompose(toy, [p for p, _ in world[:20]])
    reference = toy.encode_images([p for p, _ in world[:20]])
    worst_embedding = worst_logit = 0.0
    for d, ref in zip(decs, reference):
        assert (d.rows, d.cols) == (8, 8) and d.patches.shape == (64, text.shape[1])
        worst_embedding = max(worst_embedding, d.error, float(np.abs(d.embedding - ref).max()))
        logits = toy.logit_scale * text @ d.embedding
        p = np.exp(logits - logits.max())
        p /= p.sum()
        maps, unmapped = d.contributions(text - p @ text, toy.logit_scale)  # every phrase of the list
        relative = logits - p @ logits
        worst_logit = max(worst_logit, float(np.abs(maps.sum(axis=(1, 2)) + unmapped - relative).max()))
        contrast, rest = d.contributions(text[0] - text[5], toy.logit_scale)
        worst_logit = max(worst_logit, abs(float(contrast.sum() + rest[0] - (logits[0] - logits[5]))))
    print(f"exactness: embedding rebuilt within {worst_embedding:.1e}, logits within {worst_logit:.1e}")
    assert worst_embedding < 1e-5
    assert worst_logit < 1e-4


def test_the_answer_adds_up_too(engine):
    found = explain_image(engine, draw_shape("blue", "square", 200), vocabularies=["movements"], phrases=PHRASES,
                          top_k=5, versus="a red circle")
    answer = found.answer
    assert list(answer.results) == ["compare", "movements"] and answer.layers == 3
    for result in answer.results.values():
        for m in result.matches:
            assert abs(np.sum(m.heatmap) + m.unmapped - m.relative_logit) < 1e-4
            assert len(m.heatmap) == 8 and all(len(row) == 8 for row in m.heatmap)
    best = answer.results["compare"].matches[0]
    assert best.phrase == "a blue square" and best.relative_logit > 0
    c = answer.contrast
    assert c is not None and (c.phrase, c.versus, c.vocabulary) == ("a blue square", "a red circle", "compare")
    assert abs(np.sum(c.heatmap) + c.unmapped - c.logit_difference) < 1e-4
    assert c.logit_difference == pytest.approx(best.logit - engine.model.logit_scale * float(
        engine.embedder.lookup(["a red circle"])[0] @ found.decomposition.embedding), abs=1e-4)
    # the analysis beside the maps is analyze's
    plain = engine.analyze(draw_shape("blue", "square", 200), ["movements"], top_k=5)
    for a, b in zip(answer.results["movements"].matches, plain.results["movements"].matches):
        assert a.phrase == b.phrase and a.probability == pytest.approx(b.probability, abs=1e-5)


# -- 2. the grid of every ViT --------------------------------------------------------------------------------
@pytest.mark.parametrize("arch, grid", [("ViT-B-32", 7), ("ViT-B-16", 14)])
def test_random_weight_vits_decompose_on_their_patch_grid(arch, grid):
    import open_clip

    torch.manual_seed(0)
    model = open_clip.create_model(arch, pretrained=None).eval()
    x = torch.randn(1, 3, 224, 224)
    d = Explainer(model).decompose(x)[0]
    assert (d.rows, d.cols) == (grid, grid) and d.patches.shape == (grid * grid, 512)
    with torch.inference_mode():
        ref = torch.nn.functional.normalize(model.encode_image(x), dim=-1)[0].numpy()
    assert np.abs(d.embedding - ref).max() < 1e-5 and d.error < 1e-4
    assert Explainer(model).layers == 4


def test_layer_scale_is_decomposed_too():
    from open_clip.transformer import VisionTransformer

    torch.manual_seed(0)
    visual = VisionTransformer(image_size=32, patch_size=8, width=32, layers=2, heads=2, mlp_ratio=2.0,
                               ls_init_value=0.3, output_dim=16).eval()

    class Tower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.visual = visual

        def encode_image(self, x):
            return self.visual(x)

    d = Explainer(Tower()).decompose(torch.randn(2, 3, 32, 32))
    assert [(x.rows, x.cols) for x in d] == [(4, 4), (4, 4)] and max(x.error for x in d) < 1e-5


def test_other_towers_are_refused_with_not_explainable(toy_loader, clean_environ):
    import open_clip

    from indexer.models.torch_model import LoadedModel
    from indexer.models.registry import parse_model

    model, _, preprocess = open_clip.create_model_and_transforms("RN50", pretrained=None)
    with pytest.raises(NotExplainable) as exc:
        Explainer(model)
    assert exc.value.status == 400 and exc.value.code == "not_explainable" and "ModifiedResNet" in exc.value.message
    resnet = LoadedModel(parse_model("RN50:openai"), model.eval(), preprocess, open_clip.get_tokenizer("RN50"), "cpu")
    engine = Engine(clean_environ, "RN50:openai", loader=lambda *a, **k: resnet)
    client = create_app(Settings.from_env(), engine=engine).test_client()
    resp = client.post("/v1/explain", data={"image": (io.BytesIO(encode(draw_shape())), "x.png"),
                                            "phrases": '["a red circle", "a blue square"]'})
    body = resp.get_json()
    assert resp.status_code == 400 and body["code"] == "not_explainable" and "ModifiedResNet" in body["error"], body


# -- 3. sanity: the maps depend on the weights (Adebayo et al. 2018) -------------------------------------
def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = (np.argsort(np.argsort(x)).astype(float) for x in (a.ravel(), b.ravel()))
    ra -= ra.mean()
    rb -= rb.mean()
    return float((ra * rb).sum() / math.sqrt((ra * ra).sum() * (rb * rb).sum()))


def _rerandomised(model, blocks: int):
    """A copy of `model` whose last `blocks` blocks have fresh random weights of the same scale."""
    shuffled = copy.deepcopy(model)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for block in list(shuffled.visual.transformer.resblocks)[-blocks:]:
            for p in block.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * p.std() + (p.mean() if p.dim() == 1 else 0))
    return shuffled


def test_rerandomising_the_last_block_changes_the_maps(toy, text, world):
    """Adebayo et al.'s cascading randomisation: the maps must follow the weights. The last block
    re-randomised changes them; with more blocks re-randomised they keep less and less of the trained
    model's maps, and nothing once all are."""
    pictures = world[:30]
    images = [p for p, _ in pictures]
    trained = decompose(toy, images)

    def agreement(decs) -> float:
        return float(np.mean([_spearman(relative_map(toy, text, a, found[0][0]), relative_map(toy, text, b, found[0][0]))
                              for a, b, (_, found) in zip(trained, decs, pictures)]))

    same = agreement(decompose(toy, images))
    cascade = [agreement(decompose(toy, images, _rerandomised(toy.model, k))) for k in (1, 2, 3)]
    print(f"sanity: rank correlation with the trained model's maps: itself {same:.2f}; last block re-randomised "
          f"{cascade[0]:.2f}, last two {cascade[1]:.2f}, all three {cascade[2]:.2f}")
    assert same > 0.999
    assert cascade[0] < 0.6
    assert cascade[0] > cascade[1] > cascade[2] and abs(cascade[2]) < 0.2


# -- 4. deletion: greying what the map rates highest hurts the phrase more than greying at random ------------
def test_greying_the_top_fifth_of_the_map_lowers_the_logit_more_than_random(toy, text, world):
    rng = np.random.default_rng(0)
    cases = [(picture, phrase) for picture, found in world[:40] for phrase, _ in found]  # 80 cases
    batch = torch.stack([toy.image_tensor(p) for p, _ in cases])
    decs = Explainer(toy.model).decompose(batch)
    patch = toy.model.visual.patch_size[0]
    wins = 0
    for j, ((_, phrase), d) in enumerate(zip(cases, decs)):
        heat = relative_map(toy, text, d, phrase).ravel()
        k = round(0.2 * heat.size)

        def grey(cells: np.ndarray) -> torch.Tensor:
            x = batch[j].clone()
            for cell in cells:
                r, c = divmod(int(cell), d.cols)
                x[:, r * patch:(r + 1) * patch, c * patch:(c + 1) * patch] = 0  # the normalisation's mean: grey
            return x

        greyed = [grey(np.argsort(-heat)[:k])] + [grey(rng.choice(heat.size, k, replace=False)) for _ in range(8)]
        logits = toy.logit_scale * toy.encode_image_tensors(torch.stack(greyed)) @ text[PHRASES.index(phrase)]
        original = toy.logit_scale * float(d.embedding @ text[PHRASES.index(phrase)])
        wins += (original - logits[0]) > (original - logits[1:]).mean()
    share = wins / len(cases)
    print(f"deletion: greying the map's top 20% beat greying 20% at random on {wins}/{len(cases)} = {share:.1%}")
    assert share >= 0.90


# -- 5. the pointing game ---------------------------------------------------------------------------------------
def test_each_shapes_map_peaks_on_that_shape(toy, text, world):
    decs = decompose(toy, [p for p, _ in world])
    hits = centres = chance = total = 0
    for d, (picture, found) in zip(decs, world):
        size = picture.size[0]
        for phrase, mask in found:
            heat = relative_map(toy, text, d, phrase)
            r, c = np.unravel_index(int(np.argmax(heat)), heat.shape)
            cell = mask[r * size // d.rows:(r + 1) * size // d.rows, c * size // d.cols:(c + 1) * size // d.cols]
            hits += bool(cell.any())  # the strongest cell lies on the shape
            centres += bool(mask[int((r + 0.5) * size / d.rows), int((c + 0.5) * size / d.cols)])
            cells_on_shape = [mask[i * size // 8:(i + 1) * size // 8, j * size // 8:(j + 1) * size // 8].any()
                              for i in range(8) for j in range(8)]
            chance += float(np.mean(cells_on_shape))
            total += 1
    print(f"pointing: the strongest cell lies on the shape for {hits}/{total} = {hits / total:.1%} "
          f"(its centre inside the shape {centres}/{total}; a random cell would {chance / total:.1%})")
    assert hits / total >= 0.85


# -- where the grid lies in the picture -------------------------------------------------------------------------
def test_the_box_is_the_centre_crop_in_original_pixels(engine, toy):
    assert input_box(toy.preprocess, (300, 200)) == pytest.approx((50, 0, 250, 200), abs=0.6)
    assert input_box(toy.preprocess, (64, 128)) == pytest.approx((0, 32, 64, 96), abs=0.6)
    wide = Image.new("RGB", (1000, 600), "white")  # decoded at a quarter (250×150), reported in original pixels
    wide.paste(draw_shape("red", "circle", 300), (350, 150))
    found = explain_image(engine, encode(wide, "JPEG"), phrases=["a red circle", "a blue square"], top_k=1)
    assert found.picture.image.size == (250, 150)
    assert found.answer.grid.box == pytest.approx([200, 0, 800, 600], abs=4)
    peak = found.answer.results["compare"].matches[0].peak
    assert 200 <= peak.x <= 800 and 0 <= peak.y <= 600


# -- the library ------------------------------------------------------------------------------------------------
def test_library_explain_returns_maps_and_overlays(toy_engines):
    import clip_gaze

    e = clip_gaze.explain(draw_shape("green", "triangle", 160), ["a green triangle", "a red circle", "a blue square"], top_k=2,
                          versus="a green circle")
    assert e.phrases[0] == "a green triangle" and len(e.maps) == 2 and e.maps[0].shape == (8, 8) == e.grid
    assert sum(e.probabilities) <= 1 and e.softmax_over == 3 and e.vocabulary is None
    assert e.maps[0].sum() + e.unmapped[0] == pytest.approx(e.relative_logits[0], abs=1e-4)
    picture = e.overlay(0)
    assert isinstance(picture, Image.Image) and picture.width >= 384 and picture.height > picture.width  # the scale below
    assert e.contrast is not None and e.versus == "a green circle" and e.overlay_contrast().size == picture.size
    named = clip_gaze.explain(draw_shape("green", "triangle", 160), "qualities", top_k=1)
    assert named.vocabulary == "qualities" and named.softmax_over == 7 and len(named.maps) == 1
    import clip_gaze.explain as module  # the module is callable too: clip_gaze.explain(...) works either way

    assert callable(module) and callable(clip_gaze.explain)
    with pytest.raises(ClipGazeError):
        clip_gaze.explain(draw_shape(), ["a red circle"], top_k=0)
    with pytest.raises(ClipGazeError):
        clip_gaze.explain(draw_shape(), ["a red\u202ecircle"])


# -- the CLI ------------------------------------------------------------------------------------------------------
def test_cli_writes_one_overlay_per_phrase_and_says_where_each_peaks(run, tmp_path: Path):
    picture = tmp_path / "red-circle.png"
    draw_shape("red", "circle", 256).save(picture)
    out = tmp_path / "maps"
    result = run("explain", str(picture), "--phrase", "a red circle", "--phrase", "a blue square", "--phrase",
                 "a green star", "--versus", "a blue circle", "--out", str(out))
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    assert names[0] == "1-a-red-circle.png" and names[-1] == "contrast-a-red-circle-rather-than-a-blue-circle.png"
    assert {n[2:] for n in names[1:3]} == {"a-blue-square.png", "a-green-star.png"} and len(names) == 4
    assert "grid 8×8 over [0, 0, 256, 256]" in result.stdout and "1. " in result.stdout and "peaks at (" in result.stdout
    assert "a red circle rather than a blue circle" in result.stdout
    with Image.open(out / "1-a-red-circle.png") as im:
        assert im.format == "PNG" and im.width >= 384

    result = run("explain", str(picture), "--vocab", "qualities", "-k", "2", "--out", str(out), "--json")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["ok"] is True and answer["file"] == str(picture) and answer["grid"]["rows"] == 8
    match = answer["results"]["qualities"]["matches"][0]
    assert set(match) >= {"phrase", "probability", "cosine", "logit", "heatmap", "peak", "relative_logit", "unmapped"}
    assert "contrast" not in answer

    bad = run("explain", str(picture), "--phrase", "a red circle", "--phrase", "a red circle", "--out", str(out))
    assert bad.exit_code != 0 and "Error:" in bad.output and "twice" in bad.output
    bad = run("explain", str(picture), "--phrase", "a red circle", "--versus", " ", "--out", str(out))
    assert bad.exit_code != 0 and "versus" in bad.output


# -- the REST API -------------------------------------------------------------------------------------------------
@pytest.fixture
def client(engine):
    app = create_app(Settings.from_env(), engine=engine)
    app.config["TESTING"] = True
    return app.test_client()


def _validates(doc: dict, name: str, body: dict) -> None:
    from jsonschema import Draft202012Validator

    Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": doc["components"]}).validate(body)


def test_rest_explain_answers_the_analysis_with_maps_described_by_openapi(client):
    png = encode(draw_shape("red", "circle", 300))
    resp = client.post("/v1/explain", data={"image": (io.BytesIO(png), "c.png"), "vocabularies": "qualities", "top_k": "2",
                                            "phrases": '["a red circle", "a blue square"]', "versus": "a blue circle"})
    body = resp.get_json()
    assert resp.status_code == 200, body
    assert set(body) >= {"ok", "model", "image", "results", "timing_ms", "grid", "contrast"}
    assert body["grid"] == {"rows": 8, "cols": 8, "box": [0.0, 0.0, 300.0, 300.0]}
    assert list(body["results"]) == ["compare", "qualities"] and len(body["results"]["qualities"]["matches"]) == 2
    best = body["results"]["compare"]["matches"][0]
    assert best["phrase"] == "a red circle" and 0 <= best["peak"]["x"] <= 300 and len(best["heatmap"]) == 8
    assert body["contrast"]["phrase"] == "a red circle" and body["contrast"]["versus"] == "a blue circle"
    doc = client.get("/openapi.json").get_json()
    _validates(doc, "Explanation", body)
    op = doc["paths"]["/v1/explain"]["post"]
    assert op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/Explanation")
    match = doc["components"]["schemas"]["ExplainedMatch"]["properties"]
    assert {"heatmap", "peak", "relative_logit", "unmapped"} <= set(match)
    assert {p["name"] for p in op["parameters"]} == {"format"}

    as_json = client.post("/v1/explain", json={"image_base64": __import__("base64").b64encode(png).decode(),
                                               "phrases": ["a red circle", "a blue square"], "top_k": 1})
    assert as_json.status_code == 200 and "contrast" not in as_json.get_json()
    _validates(doc, "Explanation", as_json.get_json())
    assert as_json.get_json()["results"]["compare"]["matches"][0]["heatmap"] == best["heatmap"]


def test_rest_explain_answers_the_overlay_as_png(client):
    png = encode(draw_shape("red", "circle", 200))
    for resp in (client.post("/v1/explain?format=png", json={"image_base64": __import__("base64").b64encode(png).decode(),
                                                              "phrases": ["a red circle", "a blue square"]}),
                 client.post("/v1/explain?format=png", data={"image": (io.BytesIO(png), "c.png"),
                                                             "phrases": "a red circle\na blue square", "versus": "a blue circle"})):
        assert resp.status_code == 200 and resp.mimetype == "image/png"
        with Image.open(io.BytesIO(resp.data)) as im:
            assert im.format == "PNG" and im.width >= 384


@pytest.mark.parametrize("fields, code", [
    ({"top_k": "51"}, "invalid_top_k"),
    ({"phrases": '["a", "a"]'}, "invalid_phrase"),
    ({"phrases": '["a"]', "versus": "b\u202e"}, "invalid_phrase"),
    ({"format": "gif"}, "invalid_input"),
    ({"vocabularies": "no-such-list"}, "unknown_vocabulary"),
])
def test_rest_explain_refuses_bad_input_in_the_json_error_shape(client, fields, code):
    resp = client.post("/v1/explain", data={"image": (io.BytesIO(encode(draw_shape())), "x.png"), **fields})
    body = resp.get_json()
    assert resp.status_code in (400, 422) and set(body) == {"ok", "status", "code", "error"} and body["code"] == code, body
    resp = client.post("/v1/explain?top_k=3", json={"image_base64": "aGk=", "phrases": ["a"]})
    assert resp.status_code == 400 and resp.get_json()["code"] == "invalid_input"  # JSON bodies take only ?format=


def test_a_vocabulary_named_compare_cannot_sit_beside_ad_hoc_phrases(engine, client):
    from conftest import create

    create(engine, "compare", ["red circle"], template="a {}")
    resp = client.post("/v1/explain", data={"image": (io.BytesIO(encode(draw_shape())), "x.png"), "vocabularies": "compare",
                                            "phrases": '["a red circle"]'})
    assert resp.status_code == 400 and resp.get_json()["code"] == "invalid_input", resp.get_json()
    alone = client.post("/v1/explain", data={"image": (io.BytesIO(encode(draw_shape())), "x.png"), "vocabularies": "compare"})
    assert alone.status_code == 200 and list(alone.get_json()["results"]) == ["compare"]


def test_hooks_record_only_their_own_threads_forward_pass(toy, text, world):
    """The service encodes other requests' pictures on its batcher thread while a request explains
    its own: the hooks must record only the explaining thread's pass."""
    import threading

    pictures = [p for p, _ in world[:4]]
    expected = toy.encode_images(pictures[:1])[0]
    others = torch.stack([toy.image_tensor(p) for p in pictures[1:]] * 8)
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            toy.encode_image_tensors(others)

    worker = threading.Thread(target=busy)
    worker.start()
    try:
        decs = [decompose(toy, pictures[:1])[0] for _ in range(15)]
    finally:
        stop.set()
        worker.join()
    assert max(d.error for d in decs) < 1e-5
    assert max(float(np.abs(d.embedding - expected).max()) for d in decs) < 1e-5
    assert all(d.patches.shape == (64, text.shape[1]) for d in decs)


def test_parts_that_do_not_add_up_are_refused_not_shown(toy, monkeypatch):
    explainer = Explainer(toy.model)
    original = Explainer._attention_by_source
    monkeypatch.setattr(explainer, "_attention_by_source", lambda i, a: tuple(3 * t for t in original(explainer, i, a)))
    with pytest.raises(NotExplainable, match="do not add up"):
        explainer.decompose(torch.stack([toy.image_tensor(draw_shape())]))
