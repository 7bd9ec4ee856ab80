"""The boundary: every request and answer of clip-gaze as one typed model (pydantic v2).

The engine takes and returns these; the REST views serialise them, the CLI prints them, `Client`
parses them, and the OpenAPI document is generated from them. The field types, the limits (each
defined once, enforced by validation once, stated in the JSON Schema) and the validation helpers
live in `fields` and are part of this module's names.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    model_serializer,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from .fields import *  # noqa: F401,F403  (the field types and limits are part of this boundary)
from .fields import _UNION_TAGS, M, _one_image, _one_of, invalid  # noqa: F401


# -- vocabularies -----------------------------------------------------------------------------------
class PhraseItem(Request):
    term: Term
    external_id: ExternalId | None = None
    metadata: Metadata | None = None


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


class VocabularyList(Answer):
    ok: Literal[True] = True
    vocabularies: list[Vocabulary]


class PhraseRow(Answer):
    id: int
    term: str
    phrase: str
    external_id: str | None = None
    metadata: dict[str, Any] | None = None


class VocabularyPage(Answer):
    ok: Literal[True] = True
    vocabulary: Vocabulary
    phrases: list[PhraseRow]
    next_offset: int | None = Field(description="Pass as offset for the next page; null on the last page")


class WriteAnswer(Answer):
    ok: Literal[True] = True
    vocabulary: Vocabulary = Field(description="The vocabulary after the write (as it was, for a delete)")
    added: int = 0
    removed: int = 0
    unchanged: int = Field(0, description="Phrases sent that were there already (adding is idempotent)")
    version: int
    deleted: str | None = Field(None, description="The name, when the vocabulary was deleted")


# -- models -----------------------------------------------------------------------------------------
class ModelInfo(Answer):
    preset: str | None = Field(description="The preset name, or null for an ARCH:PRETRAINED model")
    arch: str
    pretrained: str = Field(description="An open_clip tag, or a checkpoint's file name (never its path)")
    fingerprint: str | None = Field(None, description="For a checkpoint file: a hash that identifies its weights")
    config: str | None = Field(None, description="For models the project defines: its open_clip config")
    description: str | None = None
    logit_scale: float | None = Field(None, description="exp of the model's learned logit scale; known once loaded")

    @model_serializer(mode="wrap")
    def _skip_unset_optionals(self, handler: Any) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        return {k: v for k, v in data.items() if v is not None or k == "preset"}


class ModelsAnswer(Answer):
    ok: Literal[True] = True
    model: ModelInfo = Field(description="The model this server uses")
    models: list[ModelInfo] = Field(description="The presets")


# -- analysis ---------------------------------------------------------------------------------------
class Match(Answer):
    phrase: str = Field(description="The text given to CLIP")
    term: str = Field(description="The vocabulary's term the phrase was made from")
    probability: float = Field(description="Relative likelihood within the vocabulary: softmax over softmax_over phrases")
    cosine: float
    logit: float = Field(description="logit_scale × cosine")
    external_id: str | None = None
    metadata: dict[str, Any] | None = None


class RelativeInfo(Answer):
    """Which correction set the scores against a reference collection, and over how many pictures."""

    method: Literal["zscore", "nnn"] = Field(description="zscore: (logit - mean) / spread over the reference pictures, "
                                             "back on the logit scale; nnn: logit - alpha × mean of the phrase's k "
                                             "highest reference logits (Chowdhury et al., EMNLP 2024)")
    collection: str = Field(description="The reference collection")
    reference_pictures: int = Field(description="How many of its pictures the statistics were taken over")
    parameters: dict[str, float] = Field(default_factory=dict)


class VocabularyResult(Answer):
    softmax_over: int = Field(description="How many phrases the softmax ran over")
    matches: list[Match]
    relative_to: RelativeInfo | None = Field(None, description="With relative_to: the correction against a reference "
                                             "collection (logits and probabilities corrected, cosines raw)")

    @model_serializer(mode="wrap")
    def _skip_relative(self, handler: Any) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if data.get("relative_to") is None:
            data.pop("relative_to", None)
        return data


class ImageInfo(Answer):
    sha256: str
    width: int = Field(description="Of the picture as shown (orientation applied)")
    height: int
    format: str | None = None


class Analysis(Answer):
    ok: Literal[True] = True
    file: str | None = Field(None, description="The file analysed (CLI only)")
    model: ModelInfo
    image: ImageInfo
    results: dict[str, VocabularyResult] = Field(description="One entry per vocabulary asked for ('compare' for /v1/compare)")
    timing_ms: float
    timing_breakdown_ms: dict[str, float]

    @model_serializer(mode="wrap")
    def _skip_file(self, handler: Any) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if data.get("file") is None:
            data.pop("file", None)
        return data


class BatchItem(Answer):
    ok: Literal[True] = True
    index: int
    name: str
    image: ImageInfo
    results: dict[str, VocabularyResult]


class BatchFailure(Answer):
    ok: Literal[False] = False
    index: int
    name: str
    status: int
    code: str
    error: str


class BatchAnswer(Answer):
    ok: Literal[True] = True
    model: ModelInfo
    count: int
    failed: int
    results: list[Annotated[Union[BatchItem, BatchFailure], Field(discriminator="ok")]]
    timing_ms: float


Vocabularies = Annotated[
    Union[Annotated[str, Field(pattern=VOCABULARIES_PATTERN)], Annotated[list[Name], Field(max_length=256)]] | SkipJsonSchema[None],
    NotNull,
    Field(description="Comma-separated names or a list; the default set if absent or empty"),
]
FormVocabularies = Annotated[str, Field(pattern=VOCABULARIES_PATTERN, description="Comma-separated names; the default set if absent")]


RelativeTo = Annotated[Name | SkipJsonSchema[None], NotNull, Field(
    description="A collection: each phrase's score set against how it scores across that collection's pictures "
                "(hub phrases stop dominating)")]


class AnalyzeJson(Request):
    """POST /v1/analyze with a JSON body: the picture as base64, or its URL."""

    model_config = _one_of("image_base64", "image_url")
    image_base64: Annotated[Base64Image | SkipJsonSchema[None], NotNull] = None
    image_url: Annotated[ImageUrl | SkipJsonSchema[None], NotNull] = None
    vocabularies: Vocabularies = None
    relative_to: RelativeTo = None
    top_k: TopK = DEFAULT_TOP_K

    @model_validator(mode="after")
    def _image(self) -> "AnalyzeJson":
        return _one_image(self, ("image_base64", "image_url"))  # type: ignore[no-any-return]


class AnalyzeForm(Request):
    """POST /v1/analyze as multipart/form-data: the picture as a file, or its URL."""

    model_config = _one_of("image", "image_url")
    image: UploadedImage | SkipJsonSchema[None] = None
    image_url: ImageUrl | SkipJsonSchema[None] = None
    vocabularies: FormVocabularies = ""
    relative_to: RelativeTo = None
    top_k: TopK = DEFAULT_TOP_K

    @model_validator(mode="after")
    def _image(self) -> "AnalyzeForm":
        return _one_image(self, ("image", "image_url"))  # type: ignore[no-any-return]


class BatchJson(Request):
    model_config = _one_of("images_base64", "image_urls")
    images_base64: Annotated[Images[Base64Image] | SkipJsonSchema[None], NotNull] = None
    image_urls: Annotated[Images[ImageUrl] | SkipJsonSchema[None], NotNull] = None
    vocabularies: Vocabularies = None
    relative_to: RelativeTo = None
    top_k: TopK = DEFAULT_TOP_K

    @model_validator(mode="after")
    def _image(self) -> "BatchJson":
        return _one_image(self, ("images_base64", "image_urls"))  # type: ignore[no-any-return]


class BatchForm(Request):
    model_config = _one_of("image", "image_url")
    image: Images[UploadedImage] | SkipJsonSchema[None] = None
    image_url: Images[ImageUrl] | SkipJsonSchema[None] = None
    vocabularies: FormVocabularies = ""
    relative_to: RelativeTo = None
    top_k: TopK = DEFAULT_TOP_K

    @model_validator(mode="after")
    def _image(self) -> "BatchForm":
        return _one_image(self, ("image", "image_url"))  # type: ignore[no-any-return]


def _unique(phrases: list[str]) -> list[str]:
    seen: set[str] = set()
    for p in phrases:
        if p in seen:
            raise PydanticCustomError("invalid_phrase", f"phrase given twice: {p!r}")
        seen.add(p)
    return phrases


ComparePhrases = Annotated[
    list[Phrase],
    Field(min_length=1, max_length=MAX_COMPARE_PHRASES, json_schema_extra={"uniqueItems": True}),
    AfterValidator(_unique),
]


class CompareJson(Request):
    model_config = _one_of("image_base64", "image_url")
    image_base64: Annotated[Base64Image | SkipJsonSchema[None], NotNull] = None
    image_url: Annotated[ImageUrl | SkipJsonSchema[None], NotNull] = None
    phrases: ComparePhrases

    @model_validator(mode="after")
    def _image(self) -> "CompareJson":
        return _one_image(self, ("image_base64", "image_url"))  # type: ignore[no-any-return]


# White space as Python's str.strip() and str.splitlines() see it: text made only of it holds no phrase.
_BLANK = r"\t\n\u000b\u000c\r\u001c-\u001f \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
NOT_BLANK_PATTERN = rf"[^{_BLANK}]"
_FORM_PHRASES = {"type": "string", "minLength": 1, "pattern": NOT_BLANK_PATTERN}  # the view refuses blank text


FormPhrases = Annotated[str, Field(min_length=1), WithJsonSchema({
    "anyOf": [_FORM_PHRASES, {"type": "array", "items": {"type": "string"}, "minItems": 2}],
    "description": f"A JSON list of phrases, or one phrase a line (blank lines and white space around a phrase are "
                   f"ignored); 1 to {MAX_COMPARE_PHRASES} phrases, none given twice, each following the text rule "
                   f"of /v1/compare's JSON `phrases`. The field may be given several times: its values are read "
                   f"as lines of one text",
})]


class CompareForm(Request):
    model_config = _one_of("image", "image_url")
    image: UploadedImage | SkipJsonSchema[None] = None
    image_url: ImageUrl | SkipJsonSchema[None] = None
    phrases: FormPhrases

    @model_validator(mode="after")
    def _image(self) -> "CompareForm":
        return _one_image(self, ("image", "image_url"))  # type: ignore[no-any-return]


# -- health, index, errors -------------------------------------------------------------------------
class Batching(Answer):
    batches: int
    images: int


class Backends(Answer):
    """What runs the model, e.g. `onnx (CPUExecutionProvider)` or `torch (cpu)`."""

    images: str = Field(description="What encodes pictures")
    texts: str = Field(description="What encodes phrases")
    explanations: str = Field(description="What decomposes pictures for /v1/explain (torch: loaded on first use when ONNX Runtime serves)")


class Health(Answer):
    ok: Literal[True] = True
    status: Literal["loading", "ready", "error"]
    model_loaded: bool
    model: str
    error: str | None = None
    batching: Batching
    backends: Backends | None = Field(None, description="What runs the model; null until it is loaded")


class IndexReport(Answer):
    model: str
    vocabularies: list[str] = []
    synced: list[str] = []
    embedded: int = 0
    indexes_written: list[str] = []


class ErrorBody(Answer):
    """Every error the API gives, whatever the status."""

    model_config = ConfigDict(extra="forbid")
    ok: Literal[False] = False
    status: int
    code: str = Field(description="A machine-readable code, e.g. unknown_vocabulary")
    error: str = Field(description="A readable message")


_PHRASE_LIST: TypeAdapter[list[str]] = TypeAdapter(ComparePhrases)


def compare_phrases(phrases: Any) -> list[str]:
    """Validate phrases for a comparison (1 to MAX_COMPARE_PHRASES, no duplicates)."""
    try:
        return _PHRASE_LIST.validate_python(phrases)
    except ValidationError as exc:
        raise invalid(exc, ("phrases",)) from None


def compare_phrases_json(raw: str) -> list[str]:
    try:
        return _PHRASE_LIST.validate_json(raw, strict=True)
    except ValidationError as exc:
        raise invalid(exc, ("phrases",)) from None
