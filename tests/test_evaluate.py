"""`clip-gaze evaluate` where the truth is known: the toy world, drawn by tests/shapes.py's independent
rasteriser. Every figure is checked against a computation written here, in numpy, on the same
predictions; the toy model meets GUIDE §3; a planted hub phrase is demoted by the correction."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import shapes
from conftest import create
from indexer.collections.local import Collections
from indexer.engine import Engine
from indexer.evaluate.run import evaluate
from indexer.schema import parse
from indexer.schema.collections import AddSources, CreateCollection
from indexer.scoring.softmax import normalise

COLOURS, SHAPES = list(shapes.COLOURS), list(shapes.SHAPES)
TERMS = [f"{c} {s}" for c in COLOURS for s in SHAPES]  # 32 terms; with the template "a {}", GUIDE §3's phrases


def _draw(folder: Path, per_class: int, seed: int) -> list[tuple[str, str, str]]:
    folder.mkdir(parents=True)
    out = []
    for i, (image, colour, shape, _bg) in enumerate(shapes.dataset(per_class=per_class, seed=seed)):
        name = f"{colour}-{shape}-{i:03d}.png"
        image.save(folder / name)
        out.append((name, colour, shape))
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """96 pictures to evaluate (3 of each colour-shape pair) and 128 others for a reference collection."""
    root = tmp_path_factory.mktemp("world")
    pictures = _draw(root / "pictures", per_class=3, seed=2026)
    _draw(root / "reference", per_class=4, seed=77)
    labels = root / "labels.csv"
    labels.write_text("image,label\n" + "".join(f"pictures/{n},{c} {s}\n" for n, c, s in pictures), encoding="utf-8")
    return {"root": root, "pictures": pictures, "labels": labels}


class Counting:
    """The toy model, counting the pictures it encodes; with `gap`, every picture embedding also leans
    towards one shared direction, as CLIP's do (the 'modality gap' that makes hubs)."""

    def __init__(self, toy: Any, gap: np.ndarray | None = None):
        self._toy, self._gap, self.encoded = toy, gap, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._toy, name)

    def encode_image_arrays(self, batch: Any) -> np.ndarray:
        self.encoded += len(batch)
        out = self._toy.encode_image_arrays(batch)
        return out if self._gap is None else normalise(out + self._gap)


def _engine(home: Path, model: Counting) -> Engine:
    return Engine(home, "toy", loader=lambda spec, **_: model)


# -- independent computations, in numpy --------------------------------------------------------------
def _by_hand(predictions: list[dict[str, Any]]) -> dict[str, Any]:
    labelled = [p for p in predictions if p["labels"]]
    truth = [p["labels"][0] for p in labelled]
    guess = [p["term"] for p in labelled]
    classes = sorted(set(truth))
    precision, recall, f1 = [], [], []
    for c in classes:
        tp = sum(t == c and g == c for t, g in zip(truth, guess))
        predicted = sum(g == c for g in guess)
        actual = sum(t == c for t in truth)
        p = tp / predicted if predicted else 0.0
        r = tp / actual
        precision.append(p)
        recall.append(r)
        f1.append(2 * p * r / (p + r) if p + r else 0.0)
    conf = np.array([p["probability"] for p in labelled])
    right = np.array([p["term"] in p["labels"] for p in labelled])
    ece = 0.0
    for b in range(10):
        inside = (conf > b / 10) & (conf <= (b + 1) / 10) if b else (conf <= 0.1)
        if inside.any():
            ece += inside.sum() / len(conf) * abs(right[inside].mean() - conf[inside].mean())
    return {
        "top1": float(right.mean()),
        "top5": float(np.mean([any(t["term"] in p["labels"] for t in p["top"]) for p in labelled])),
        "balanced_accuracy": float(np.mean(recall)), "macro_f1": float(np.mean(f1)), "ece": float(ece),
        "precision": dict(zip(classes, precision)), "recall": dict(zip(classes, recall)),
        "confusion": {(t, g): sum(1 for a, b in zip(truth, guess) if (a, b) == (t, g)) for t in classes for g in set(guess)},
    }


