"""A collection's name follows the vocabulary rule, and a bad one is called a collection name (issue 27, 6)."""

from __future__ import annotations

import pytest

from conftest import service_engine
from indexer.errors import InvalidInput
from indexer.schema import parse, parse_collection_name, parse_name
from indexer.schema.collections import CreateCollection
from indexer.settings import Settings
from service import create_app

TOKEN = "s3cret-token"
BAD = ["Museum", "two words", "-dash-first", "x" * 65, "naïve", "new\nline"]


@pytest.mark.parametrize("bad", BAD)
def test_a_bad_collection_name_is_called_a_collection_name_by_the_library(bad: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse(CreateCollection, {"name": bad})
    assert caught.value.code == "invalid_name"
    assert "invalid collection name" in caught.value.message and "vocabulary" not in caught.value.message
    with pytest.raises(InvalidInput, match="invalid collection name"):
        parse_collection_name(bad)
    with pytest.raises(InvalidInput, match="invalid vocabulary name"):  # a vocabulary's is still a vocabulary's
        parse_name(bad)


def test_a_good_collection_name_passes_the_same_rule_as_a_vocabulary_name() -> None:
    for good in ("museum", "paintings-1400_1900", "0", "x" * 64):
        assert parse(CreateCollection, {"name": good}).name == good == parse_collection_name(good) == parse_name(good)


def test_the_api_answers_a_bad_collection_name_naming_a_collection(toy_loader, monkeypatch) -> None:
    engine = service_engine(toy_loader, monkeypatch, TOKEN)
    client = create_app(Settings.from_env(), engine=engine).test_client()
    resp = client.post("/v1/collections", json={"name": "Not A Name"}, headers={"Authorization": f"Bearer {TOKEN}"})
    body = resp.get_json()
    assert resp.status_code == 400 and body["code"] == "invalid_name", body  # bad input is 400, as for a vocabulary
    assert body["error"].startswith("name: invalid collection name 'Not A Name'"), body
    assert client.post("/v1/collections", json={"name": "museum"}, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 201
