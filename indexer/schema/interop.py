"""Requests and answers of handing results back to a museum's own systems: IIIF annotation pages,
people's reviews of machine suggestions (the rules they share are in `fields`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field
from pydantic.json_schema import SkipJsonSchema

from .analysis import FormVocabularies, RequestModel
from .fields import DEFAULT_TOP_K, URL_PATTERN, Answer, Name, NotNull, Phrase, Request, TextRule, TopK

MAX_NOTE_CHARS = 2000
MAX_REGION_PICTURES = 200  # pictures a request with regions=true reads again (the CLI has no such cap)
SHA256_PATTERN = r"^[0-9a-f]{64}$"

Verdict = Literal["accepted", "rejected"]
Note = Annotated[str, TextRule("note", MAX_NOTE_CHARS, "invalid_input", "Why, in the reviewer's words")]


class AnnotationsQuery(Request):
    """GET /v1/collections/<name>/annotations: a IIIF Presentation 3 AnnotationPage (JSON-LD)."""

    vocabularies: FormVocabularies = ""
    top_k: TopK = DEFAULT_TOP_K
    min_probability: Annotated[float, Field(ge=0.0, le=1.0, description="Leave out matches below this probability")] = 0.0
    manifest: Annotated[str | SkipJsonSchema[None], NotNull, Field(
        max_length=2000, pattern=URL_PATTERN,
        json_schema_extra={"pattern": URL_PATTERN},  # stated: a pattern on a union is not
        description="Only the pictures read from this IIIF manifest (its URL, as added); without it, every picture")] = None
    canvas: Annotated[str | SkipJsonSchema[None], NotNull, Field(
        max_length=2000, pattern=URL_PATTERN,
        json_schema_extra={"pattern": URL_PATTERN},  # stated: a pattern on a union is not
        description="Only the pictures painted on this canvas of `manifest` (a page for the canvas's `annotations`)")] = None
    model: RequestModel = None
    regions: Annotated[bool, Field(description=f"Target the region where the explanation's map peaks (each picture is "
                                               f"read again and explained; at most {MAX_REGION_PICTURES} pictures a request)")] = False


class ReviewRequest(Request):
    """POST /v1/collections/<name>/pictures/<sha256>/review: a person's verdict on a suggestion."""

    vocabulary: Name
    phrase: Annotated[Phrase, Field(description="A phrase of the vocabulary, or its term: the verdict is the term's")]
    verdict: Verdict
    note: Annotated[Note | SkipJsonSchema[None], NotNull] = None


class ReviewInfo(Answer):
    collection: str
    sha256: str
    vocabulary: str
    term: str = Field(description="The term the verdict is about (a phrase given is taken to its term)")
    phrase: str = Field(description="As the reviewer named it")
    verdict: Verdict
    note: str | None = None
    reviewed_at: str


class ReviewAnswer(Answer):
    ok: Literal[True] = True
    review: ReviewInfo


class AnnotationPageDocument(Answer):
    """A IIIF Presentation 3 AnnotationPage of W3C Web Annotations (JSON-LD; see the README's "Back into
    your systems" for every field). Not a clip-gaze answer: it has no `ok`, as viewers expect."""

    context: list[str] = Field(alias="@context", description="clip-gaze's context, then IIIF Presentation 3's")
    id: str = Field(description="The URL this page is answered at")
    type: Literal["AnnotationPage"]
    label: dict[str, list[str]]
    seeAlso: list[dict[str, Any]] | None = Field(None, description="The pages of the pictures read from manifests")
    items: list[dict[str, Any]] = Field(description="W3C Web Annotations")


__all__ = ["MAX_REGION_PICTURES", "AnnotationPageDocument", "AnnotationsQuery", "ReviewAnswer", "ReviewInfo",
           "ReviewRequest", "Verdict"]
