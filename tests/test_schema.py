"""The typed boundary: every limit is defined once, enforced by validation, and stated in the schema."""

from __future__ import annotations

import json
import re

import jsonschema_rs
import pytest

from indexer import schema
from indexer.errors import InvalidInput
from indexer.schema import (
    AddPhrases,
    AnalyzeJson,
    BatchJson,
    CreateVocabulary,
    RemovePhrases,
    compare_phrases,
    parse,
    parse_json,
    parse_name,
)
from service.openapi import openapi_document


def refused(model, body, code: str, match: str = "") -> InvalidInput:
    with pytest.raises(InvalidInput) as exc:
        parse_json(model, json.dumps(body))
    assert exc.value.code == code, exc.value.message
    assert re.search(match, exc.value.message), exc.value.message
    return exc.value


@pytest.mark.parametrize("bad", ["", "Upper", "has space", "-lead", "x" * 65, "é", None, 3])
def test_bad_vocabulary_names_are_refused(bad):
    with pytest.raises(InvalidInput) as exc:
        parse_name(bad)
    assert exc.value.code == "invalid_name"


@pytest.mark.parametrize(
    "bad, why",
    [
        ("", "empty"), ("   ", "empty"), ("x" * 301, "301 characters long; the limit is 300"), ("a\tb", "U\\+0009"),
        (" a", "white space at its start or end"), ("a\u00a0", "white space"), ("a\u202eb", "U\\+202E"),
        ("a\u2066b", "U\\+2066"), ("a\u200bb", "U\\+200B"), ("a\ufeffb", "U\\+FEFF"), ("a\x85b", "U\\+0085"),
    ],
)
def test_bad_phrases_are_refused_with_a_reason(bad, why):
    refused(CreateVocabulary, {"name": "ok", "phrases": [bad]}, "invalid_phrase", r"phrases\[0\]: .*" + why)
    with pytest.raises(InvalidInput, match=why):
        compare_phrases(["fine", bad])


def test_the_text_rule_and_its_schema_pattern_agree():
    samples = ["a", "a b", "by paul cézanne", "日本画", "a\u202eb", " a", "a ", "a\tb", "\u00a0", "x" * 300, "emoji 🎨 ok"]
    rx = re.compile(schema.TEXT_PATTERN)
    for text in samples:
        try:
            schema.check_text(text, "t", 300)
            ok = True
        except Exception:
            ok = False
        assert ok == bool(rx.match(text)), text


def test_lone_surrogates_and_deep_nesting_are_400_not_500():
    for raw in ['{"name": "ok", "phrases": ["\\ud800"]}', '{"name": "ok", "description": "\\udfff"}',
                '{"name": "ok", "phrases": [{"term": "a", "metadata": {"k": "\\ud800"}}]}']:
        with pytest.raises(InvalidInput) as exc:
            parse_json(CreateVocabulary, raw)
        assert exc.value.code == "invalid_json" and "not valid Unicode" in exc.value.message
    deep = '{"name": "ok", "phrases": [{"term": "a", "metadata": {"k": ' + "[" * 10_000 + "]" * 10_000 + "}}]}"
    with pytest.raises(InvalidInput, match="nested too deeply") as exc:
        parse_json(CreateVocabulary, deep)
    assert exc.value.code == "invalid_json"
    with pytest.raises(InvalidInput, match="not valid Unicode"):
        parse(CreateVocabulary, {"name": "ok", "phrases": ["a\ud800"]})  # from Python (the CLI, the library)


def test_null_and_contradictory_fields_are_refused_not_dropped():
    refused(CreateVocabulary, {"name": "ok", "template": "by {}", "templates": None}, "invalid_input", "templates: must not be null")
    refused(CreateVocabulary, {"name": "ok", "template": None}, "invalid_input", "template: must not be null")
    refused(CreateVocabulary, {"name": "ok", "description": None}, "invalid_input", "must not be null")
    refused(CreateVocabulary, {"name": "ok", "template": "by {}", "templates": ["by {}"]}, "invalid_template", "not both")
    refused(RemovePhrases, {"terms": None, "external_ids": ["x"]}, "invalid_input", "must not be null")
    refused(AnalyzeJson, {"image_base64": "aGk=", "vocabularies": None}, "invalid_input", "must not be null")
    made = parse_json(CreateVocabulary, '{"name": "ok", "templates": "by {}"}')
    assert made.template_list() == ("by {}",)
    assert parse_json(CreateVocabulary, '{"name": "ok"}').template_list() == ("{}",)


