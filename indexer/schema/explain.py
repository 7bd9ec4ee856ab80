"""Requests and answers of explanations (POST /v1/explain, `clip-gaze explain`, `clip_gaze.explain`).

They extend the analysis models of `analysis`: an explanation is an analysis whose every match
carries a heatmap over the model's patch grid and where it peaks, with the grid's place in the
original picture, and, when asked, a contrast "A rather than B".
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_serializer
from pydantic.json_schema import SkipJsonSchema

from .analysis import Analysis, ComparePhrases, RequestModel, FormPhrases, FormVocabularies, Match, Vocabularies, VocabularyResult
from .fields import Answer, Base64Image, NotNull, Phrase, Request, UploadedImage, integral

MAX_EXPLAIN_TOP_K = 50
DEFAULT_EXPLAIN_TOP_K = 3
ADHOC = "compare"  # the results key of ad-hoc phrases, as in /v1/compare

ExplainTopK = Annotated[
    int, Field(ge=1, le=MAX_EXPLAIN_TOP_K, description="How many matches to explain per list (each gets a map)"),
    BeforeValidator(integral),  # 3.0 is an integer, as JSON Schema says (and as top_k of /v1/analyze)
]
Format = Annotated[
    Literal["json", "png"],
    Field(description="json: the answer with every map; png: the overlay picture of the best match of the first list "
                      "(of the contrast, with versus) instead"),
]
Versus = Annotated[
    Phrase | SkipJsonSchema[None],
    NotNull,
    Field(description="B of a contrast 'A rather than B': A is the best match of the first list (the phrases if given, "
                      "else the first vocabulary); its map splits logit(A) − logit(B) over the picture"),
]


# -- requests -------------------------------------------------------------------------------------------
class ExplainJson(Request):
    """POST /v1/explain with a JSON body. Without `vocabularies`, only `phrases` are explained if given,
    else the default set."""

    image_base64: Base64Image
    vocabularies: Vocabularies = None
    phrases: Annotated[ComparePhrases | SkipJsonSchema[None], NotNull,
                       Field(description="Ad-hoc phrases: a softmax over exactly these (results key 'compare')")] = None
    versus: Versus = None
    top_k: ExplainTopK = DEFAULT_EXPLAIN_TOP_K
    model: RequestModel = None


class ExplainForm(Request):
    """POST /v1/explain as multipart/form-data."""

    image: UploadedImage
    vocabularies: FormVocabularies = ""
    phrases: Annotated[FormPhrases | SkipJsonSchema[None], NotNull] = None
    versus: Versus = None
    top_k: ExplainTopK = DEFAULT_EXPLAIN_TOP_K
    model: RequestModel = None


class ExplainQuery(Request):
    """POST /v1/explain's query string."""

    format: Format = "json"


# -- answers --------------------------------------------------------------------------------------------
Heatmap = Annotated[
    list[list[float]],
    Field(description="rows lists of cols numbers, row by row from the top: each cell's contribution, in logits, to "
                      "relative_logit (to logit(A) − logit(B) for a contrast); positive cells raise it"),
]


class Grid(Answer):
    rows: int = Field(description="Patch rows of the model's input")
    cols: int = Field(description="Patch columns of the model's input")
    box: list[float] = Field(
        min_length=4, max_length=4,
        description="[x0, y0, x1, y1]: the part of the original picture the model saw after its resize and centre crop, "
                    "in original pixels (cell (r, c) covers the r-th row and c-th column of it)",
    )


class Point(Answer):
    x: float
    y: float


class ExplainedMatch(Match):
    relative_logit: float = Field(description="logit minus the list's probability-weighted mean logit: what moves "
                                              "the probability, and what the heatmap splits")
    unmapped: float = Field(description="The part of relative_logit no patch carries (the class token's own path, "
                                        "earlier layers, biases): the heatmap's sum + unmapped = relative_logit")
    heatmap: Heatmap
    peak: Point = Field(description="The centre of the strongest cell, in original pixels")


class ExplainedResult(VocabularyResult):
    matches: list[ExplainedMatch]  # type: ignore[assignment]


class Contrast(Answer):
    phrase: str = Field(description="A: the best match of the first list")
    versus: str = Field(description="B")
    vocabulary: str = Field(description="The list A comes from: a vocabulary's name, or 'compare' for ad-hoc phrases")
    logit_difference: float = Field(description="logit(A) − logit(B)")
    unmapped: float = Field(description="The part of logit_difference no patch carries")
    heatmap: Heatmap
    peak: Point


class Explanation(Analysis):
    results: dict[str, ExplainedResult] = Field(  # type: ignore[assignment]
        description="One entry per list: each vocabulary asked for, and 'compare' for ad-hoc phrases")
    grid: Grid
    layers: int = Field(description="How many of the image tower's last blocks the maps decompose")
    contrast: Contrast | SkipJsonSchema[None] = Field(None, description="With versus: A rather than B")

    @model_serializer(mode="wrap")
    def _skip_absent(self, handler: Any) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for key in ("file", "contrast"):
            if data.get(key) is None:
                data.pop(key, None)
        return data


__all__ = [
    "ADHOC", "DEFAULT_EXPLAIN_TOP_K", "MAX_EXPLAIN_TOP_K", "Contrast", "ExplainForm", "ExplainJson", "ExplainQuery",
    "ExplainedMatch", "ExplainedResult", "Explanation", "Grid", "Point",
]