def _average_precision(relevant: np.ndarray, scores: np.ndarray) -> float:
    order = np.argsort(-scores, kind="stable")
    hits = relevant[order]
    precision_at = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision_at[hits].mean())


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    for v in np.unique(x):  # ties share their mean rank
        ranks[x == v] = ranks[x == v].mean()
    return ranks


# -- the figures ------------------------------------------------------------------------------------
def test_metrics_on_the_toy_world_equal_an_independent_computation(world, toy):
    engine = _engine(world["root"] / "home-a", Counting(toy))
    create(engine, "shapes32", TERMS, template="a {}")
    ev = evaluate(engine, world["labels"], "shapes32", resamples=200).json_dict()
    assert (ev["kind"], ev["size"], ev["evaluated"], ev["failed"], ev["terms"], ev["softmax_over"]) == ("single-label", 96, 96, 0, 32, 32)
    m, hand = ev["metrics"], _by_hand(ev["predictions"])
    for key in ("top1", "top5", "balanced_accuracy", "macro_f1", "ece"):
        assert m[key]["value"] == pytest.approx(hand[key], abs=1e-12), key
        assert m[key]["low"] <= m[key]["value"] <= m[key]["high"], key
    per_class = {c["term"]: c for c in m["per_class"]}
    assert set(per_class) == set(TERMS) and all(c["support"] == 3 for c in per_class.values())
    for term in TERMS:
        assert per_class[term]["precision"] == pytest.approx(hand["precision"][term])
        assert per_class[term]["recall"] == pytest.approx(hand["recall"][term])
    confusion = m["confusion"]
    assert confusion["predicted"][-1] == "(any other term)" and len(confusion["labels"]) == 32
    for i, t in enumerate(confusion["labels"]):
        for j, g in enumerate(confusion["predicted"][:-1]):
            assert confusion["matrix"][i][j] == hand["confusion"].get((t, g), 0)
    assert sum(b["count"] for b in m["calibration"]) == 96
    # the labels match terms; the phrase shown is the templated one
    first = ev["predictions"][0]
    assert first["phrase"] == "a " + first["term"] and first["sha256"] and first["source"].endswith(".png")
    # GUIDE §3: the toy model, over the 32 phrases "a {colour} {shape}", at least 90 % top-1
    assert m["top1"]["value"] >= 0.90, m["top1"]
    # the same seed gives the same intervals
    again = evaluate(engine, world["labels"], "shapes32", resamples=200).json_dict()["metrics"]
    assert again["macro_f1"] == m["macro_f1"] and again["top1"] == m["top1"]


def test_a_terms_probability_is_the_sum_of_its_phrases(world, toy):
    engine = _engine(world["root"] / "home-b", Counting(toy))
    create(engine, "shapes-two", TERMS, templates=["a {}", "a picture of a {}"])
    ev = evaluate(engine, world["labels"], "shapes-two", resamples=0)
    assert ev.softmax_over == 64 and ev.terms == 32 and ev.bootstrap.resamples == 0 and ev.metrics.top1.low is None
    for p in ev.predictions[:5]:
        phrases = [f"{t}{term}" for t in ("a ", "a picture of a ") for term in TERMS]
        probs = dict(zip(phrases, engine.probabilities(p.source, phrases)))  # the softmax over all 64, independently
        for top in p.top:
            assert top.probability == pytest.approx(probs["a " + top.term] + probs["a picture of a " + top.term], abs=1e-6)
        assert p.phrase == max(("a " + p.term, "a picture of a " + p.term), key=probs.__getitem__)