def test_templates_must_hold_one_placeholder():
    for bad in ["by", "{} and {}", [], ["ok {}", 5]]:
        with pytest.raises(InvalidInput) as exc:
            parse(CreateVocabulary, {"name": "ok", "templates": bad})
        assert exc.value.code in ("invalid_template", "invalid_input")


def test_phrase_items_validate_each_field_and_name_the_bad_item():
    made = parse(AddPhrases, {"phrases": ["a", {"term": "b", "external_id": 12, "metadata": {"k": "v"}}]})
    assert made.phrases[1].external_id == "12" and made.phrases[1].metadata == {"k": "v"}
    refused(AddPhrases, {"phrases": ["a", {"term": ""}]}, "invalid_phrase", r"phrases\[1\]\.term: empty")
    refused(AddPhrases, {"phrases": [{"term": "a", "colour": "x"}]}, "invalid_input", "unknown field: phrases\\[0\\].colour")
    refused(AddPhrases, {"phrases": [{"term": "a", "external_id": True}]}, "invalid_input", r"external_id")
    refused(AddPhrases, {"phrases": [{"term": "a", "metadata": {"k": "x" * 5000}}]}, "invalid_phrase", "4096")
    refused(AddPhrases, {"phrases": []}, "invalid_phrase")
    refused(AddPhrases, {"phrases": ["a"] * (schema.MAX_PHRASES_PER_WRITE + 1)}, "too_many")
    refused(BatchJson, {"images_base64": ["aGk="] * (schema.MAX_BATCH_IMAGES + 1)}, "too_many")


@pytest.mark.parametrize("text, ok", [
    ("aGk=", True), ("AAAA", True), ("AB==", True), ("ABC=", True), ("ab+/cd09", True), ("data:image/png;base64,aGk=", True),
    ("data:,AAAA", True), ("0", False), ("", False), ("AAA", False), ("AAAAA", False), ("A===", False), ("AA==AA==", False),
    ("aGk", False), ("aGk=\n", False), ("aG k=", False), ("aGk-", False), ("data:image/png;base64,", False), ("data:aGk=", False),
])
def test_the_base64_rule_and_its_schema_pattern_agree(text, ok):
    """What the document calls base64 is what the server decodes (what the bytes are is checked apart)."""
    prop = openapi_document()["components"]["schemas"]["AnalyzeJson"]["properties"]["image_base64"]
    assert prop["pattern"] == schema.BASE64_PATTERN and prop["contentEncoding"] == "base64"
    batch = openapi_document()["components"]["schemas"]["BatchJson"]["properties"]["images_base64"]["items"]
    assert batch["pattern"] == schema.BASE64_PATTERN
    # As JSON Schema reads a pattern (ECMA-262: `$` is the end, not also before a final newline), with the
    # validator schemathesis checks answers with and draws values by.
    assert jsonschema_rs.validator_for({"type": "string", **{k: prop[k] for k in ("pattern", "minLength")}}).is_valid(text) is ok
    if ok:
        assert parse_json(AnalyzeJson, json.dumps({"image_base64": text})).image_base64
    else:
        refused(AnalyzeJson, {"image_base64": text}, "invalid_base64")
        refused(BatchJson, {"images_base64": [text]}, "invalid_base64")


def test_every_limit_is_stated_in_the_generated_schema():
    defs = openapi_document()["components"]["schemas"]
    assert defs["AnalyzeJson"]["properties"]["top_k"]["maximum"] == schema.MAX_TOP_K
    assert defs["BatchJson"]["properties"]["images_base64"]["maxItems"] == schema.MAX_BATCH_IMAGES
    assert defs["BatchForm"]["properties"]["image"]["maxItems"] == schema.MAX_BATCH_IMAGES
    assert defs["AddPhrases"]["properties"]["phrases"]["maxItems"] == schema.MAX_PHRASES_PER_WRITE
    assert defs["CompareJson"]["properties"]["phrases"]["maxItems"] == schema.MAX_COMPARE_PHRASES
    assert defs["CompareJson"]["properties"]["phrases"]["items"]["maxLength"] == schema.MAX_PHRASE_CHARS
    assert defs["CreateVocabulary"]["properties"]["name"]["pattern"] == schema.NAME_PATTERN
    page = {p["name"]: p["schema"] for p in openapi_document()["paths"]["/v1/vocabularies/{name}"]["get"]["parameters"]}
    assert page["limit"]["maximum"] == schema.MAX_PAGE_SIZE and page["name"]["pattern"] == schema.NAME_PATTERN
    assert "null" not in json.dumps(defs["CreateVocabulary"]["properties"]["templates"])  # null is refused, so not offered
