"""Requests and answers of POST /v1/compare-models (`clip-gaze analyze --model a,b`,
`clip_gaze.compare_models`): one picture read by several models side by side, over the same lists,
with how far their rankings agree.

Each model's `results` are what /v1/analyze (or /v1/compare, for ad-hoc `phrases`) answers under that
model: a softmax within the list, by that model's own logit scale. `agreement` compares the models two
by two over the *whole* list: Spearman's ρ of every phrase's rank (cosine order, which is also logit
and probability order under one model), and the share of phrases both put in their top k.
"""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import ConfigDict, Field, model_validator
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from .analysis import ComparePhrases, FormPhrases, FormVocabularies, ImageInfo, ModelInfo, Vocabularies, VocabularyResult
from .fields import (
    DEFAULT_TOP_K,
    Answer,
    Base64Image,
    ImageUrl,
    ModelName,
    NotNull,
    Request,
    TopK,
    UploadedImage,
    one_image,
    one_of,
)

MAX_COMPARED_MODELS = 8
ADHOC = "compare"  # the results key of ad-hoc phrases, as in /v1/compare

Models = Annotated[
    Union[Annotated[str, Field(min_length=1)], Annotated[list[ModelName], Field(min_length=1, max_length=MAX_COMPARED_MODELS)]]
    | SkipJsonSchema[None],
    NotNull,
    Field(description=f"The models to compare (comma-separated or a list, 1 to {MAX_COMPARED_MODELS}, as GET "
                      "/v1/models lists them); every model the server serves if absent. Unknown: 404 unknown_model"),
]
FormModels = Annotated[str, Field(min_length=1, description="Comma-separated models (as GET /v1/models lists them); "
                                                            "every model served if absent")]
AdhocPhrases = Annotated[ComparePhrases | SkipJsonSchema[None], NotNull, Field(
    description="Ad-hoc phrases in place of vocabularies (not both fields): each model's softmax over exactly these "
                "(results key 'compare')")]


def _image_and_list(*images: str) -> ConfigDict:
    """One image field of `images`; `vocabularies` or `phrases`, never both (each field, even empty)."""
    return ConfigDict(json_schema_extra={**one_of(*images)["json_schema_extra"],  # type: ignore[dict-item]
                                         "not": {"required": ["vocabularies", "phrases"]}})


def _not_both(model: Request) -> None:
    if {"vocabularies", "phrases"} <= model.model_fields_set:
        raise PydanticCustomError("invalid_input", "compare models over vocabularies or over phrases, not both")


class CompareModelsJson(Request):
    model_config = _image_and_list("image_base64", "image_url")
    image_base64: Annotated[Base64Image | SkipJsonSchema[None], NotNull] = None
    image_url: Annotated[ImageUrl | SkipJsonSchema[None], NotNull] = None
    models: Models = None
    vocabularies: Vocabularies = None
    phrases: AdhocPhrases = None
    top_k: TopK = DEFAULT_TOP_K

    @model_validator(mode="after")
    def _image(self) -> "CompareModelsJson":
        _not_both(self)
        return one_image(self, ("image_base64", "image_url"))  # type: ignore[no-any-return]


class CompareModelsForm(Request):
    # The same rule, not stated here: schemathesis cannot generate multipart bodies (binary parts) under a `not`.
    model_config = one_of("image", "image_url")
    image: UploadedImage | SkipJsonSchema[None] = None
    image_url: ImageUrl | SkipJsonSchema[None] = None
    models: FormModels | SkipJsonSchema[None] = None
    vocabularies: FormVocabularies = ""
    phrases: Annotated[FormPhrases | SkipJsonSchema[None], NotNull] = None
    top_k: TopK = DEFAULT_TOP_K

    @model_validator(mode="after")
    def _image(self) -> "CompareModelsForm":
        _not_both(self)
        return one_image(self, ("image", "image_url"))  # type: ignore[no-any-return]


class ModelReading(Answer):
    """The picture under one model: its analysis, as /v1/analyze answers it under that model."""

    name: str = Field(description="The model as the server serves it (`model` of a request)")
    model: ModelInfo
    results: dict[str, VocabularyResult]
    timing_ms: float


class Agreement(Answer):
    """Two models' rankings of one list, compared."""

    models: list[str] = Field(min_length=2, max_length=2, description="The two models (names as in `models`)")
    spearman: float | None = Field(description="Spearman's ρ between the two rankings of every phrase of the list "
                                               "(1: the same order, 0: unrelated, −1: reversed); null for a list of "
                                               "fewer than two phrases")
    top_k_overlap: float = Field(description="The share of the k best phrases both models have in their k best")
    k: int = Field(description="How many best phrases `top_k_overlap` looks at (top_k, or the list's size if smaller)")
    shared: list[str] = Field(description="The phrases both have in their k best, in the first model's order")


class CompareModelsAnswer(Answer):
    ok: bool = True
    image: ImageInfo
    models: list[ModelReading] = Field(description="One reading per model, in the order asked for")
    agreement: dict[str, list[Agreement]] = Field(
        description="For each list (vocabulary, or 'compare' for ad-hoc phrases): every pair of models, compared over "
                    "the whole list")
    timing_ms: float


def split_models(value: str | list[str] | None) -> list[str] | None:
    """A `models` field as names (None: every model served)."""
    if value is None:
        return None
    names = [n.strip() for n in value.split(",")] if isinstance(value, str) else list(value)
    return [n for n in names if n] or None


__all__ = ["ADHOC", "Agreement", "CompareModelsAnswer", "CompareModelsForm", "CompareModelsJson", "MAX_COMPARED_MODELS",
           "ModelReading", "split_models"]