def test_multi_label_sets_get_mean_average_precision_and_colour_and_shape_meet_guide(world, toy, tmp_path):
    """Labels 'red shape|circle' against a vocabulary of 8 colours and 4 shapes: a multi-label set."""
    engine = _engine(tmp_path / "home", Counting(toy))
    create(engine, "attributes", [f"{c} shape" for c in COLOURS] + SHAPES, template="a {}")
    labels = world["root"] / "multi.jsonl"
    labels.write_text("".join(json.dumps({"image": f"pictures/{n}", "label": [f"{c} shape", s]}) + "\n"
                              for n, c, s in world["pictures"]), encoding="utf-8")
    ev = evaluate(engine, labels, "attributes", resamples=100)
    assert ev.kind == "multi-label" and ev.metrics.confusion is None
    terms = [f"{c} shape" for c in COLOURS] + SHAPES
    phrases = ["a " + t for t in terms]
    probs = np.array([engine.probabilities(p.source, phrases) for p in ev.predictions])  # independently, per picture
    truth = np.array([[t in p.labels for t in terms] for p in ev.predictions])
    aps = {t: _average_precision(truth[:, k], probs[:, k]) for k, t in enumerate(terms)}
    assert ev.metrics.mean_average_precision is not None
    assert ev.metrics.mean_average_precision.value == pytest.approx(np.mean(list(aps.values())), abs=1e-9)
    assert {c.term: c.average_precision for c in ev.metrics.per_class} == pytest.approx(aps, abs=1e-9)
    # GUIDE §3: over "a {colour} shape" and over "a {shape}", at least 95 % each
    colour = np.mean([terms[int(np.argmax(row[:8]))] in p.labels for row, p in zip(probs, ev.predictions)])
    shape = np.mean([terms[8 + int(np.argmax(row[8:]))] in p.labels for row, p in zip(probs, ev.predictions)])
    assert colour >= 0.95 and shape >= 0.95, (colour, shape)
    assert ev.metrics.top1.value == pytest.approx(np.mean([terms[int(np.argmax(r))] in p.labels for r, p in zip(probs, ev.predictions)]))


def test_ratings_give_spearmans_correlation(world, toy, tmp_path):
    engine = _engine(tmp_path / "home", Counting(toy))
    create(engine, "shapes32", TERMS, template="a {}")
    rows = ["image,term,rating"]
    for n, c, s in world["pictures"][::3]:  # one picture of each pair; three rated terms each
        other_shape = SHAPES[(SHAPES.index(s) + 1) % 4]
        other_colour = COLOURS[(COLOURS.index(c) + 1) % 8]
        rows += [f"pictures/{n},{c} {s},5", f"pictures/{n},{c} {other_shape},2", f"pictures/{n},{other_colour} {other_shape},1"]
    labels = world["root"] / "ratings.csv"
    labels.write_text("\n".join(rows) + "\n", encoding="utf-8")
    ev = evaluate(engine, labels, "shapes32", resamples=200)
    assert ev.kind == "ratings" and ev.metrics.rated_pairs == 96 and ev.metrics.pictures == 0
    ratings, probability = [], []
    for p in ev.predictions:
        probs = dict(zip(["a " + t for t in TERMS], engine.probabilities(p.source, ["a " + t for t in TERMS])))
        for row in rows[1:]:
            image, term, rating = row.split(",")
            if p.source.endswith(image.split("/")[1]):
                ratings.append(float(rating))
                probability.append(probs["a " + term])
    rho = np.corrcoef(_ranks(np.array(ratings)), _ranks(np.array(probability)))[0, 1]
    assert ev.metrics.spearman is not None and ev.metrics.spearman.value == pytest.approx(rho, abs=1e-9)
    assert rho > 0.7 and ev.metrics.spearman.low is not None and ev.metrics.spearman.high is not None
    # (a percentile interval of a rank statistic need not hold the point: resampled duplicates add ties)
    assert ev.metrics.spearman.low <= ev.metrics.spearman.high and abs(ev.metrics.spearman.low - rho) < 0.1


def test_a_second_evaluation_encodes_no_picture(world, toy, tmp_path):
    model = Counting(toy)
    engine = _engine(tmp_path / "home", model)
    create(engine, "shapes32", TERMS, template="a {}")
    create(engine, "colours", COLOURS, template="a {} shape")
    first = evaluate(engine, world["labels"], "shapes32", resamples=0)
    assert model.encoded == 96 and first.evaluated == 96
    second = evaluate(engine, world["labels"], "colours", resamples=0)  # another vocabulary: labels are not its terms
    assert model.encoded == 96, "a second evaluation encoded pictures again"
    assert second.evaluated == 96 and len(second.missing_labels) == 32 and second.metrics.pictures == 0
    fresh = Counting(toy)  # a new process, the same store: still nothing to encode
    evaluate(_engine(tmp_path / "home", fresh), world["labels"], "colours", resamples=0)
    assert fresh.encoded == 0


