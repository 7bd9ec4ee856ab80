"""Requests and answers of interrogation (POST /v1/interrogate, `clip-gaze interrogate`,
`clip_gaze.interrogate`): the prompt a generator built on CLIP would answer to, each part scored.

A request takes the inputs of /v1/analyze (the picture, `vocabularies`: the candidates) plus `mode`,
`caption` and the chain's settings; the answer gives the prompt, its cosine with the picture and what
each part added to it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import BeforeValidator, Field, model_serializer, model_validator
from pydantic.json_schema import SkipJsonSchema

from .analysis import FormVocabularies, ImageInfo, ModelInfo, RequestModel, Vocabularies
from .fields import Answer, Base64Image, ImageUrl, NotNull, Phrase, Request, UploadedImage, integral, one_image, one_of

Mode = Literal["best", "classic", "fast", "negative"]
MODES: tuple[str, ...] = get_args(Mode)
DEFAULT_MODE: Mode = "best"
MAX_STEPS = 64
MAX_POOL = 20_000

ModeField = Annotated[Mode, Field(description="best: the greedy chain; classic: the caption, then the best of each list "
                                              "and the flavors'; fast: the caption and the best phrases by their stored "
                                              "embeddings; negative: the chain over the least similar, for a negative prompt")]
Caption = Annotated[Phrase | SkipJsonSchema[None], NotNull, Field(
    description="The chain's start (a catalogue title or description); without it, CLIP's own best reading of the "
                "start vocabularies")]
_START_PATTERN = r"^ *([a-z0-9][a-z0-9_-]{0,63}( *, *[a-z0-9][a-z0-9_-]{0,63})*)? *$"
StartVocabularies = Annotated[str | SkipJsonSchema[None], NotNull, Field(
    pattern=_START_PATTERN, json_schema_extra={"pattern": _START_PATTERN},  # stated: a pattern on a union is not
    description="Comma-separated lists whose best phrases start the chain when there is no caption (\"\": start "
                "empty); default: the model preset's (genres, subjects, scenes; the toy model's: none)")]
Forced = Annotated[int, Field(ge=0, le=MAX_STEPS, description="Chain steps taken even when they do not raise the cosine "
                                                             "(clip-interrogator: 8)"), BeforeValidator(integral)]
Steps = Annotated[int, Field(ge=1, le=MAX_STEPS, description="The most phrases the chain adds (best, negative), or the "
                                                            "flavors added (fast: 32, classic: 3 by default)"),
                  BeforeValidator(integral)]
Pool = Annotated[int, Field(ge=1, le=MAX_POOL, description="best, negative: the chain's candidates, the exact top "
                                                          "(negative: bottom) of the lists by stored cosine"),
                 BeforeValidator(integral)]


class _Options(Request):
    mode: ModeField = DEFAULT_MODE
    caption: Caption = None
    start_vocabularies: StartVocabularies = None
    forced: Forced = 8
    max_steps: Annotated[Steps | SkipJsonSchema[None], NotNull] = None
    pool: Pool = 2048
    model: RequestModel = None


class InterrogateJson(_Options):
    """POST /v1/interrogate with a JSON body: the picture as base64, or its URL."""

    model_config = one_of("image_base64", "image_url")
    image_base64: Annotated[Base64Image | SkipJsonSchema[None], NotNull] = None
    image_url: Annotated[ImageUrl | SkipJsonSchema[None], NotNull] = None
    vocabularies: Vocabularies = None

    @model_validator(mode="after")
    def _image(self) -> "InterrogateJson":
        return one_image(self, ("image_base64", "image_url"))  # type: ignore[no-any-return]


class InterrogateForm(_Options):
    """POST /v1/interrogate as multipart/form-data."""

    model_config = one_of("image", "image_url")
    image: UploadedImage | SkipJsonSchema[None] = None
    image_url: ImageUrl | SkipJsonSchema[None] = None
    vocabularies: FormVocabularies = ""

    @model_validator(mode="after")
    def _image(self) -> "InterrogateForm":
        return one_image(self, ("image", "image_url"))  # type: ignore[no-any-return]


class Part(Answer):
    phrase: str = Field(description="The text added to the prompt")
    vocabulary: str | None = Field(description="The list it came from (null for the start's caption)")
    term: str | None = None
    external_id: str | None = None
    cosine_after: float = Field(description="cosine(picture, the prompt up to and with this part)")
    gain: float = Field(description="cosine_after minus the cosine before it (an empty prompt counts as 0)")


class Interrogation(Answer):
    ok: Literal[True] = True
    file: str | None = Field(None, description="The file interrogated (CLI only)")
    model: ModelInfo
    image: ImageInfo
    mode: Mode
    prompt: str = Field(description="The prompt (negative mode: the negative prompt)")
    negative_prompt: str | SkipJsonSchema[None] = Field(None, description="negative mode only: the same text, for the "
                                                                        "generator's negative field")
    start: str = Field(description="What the prompt started from: the caption, the start vocabularies' reading, or ''")
    cosine: float = Field(description="cosine(picture, prompt) as open_clip encodes the prompt: CLIP's reading, not a "
                                      "promise of what a generator draws")
    tokens: int = Field(description="Tokens of the prompt with its start and end tokens (the model's context is the limit)")
    context_length: int
    parts: list[Part] = Field(description="The start's parts and the phrases added, in order")
    candidates: int = Field(description="How many distinct phrases were candidates")
    vocabularies: list[str] = Field(description="The candidate lists")
    steps: int = Field(description="Chain steps run (fast and classic: 0)")
    text_encodes: int = Field(description="Prompts run through the text tower (whole or after a cached prefix)")
    reused_prefix: int = Field(description="Of text_encodes, those that ran only their own tokens after a cached prefix")
    text_runtime: Literal["torch", "onnxruntime"] = Field("torch", description="What ran the chain's text tower: "
                                                          "ONNX Runtime when it serves the model (its prefix graph), else torch")
    timing_ms: float
    timing_breakdown_ms: dict[str, float]

    @model_serializer(mode="wrap")
    def _skip_absent(self, handler: Any) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for key in ("file", "negative_prompt"):
            if data.get(key) is None:
                data.pop(key, None)
        return data


__all__ = ["DEFAULT_MODE", "MODES", "MAX_POOL", "MAX_STEPS", "InterrogateForm", "InterrogateJson", "Interrogation",
           "Mode", "Part"]
