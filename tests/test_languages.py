"""Vocabularies in several languages (issue 25, part 4): a phrase's `language` through the API, the CLI and
the store; analysis within languages; SKOS and Iconclass imports; collisions reported on writes (part C);
the `sigmoid` and `language` columns of `collection analyze` (part D)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import add, create, draw_shape, encode
from indexer.engine import Engine
from indexer.errors import InvalidInput, UnknownReference
from indexer.models.registry import parse_model
from indexer.models.torch_model import LoadedModel, load_model
from indexer.schema import AddPhrases, parse
from indexer.schema.languages import canonical_language, picks, split_languages
from indexer.store.phrase_store import Store
from indexer.vocabularies.collisions import without_collisions
from indexer.vocabularies.importers import import_phrases, read_file

PHRASES = [
    {"term": "a red circle", "external_id": "c1", "language": "en"},
    {"term": "een rode cirkel", "external_id": "c1", "language": "nl"},
    {"term": "ein roter Kreis", "external_id": "c1", "language": "de"},
    {"term": "a blue square", "external_id": "c2", "language": "en"},
    {"term": "een blauw vierkant", "external_id": "c2", "language": "nl"},
    {"term": "ein blaues Quadrat", "external_id": "c2", "language": "de"},
    {"term": "een gele ster", "external_id": "c3", "language": "nl-BE"},
]

SKOS_TTL = """@prefix skos: <http://www.w3.org/2004/02/skos/core#> .
@prefix ex: <http://example.org/thesaurus/> .
ex:c1 a skos:Concept ; skos:prefLabel "a red circle"@en , "een rode cirkel"@nl , "ein roter Kreis"@de ;
    skos:altLabel "a red disc"@en .
ex:c2 a skos:Concept ; skos:prefLabel "a blue square"@en , "een blauw vierkant"@nl .
"""

SKOS_XML = """<?xml version="1.0" encoding="utf-8"?>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns:skos="http://www.w3.org/2004/02/skos/core#">
  <skos:Concept rdf:about="http://example.org/thesaurus/c1">
    <skos:prefLabel xml:lang="en">a red circle</skos:prefLabel>
    <skos:prefLabel xml:lang="nl">een rode cirkel</skos:prefLabel>
    <skos:altLabel xml:lang="en">a red disc</skos:altLabel>
  </skos:Concept>
  <skos:Concept rdf:about="http://example.org/thesaurus/c2">
    <skos:prefLabel xml:lang="en">a blue square</skos:prefLabel>
    <skos:prefLabel xml:lang="nl">een blauw vierkant</skos:prefLabel>
  </skos:Concept>