def test_missing_labels_and_failed_pictures_are_listed_never_fatal(world, toy, tmp_path):
    engine = _engine(tmp_path / "home", Counting(toy))
    create(engine, "shapes32", TERMS, template="a {}")
    (tmp_path / "not-a-picture.png").write_text("hello")
    n, c, s = world["pictures"][0]
    picture = world["root"] / "pictures" / n
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "image,label,external_id\n"
        f"{picture},{c} {s}|{c.upper()}  {s.upper()},OBJ-1\n"  # an absolute path; a label in capitals matches too
        f"{world['root'] / 'pictures' / world['pictures'][5][0]},blue blob,OBJ-2\n"
        "missing.png,red circle,OBJ-3\n"
        "not-a-picture.png,red circle,OBJ-4\n"
        ",red circle,OBJ-5\n", encoding="utf-8")
    ev = evaluate(engine, labels, "shapes32", resamples=50)
    assert (ev.size, ev.evaluated, ev.failed, ev.metrics.pictures) == (5, 2, 3, 1)
    assert [(m.label, m.pictures) for m in ev.missing_labels] == [("blue blob", 1)]
    assert {e.external_id: e.error_code for e in ev.errors} == {"OBJ-3": "file_not_found", "OBJ-4": "unsupported_image",
                                                                "OBJ-5": "invalid_source"}
    first = ev.predictions[0]
    assert first.external_id == "OBJ-1" and first.labels == [f"{c} {s}"] and ev.predictions[1].correct is None


# -- the hub correction ------------------------------------------------------------------------------
@pytest.fixture
def hub_world(world, toy, tmp_path):
    """The toy model with a modality gap, a reference collection of 128 other pictures, and 'a shape'
    planted as a hub: its embedding is the mean of the reference pictures' embeddings."""
    gap = np.random.default_rng(0).normal(size=toy.dim).astype(np.float32)
    model = Counting(toy, gap / np.linalg.norm(gap))
    engine = _engine(tmp_path / "home", model)
    Collections(engine).create(parse(CreateCollection, {"name": "reference"}))
    Collections(engine).add("reference", parse(AddSources, {"sources": [str(world["root"] / "reference")]}))
    row = engine.images.get("reference")
    pictures = np.concatenate([c.matrix for c in engine.images.vectors(row.id, engine.model_key)])
    assert len(pictures) == 128
    engine.store.put_embeddings(engine.model_key, ["a shape"], normalise(pictures.mean(axis=0))[None, :])
    create(engine, "shapes32", TERMS, template="a {}")
    create(engine, "shapes-hub", TERMS + ["shape"], template="a {}")
    return {"engine": engine, "model": model}


@pytest.mark.parametrize("method", ["zscore", "nnn"])
def test_the_correction_demotes_a_planted_hub_without_lowering_top1(world, hub_world, method):
    engine = hub_world["engine"]
    without = evaluate(engine, world["labels"], "shapes32", resamples=0)
    ev = evaluate(engine, world["labels"], "shapes-hub", relative_to="reference", method=method, resamples=200)
    plain_wins = sum(p.term == "shape" for p in ev.predictions)
    assert plain_wins >= 48, f"the planted hub wins only {plain_wins} of 96"  # a hub: it wins for most pictures
    assert ev.metrics.winners[0].term == "shape" and ev.metrics.top1.value < without.metrics.top1.value
    rel = ev.relative
    assert rel is not None and (rel.method, rel.collection, rel.reference_pictures) == (method, "reference", 128)
    assert sum(p.relative is not None and p.relative.term == "shape" for p in ev.predictions) == 0, "the hub still wins"
    assert all(w.term != "shape" for w in rel.metrics.winners)
    assert rel.metrics.top1.value >= without.metrics.top1.value >= 0.90, (rel.metrics.top1, without.metrics.top1)
    assert sum(p.relative.term in p.labels for p in ev.predictions if p.relative) / 96 == rel.metrics.top1.value


