"""Languages of phrases: a BCP-47 tag (RFC 5646, well-formed, in its canonical case: `nl`, `de-CH`,
`zh-Hant-TW`), the `languages` a request names (RFC 4647 basic filtering: `nl` also picks `nl-BE`),
and the error a bad tag gives."""

from __future__ import annotations

import re
from typing import Annotated, Sequence, Union

from pydantic import AfterValidator, Field, WithJsonSchema
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from .fields import NotNull

MAX_LANGUAGE_CHARS = 35  # RFC 5646 §4.4.1: 35 characters hold every tag applications must keep
MAX_LANGUAGES = 32  # in one request's `languages`
_A, _AN = "[A-Za-z]", "[A-Za-z0-9]"
_LANG = rf"(?:{_A}{{2,3}}(?:-{_A}{{3}}){{0,3}}|{_A}{{4,8}})"
_TAG = (rf"(?:{_LANG}(?:-{_A}{{4}})?(?:-(?:{_A}{{2}}|[0-9]{{3}}))?(?:-(?:{_AN}{{5,8}}|[0-9]{_AN}{{3}}))*"
        rf"(?:-[0-9A-WYZa-wyz](?:-{_AN}{{2,8}})+)*(?:-[Xx](?:-{_AN}{{1,8}})+)?|[Xx](?:-{_AN}{{1,8}})+)")
LANGUAGE_PATTERN = rf"^{_TAG}$"
LANGUAGES_PATTERN = rf"^ *{_TAG}(?: *, *{_TAG})* *$"
_TAG_RE = re.compile(_TAG)


def canonical_language(value: str, limit: bool = True) -> str:
    """A well-formed BCP-47 tag in its canonical case (language lower, script title, region upper);
    InvalidInput-worthy `PydanticCustomError('invalid_language')` otherwise. With `limit`, at most
    MAX_LANGUAGE_CHARS (a stored tag; a comma-separated filter is bounded by its whole length)."""
    text = value.strip()
    if (limit and len(text) > MAX_LANGUAGE_CHARS) or not _TAG_RE.fullmatch(text):
        raise PydanticCustomError(
            "invalid_language",
            f"invalid language tag {value[:40]!r}: give a BCP-47 tag such as 'nl', 'de', 'en-GB' or 'zh-Hant'")
    parts = text.split("-")
    out = [parts[0].lower()]
    singleton = len(parts[0]) == 1
    for part in parts[1:]:
        if singleton or len(part) == 1:
            singleton = True
            out.append(part.lower())
        elif len(part) == 4 and part.isalpha():
            out.append(part.title())
        elif (len(part) == 2 and part.isalpha()) or (len(part) == 3 and part.isdigit()):
            out.append(part.upper())
        else:
            out.append(part.lower())
    return "-".join(out)


def _tags(value: Union[str, list[str]]) -> list[str]:
    items = value.split(",") if isinstance(value, str) else value
    tags = [canonical_language(t, limit=not isinstance(value, str)) for t in items if t.strip()]
    if len(tags) > MAX_LANGUAGES:
        raise PydanticCustomError("invalid_language", f"at most {MAX_LANGUAGES} languages, not {len(tags)}")
    return list(dict.fromkeys(tags))


def _asked(value: Union[str, list[str], None]) -> list[str] | None:
    """A request's `languages`: absent is every phrase; given, it names at least one tag (as the schema says)."""
    if value is None:
        return None
    tags = _tags(value)
    if not tags:
        raise PydanticCustomError("invalid_language", "languages names no language: give BCP-47 tags such as 'nl,de', "
                                  "or leave it out for every phrase")
    return tags


_TAG_SCHEMA = {"type": "string", "maxLength": MAX_LANGUAGE_CHARS, "pattern": LANGUAGE_PATTERN}
Language = Annotated[str, AfterValidator(canonical_language), WithJsonSchema(
    {**_TAG_SCHEMA, "description": "The phrase's language, a BCP-47 tag such as 'nl', 'de' or 'en-GB'"})]

_LANGUAGES_DESCRIPTION = ("Score only the phrases in these languages (BCP-47 tags, comma-separated; 'nl' also picks "
                          "'nl-BE'): the softmax runs over those phrases alone, and softmax_over says how many. Absent: "
                          "every phrase, whatever its language")
Languages = Annotated[
    Union[Annotated[str, Field(max_length=MAX_LANGUAGES * (MAX_LANGUAGE_CHARS + 3))],
          Annotated[list[str], Field(max_length=MAX_LANGUAGES)]] | SkipJsonSchema[None],
    NotNull,
    AfterValidator(_asked),
    WithJsonSchema({"anyOf": [{"type": "string", "pattern": LANGUAGES_PATTERN,
                               "maxLength": MAX_LANGUAGES * (MAX_LANGUAGE_CHARS + 3)},
                              {"type": "array", "items": _TAG_SCHEMA, "minItems": 1, "maxItems": MAX_LANGUAGES}],
                    "description": _LANGUAGES_DESCRIPTION}),
]
FormLanguages = Annotated[
    str | SkipJsonSchema[None], AfterValidator(_asked),
    WithJsonSchema({"type": "string", "pattern": LANGUAGES_PATTERN, "maxLength": MAX_LANGUAGES * (MAX_LANGUAGE_CHARS + 3),
                    "description": _LANGUAGES_DESCRIPTION}),
]


def picks(ranges: Sequence[str], tag: str | None) -> bool:
    """RFC 4647 basic filtering: a phrase's `tag` is picked by a range equal to it or a prefix of it
    ending at a '-' ('nl' picks 'nl' and 'nl-BE', not 'nld'); an untagged phrase by none."""
    if tag is None:
        return False
    low = tag.lower()
    return any(low == r.lower() or low.startswith(r.lower() + "-") for r in ranges)


def split_languages(value: str | Sequence[str] | None) -> list[str] | None:
    """'nl, de' or ['nl', 'de'] → canonical tags; None or nothing → None (every phrase)."""
    if value is None:
        return None
    try:
        return _tags(value if isinstance(value, str) else list(value)) or None
    except PydanticCustomError as exc:
        from ..errors import InvalidInput

        raise InvalidInput(exc.message(), code="invalid_language") from None


__all__ = ["FormLanguages", "LANGUAGES_PATTERN", "LANGUAGE_PATTERN", "Language", "Languages", "MAX_LANGUAGES",
           "canonical_language", "picks", "split_languages"]
