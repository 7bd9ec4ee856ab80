"""Requests and answers of collections and jobs (the rules they share are in `fields`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from .analysis import ModelInfo, RelativeTo, RequestModel, Vocabularies
from .fields import Name
from .fields import (
    DEFAULT_PAGE_SIZE,
    DEFAULT_TOP_K,
    MAX_OFFSET,
    MAX_PAGE_SIZE,
    URL_PATTERN,
    Answer,
    CollectionName,
    Description,
    Phrase,
    Request,
    TextRule,
    TopK,
)

MAX_SOURCES = 1000
MAX_SOURCE_CHARS = 2000

Source = Annotated[str, TextRule("source", MAX_SOURCE_CHARS, "invalid_source",
                                 "A folder, a CSV/TSV or JSON Lines file with an `image` column, a IIIF manifest "
                                 "(URL or .json file) or a IIIF Image API service URL")]


class CreateCollection(Request):
    name: CollectionName
    description: Description = ""
    private: bool = Field(False, description="Seen only by keys granted it (and admin keys): to everyone else, as if "
                                             "it did not exist")


CallbackUrl = Annotated[str, TextRule("callback_url", MAX_SOURCE_CHARS, "invalid_url",
                                      "Where the job's answer is POSTed when it ends (done, failed or interrupted), "
                                      "signed (X-Clip-Gaze-Signature); through the private-address guard",
                                      pattern=URL_PATTERN), AfterValidator(lambda v: _url(v, "callback_url"))]


class AddSources(Request):
    """POST /v1/collections/<name>/sources: a background job (202); GET /v1/jobs/<id> follows it."""

    sources: Annotated[list[Source], Field(min_length=1, max_length=MAX_SOURCES)]
    callback_url: CallbackUrl | None = None


UrlSource = Annotated[str, TextRule("source", MAX_SOURCE_CHARS, "invalid_source",
                                    "A IIIF manifest, a IIIF Image API service, or a CSV/JSON Lines file, by http(s) URL",
                                    pattern=URL_PATTERN), AfterValidator(lambda v: _url(v, "source"))]


def _url(value: str, what: str) -> str:
    if what == "callback_url" and not value.startswith(("http://", "https://")):
        raise PydanticCustomError("invalid_url", "callback_url must be an http or https URL")
    if not value.startswith(("http://", "https://")):
        raise PydanticCustomError("invalid_source", f"{what}: the API adds sources by http(s) URL (files and folders "
                                                    "on this server are not offered to clients); add those with "
                                                    "`clip-gaze collection add`")
    return value


class AddUrlSources(AddSources):
    """POST /v1/collections/<name>/sources: sources by URL only."""

    sources: Annotated[list[UrlSource], Field(min_length=1, max_length=MAX_SOURCES)]  # type: ignore[assignment]


class AnalyzeCollection(Request):
    vocabularies: Vocabularies = None
    top_k: TopK = DEFAULT_TOP_K
    relative_to: RelativeTo = None
    model: RequestModel = None


Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="A stored picture, by the sha256 of its content")]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Cosine = Annotated[float, Field(ge=-1.0, le=1.0)]


class SearchTerms(Request):
    """What a search adds to its phrase: more phrases and stored pictures like these (`q`, `like`), less
    like those (`unlike_text`, `unlike`): the mean of the positives minus the mean of the negatives;
    and its cut-offs."""

    q: Annotated[list[Phrase], Field(max_length=16)] = []
    unlike_text: Annotated[list[Phrase], Field(max_length=16)] = []
    like: Annotated[list[Sha256], Field(max_length=64)] = []
    unlike: Annotated[list[Sha256], Field(max_length=64)] = []
    min_cosine: Cosine | None = None
    min_probability: Probability | None = Field(None, description="The first phrase's probability within `vocabulary` "
                                                                  "(the phrase added to the list when not one of it)")
    vocabulary: Name | None = None


class SearchQuery(Request):
    """GET /v1/collections/<name>/search: `q` may be repeated (more phrases); `not` (phrases) and
    `like`/`unlike` (stored pictures by sha256) too."""

    q: Annotated[list[Phrase], Field(max_length=16)] | Phrase | None = None
    top_k: TopK = DEFAULT_TOP_K
    not_: Annotated[list[Phrase], Field(max_length=16, alias="not")] = []
    like: Annotated[list[Sha256], Field(max_length=64)] = []
    unlike: Annotated[list[Sha256], Field(max_length=64)] = []
    min_cosine: Cosine | None = None
    min_probability: Probability | None = None
    vocabulary: Name | None = None
    model: RequestModel = None


class SearchForm(Request):
    """POST /v1/collections/<name>/search as multipart/form-data: by a picture (more like it), with the
    GET form's other fields."""

    image: Annotated[bytes, Field(description="JPEG, PNG, WebP, GIF (first frame), TIFF or BMP")]
    top_k: TopK = DEFAULT_TOP_K
    min_cosine: Cosine | None = None
    model: RequestModel = None


class CollectionInfo(Answer):
    name: str
    description: str
    size: int = Field(description="Pictures stored")
    failed: int = Field(description="Pictures that could not be read; GET …?errors=true lists them with their reasons")
    version: int
    created_at: str
    updated_at: str
    private: bool = Field(False, description="Seen only by keys granted it (and admin keys)")


