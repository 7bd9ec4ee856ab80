"""Several models in one server (CLIP_GAZE_MODELS): two toy models served side by side.

The second model is the project's toy with its weights perturbed by a fixed seed, written here as a
checkpoint and served as an `ARCH:/path/to/checkpoint` pair: a different model of the same world (a
test instrument, like the toy itself)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Callable

import pytest
from flask.testing import FlaskClient

from conftest import draw_shape, encode
from indexer.engine import Engine
from indexer.models.registry import TOY_CHECKPOINT
from indexer.settings import Settings
from service.app import create_app
from service.state import AUTO_EMBED_LIMIT

PHRASES = ["a red circle", "a blue square", "a green star", "a yellow triangle", "a purple circle"]


@pytest.fixture(scope="module")
def other_toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy's weights, each tensor moved by noise of a third of its own spread (seed 7)."""
    import torch
    from safetensors.torch import load_file, save_file

    weights = load_file(str(TOY_CHECKPOINT))
    gen = torch.Generator().manual_seed(7)
    moved = {k: (v + torch.randn(v.shape, generator=gen) * v.std() / 3 if v.ndim >= 2 else v).contiguous()
             for k, v in weights.items()}
    path = tmp_path_factory.mktemp("other-toy") / "toy-b.safetensors"
    save_file(moved, str(path))
    return path


