"""Requests and answers of keeping a collection in step with a museum's systems: pictures removed,
a IIIF Change Discovery stream synced (the rules they share are in `fields`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from .collections import CallbackUrl, CollectionInfo, PictureInfo, Source
from .fields import MAX_URL_CHARS, URL_PATTERN, Answer, ExternalId, Request, TextRule

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


def _http(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise PydanticCustomError("invalid_url", "an http or https URL is needed")
    return value


ChangesUrl = Annotated[str, TextRule("changes", MAX_URL_CHARS, "invalid_url",
                                     "A IIIF Change Discovery API 1.0 stream (an Activity Streams OrderedCollection), by "
                                     "http(s) URL; fetched through the private-address guard", pattern=URL_PATTERN),
                       AfterValidator(_http)]


class SyncChanges(Request):
    """POST /v1/collections/<name>/sync: a background job (202); GET /v1/jobs/<id> follows it."""

    changes: ChangesUrl
    callback_url: CallbackUrl | None = None


class SyncReport(Answer):
    """What a sync did (`clip-gaze collection sync --json`): pictures added, refreshed (read again for
    an Update), removed (Delete/Remove, or no longer in an updated manifest) and failed."""

    ok: Literal[True] = True
    collection: str
    stream: str = Field(description="The change stream's URL")
    added: int = Field(0, description="Pictures stored that the collection did not hold")
    refreshed: int = Field(0, description="Stored pictures read again (an Update of their manifest)")
    removed: int = Field(0, description="Pictures taken out (Delete/Remove, or no longer listed by their manifest)")
    failed: int = Field(0, description="Pictures or manifests that could not be read (stored pictures are kept as they were)")
    manifests: int = Field(0, description="Manifests the sync acted on (the newest activity of each)")
    activities: int = Field(0, description="Activities of manifests newer than the last sync, read")
    ignored: int = Field(0, description="Activities read and passed over: of other objects, of other types, or without a time")
    pages: int = Field(0, description="Pages of the stream read")
    resumed: bool = Field(False, description="An earlier sync of this stream, stopped midway, was finished first")
    end_time: str | None = Field(None, description="The newest endTime applied: the next sync reads only what is newer")
    seconds: float = 0.0
    errors: list[PictureInfo] = Field(default_factory=list, description="The first failures (at most 20)")


__all__ = ["MAX_REMOVALS", "RemovalAnswer", "RemovePictures", "SyncChanges", "SyncReport"]
