"""Requests and answers about vocabularies: creating one, adding and removing phrases, listing them."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import ConfigDict, Discriminator, Field, Tag, model_serializer, model_validator
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from .fields import (
    DEFAULT_PAGE_SIZE,
    MAX_OFFSET,
    MAX_PAGE_SIZE,
    MAX_PHRASES_PER_WRITE,
    MAX_TEMPLATES,
    Answer,
    Description,
    ExternalId,
    Metadata,
    Name,
    NotNull,
    Request,
    Template,
    Term,
)
from .languages import Language


class PhraseItem(Request):
    term: Term
    external_id: ExternalId | None = None
    metadata: Metadata | None = None
    language: Annotated[Language | SkipJsonSchema[None], NotNull] = None


BodyLanguage = Annotated[Language | SkipJsonSchema[None], NotNull, Field(
    description="The language of the phrases given as text (and of objects that name none), a BCP-47 tag")]


PhraseEntry = Annotated[
    Union[Annotated[Term, Tag("text")], Annotated[PhraseItem, Tag("object")]],
    Discriminator(lambda v: "text" if isinstance(v, str) else "object"),
]


class CreateVocabulary(Request):
    """POST /v1/vocabularies. Give `template` or `templates`, not both; none means '{}'."""

    model_config = ConfigDict(json_schema_extra={"not": {"required": ["template", "templates"]}})
    name: Name
    description: Annotated[Description | SkipJsonSchema[None], NotNull] = None
    template: Annotated[Template | SkipJsonSchema[None], NotNull] = None
    templates: Annotated[
        Union[Template, Annotated[list[Template], Field(min_length=1, max_length=MAX_TEMPLATES)]] | SkipJsonSchema[None],
        NotNull,
    ] = None
    phrases: Annotated[list[PhraseEntry], NotNull, Field(max_length=MAX_PHRASES_PER_WRITE)] = []
    language: BodyLanguage = None
    private: Annotated[bool, NotNull] = Field(False, description="Seen only by keys granted it (and admin keys): to "
                                                                 "everyone else, as if it did not exist")

    @model_validator(mode="after")
    def _one_template_field(self) -> "CreateVocabulary":
        if self.template is not None and self.templates is not None:
            raise PydanticCustomError("invalid_template", "give 'template' or 'templates', not both")
        return self

    def template_list(self) -> tuple[str, ...]:
        if self.templates is not None:
            return (self.templates,) if isinstance(self.templates, str) else tuple(self.templates)
        return (self.template or "{}",)


class AddPhrases(Request):
    phrases: Annotated[list[PhraseEntry], Field(min_length=1, max_length=MAX_PHRASES_PER_WRITE)]
    language: BodyLanguage = None


class RemovePhrases(Request):
    """DELETE /v1/vocabularies/<name>/phrases: by term (every phrase made from it) or external id."""

    model_config = ConfigDict(
        json_schema_extra={"anyOf": [{"required": ["terms"], "properties": {"terms": {"minItems": 1}}},
                                     {"required": ["external_ids"], "properties": {"external_ids": {"minItems": 1}}}]}
    )
    terms: Annotated[Annotated[list[Term], Field(max_length=MAX_PHRASES_PER_WRITE)] | SkipJsonSchema[None], NotNull] = None
    external_ids: Annotated[
        Annotated[list[ExternalId], Field(max_length=MAX_PHRASES_PER_WRITE)] | SkipJsonSchema[None], NotNull
    ] = None

    @model_validator(mode="after")
    def _something(self) -> "RemovePhrases":
        if not self.terms and not self.external_ids:
            raise PydanticCustomError("invalid_input", "give 'terms' or 'external_ids' to remove")
        return self


class PageQuery(Request):
    offset: Annotated[int, Field(ge=0, le=MAX_OFFSET)] = 0
    limit: Annotated[int, Field(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE


class Vocabulary(Answer):
    name: str
    size: int = Field(description="How many phrases it holds")
    builtin: bool
    templates: list[str]
    description: str
    version: int = Field(description="Bumped by every write that changes it")
    source: str | None = None
    licence: str | None = None
    default: bool = Field(False, description="In the default set, used when no vocabulary is named")
    private: bool = Field(False, description="Seen only by keys granted it (and admin keys)")


class VocabularyList(Answer):
    ok: Literal[True] = True
    vocabularies: list[Vocabulary]


class PhraseRow(Answer):
    id: int
    term: str
    phrase: str
    external_id: str | None = None
    metadata: dict[str, Any] | None = None
    language: str | None = Field(None, description="The phrase's language (BCP-47), null if none was given")


class VocabularyPage(Answer):
    ok: Literal[True] = True
    vocabulary: Vocabulary
    phrases: list[PhraseRow]
    next_offset: int | None = Field(description="Pass as offset for the next page; null on the last page")


class Collision(Answer):
    kept: str = Field(description="The phrase stored (or already there)")
    dropped: list[str] = Field(description="Phrases sent that tokenize exactly as `kept`: not stored")


class WriteAnswer(Answer):
    ok: Literal[True] = True
    vocabulary: Vocabulary = Field(description="The vocabulary after the write (as it was, for a delete)")
    added: int = 0
    removed: int = 0
    unchanged: int = Field(0, description="Phrases sent that were there already (adding is idempotent)")
    version: int
    deleted: str | None = Field(None, description="The name, when the vocabulary was deleted")
    collisions: list[Collision] = Field([], description=(
        "Phrases sent that the writing model's tokenizer (the server's default model) reads token for token as "
        "another phrase (SigLIP's lower-cases and drops punctuation; CLIP's lower-cases): the first is kept, the "
        "others are not stored (one embedding for two rows)"))

    @model_serializer(mode="wrap")
    def _skip_no_collisions(self, handler: Any) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if not data.get("collisions"):
            data.pop("collisions", None)
        return data


__all__ = ["AddPhrases", "Collision", "CreateVocabulary", "PageQuery", "PhraseEntry", "PhraseItem", "PhraseRow", "RemovePhrases",
           "Vocabulary", "VocabularyList", "VocabularyPage", "WriteAnswer"]