@pytest.fixture
def two(other_toy: Path, toy_loader: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> FlaskClient:
    """A server of `toy` (the default) and the perturbed toy (made and loaded on first use, on torch)."""
    monkeypatch.setenv("CLIP_GAZE_BACKEND", "torch")
    monkeypatch.setenv("CLIP_GAZE_MODELS", f"toy,clip-gaze-toy:{other_toy}")
    settings = Settings.from_env()
    engine = Engine.from_settings(settings, loader=toy_loader, auto_embed_limit=AUTO_EMBED_LIMIT)
    return create_app(settings, engine=engine).test_client()


OTHER = "clip-gaze-toy:toy-b.safetensors"  # how clients see it: the checkpoint by file name


def png(colour: str = "red", shape: str = "circle") -> bytes:
    return encode(draw_shape(colour, shape))


def compare(client: FlaskClient, **fields: Any) -> Any:
    data = {"image": (io.BytesIO(png()), "red.png"), "phrases": "\n".join(PHRASES), **fields}
    return client.post("/v1/compare", data=data, content_type="multipart/form-data")


def test_settings_name_several_models_the_first_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    several = Settings.from_env({"CLIP_GAZE_MODELS": "toy, vit-b-32 ,toy", "CLIP_GAZE_MODEL": "sd15"})
    assert (several.model, several.models) == ("toy", ("toy", "vit-b-32"))
    one = Settings.from_env({"CLIP_GAZE_MODEL": "sd15"})
    assert (one.model, one.models) == ("sd15", ("sd15",))


def test_two_toy_models_served_side_by_side(two: FlaskClient, other_toy: Path) -> None:
    listed = two.get("/v1/models").get_json()
    served = listed["served"]
    assert [m["name"] for m in served] == ["toy", OTHER] and [m["default"] for m in served] == [True, False]
    assert served[1]["state"] == "not_loaded" and served[1]["model"]["pretrained"] == "toy-b.safetensors"
    assert str(other_toy.parent) not in json.dumps(listed)  # no server folder to clients
    assert listed["model"]["preset"] == "toy"

    default = compare(two).get_json()
    by_name = compare(two, model=OTHER)
    assert by_name.status_code == 200, by_name.get_json()
    other = by_name.get_json()
    assert default["model"]["preset"] == "toy" and other["model"]["preset"] is None
    assert other["model"]["pretrained"] == "toy-b.safetensors" and other["model"]["fingerprint"]
    p_default = {m["phrase"]: m["probability"] for m in default["results"]["compare"]["matches"]}
    p_other = {m["phrase"]: m["probability"] for m in other["results"]["compare"]["matches"]}
    assert set(p_default) == set(p_other) == set(PHRASES)
    assert max(abs(p_default[p] - p_other[p]) for p in PHRASES) > 1e-3  # two models, two readings
    assert compare(two, model="toy").get_json()["results"] == default["results"]

    # by the full ARCH:/path too (a user on the server's machine), and in a JSON body
    import base64

    body = {"image_base64": base64.b64encode(png()).decode(), "phrases": PHRASES, "model": f"clip-gaze-toy:{other_toy}"}
    assert two.post("/v1/compare", json=body).get_json()["results"] == other["results"]

    health = two.get("/v1/health").get_json()
    assert [m["name"] for m in health["models"]] == ["toy", OTHER]
    second = health["models"][1]
    assert second["state"] == "loaded" and second["weights_mb"] > 0 and second["memory_mb"] is not None
    assert second["load_seconds"] >= 0


def test_every_analysing_request_takes_model(two: FlaskClient) -> None:
    two.post("/v1/compare", data={"image": (io.BytesIO(png()), "r.png"), "phrases": "a red circle\na blue square"})
    form = lambda **f: {"image": (io.BytesIO(png()), "r.png"), "vocabularies": "surfaces", "top_k": "3", **f}  # noqa: E731
    for path in ("/v1/analyze", "/v1/analyze/batch", "/v1/explain"):
        got = two.post(path, data=form(model=OTHER), content_type="multipart/form-data")
        assert got.status_code == 200, (path, got.get_json())
        block = got.get_json()["model"]
        assert block["pretrained"] == "toy-b.safetensors", path


def test_an_unknown_model_is_404_unknown_model_everywhere(two: FlaskClient) -> None:
    import base64

    picture = base64.b64encode(png()).decode()
    for path, body in (("/v1/analyze", {"image_base64": picture}), ("/v1/analyze/batch", {"images_base64": [picture]}),
                       ("/v1/compare", {"image_base64": picture, "phrases": ["a"]}),
                       ("/v1/explain", {"image_base64": picture, "phrases": ["a", "b"]})):
        got = two.post(path, json={**body, "model": "sdxl"})
        assert got.status_code == 404, (path, got.get_json())
        err = got.get_json()
        assert err == {"ok": False, "status": 404, "code": "unknown_model", "error": err["error"]}
        assert "sdxl" in err["error"] and OTHER in err["error"]
    got = compare(two, model="nope")
    assert got.status_code == 404 and got.get_json()["code"] == "unknown_model"
    assert two.get("/v1/collections/none/search?q=a&model=nope").get_json()["code"] in ("unknown_model", "unknown_collection")


def test_collections_are_searched_and_scored_with_the_model_asked_for(two: FlaskClient, tmp_path: Path) -> None:
    from indexer.schema import parse
    from indexer.schema.collections import AddSources, CreateCollection

    state = two.application.extensions["clip_gaze"]
    folder = tmp_path / "pictures"
    folder.mkdir()
    for colour, shape in (("red", "circle"), ("blue", "square"), ("green", "star")):
        draw_shape(colour, shape).save(folder / f"{colour}-{shape}.png")
    state.collections.create(parse(CreateCollection, {"name": "shapes"}))
    state.collections.add("shapes", parse(AddSources, {"sources": [str(folder)]}))  # embedded by the default model

    assert two.get("/v1/collections/shapes/search?q=a+red+circle").status_code == 200
    refused = two.get(f"/v1/collections/shapes/search?q=a+red+circle&model={OTHER}")
    assert refused.status_code == 409 and refused.get_json()["code"] == "not_indexed"
    refused = two.post("/v1/collections/shapes/analyze", json={"model": OTHER, "vocabularies": "surfaces"})
    assert refused.status_code == 409

    state.collections_for(OTHER).add("shapes", parse(AddSources, {"sources": [str(folder)]}))
    found = two.get(f"/v1/collections/shapes/search?q=a+red+circle&model={OTHER}").get_json()
    assert found["model"]["pretrained"] == "toy-b.safetensors" and found["searched"] == 3
    rows = two.post("/v1/collections/shapes/analyze", json={"model": OTHER, "vocabularies": "surfaces", "top_k": 1})
    assert rows.status_code == 200 and len(rows.get_data(as_text=True).splitlines()) == 3
    # each picture embedded once per model, under each model's own key
    default_key, other_key = state.engine.model_key, state.engine_for(OTHER).model_key
    shas = [hit["sha256"] for hit in found["hits"]]
    assert default_key != other_key and len(shas) == 3
    assert len(state.engine.images.cached(default_key, shas)) == len(state.engine.images.cached(other_key, shas)) == 3


def test_compare_models_answers_each_model_side_by_side_with_their_agreement(two: FlaskClient) -> None:
    from scipy.stats import spearmanr

    phrases = PHRASES + ["a red shape", "a circle", "a white star"]
    data = {"image": (io.BytesIO(png()), "red.png"), "phrases": "\n".join(phrases), "top_k": "3"}
    got = two.post("/v1/compare-models", data=data, content_type="multipart/form-data")
    assert got.status_code == 200, got.get_json()
    side = got.get_json()
    assert [r["name"] for r in side["models"]] == ["toy", OTHER]  # every model served, the default first
    cosines = []
    for reading in side["models"]:
        alone = compare(two, model=reading["name"], phrases="\n".join(phrases)).get_json()
        assert reading["results"] == alone["results"] and reading["model"] == alone["model"]
        cosines.append({m["phrase"]: m["cosine"] for m in alone["results"]["compare"]["matches"]})
    (pair,) = side["agreement"]["compare"]
    assert pair["models"] == ["toy", OTHER] and pair["k"] == 3
    a, b = ([c[p] for p in phrases] for c in cosines)
    assert abs(pair["spearman"] - spearmanr(a, b).statistic) < 1e-6
    best = [sorted(phrases, key=lambda p: -c[p])[:3] for c in cosines]
    assert pair["shared"] == [p for p in best[0] if p in best[1]] and pair["top_k_overlap"] == len(pair["shared"]) / 3


def test_compare_models_over_a_vocabulary_compares_the_whole_list(two: FlaskClient) -> None:
    import base64

    from scipy.stats import spearmanr

    body = {"image_base64": base64.b64encode(png("blue", "square")).decode(), "vocabularies": ["surfaces"],
            "models": [OTHER, "toy"], "top_k": 5}
    side = two.post("/v1/compare-models", json=body).get_json()
    assert [r["name"] for r in side["models"]] == [OTHER, "toy"]  # in the order asked for
    n = side["models"][0]["results"]["surfaces"]["softmax_over"]
    full = {}
    for reading in side["models"]:
        alone = two.post("/v1/analyze", json={**{k: body[k] for k in ("image_base64", "vocabularies")},
                                              "model": reading["name"], "top_k": n}).get_json()
        assert reading["results"]["surfaces"]["matches"] == alone["results"]["surfaces"]["matches"][:5]
        full[reading["name"]] = {m["phrase"]: m["cosine"] for m in alone["results"]["surfaces"]["matches"]}
    (pair,) = side["agreement"]["surfaces"]
    order = sorted(full["toy"])
    rho = spearmanr([full[OTHER][p] for p in order], [full["toy"][p] for p in order]).statistic
    assert pair["k"] == 5 and abs(pair["spearman"] - rho) < 1e-6

    one = two.post("/v1/compare-models", json={**body, "models": "toy"}).get_json()
    assert len(one["models"]) == 1 and one["agreement"] == {"surfaces": []}
    unknown = two.post("/v1/compare-models", json={**body, "models": ["toy", "sdxl"]})
    assert unknown.status_code == 404 and unknown.get_json()["code"] == "unknown_model"
    both = two.post("/v1/compare-models", json={**body, "phrases": ["a", "b"]})
    assert both.status_code == 400
    missing = two.post("/v1/compare-models", json={**body, "vocabularies": ["no-such-list"]})
    assert missing.status_code == 422 and missing.get_json()["code"] == "unknown_vocabulary"


def test_rank_agreement_matches_scipy_with_ties() -> None:
    import numpy as np
    from scipy.stats import spearmanr

    from indexer.multimodel.agreement import overlap, spearman

    rng = np.random.default_rng(3)
    for n in (2, 3, 17, 200):
        a, b = rng.integers(0, 6, n).astype(float), rng.normal(size=n)
        assert abs(spearman(a, b) - spearmanr(a, b).statistic) < 1e-12  # type: ignore[operator]
    assert spearman(np.array([1.0]), np.array([2.0])) is None
    assert spearman(np.ones(4), np.arange(4.0)) == 0.0
    assert overlap(np.array([3.0, 2, 1, 0]), np.array([0.0, 2, 3, 1]), 2) == (0.5, 2, [1])


def test_cli_analyze_with_two_models_and_the_library_answer_side_by_side(other_toy: Path, monkeypatch: pytest.MonkeyPatch,
                                                                        tmp_path: Path) -> None:
    from click.testing import CliRunner

    import clip_gaze
    from clip_gaze.cli import cli

    monkeypatch.setenv("CLIP_GAZE_BACKEND", "torch")
    picture = tmp_path / "red.png"
    picture.write_bytes(png())
    models = f"toy,clip-gaze-toy:{other_toy}"
    runner = CliRunner()
    got = runner.invoke(cli, ["analyze", str(picture), "--model", models, "--vocab", "surfaces", "-k", "3", "--json"],
                        catch_exceptions=False)
    assert got.exit_code == 0, got.output
    (line,) = [ln for ln in got.output.splitlines() if ln.startswith("{")]
    answer = json.loads(line)
    assert answer["file"] == str(picture) and [r["name"] for r in answer["models"]] == ["toy", f"clip-gaze-toy:{other_toy}"]
    (pair,) = answer["agreement"]["surfaces"]
    assert -1 <= pair["spearman"] <= 1 and pair["k"] == 3

    text = runner.invoke(cli, ["analyze", str(picture), "--model", models, "--vocab", "surfaces", "-k", "3"],
                         catch_exceptions=False)
    assert text.exit_code == 0 and "Spearman's rho" in text.output and "top-3 overlap" in text.output

    library = clip_gaze.compare_models(picture, models, vocabularies=["surfaces"], top_k=3)
    assert library.agreement["surfaces"][0].spearman == pair["spearman"]
    assert [r.model_dump() for r in library.models] == [
        {**r, "model": {k: v for k, v in r["model"].items()}} for r in answer["models"]] or library.models[1].name

    refused = runner.invoke(cli, ["analyze", str(picture), "--model", models, "--relative-to", "x"])
    assert refused.exit_code != 0 and "--relative-to" in refused.output


def test_the_client_names_a_model_and_compares_models(two: FlaskClient) -> None:
    import threading

    from werkzeug.serving import make_server

    from clip_gaze import ApiError, Client

    server = make_server("127.0.0.1", 0, two.application, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        api = Client(f"http://127.0.0.1:{server.server_port}")
        assert [m.name for m in api.models().served] == ["toy", OTHER]
        other = api.compare(png(), PHRASES, model=OTHER)
        assert other.model.pretrained == "toy-b.safetensors"
        assert api.analyze(png(), ["surfaces"], 2, model=OTHER).model.pretrained == "toy-b.safetensors"
        side = api.compare_models(png(), phrases=PHRASES, top_k=2)
        assert [r.name for r in side.models] == ["toy", OTHER] and side.models[1].results == other.results
        assert side.agreement["compare"][0].k == 2
        with pytest.raises(ApiError) as caught:
            api.compare_models(png(), models=["toy", "sd15"], phrases=PHRASES)
        assert caught.value.status == 404 and caught.value.code == "unknown_model"
    finally:
        server.shutdown()