class PictureInfo(Answer):
    source: str = Field(description="The path or URL the picture came from")
    external_id: str | None = None
    sha256: str | None = Field(None, description="Of the picture's bytes; null for a picture that failed")
    width: int | None = None
    height: int | None = None
    metadata: dict[str, Any] | None = None
    error_code: str | None = None
    error: str | None = None


class PictureQuery(Request):
    """GET /v1/collections/<name>: a page of its pictures, or of those that failed."""

    errors: bool = False
    offset: Annotated[int, Field(ge=0, le=MAX_OFFSET)] = 0
    limit: Annotated[int, Field(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE


class CollectionAnswer(Answer):
    ok: Literal[True] = True
    collection: CollectionInfo
    deleted: str | None = Field(None, description="The name, when the collection was deleted")


class CollectionList(Answer):
    ok: Literal[True] = True
    collections: list[CollectionInfo]


class CollectionView(Answer):
    ok: Literal[True] = True
    collection: CollectionInfo
    pictures: list[PictureInfo]
    next_offset: int | None


class AddReport(Answer):
    ok: Literal[True] = True
    collection: str
    model: str
    total: int = Field(description="Pictures the sources named")
    added: int
    skipped: int = Field(description="Already stored with an embedding for this model")
    relabelled: int = Field(0, description="Of those, how many took a new external_id or metadata from the source")
    failed: int
    encoded: int = Field(description="Pictures the model encoded (content not seen before)")
    refreshed: int = Field(0, description="Of those added, files read again because their size or modification "
                                          "time changed since they were stored (replaced at their path)")
    warnings: int = Field(0, description="What the decoders warned of while reading this run's pictures (Pillow's "
                                         "warnings, libtiff's messages): logged at debug level, never printed")
    ignored: int = Field(0, description="Files of a folder passed over by rule, not named in `total`: hidden "
                                        "ones (a name starting with \".\") and text or metadata files (.txt, .csv, .json, .xml, …)")
    seconds: float
    errors: list[PictureInfo] = Field(description="The first failures; `collection show --errors` lists all")


class CallbackInfo(Answer):
    """A job's callback: where its answer goes when it ends, and how the deliveries went."""

    url: str
    state: Literal["waiting", "pending", "delivered", "failed"] = Field(
        description="waiting: the job has not ended; pending: to be delivered (again, after `next_attempt`); delivered: a "
                    "2xx answer came; failed: no 2xx within an hour of the first attempt")
    attempts: int = Field(description="Deliveries tried")
    last_status: int | None = Field(None, description="The HTTP status the last attempt got (None: no answer)")
    last_error: str | None = Field(None, description="Why the last attempt failed, if it did")
    next_attempt: str | None = Field(None, description="When the next attempt is due (UTC), while pending")


class JobInfo(Answer):
    """A background job. `running` only while a live worker owns it (a lease it renews); a job whose
    worker stopped is resumed by the next worker (`resumed` counts how often) or, with
    CLIP_GAZE_RESUME_JOBS=0, `interrupted` with a `reason`. Its counts are carried across resumes."""

    id: str
    kind: str
    collection: str | None
    state: Literal["queued", "running", "done", "failed", "interrupted"]
    total: int | None
    done: int
    failed: int
    skipped: int
    error: str | None
    created_at: str
    updated_at: str
    resumed: int = Field(0, description="Times the job was resumed after its worker stopped")
    reason: str | None = Field(None, description="Why the job is interrupted")
    refreshed: int = Field(0, description="Of `done`, files read again because they changed at their path")
    callback: CallbackInfo | None = Field(None, description="With a `callback_url`: its deliveries")


class JobAnswer(Answer):
    ok: Literal[True] = True
    job: JobInfo


class AnalysisRow(Answer):
    """One picture and one match: a row of `collection analyze`'s output (Parquet, CSV or JSON Lines)."""

    external_id: str | None = Field(description="The picture's id (e.g. the object number)")
    source: str
    sha256: str
    vocabulary: str
    softmax_over: int
    rank: int
    phrase: str
    term: str
    probability: float
    cosine: float
    logit: float
    phrase_external_id: str | None = Field(None, description="The phrase's own id in its vocabulary")
    verdict: Literal["accepted", "rejected"] | None = Field(
        None, description="A person's verdict on this term for this picture (POST …/pictures/<sha256>/review), if any")
    sigmoid: float | None = Field(None, description="Only for a model with a logit_bias (SigLIP): its own independent "
                                  "match probability σ(logit_scale·cosine + logit_bias), not relative to the list; null "
                                  "for other models")
    language: str | None = Field(None, description="The phrase's language (BCP-47), null if it has none")


class SearchHit(Answer):
    rank: int
    cosine: float
    external_id: str | None
    source: str
    sha256: str
    width: int | None = None
    height: int | None = None
    metadata: dict[str, Any] | None = None
    probability: float | None = Field(None, description="With `vocabulary`: the phrase's probability within it")


class SearchAnswer(Answer):
    ok: Literal[True] = True
    collection: str
    model: ModelInfo
    query: str = Field(description="The phrase, or the sha256 of the query picture")
    searched: int = Field(description="Pictures searched")
    exact: bool = Field(description="False when an approximate index answered (collections over the exact limit)")
    hits: list[SearchHit]
    min_cosine: float | None = None
    min_probability: float | None = None
    vocabulary: str | None = None
    softmax_over: int | None = Field(None, description="With `vocabulary`: the phrases each probability is relative to")
