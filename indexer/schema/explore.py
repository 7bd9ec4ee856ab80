"""Requests and answers of the explorer: a collection's map, its scores and facets against a
vocabulary (filtered by `where`), a picture's record; and the thumbnail value the stores keep."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError
from pydantic.json_schema import SkipJsonSchema

from .analysis import ModelInfo, RelativeTo, RequestModel, Vocabularies
from .collections import JobInfo
from .explain import ExplainTopK, Explanation, Format, Versus
from .fields import Answer, Name, NotNull, Phrase, Request, TopK, matching

MAX_WHERE_CHARS = 2000

# What `where` may hold, as the document states it (explore.where parses every text this matches):
# conditions joined by ` and `; each `COLUMN=VALUE`, `VOCABULARY:PHRASE>0.3` (`>=`, `<`, `<=`) or
# `top:VOCABULARY=PHRASE`. A column is one word; a value or phrase, words with one space between them,
# none of them `and` (which joins conditions), none with `=`, `<` or `>`; a threshold, a number in [0, 1].
_S = r"\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"  # what Python reads as space
_W = rf"[^{_S}=<>]"
_WORD = rf"(?:{_W}{{1,2}}|{_W}{{4,}}|[^{_S}=<>aA]{_W}{{2}}|[aA][^{_S}=<>nN]{_W}|[aA][nN][^{_S}=<>dD])"  # not `and`
_WORDS = rf"{_WORD}(?: {_WORD})*"
_VOCAB = r"[a-z0-9][a-z0-9_-]{0,63}"
_NOT_TOP = r"(?:[a-z0-9][a-z0-9_-]{3,63}|[a-z0-9][a-z0-9_-]?|[a-su-z0-9][a-z0-9_-]{2}|t[a-np-z0-9_-][a-z0-9_-]|to[a-oq-z0-9_-])"
_THRESHOLD = r"(?:0(?:\.[0-9]*)?|\.[0-9]+|1(?:\.0*)?)"
_CONDITION = (rf"(?:[^{_S}=<>:]+={_WORDS}|{_NOT_TOP}:{_WORDS}(?:>=|<=|>|<){_THRESHOLD}|top:{_VOCAB}={_WORDS})")
WHERE_PATTERN = rf"^{_CONDITION}(?: [aA][nN][dD] {_CONDITION})*$"


@dataclass(frozen=True)
class Thumbnail:
    """A picture's thumbnail as stored (by content hash) and served."""

    media_type: str  # image/webp or image/jpeg
    width: int
    height: int
    data: bytes


Where = Annotated[str | SkipJsonSchema[None], NotNull, Field(
    max_length=MAX_WHERE_CHARS, json_schema_extra={"pattern": WHERE_PATTERN}), matching(
    WHERE_PATTERN, "invalid_where", "a filter: conditions joined by ' and ', each COLUMN=VALUE, VOCABULARY:PHRASE>0.3 (>=, <, <= "
    "too; a threshold in [0, 1]) or top:VOCABULARY=PHRASE, a value or phrase being words one space apart, none of "
    "them 'and', with no = < >"), Field(
    description="Filters joined by ` and ` (or several `where` parameters): `COLUMN=VALUE` (a metadata column, "
                "or external_id, equal to a value), `VOCABULARY:PHRASE>0.3` (the picture's probability of that phrase "
                "within that vocabulary above a threshold; `>=`, `<`, `<=` too), `top:VOCABULARY=PHRASE` (the "
                "vocabulary's best phrase for the picture is PHRASE)")]


MAP_FIELDS = ("sha256", "external_id", "x", "y", "index")
_FIELD = "(" + "|".join(MAP_FIELDS) + ")"


class MapQuery(Request):
    format: Literal["json", "arrow"] = "json"
    fields: Annotated[str, Field(
        pattern=rf"^{_FIELD}(,{_FIELD})*$", max_length=100,
        description="Only with format=arrow (with JSON: 400): the columns to send, comma-separated, of sha256 (32 bytes), external_id, x, y "
                    "(float32, rounded to 1/65536) and index (each point's position in the collection's order, "
                    "the order of /scores); all of them without it. 100,000 sha256 are 3.2 MB that do not compress: "
                    "`fields=index,x,y` draws a map in a tenth of that")] | SkipJsonSchema[None] = None
    model: RequestModel = None

    @model_validator(mode="after")
    def _arrow_only(self) -> "MapQuery":
        if self.fields is not None and self.format != "arrow":
            raise PydanticCustomError("invalid_input", "fields is for format=arrow (the JSON points always have "
                                                       "sha256, external_id, x and y)")
        return self


class MapPoint(Answer):
    sha256: str
    external_id: str | None
    x: float = Field(description="In [0, 1]")
    y: float = Field(description="In [0, 1]")


