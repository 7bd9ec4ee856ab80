"""clip-gaze's own JSON-LD context, for what neither the W3C Web Annotation model nor IIIF Presentation 3
can say: a machine's score, and that it is a relative likelihood within a list, not a confidence.

The context is served at `CONTEXT_PATH` under the service (`GET /v1/annotations/context.jsonld`); its
terms expand to IRIs under `NAMESPACE`, the same on every server, so two servers' scores mean the
same thing. `TERMS` documents each term (the README's table is made from the same words).
"""

from __future__ import annotations

from typing import Any

from .. import __version__

CONTEXT_PATH = "/v1/annotations/context.jsonld"
NAMESPACE = "urn:clip-gaze:terms:"  # the same on every server; the README and the served context document them
IIIF_CONTEXT = "http://iiif.io/api/presentation/3/context.json"
STATEMENT = ("A relative likelihood within the list, not a confidence: the softmax over all softmax_over phrases of "
             "the vocabulary of logit_scale × cosine. It says which phrase the model prefers among those offered; "
             "it changes when phrases are added to or taken from the list.")



def statement(softmax_over: int, vocabulary: str) -> str:
    """What one score is and is not, with its list's numbers."""
    return (f"A relative likelihood within the list, not a confidence: the share of this phrase in the softmax over "
            f"all {softmax_over} phrases of the vocabulary {vocabulary} of logit_scale × cosine. It says which phrase "
            "the model prefers among those offered; it changes when phrases are added to or taken from the list.")


TERMS: dict[str, tuple[str, str]] = {  # term → (its IRI's fragment and JSON-LD type, what it means)
    "score": ("score", "The model's score of the annotation's term for its target (a RelativeLikelihood)"),
    "RelativeLikelihood": ("RelativeLikelihood", STATEMENT),
    "probability": ("probability|xsd:double", "The phrase's share of the list: softmax over the whole vocabulary of logit_scale × cosine"),
    "softmax_over": ("softmax_over|xsd:integer", "How many phrases the softmax ran over (the whole vocabulary)"),
    "vocabulary": ("vocabulary", "The name of the list (a clip-gaze vocabulary)"),
    "rank": ("rank|xsd:integer", "The phrase's place among the list's phrases for this picture, 1 the best"),
    "cosine": ("cosine|xsd:double", "Cosine of the picture's and the phrase's embeddings"),
    "logit": ("logit|xsd:double", "logit_scale × cosine"),
    "phrase": ("phrase", "The text given to the model (the term in its vocabulary's template)"),
    "statement": ("statement", "What the score is and is not, in words"),
    "version": ("version", "The software's version"),
    "model": ("model", "The model that scored: its preset, open_clip architecture and weights"),
    "preset": ("preset", "The model's clip-gaze preset name"),
    "arch": ("arch", "The model's open_clip architecture"),
    "pretrained": ("pretrained", "The model's weights: an open_clip tag or a checkpoint's file name"),
    "fingerprint": ("fingerprint", "Identifies the model's weights (a tag, or a hash of the checkpoint file)"),
    "review": ("review", "A person's verdict on the suggestion"),
    "verdict": ("verdict", "accepted or rejected"),
    "note": ("note", "The reviewer's note"),
    "reviewed": ("reviewed|xsd:dateTime", "When the verdict was given"),
    "identifier": ("identifier", "The picture's own id in its collection (e.g. an object number)"),
}


def _term(fragment: str) -> Any:
    name, _, kind = fragment.partition("|")
    return {"@id": f"cg:{name}", "@type": kind} if kind else f"cg:{name}"


def context_document() -> dict[str, Any]:
    """The JSON-LD context document, as served (with each term's meaning beside it, under `terms`,
    which JSON-LD processors ignore)."""
    context: dict[str, Any] = {"cg": NAMESPACE, "xsd": "http://www.w3.org/2001/XMLSchema#"}
    context.update({term: _term(fragment) for term, (fragment, _) in TERMS.items()})
    context["identifier"] = "http://purl.org/dc/terms/identifier"
    return {"@context": context, "clip-gaze": __version__,
            "terms": {term: meaning for term, (_, meaning) in TERMS.items()}}


def contexts(base_url: str) -> list[str]:
    """The `@context` of an annotation page: clip-gaze's (served under `base_url`), then IIIF
    Presentation 3's, which holds the W3C Web Annotation terms and must come last."""
    return [base_url.rstrip("/") + CONTEXT_PATH, IIIF_CONTEXT]


__all__ = ["CONTEXT_PATH", "IIIF_CONTEXT", "NAMESPACE", "STATEMENT", "TERMS", "statement", "context_document", "contexts"]
