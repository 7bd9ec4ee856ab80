"""What a IIIF Presentation 3 AnnotationPage of W3C Web Annotations must be, checked structurally: the
rules of IIIF Presentation 3 (§ 3.2 `@context` with IIIF's last, § 4 `id` an http(s) URI, `type`,
language maps for `label`, AnnotationPage `items`) and of the W3C Web Annotation Data Model (§ 3.1
`id`, `type` Annotation, `motivation`, `body`, `target`; § 3.2.4 TextualBody `value`, `format`,
`language`; § 4.2 SpecificResource `source`; § 4.2.1 FragmentSelector `conformsTo` media fragments;
§ 3.3.1 `creator`, `created` an xsd:dateTime), plus clip-gaze's own `score` (its context's terms).
`problems(page)` lists every departure; [] for a page that conforms."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

IIIF_CONTEXT = "http://iiif.io/api/presentation/3/context.json"
MOTIVATIONS = {"assessing", "bookmarking", "classifying", "commenting", "describing", "editing", "highlighting",
               "identifying", "linking", "moderating", "questioning", "replying", "tagging", "painting", "supplementing"}
ANNOTATION_KEYS = {"@context", "id", "type", "motivation", "body", "target", "creator", "created", "score", "review"}
SCORE_KEYS = {"type", "probability", "softmax_over", "vocabulary", "rank", "phrase", "cosine", "logit", "statement"}
_HTTP = re.compile(r"^https?://[^\s]+$")
_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:[^\s]+$")
_XYWH = re.compile(r"^xywh=(\d+),(\d+),(\d+),(\d+)$")
_LANGUAGE = re.compile(r"^[a-zA-Z]{2,8}(-[a-zA-Z0-9]{1,8})*$")


def _language_map(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(
        isinstance(k, str) and isinstance(v, list) and all(isinstance(s, str) for s in v) for k, v in value.items())


def problems(page: Any) -> list[str]:
    out: list[str] = []
    if not isinstance(page, dict):
        return ["a page is a JSON object"]
    context = page.get("@context")
    if not (isinstance(context, list) and context and context[-1] == IIIF_CONTEXT
            and all(isinstance(c, str) and _HTTP.match(c) for c in context)):
        out.append(f"@context must be a list of URLs ending with {IIIF_CONTEXT}: {context!r}")
    if not (isinstance(page.get("id"), str) and _HTTP.match(page["id"])):
        out.append(f"page id must be an http(s) URI: {page.get('id')!r}")
    if page.get("type") != "AnnotationPage":
        out.append("page type must be AnnotationPage")
    if "label" in page and not _language_map(page["label"]):
        out.append("page label must be a language map")
    for also in page.get("seeAlso", []):
        if not (isinstance(also, dict) and _HTTP.match(str(also.get("id"))) and also.get("type")):
            out.append(f"seeAlso entries need an http(s) id and a type: {also!r}")
    items = page.get("items")
    if not isinstance(items, list):
        return out + ["page items must be a list"]
    seen: set[str] = set()
    for n, a in enumerate(items):
        out += [f"item {n}: {p}" for p in annotation_problems(a)]
        if isinstance(a, dict):
            if a.get("id") in seen:
                out.append(f"item {n}: id {a.get('id')} is not unique")
            seen.add(a.get("id"))
    return out


def annotation_problems(a: Any) -> list[str]:
    if not isinstance(a, dict):
        return ["an annotation is a JSON object"]
    out = [f"unknown property {k}" for k in a if k not in ANNOTATION_KEYS]
    if not (isinstance(a.get("id"), str) and _HTTP.match(a["id"])):
        out.append(f"id must be an http(s) URI: {a.get('id')!r}")
    if a.get("type") != "Annotation":
        out.append("type must be Annotation")
    if a.get("motivation") not in MOTIVATIONS:
        out.append(f"motivation {a.get('motivation')!r} is not one of IIIF's or the W3C's")
    bodies = a.get("body") if isinstance(a.get("body"), list) else [a.get("body")]
    textual = [b for b in bodies if isinstance(b, dict) and b.get("type") == "TextualBody"]
    if not textual:
        out.append("a TextualBody is needed")
    for b in bodies:
        if not isinstance(b, dict):
            out.append(f"body {b!r} is not an object")
        elif b.get("type") == "TextualBody":
            if not isinstance(b.get("value"), str) or not b["value"]:
                out.append("a TextualBody needs a value")
            if b.get("format") != "text/plain":
                out.append("the TextualBody's format is text/plain")
            if "language" in b and not _LANGUAGE.match(str(b["language"])):
                out.append(f"language {b['language']!r} is not a BCP 47 tag")
            if b.get("purpose") not in MOTIVATIONS:
                out.append(f"purpose {b.get('purpose')!r} is not a motivation")
        elif b.get("type") == "SpecificResource":
            if not _URI.match(str(b.get("source"))):
                out.append(f"a SpecificResource body needs a URI source: {b.get('source')!r}")
        else:
            out.append(f"body type {b.get('type')!r}")
    target = a.get("target")
    if not (isinstance(target, dict) and target.get("type") == "SpecificResource" and isinstance(target.get("source"), dict)):
        out.append("target must be a SpecificResource with a source object")
    else:
        source = target["source"]
        if not (_URI.match(str(source.get("id"))) and source.get("type") in ("Canvas", "Image")):
            out.append(f"target source needs a URI id and type Canvas or Image: {source!r}")
        if source.get("type") == "Canvas":
            part = source.get("partOf")
            if not (isinstance(part, list) and part and all(_HTTP.match(str(p.get("id"))) and p.get("type") == "Manifest"
                                                             for p in part)):
                out.append("a canvas target names its manifest in partOf")
        selector = target.get("selector")
        if selector is not None:
            match = _XYWH.match(str(selector.get("value")))
            if not (selector.get("type") == "FragmentSelector" and selector.get("conformsTo") == "http://www.w3.org/TR/media-frags/"
                    and match and int(match[3]) > 0 and int(match[4]) > 0):
                out.append(f"selector must be a media-fragments FragmentSelector xywh= with area: {selector!r}")
    creator = a.get("creator")
    if not (isinstance(creator, dict) and creator.get("type") == "Software" and creator.get("name") and creator.get("version")
            and isinstance(creator.get("model"), dict) and creator["model"].get("fingerprint")):
        out.append(f"creator must be a Software with name, version and model fingerprint: {creator!r}")
    try:
        datetime.fromisoformat(str(a.get("created")).replace("Z", "+00:00"))
    except ValueError:
        out.append(f"created {a.get('created')!r} is not an xsd:dateTime")
    score = a.get("score")
    if not isinstance(score, dict):
        return out + ["score is needed"]
    out += [f"unknown score property {k}" for k in score if k not in SCORE_KEYS]
    if score.get("type") != "RelativeLikelihood":
        out.append("score type is RelativeLikelihood")
    if not (isinstance(score.get("probability"), float) and 0.0 <= score["probability"] <= 1.0):
        out.append(f"probability {score.get('probability')!r}")
    if not (isinstance(score.get("softmax_over"), int) and isinstance(score.get("rank"), int)
            and 1 <= score["rank"] <= score["softmax_over"]):
        out.append("rank runs from 1 to softmax_over")
    if "not a confidence" not in str(score.get("statement")):
        out.append("the statement says it is not a confidence")
    return out