def test_the_library_functions_for_analyze_give_the_evaluations_corrected_answers(world, hub_world):
    from indexer.scoring.kernels import cosines

    engine = hub_world["engine"]
    ev = evaluate(engine, world["labels"], "shapes-hub", relative_to="reference", resamples=0)
    versions = engine.store.versions()
    idx = engine.indexes.get("shapes-hub", versions)
    decoded = [engine.read(p.source) for p in ev.predictions[:6]]
    cos = cosines(idx.matrix, engine.embed_images(decoded))
    per_image, info = engine.hubs.scores(idx, cos, "reference", top_k=3)
    rows, info_rows = engine.hubs.row_scores(idx, cos.T, "reference", top_k=3)
    assert info == info_rows and (info.method, info.reference_pictures) == ("zscore", 128)
    terms = {int(i): r["term"] for i, r in engine.store.phrase_rows(idx.ids).items()}
    for j, (s, p) in enumerate(zip(per_image, ev.predictions)):
        assert s.softmax_over == 33 and terms[int(idx.ids[s.indices[0]])] == p.relative.term
        assert s.probabilities[0] == pytest.approx(p.relative.probability, abs=1e-6)
        assert s.cosines[0] == pytest.approx(float(cos[s.indices[0], j]), abs=1e-7)  # cosines stay raw
        assert list(rows.indices[j]) == list(s.indices) and rows.probabilities[j] == pytest.approx(s.probabilities, abs=1e-6)


# -- the command -------------------------------------------------------------------------------------
def test_the_command_prints_a_summary_json_and_writes_a_report(world, run, tmp_path):
    terms = tmp_path / "terms.txt"
    terms.write_text("\n".join(TERMS) + "\n", encoding="utf-8")
    assert run("vocab", "create", "shapes32", "--file", str(terms), "-t", "a {}").exit_code == 0
    text = run("evaluate", str(world["labels"]), "--vocab", "shapes32", "--resamples", "50")
    assert text.exit_code == 0, text.output
    assert "96 of 96 pictures evaluated" in text.stdout and "top-1 accuracy" in text.stdout and "[" in text.stdout
    out = run("evaluate", str(world["labels"]), "--vocab", "shapes32", "--resamples", "50", "--json", "--report", str(tmp_path / "r"))
    assert out.exit_code == 0
    body = json.loads(out.stdout)  # one JSON object
    assert body["ok"] is True and body["vocabulary"]["name"] == "shapes32" and body["vocabulary"]["size"] == 32
    assert set(body["predictions"][0]) >= {"source", "external_id", "sha256", "term", "phrase", "probability"}
    assert sorted(Path(p).name for p in body["report"]) == ["metrics.json", "per_class.csv", "predictions.csv", "report.html"]
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["metrics"]["top1"] == body["metrics"]["top1"]
    assert (tmp_path / "r" / "per_class.csv").read_text().count("\n") == 33
    page = (tmp_path / "r" / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 3 and "http://" not in page and "https://" not in page


@pytest.mark.parametrize(
    "content, args, message",
    [
        ("path,label\na.png,red circle\n", [], "has no `image` column"),
        ("image,colour\na.png,red\n", [], "no `label` column"),
        ("image,term,rating\na.png,red circle,high\n", [], "rating 'high' is not a number"),
        ("image,label\na.png,red circle\n", ["--vocab", "nope"], "unknown vocabulary: nope"),
        ("image,label\na.png,red circle\n", ["--vocab", "qualities,sites"], "evaluate takes one vocabulary"),
        ("image,label\na.png,red circle\n", ["--relative-to", "nowhere"], "no collection named 'nowhere'"),
        ("image,label\nmissing.png,red circle\n", [], "no picture of"),
    ],
)
def test_bad_input_is_one_error_line(run, tmp_path, content, args, message):
    labels = tmp_path / "labels.csv"
    labels.write_text(content, encoding="utf-8")
    result = run("evaluate", str(labels), *(args if "--vocab" in args else ["--vocab", "qualities", *args]))
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.stderr


def test_a_labels_file_must_be_a_table(run, tmp_path):
    labels = tmp_path / "labels.json"
    labels.write_text("{}", encoding="utf-8")
    result = run("evaluate", str(labels), "--vocab", "qualities")
    assert result.exit_code == 1 and "a labels file is a .csv, .tsv or .jsonl file" in result.stderr
