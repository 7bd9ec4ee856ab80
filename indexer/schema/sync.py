"""Requests and answers of keeping a collection in step with a museum's systems: pictures removed
(the rules they share are in `fields`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from .collections import CollectionInfo, Source
from .fields import Answer, ExternalId, Request

MAX_REMOVALS = 10000  # external ids or sources one request removes


class RemovePictures(Request):
    """DELETE /v1/collections/<name>/pictures: the collection's pictures with these external ids or
    sources (stored or failed) removed, in one transaction."""

    model_config = ConfigDict(json_schema_extra={"anyOf": [
        {"required": ["external_ids"], "properties": {"external_ids": {"minItems": 1}}},
        {"required": ["sources"], "properties": {"sources": {"minItems": 1}}}]})
    external_ids: Annotated[list[ExternalId], Field(max_length=MAX_REMOVALS)] = []
    sources: Annotated[list[Source], Field(max_length=MAX_REMOVALS)] = []

    @model_validator(mode="after")
    def _something(self) -> "RemovePictures":
        if not self.external_ids and not self.sources:
            raise PydanticCustomError("invalid_input", "name the pictures to remove: external_ids or sources (a list each)")
        return self


class RemovalAnswer(Answer):
    ok: Literal[True] = True
    collection: CollectionInfo
    removed: int = Field(description="Pictures removed (stored or failed); their embeddings stay, keyed by content")


__all__ = ["MAX_REMOVALS", "RemovalAnswer", "RemovePictures"]
