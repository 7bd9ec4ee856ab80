"""Requests and answers of keeping a collection in step with a museum's systems: pictures removed,
syncs from a IIIF Change Discovery stream, and the callback of a job (the rules they share are in `fields`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, ConfigDict, Field, model_validator
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from .collections import CollectionInfo, Source
from .fields import URL_PATTERN, Answer, ExternalId, NotNull, Request, TextRule

MAX_REMOVALS = 10000  # external ids or sources one request removes
MAX_URL_CHARS = 2000


def _http(value: str, what: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise PydanticCustomError("invalid_url", f"{what} must be an http(s) URL")
    return value


CallbackUrl = Annotated[str, TextRule("callback_url", MAX_URL_CHARS, "invalid_url",
                                      "Where the job's answer is POSTed, signed (X-Clip-Gaze-Signature), when it ends",
                                      pattern=URL_PATTERN), AfterValidator(lambda v: _http(v, "callback_url"))]
ChangesUrl = Annotated[str, TextRule("changes", MAX_URL_CHARS, "invalid_url",
                                     "A IIIF Change Discovery API 1.0 stream (an Activity Streams OrderedCollection)",
                                     pattern=URL_PATTERN), AfterValidator(lambda v: _http(v, "changes"))]


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


class SyncRequest(Request):
    """POST /v1/collections/<name>/sync: a background job (202) that reads the stream from its last
    page back to the last sync's end, adding, refreshing and removing the manifests it names."""

    changes: ChangesUrl
    callback_url: Annotated[CallbackUrl | SkipJsonSchema[None], NotNull] = None


class SyncReport(Answer):
    ok: Literal[True] = True
    collection: str
    stream: str
    since: str | None = Field(description="The endTime of the last sync this one went on from (None: the first)")
    end_time: str | None = Field(description="The endTime of the latest activity read: where the next sync starts")
    total: int = Field(description="Activities to apply: the latest of each manifest since the last sync")
    applied: int
    created: int = Field(description="Manifests added or refreshed (Create, Update, Add, and the target of a Move)")
    removed: int = Field(description="Manifests removed (Delete, Remove, and the origin of a Move)")
    skipped: int = Field(description="Activities passed over: on no manifest, older ones of a manifest, without endTime")
    failed: int = Field(description="Manifests that could not be read (their pictures are kept as they were)")
    pictures_removed: int = 0
    resumed: bool = Field(False, description="Went on from a sync that was stopped before its end")


class CallbackInfo(Answer):
    url: str
    state: Literal["waiting", "pending", "delivered", "failed"] = Field(
        description="waiting: the job has not ended; pending: being delivered or retried; failed: given up (an hour)")
    attempts: int
    last_status: int | None = Field(None, description="The HTTP status of the last attempt (None: no answer)")
    last_error: str | None = None
    next_attempt: float | None = Field(None, description="Unix time of the next attempt, while pending")


__all__ = ["CallbackInfo", "CallbackUrl", "ChangesUrl", "RemovalAnswer", "RemovePictures", "SyncReport", "SyncRequest"]