</rdf:RDF>
"""

ICONCLASS_NL = "# Iconclass, Dutch\n25F23(LION)|een leeuw\n11H(JEROME)|de heilige Hiëronymus\n31A|een rode cirkel\n"


@pytest.fixture(scope="module")
def multilingual() -> LoadedModel:
    return load_model(parse_model("toy-multilingual"), device="cpu")


@pytest.fixture
def ml_engine(clean_environ: Path, multilingual: LoadedModel) -> Engine:
    return Engine(clean_environ, "toy-multilingual", loader=lambda spec, **_: multilingual)


# -- tags -------------------------------------------------------------------------------------------
def test_language_tags_are_checked_and_put_in_their_canonical_case():
    assert canonical_language("NL") == "nl"
    assert canonical_language("de-ch") == "de-CH"
    assert canonical_language("zh-hant-tw") == "zh-Hant-TW"
    assert canonical_language("es-419") == "es-419"
    for bad in ("english!", "n", "nl_NL", "", "toolonglanguage"):
        with pytest.raises(ValueError, match="invalid language tag"):
            canonical_language(bad)
    assert picks(["nl"], "nl-BE") and picks(["nl"], "nl") and not picks(["nl"], "nld") and not picks(["nl"], None)
    assert split_languages("nl, DE") == ["nl", "de"] and split_languages(None) is None
    with pytest.raises(InvalidInput, match="invalid language tag") as caught:
        split_languages("nl,en_GB")
    assert caught.value.code == "invalid_language"


def test_existing_rows_get_null_and_phrase_files_take_a_language_column(engine: Engine, tmp_path: Path):
    from indexer.catalog import parse_phrase_file

    create(engine, "old", ["a red circle"])
    assert Store(engine.store.home).phrases_page("old")[0][0]["language"] is None
    rows = parse_phrase_file("term,language,external_id\neen rode cirkel,nl,c1\nred,,\n", "csv")
    assert rows == [{"term": "een rode cirkel", "language": "nl", "external_id": "c1"}, "red"]
    assert parse_phrase_file("ein Kreis\tk1\tde\n", "tsv") == [{"term": "ein Kreis", "external_id": "k1", "language": "de"}]
    with pytest.raises(InvalidInput, match="invalid language tag"):
        parse(AddPhrases, {"phrases": [{"term": "x", "language": "no way"}]})


# -- analysis within languages -----------------------------------------------------------------------
def test_a_term_has_a_label_per_language_and_analysis_runs_per_language(ml_engine: Engine):
    create(ml_engine, "shapes", PHRASES)
    page = ml_engine.vocabulary_page("shapes")
    assert [(p.external_id, p.language) for p in page.phrases][:3] == [("c1", "en"), ("c1", "nl"), ("c1", "de")]
    red = draw_shape("red", "circle")
    every = ml_engine.analyze(red, ["shapes"], top_k=7).results["shapes"]
    assert every.softmax_over == 7 and every.languages is None
    dutch = ml_engine.analyze(red, ["shapes"], top_k=7, languages=["nl"]).results["shapes"]
    assert dutch.softmax_over == 3 and dutch.languages == ["nl"]  # nl and nl-BE
    assert {m.language for m in dutch.matches} == {"nl", "nl-BE"}
    assert dutch.matches[0].phrase == "een rode cirkel" and dutch.matches[0].external_id == "c1"
    assert abs(sum(m.probability for m in dutch.matches) - 1) < 1e-6
    two = ml_engine.analyze(red, ["shapes"], languages=["de", "en"]).results["shapes"]
    assert two.softmax_over == 4
    with pytest.raises(UnknownReference, match="no phrase in fr") as caught:
        ml_engine.analyze(red, ["shapes"], languages=["fr"])
    assert caught.value.code == "no_phrases_in_language"


def test_api_takes_languages_and_answers_a_bad_tag_with_400(clean_environ, toy_loader, monkeypatch):
    from conftest import service_engine
    from indexer.settings import Settings
    from service import create_app

    engine = service_engine(toy_loader, monkeypatch, "tok")
    client = create_app(Settings.from_env(), engine=engine).test_client()
    auth = {"Authorization": "Bearer tok"}
    made = client.post("/v1/vocabularies", json={"name": "kl", "language": "nl", "phrases": [
        "een rode cirkel", {"term": "a red circle", "language": "en"}, "EEN RODE CIRKEL"]}, headers=auth)
    assert made.status_code == 201, made.json
    assert made.json["collisions"] == [{"kept": "een rode cirkel", "dropped": ["EEN RODE CIRKEL"]}]
    bad = client.post("/v1/vocabularies/kl/phrases", json={"phrases": [{"term": "x", "language": "en_GB"}]}, headers=auth)
    assert bad.status_code == 400 and bad.json["code"] == "invalid_language" and bad.json["ok"] is False
    assert "phrases[0].language" in bad.json["error"] and "BCP-47" in bad.json["error"]
    rows = client.get("/v1/vocabularies/kl").json["phrases"]
    assert [(r["phrase"], r["language"]) for r in rows] == [("een rode cirkel", "nl"), ("a red circle", "en")]
    png = encode(draw_shape("red", "circle"))
    from io import BytesIO

    form = client.post("/v1/analyze", data={"image": (BytesIO(png), "r.png"), "vocabularies": "kl", "languages": "en"})
    assert form.status_code == 200, form.json
    assert form.json["results"]["kl"]["softmax_over"] == 1 and form.json["results"]["kl"]["matches"][0]["language"] == "en"
    import base64

    body = {"image_base64": base64.b64encode(png).decode(), "vocabularies": ["kl"], "languages": ["nl", "en"]}
    assert client.post("/v1/analyze", json=body).json["results"]["kl"]["softmax_over"] == 2
    batch = client.post("/v1/analyze/batch", json={"images_base64": [body["image_base64"]], "vocabularies": "kl",
                                                   "languages": "nl"}).json
    assert batch["results"][0]["results"]["kl"]["languages"] == ["nl"]
    bad = client.post("/v1/analyze", json={**body, "languages": "dutch!"})
    assert bad.status_code == 400 and bad.json["code"] == "invalid_language"
    for empty in ([], " , "):  # given, it names a language (the schema's minItems and pattern)
        bad = client.post("/v1/analyze", json={**body, "languages": empty})
        assert bad.status_code == 400 and bad.json["code"] == "invalid_language"
    long = "de-" + "-".join(["abcdefgh"] * 5)  # well-formed, longer than a stored tag may be
    assert client.post("/v1/analyze", json={**body, "languages": f"nl, {long}"}).status_code == 200  # the schema's pattern
    assert client.post("/v1/analyze", json={**body, "languages": [long]}).status_code == 400  # the items' maxLength
    none = client.post("/v1/analyze", json={**body, "languages": "fr"})
    assert none.status_code == 422 and none.json["code"] == "no_phrases_in_language"


# -- importers --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,text", [("thesaurus.ttl", SKOS_TTL), ("thesaurus.rdf", SKOS_XML)])
def test_skos_imports_labels_with_languages_and_uris_idempotently(ml_engine: Engine, name: str, text: str):
    items = read_file(text.encode(), name, "skos")
    assert {"term": "een rode cirkel", "external_id": "http://example.org/thesaurus/c1", "language": "nl",
            "metadata": {"label": "prefLabel"}} in items
    assert {"term": "a red disc", "external_id": "http://example.org/thesaurus/c1", "language": "en",
            "metadata": {"label": "altLabel"}} in items
    report = import_phrases(ml_engine.editor, "thes", items, "skos")
    assert report.created and report.added == len(items) and report.languages["nl"] == 2
    again = import_phrases(ml_engine.editor, "thes", read_file(text.encode(), name, "skos"), "skos")
    assert not again.created and again.added == 0 and again.version == report.version
    dutch = read_file(text.encode(), name, "skos", ["nl"])
    assert {i["language"] for i in dutch} == {"nl"} and len(dutch) == 2
    best = ml_engine.analyze(draw_shape("blue", "square"), ["thes"], languages=["nl"]).results["thes"].matches[0]
    assert (best.phrase, best.external_id, best.language) == ("een blauw vierkant", "http://example.org/thesaurus/c2", "nl")


def test_iconclass_takes_its_language_from_the_option_or_the_file_name(ml_engine: Engine):
    items = read_file(ICONCLASS_NL.encode(), "txt_nl.txt", "iconclass")
    assert items[1] == {"term": "de heilige Hiëronymus", "external_id": "11H(JEROME)", "language": "nl"}
    assert read_file(ICONCLASS_NL.encode(), "labels.txt", "iconclass", ["de"])[0]["language"] == "de"
    with pytest.raises(InvalidInput, match="no language in the file name"):
        read_file(ICONCLASS_NL.encode(), "labels.txt", "iconclass")
    with pytest.raises(InvalidInput, match="one language"):
        read_file(ICONCLASS_NL.encode(), "labels.txt", "iconclass", ["nl", "de"])
    with pytest.raises(InvalidInput, match="line 2"):
        read_file(b"31A|ok\nno bar here\n", "x_en.txt", "iconclass")
    assert import_phrases(ml_engine.editor, "ic", items, "iconclass").added == 3
    assert import_phrases(ml_engine.editor, "ic", items, "iconclass").added == 0


def test_cli_imports_adds_with_a_language_and_analyzes_per_language(run, tmp_path: Path):
    ttl = tmp_path / "aat.ttl"
    ttl.write_text(SKOS_TTL, encoding="utf-8")
    out = run("vocab", "import", "thes", str(ttl), "--format", "skos", "--languages", "nl,en", "--json")
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert report["created"] and report["languages"] == {"en": 3, "nl": 2} and report["added"] == 5
    out = run("vocab", "import", "thes", str(ttl), "--format", "skos", "--languages", "nl,en")
    assert out.exit_code == 0 and "0 added, 5 already there" in out.output
    bad = run("vocab", "import", "thes", str(ttl), "--format", "skos", "--languages", "nl,en_GB")
    assert bad.exit_code == 1 and "Error: " in bad.output and "invalid language tag 'en_GB'" in bad.output
    assert run("vocab", "add", "thes", "rouge", "--language", "fr").exit_code == 0
    assert "rouge  @fr" in run("vocab", "show", "thes").output
    picture = tmp_path / "red.png"
    picture.write_bytes(encode(draw_shape("red", "circle")))
    out = run("analyze", str(picture), "--vocab", "thes", "--languages", "fr", "--json")
    assert out.exit_code == 0, out.output
    result = json.loads(out.output)["results"]["thes"]
    assert result["softmax_over"] == 1 and result["languages"] == ["fr"] and result["matches"][0]["language"] == "fr"
    out = run("analyze", str(picture), "--vocab", "thes", "--languages", "fr")
    assert "relative to 1 phrases in fr" in out.output and "@fr" in out.output


# -- collisions (part C) ----------------------------------------------------------------------------
def test_siglip_canonicalize_collisions_keep_the_first_and_report_the_rest():
    from indexer.catalog import PhraseSpec
    from indexer.models.hf_tokenizer import HfJsonTokenizer
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "st": 1, "jerome": 2, "a": 3}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    siglip_like = HfJsonTokenizer(tok.to_str(), context_length=8, clean="canonicalize", pad_token_id=5)
    specs = [PhraseSpec(t, t) for t in ("St. Jerome", "a", "st jerome", "ST JEROME!")]
    kept, collisions = without_collisions(siglip_like, [], specs)
    assert [s.phrase for s in kept] == ["St. Jerome", "a"]
    assert [(c.kept, c.dropped) for c in collisions] == [("St. Jerome", ["st jerome", "ST JEROME!"])]
    kept, collisions = without_collisions(siglip_like, ["st jerome"], [PhraseSpec("St. Jerome", "St. Jerome")])
    assert kept == [] and collisions[0].kept == "st jerome"


def test_vocabulary_writes_report_collisions_of_the_models_tokenizer(engine: Engine):
    # the toy's CLIP tokenizer lower-cases: "A Red Circle" is "a red circle" to it
    made = create(engine, "case", ["a red circle", "A Red Circle", "a blue square"])
    assert made.added == 2 and [c.json_dict() for c in made.collisions] == [{"kept": "a red circle", "dropped": ["A Red Circle"]}]
    assert made.json_dict()["collisions"] == [{"kept": "a red circle", "dropped": ["A Red Circle"]}]
    more = add(engine, "case", ["A BLUE SQUARE", "a green star"])
    assert more.added == 1 and more.collisions[0].kept == "a blue square"
    assert "collisions" not in add(engine, "case", ["a red circle"]).json_dict()
    assert engine.vocabulary("case").size == 3


def test_only_phrases_the_active_tokenizer_reads_alike_are_dropped(engine: Engine, ml_engine: Engine):
    # CLIP's tokenizer: the dropped phrase's tokens are exactly the kept one's; punctuation it keeps apart
    made = create(engine, "near", ["a red circle", "A Red Circle", "a red circle."])
    tokens = engine.model.tokenize(["a red circle", "A Red Circle", "a red circle."])
    assert (tokens[0] == tokens[1]).all() and not (tokens[0] == tokens[2]).all()
    assert made.added == 2 and [(c.kept, c.dropped) for c in made.collisions] == [("a red circle", ["A Red Circle"])]
    # a case-keeping tokenizer (the toy's XLM-R-style one) tells them apart: nothing is dropped
    kept = create(ml_engine, "near-ml", ["a red circle", "A Red Circle"])
    assert kept.added == 2 and kept.collisions == [] and "collisions" not in kept.json_dict()


def test_cli_prints_collisions(run):
    out = run("vocab", "create", "case", "a red circle", "A RED CIRCLE")
    assert out.exit_code == 0 and "created case: 1 phrases" in out.output
    assert "not stored (the model's tokenizer reads it as 'a red circle'): 'A RED CIRCLE'" in out.output


# -- collection analyze: sigmoid and language (part D) ----------------------------------------------
def test_collection_analyze_has_sigmoid_for_a_sigmoid_model(clean_environ: Path, tmp_path: Path):
    import pyarrow.parquet as pq

    from indexer.collections.local import Collections
    from indexer.collections.tables import write_blocks
    from indexer.schema.collections import AddSources, AnalysisRow, CreateCollection
    from indexer.scoring.softmax import sigmoids

    folder = tmp_path / "pictures"
    folder.mkdir()
    for colour in ("red", "blue"):
        draw_shape(colour, "circle").save(folder / f"{colour}.png")
    sig = load_model(parse_model("toy-sigmoid"), device="cpu")
    results = {}
    for preset, model in (("toy-sigmoid", sig), ("toy", None)):
        home = tmp_path / preset
        engine = Engine(home, preset, loader=(lambda spec, **_: model) if model else None, backend="torch")
        create(engine, "shapes", [{"term": "a red circle", "language": "en"}, "a blue circle", "a circle"])
        collections = Collections(engine)
        collections.create(CreateCollection(name="museum"))
        collections.add("museum", AddSources(sources=[str(folder)]))
        out = tmp_path / f"{preset}.parquet"
        write_blocks(collections.analyze_blocks("museum", ["shapes"], top_k=3), out, AnalysisRow)
        results[preset] = (engine, pq.read_table(out).to_pylist())
    engine, rows = results["toy-sigmoid"]
    assert len(rows) == 6 and all(r["sigmoid"] is not None for r in rows)
    for r in rows:
        assert abs(r["sigmoid"] - float(sigmoids([r["cosine"]], engine.model.logit_scale, engine.logit_bias)[0])) < 1e-9
    assert {r["language"] for r in rows} == {"en", None}
    assert all(r["sigmoid"] is None for r in results["toy"][1])