class MapAnswer(Answer):
    """A collection's 2-D layout for the model. While a newer one is computed, `job` names the job and
    the answer holds the older layout (or no points, when there is none yet)."""

    ok: Literal[True] = True
    collection: str
    model: str
    version: int | None = Field(description="The collection version the layout was computed for")
    current_version: int = Field(description="The collection's version now")
    method: str | None = Field(description="umap (cosine), with `+transform` or `+neighbours` when later pictures "
                                           "were placed into an earlier layout; `trivial` under 4 pictures")
    size: int
    job: JobInfo | None = Field(None, description="The job computing the layout of current_version, while it runs")
    index: list[int] | None = Field(None, description="When the layout does not place every picture (an older one, "
                                                      "while a newer computes): each point's position in the collection's "
                                                      "order, the order of /scores' columns; null when point i is picture i")
    points: list[MapPoint]


class ScoresQuery(Request):
    vocabulary: Name
    phrase: Phrase | SkipJsonSchema[None] = None
    relative_to: RelativeTo = None
    where: Where = None
    model: RequestModel = None


class FacetsQuery(Request):
    """A vocabulary's best-phrase counts, or (`column`) a metadata column's values by count."""

    vocabulary: Name | SkipJsonSchema[None] = None
    column: Annotated[str, Field(min_length=1, max_length=200)] | SkipJsonSchema[None] = None
    relative_to: RelativeTo = None
    where: Where = None
    limit: Annotated[int, Field(ge=1, le=10_000)] = 1000
    model: RequestModel = None

    @model_validator(mode="after")
    def _one(self) -> "FacetsQuery":
        if (self.vocabulary is None) == (self.column is None):
            raise PydanticCustomError("invalid_input", "give a vocabulary or a metadata column (one of them)")
        return self


class ScoresAnswer(Answer):
    """Columns, one value a picture, in the order of the collection's pictures (the map's: GET …/map
    lists them so); with `where`, of the pictures it keeps, at the positions `index` gives. `top` indexes
    `phrases`."""

    ok: Literal[True] = True
    collection: str
    model: ModelInfo
    vocabulary: str
    softmax_over: int = Field(description="Phrases the softmax ran over: every probability is relative to them")
    phrase: str | None = Field(description="The phrase whose probability `probability` holds")
    size: int = Field(description="The collection's pictures")
    matched: int = Field(description="Of those, the pictures `where` keeps (all without it)")
    index: list[int] | None = Field(None, description="With `where`: the positions of the pictures kept")
    phrases: list[str] = Field(description="Every phrase of the vocabulary, in index order")
    terms: list[str]
    top: list[int] = Field(description="Each picture's best phrase, as an index into `phrases`")
    top_probability: list[float]
    probability: list[float] | None = Field(None, description="Each picture's probability of `phrase` within the vocabulary")


class Facet(Answer):
    term: str
    phrase: str
    external_id: str | None
    count: int


class FacetsAnswer(Answer):
    """For a column: each value as `term` and `phrase`, no `softmax_over`."""

    ok: Literal[True] = True
    collection: str
    vocabulary: str | None
    column: str | None = None
    softmax_over: int | None = Field(description="The phrases each best phrase was chosen among")
    size: int = Field(description="Pictures counted (those `where` keeps)")
    facets: list[Facet] = Field(description="How many pictures have each phrase as their best (ties go to the first "
                                            "phrase in index order), by count")


class PictureRecord(Answer):
    ok: Literal[True] = True
    collection: str
    sha256: str
    source: str
    external_id: str | None
    width: int | None
    height: int | None
    metadata: dict[str, Any] | None
    image_service: str | None = Field(None, description="The IIIF Image API service the picture was read from")
    manifest: str | None = Field(None, description="The IIIF manifest the picture was read from (its canvas: external_id)")
    thumbnail: str | None = Field(None, description="The thumbnail's path, when there is one")
    sources: int = Field(1, description="Sources of the collection with this content")
    results: dict[str, Any] | None = Field(None, description="With `vocabularies`: per vocabulary, `softmax_over` and the "
                                                             "best `matches` (phrase, term, probability, cosine)")


class PictureExplainQuery(Request):
    """GET …/pictures/<sha256>/explain: the picture's explanation, from its source where it can be read again."""

    vocabularies: Vocabularies = None
    versus: Versus = None
    top_k: ExplainTopK = 1
    format: Format = "json"
    model: RequestModel = None


class PictureExplanation(Explanation):
    """An explanation (as POST /v1/explain answers) of a collection's picture, and what it was computed from."""

    explained_from: Literal["source", "thumbnail"] = Field(
        description="source: the picture read again from its source at the model's input size (a file still there and "
                    "unchanged, its URL, its IIIF Image service); thumbnail: its stored 256-px thumbnail, when not")
    explained_note: str | None = Field(None, description="With thumbnail: why the source was not used")


class PictureRecordQuery(Request):
    vocabularies: Vocabularies = None
    top_k: TopK = 5
    model: RequestModel = None


__all__ = ["Facet", "FacetsAnswer", "FacetsQuery", "MapAnswer", "MapPoint", "MapQuery", "PictureRecordQuery", "PictureRecord", "ScoresAnswer",
           "ScoresQuery", "Thumbnail", "Where"]
