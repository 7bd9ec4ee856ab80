"""Requests and answers of an analysis: the model as clients see it, a picture's matches within each
vocabulary (`/v1/analyze`, `/v1/analyze/batch`) and a comparison over ad-hoc phrases (`/v1/compare`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union, get_args

from pydantic import (
    AfterValidator,
    Field,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    model_serializer,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from .fields import (
    DEFAULT_TOP_K,
    MAX_COMPARE_PHRASES,
    VOCABULARIES_PATTERN,
    Answer,
    Base64Image,
    ImageUrl,
    Images,
    ModelName,
    Name,
    NotNull,
    Phrase,
    Request,
    TopK,
    UploadedImage,
    one_image,
    one_of,
    invalid,
)
from .languages import FormLanguages, Languages


# -- models -----------------------------------------------------------------------------------------
class ModelInfo(Answer):
    preset: str | None = Field(description="The preset name, or null for an ARCH:PRETRAINED model")
    arch: str
    pretrained: str = Field(description="An open_clip tag, or a checkpoint's file name (never its path)")
    fingerprint: str | None = Field(None, description="For a checkpoint file: a hash that identifies its weights")
    config: str | None = Field(None, description="For models the project defines: its open_clip config")
    description: str | None = None
    logit_scale: float | None = Field(None, description="exp of the model's learned logit scale; known once loaded")
    logit_bias: float | None = Field(None, description="For a model trained with a sigmoid loss (SigLIP): its learned "
                                     "logit bias, in each match's sigmoid = σ(logit_scale·cosine + logit_bias); it cancels "
                                     "in the softmax. Absent for softmax-trained CLIP models; known once loaded")

    @model_serializer(mode="wrap")
    def _skip_unset_optionals(self, handler: Any) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        return {k: v for k, v in data.items() if v is not None or k == "preset"}


class ServedModel(Answer):
    """A model a server serves (CLIP_GAZE_MODELS): how requests name it, whether it is loaded, what it costs."""

    name: str = Field(description="How a request names it (its `model` field)")
    default: bool = Field(description="The model of requests that name none")
    state: Literal["not_loaded", "loaded", "error"] = Field(
        description="not_loaded: loads on its first request (or at start with `serve --preload`)")
    model: ModelInfo
    memory_mb: float | None = Field(
        None, description="How much the process's resident memory grew while it loaded (loads are measured one at a "
                          "time; the first model loaded also carries its runtime's import); null until loaded")
    weights_mb: float | None = Field(None, description="The bytes of its weights (torch: parameters and buffers; ONNX "
                                                       "Runtime: the export's files), in MB; null until loaded")
    load_seconds: float | None = Field(None, description="How long it took to load; null until loaded")
    error: str | None = Field(None, description="Why it could not be loaded (state error)")


class ModelsAnswer(Answer):
    ok: Literal[True] = True
    model: ModelInfo = Field(description="The model this server uses")
    models: list[ModelInfo] = Field(description="The presets")
    served: list[ServedModel] = Field([], description="The models this server serves, the default first (a request's "
                                                      "`model` names one); empty outside a server")


# -- analysis ---------------------------------------------------------------------------------------
class Match(Answer):
    phrase: str = Field(description="The text given to CLIP")
    term: str = Field(description="The vocabulary's term the phrase was made from")
    probability: float = Field(description="Relative likelihood within the vocabulary: softmax over softmax_over phrases")
    cosine: float
    logit: float = Field(description="logit_scale × cosine")
    sigmoid: float | None = Field(None, description="Only for a model with a logit_bias (sigmoid-trained, SigLIP): the "
                                  "model's own independent match probability σ(logit_scale·cosine + logit_bias). It is "
                                  "not relative: it does not change when the list changes, the phrases' values do not "
                                  "sum to one, and several phrases or none can be likely. Always of the raw cosine")
    external_id: str | None = None
    metadata: dict[str, Any] | None = None
    language: str | None = Field(None, description="The phrase's language (BCP-47); absent for a phrase without one")

    @model_serializer(mode="wrap")
    def _skip_sigmoid(self, handler: Any) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for key in ("sigmoid", "language"):
            if data.get(key) is None:
                data.pop(key, None)
        return data


HubMethod = Literal["zscore", "nnn"]  # the hub corrections (`scoring.hubs`)
HUB_METHODS: tuple[str, ...] = get_args(HubMethod)
DEFAULT_HUB_METHOD: HubMethod = "zscore"


class RelativeInfo(Answer):
    """Which correction set the scores against a reference collection, and over how many pictures."""

    method: HubMethod = Field(description="zscore: (logit - mean) / spread over the reference pictures, "
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
    languages: list[str] | None = Field(None, description="With languages: the languages asked for; the softmax ran over "
                                        "the vocabulary's phrases in them alone (softmax_over of them)")

    @model_serializer(mode="wrap")
    def _skip_relative(self, handler: Any) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for key in ("relative_to", "languages"):
            if data.get(key) is None:
                data.pop(key, None)
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


RequestModel = Annotated[ModelName | SkipJsonSchema[None], NotNull]  # a request's `model`: the default if absent


RelativeTo = Annotated[Name | SkipJsonSchema[None], NotNull, Field(
    description="A collection: each phrase's score set against how it scores across that collection's pictures "
                "(hub phrases stop dominating)")]


class AnalyzeJson(Request):
    """POST /v1/analyze with a JSON body: the picture as base64, or its URL."""

    model_config = one_of("image_base64", "image_url")
    image_base64: Annotated[Base64Image | SkipJsonSchema[None], NotNull] = None
    image_url: Annotated[ImageUrl | SkipJsonSchema[None], NotNull] = None
    vocabularies: Vocabularies = None
    relative_to: RelativeTo = None
    top_k: TopK = DEFAULT_TOP_K
    model: RequestModel = None
    languages: Languages = None

    @model_validator(mode="after")
    def _image(self) -> "AnalyzeJson":
        return one_image(self, ("image_base64", "image_url"))  # type: ignore[no-any-return]


class AnalyzeForm(Request):
    """POST /v1/analyze as multipart/form-data: the picture as a file, or its URL."""

    model_config = one_of("image", "image_url")
    image: UploadedImage | SkipJsonSchema[None] = None
    image_url: ImageUrl | SkipJsonSchema[None] = None
    vocabularies: FormVocabularies = ""
    relative_to: RelativeTo = None
    top_k: TopK = DEFAULT_TOP_K
    model: RequestModel = None
    languages: FormLanguages = None

    @model_validator(mode="after")
    def _image(self) -> "AnalyzeForm":
        return one_image(self, ("image", "image_url"))  # type: ignore[no-any-return]


class BatchJson(Request):
    model_config = one_of("images_base64", "image_urls")
    images_base64: Annotated[Images[Base64Image] | SkipJsonSchema[None], NotNull] = None
    image_urls: Annotated[Images[ImageUrl] | SkipJsonSchema[None], NotNull] = None
    vocabularies: Vocabularies = None
    relative_to: RelativeTo = None
    top_k: TopK = DEFAULT_TOP_K
    model: RequestModel = None
    languages: Languages = None

    @model_validator(mode="after")
    def _image(self) -> "BatchJson":
        return one_image(self, ("images_base64", "image_urls"))  # type: ignore[no-any-return]


class BatchForm(Request):
    model_config = one_of("image", "image_url")
    image: Images[UploadedImage] | SkipJsonSchema[None] = None
    image_url: Images[ImageUrl] | SkipJsonSchema[None] = None
    vocabularies: FormVocabularies = ""
    relative_to: RelativeTo = None
    top_k: TopK = DEFAULT_TOP_K
    model: RequestModel = None
    languages: FormLanguages = None

    @model_validator(mode="after")
    def _image(self) -> "BatchForm":
        return one_image(self, ("image", "image_url"))  # type: ignore[no-any-return]


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
    model_config = one_of("image_base64", "image_url")
    image_base64: Annotated[Base64Image | SkipJsonSchema[None], NotNull] = None
    image_url: Annotated[ImageUrl | SkipJsonSchema[None], NotNull] = None
    phrases: ComparePhrases
    model: RequestModel = None

    @model_validator(mode="after")
    def _image(self) -> "CompareJson":
        return one_image(self, ("image_base64", "image_url"))  # type: ignore[no-any-return]


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
    model_config = one_of("image", "image_url")
    image: UploadedImage | SkipJsonSchema[None] = None
    image_url: ImageUrl | SkipJsonSchema[None] = None
    phrases: FormPhrases
    model: RequestModel = None

    @model_validator(mode="after")
    def _image(self) -> "CompareForm":
        return one_image(self, ("image", "image_url"))  # type: ignore[no-any-return]


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


def form_phrases(text: str) -> list[str]:
    """The phrases of a form's `phrases` text (`FormPhrases`): a JSON list, or one phrase a line (blank
    lines and white space around a phrase ignored); validated as `compare_phrases`."""
    text = text.strip()
    if text.startswith("["):
        return compare_phrases_json(text)
    return compare_phrases([ln.strip() for ln in text.splitlines() if ln.strip()])


__all__ = [
    "Analysis", "AnalyzeForm", "AnalyzeJson", "BatchAnswer", "BatchFailure", "BatchForm", "BatchItem", "BatchJson",
    "CompareForm", "CompareJson", "ComparePhrases", "DEFAULT_HUB_METHOD", "FormPhrases", "FormVocabularies", "HUB_METHODS",
    "HubMethod", "ImageInfo", "Match", "ModelInfo",
    "ModelsAnswer", "NOT_BLANK_PATTERN", "ServedModel", "RelativeInfo", "RelativeTo", "RequestModel", "Vocabularies", "VocabularyResult",
    "compare_phrases", "compare_phrases_json", "form_phrases",
]
