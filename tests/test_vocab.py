from __future__ import annotations

import pytest

from indexer.catalog import PhraseSpec, apply_templates, catalog, parse_phrase_file

GUIDE_NAMES = [
    "artists", "artists-prevalence", "movements", "painting-materials", "sculpture-materials", "printing-techniques",
    "surfaces", "tools", "qualities", "sites", "ci-artists", "ci-flavors", "ci-mediums", "ci-movements", "ci-sites",
    "ci-negative", "genres", "periods", "subjects", "scenes", "deformations", "origin",
]
STUDY = ["genres", "periods", "subjects", "scenes", "deformations", "origin"]  # GUIDE §4, "coming next"


def test_catalog_has_the_twenty_two_builtin_vocabularies_with_attribution():
    cat = catalog()
    assert list(cat.vocabularies) == GUIDE_NAMES
    for v in cat.vocabularies.values():
        assert v.source and v.licence and v.description
        assert all(t.count("{}") == 1 for t in v.templates)
    assert "CC BY-SA 3.0" in cat.get("movements").licence
    assert set(cat.default) <= set(GUIDE_NAMES)


@pytest.mark.parametrize(
    "name, count, example",
    [
        ("artists-prevalence", 957, "by paul cézanne"),
        ("artists", 5854, "paul cézanne"),
        ("movements", 193, "tonalism movement"),
        ("surfaces", 19, "on canvas"),
        ("sculpture-materials", 38, "sculpted from marble"),
        ("ci-artists", 2 * 5265, "inspired by Paul Cézanne"),
        ("ci-sites", 4 * 18, "trending on Artstation"),
        ("ci-flavors", 100954, "cézanne style"),
        ("genres", 2 * 33, "still life genre"),
        ("periods", 2 * 69, "painted in the mid-15th century"),
        ("subjects", 2 * 235, "an artwork depicting the Annunciation"),
        ("scenes", 2 * 65, "winter scene"),
        ("deformations", 2 * 47, "an image with extra fingers"),
        ("origin", 2 * 33, "this image is a photograph of a painting"),
    ],
)
def test_templates_turn_terms_into_the_phrases_the_source_tool_used(name, count, example):
    phrases = [p.phrase for p in catalog().get(name).phrases()]
    assert len(phrases) == count
    assert example in phrases


def test_the_movement_template_is_applied_verbatim_even_when_doubled():
    phrases = [p.phrase for p in catalog().get("movements").phrases()]
    assert "arts and crafts movement movement" in phrases  # as clip-gaze 0.3.0 prompted CLIP


def test_each_term_yields_one_phrase_per_template_and_duplicates_collapse():
    out = apply_templates(["a", "b", "a"], ["by {}", "inspired by {}"])
    assert [p.phrase for p in out] == ["by a", "by b", "inspired by a", "inspired by b"]
    assert {p.term for p in out} == {"a", "b"}
    braces = apply_templates(["{x}"], ["by {}"])  # a term with braces is not a format string
    assert braces[0].phrase == "by {x}"


def test_external_ids_and_metadata_follow_their_term_through_templates():
    out = apply_templates([PhraseSpec("saint jerome", "", "ICON-11", {"n": 1})], ["{}", "depicting {}"])
    assert [(p.phrase, p.external_id, p.metadata) for p in out] == [
        ("saint jerome", "ICON-11", {"n": 1}), ("depicting saint jerome", "ICON-11", {"n": 1})]


def test_phrase_files_lines_keep_commas_csv_splits_ids():
    assert parse_phrase_file("aaron nagel,\n# comment\n\nfan qi,\n") == ["aaron nagel,", "fan qi,"]
    rows = parse_phrase_file("term,external_id\nsaint jerome,ICON-11\n\"a, b\",X2\nplain\n", "csv")
    assert rows == [{"term": "saint jerome", "external_id": "ICON-11"}, {"term": "a, b", "external_id": "X2"}, "plain"]
    assert parse_phrase_file("a\tA1\n", "tsv") == [{"term": "a", "external_id": "A1"}]


def test_the_study_lists_are_the_projects_own_and_not_in_the_default_set():
    cat = catalog()
    assert not set(STUDY) & set(cat.default)  # adding them would change every default answer
    for name in STUDY:
        v = cat.get(name)
        terms = v.terms()
        assert len(terms) == len(set(terms)), name  # no duplicates
        assert "MIT" in v.licence and len(v.templates) == 2
        assert all(not t.startswith(("a ", "an ")) or name == "origin" for t in terms), name
    assert {"portrait", "landscape", "still life", "history painting", "genre painting", "religious scene",
            "mythological scene", "cityscape", "seascape", "interior", "nude", "animal painting", "flower painting",
            "abstract"} <= set(cat.get("genres").terms())
    periods = cat.get("periods").terms()
    assert {"early 15th century", "mid-15th century", "late 15th century", "1850s", "2020s"} <= set(periods)
    assert 180 <= len(cat.get("subjects").terms()) <= 260
    assert {"interior", "exterior", "urban", "rural", "night"} <= set(cat.get("scenes").terms())
    assert {"extra fingers", "distorted anatomy", "warped perspective", "garbled lettering", "duplicated features"} <= set(
        cat.get("deformations").terms())
    assert {"painted by hand", "a photograph of a painting", "a digital painting", "a 3D render", "AI-generated"} <= set(
        cat.get("origin").terms())
