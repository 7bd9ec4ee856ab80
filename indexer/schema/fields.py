"""The typed boundary's field types and limits: every limit is defined here once, and each field type
carries its validation (with clip-gaze's error codes) and the JSON Schema that states it.

Text that reaches CLIP or is shown back to people (phrases, terms, templates, external ids,
descriptions, URLs) is refused, not silently changed, when it holds control characters,
bidirectional overrides or invisible zero-width characters (so a phrase always displays as what it
is), or white space at either end. Models (`schema`) are built from these types.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Annotated, Any, Callable, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError, core_schema

from ..errors import InvalidInput  # noqa: E402

# -- limits: defined once ---------------------------------------------------------------------------
MAX_TOP_K = 1000
DEFAULT_TOP_K = 10
MAX_PHRASES_PER_WRITE = 50_000
MAX_COMPARE_PHRASES = 5_000
MAX_BATCH_IMAGES = 64
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100
MAX_OFFSET = 10**9
MAX_NAME_CHARS = 64
MAX_PHRASE_CHARS = 300
MAX_TEMPLATE_CHARS = 150
MAX_TEMPLATES = 8
MAX_EXTERNAL_ID_CHARS = 200
MAX_METADATA_BYTES = 4096
MAX_DESCRIPTION_CHARS = 1000
MAX_MODEL_CHARS = 300

NAME_PATTERN = rf"^[a-z0-9][a-z0-9_-]{{0,{MAX_NAME_CHARS - 1}}}$"
_NAME = NAME_PATTERN[1:-1]
VOCABULARIES_PATTERN = rf"^ *({_NAME}( *, *{_NAME})*)? *$"

# Characters refused in text: C0/C1 controls and DEL, bidirectional marks, embeddings, overrides and
# isolates, zero-width or invisible format characters, and U+FFFD (what a decoder puts where bytes were
# not valid UTF-8). Written as \\uXXXX so that Python's re,
# ECMA-262 (JSON Schema) and Rust's regex read the classes alike.
_FORBIDDEN = (
    r"\u0000-\u001f\u007f-\u009f\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff\ufffd"
)
_SPACE = r" \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
TEXT_PATTERN = rf"^[^{_FORBIDDEN}{_SPACE}](?:[^{_FORBIDDEN}]*[^{_FORBIDDEN}{_SPACE}])?$"
# A template: the text rule, and '{}' exactly once. One pattern, without lookarounds, so that a
# generator need not filter one pattern's strings by another's: text with no '{}' in it is a run of
# characters in which each '{' is followed by another '{', by a character other than '}', or by the
# end. The template is such a run (A), '{}', and another (B); A starts and B ends as the text rule says.
_N, _NB = rf"[^{{{_FORBIDDEN}]", rf"[^{{}}{_FORBIDDEN}]"  # any character but '{'; but '{' or '}'
_EN, _ENB = rf"[^{{{_FORBIDDEN}{_SPACE}]", rf"[^{{}}{_FORBIDDEN}{_SPACE}]"  # the same, at either end
_BEFORE = rf"(?:(?:{_EN}|\{{+{_NB})(?:{_N}|\{{+{_NB})*\{{*|\{{+)?"
_AFTER = rf"(?:(?:{_N}|\{{+{_NB})*(?:{_EN}|\{{+{_ENB}|\{{+))?"
TEMPLATE_PATTERN = rf"^{_BEFORE}\{{\}}{_AFTER}$"
URL_PATTERN = rf"^https?://[^{_FORBIDDEN}]*[^{_FORBIDDEN}{_SPACE}]$"  # the text rule, for an http(s) URL
_TEXT_RE = re.compile(TEXT_PATTERN)
_FORBIDDEN_RE = re.compile(rf"[{_FORBIDDEN}]")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def check_text(value: str, what: str, max_chars: int) -> str:
    """The one text rule (see the module's docstring); raises PydanticCustomError('invalid_text')."""
    if _SURROGATE_RE.search(value):
        raise PydanticCustomError("invalid_text", f"{what} is not valid Unicode (it holds a lone surrogate)")
    if not value.strip():
        raise PydanticCustomError("invalid_text", f"empty {what}")
    if len(value) > max_chars:
        raise PydanticCustomError("invalid_text", f"{what} is {len(value)} characters long; the limit is {max_chars}")
    bad = _FORBIDDEN_RE.search(value)
    if bad and bad.group() == "\ufffd":
        raise PydanticCustomError(
            "invalid_text", f"{what} holds U+FFFD, the replacement character, at position {bad.start()}: it was not "
            "valid UTF-8 on its way here",
        )
    if bad:
        raise PydanticCustomError(
            "invalid_text",
            f"{what} holds U+{ord(bad.group()):04X}, a control, bidirectional or invisible character, at position "
            f"{bad.start()}; such characters are refused so that text always displays as what it is",
        )
    if not _TEXT_RE.fullmatch(value):
        raise PydanticCustomError("invalid_text", f"{what} has white space at its start or end")
    return value


@dataclass(frozen=True)
class TextRule:
    """Annotates a `str` with the text rule, its length limit, the error code it raises and its schema."""

    what: str
    max_chars: int
    code: str
    description: str
    allow_empty: bool = False
    format: str | None = None  # a JSON Schema format naming what the text is (e.g. image-url)
    pattern: str = TEXT_PATTERN  # the rule as the schema states it (a template's also holds its own rule)

    def _check(self, value: str) -> str:
        if self.allow_empty and value == "":
            return value
        try:
            return check_text(value, self.what, self.max_chars)
        except PydanticCustomError as exc:
            raise PydanticCustomError(self.code, exc.message_template) from None

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler) -> dict[str, Any]:
        if self.allow_empty:
            return {"type": "string", "maxLength": self.max_chars, "pattern": f"^$|{self.pattern}", "description": self.description}
        out = {"type": "string", "minLength": 1, "maxLength": self.max_chars, "pattern": self.pattern,
               "description": self.description}
        return {**out, "format": self.format} if self.format else out


def _name_rule(what: str) -> Callable[[str], str]:
    """The name rule (vocabularies and collections share it), its message naming `what` is named."""

    def check(value: str) -> str:
        if not re.fullmatch(_NAME, value):  # not re.match(NAME_PATTERN): Python's $ also matches before a final newline
            raise PydanticCustomError(
                "invalid_name",
                f"invalid {what} name {value[:80]!r}: use 1 to {MAX_NAME_CHARS} lowercase letters, digits, '-' or '_', "
                "starting with a letter or digit",
            )
        return value

    return check


def _check_template(value: str) -> str:
    if value.count("{}") != 1:
        raise PydanticCustomError(
            "invalid_template", f"invalid template {value[:80]!r}: it must contain '{{}}' exactly once, e.g. 'by {{}}'"
        )
    return value


_NAME_SCHEMA = WithJsonSchema({"type": "string", "pattern": NAME_PATTERN, "description": "lowercase letters, digits, '-' and '_'"})
Name = Annotated[str, AfterValidator(_name_rule("vocabulary")), _NAME_SCHEMA]  # a vocabulary's
CollectionName = Annotated[str, AfterValidator(_name_rule("collection")), _NAME_SCHEMA]  # the same rule, said of a collection
KeyName = Annotated[str, AfterValidator(_name_rule("key")), _NAME_SCHEMA]  # an API key's (issue 23)
Phrase = Annotated[str, TextRule("phrase", MAX_PHRASE_CHARS, "invalid_phrase", "Text given to CLIP")]
Term = Annotated[str, TextRule("term", MAX_PHRASE_CHARS, "invalid_phrase", "A vocabulary term (a template turns it into phrases)")]
Template = Annotated[
    str,
    TextRule("template", MAX_TEMPLATE_CHARS, "invalid_template", "Holds '{}' exactly once, where the term goes",
             pattern=TEMPLATE_PATTERN),
    AfterValidator(_check_template),
]
Description = Annotated[str, TextRule("description", MAX_DESCRIPTION_CHARS, "invalid_input", "What the list is", allow_empty=True)]
ModelName = Annotated[str, TextRule(
    "model", MAX_MODEL_CHARS, "invalid_input",
    "A model this server serves, as GET /v1/models lists it (a preset, ARCH:PRETRAINED, or ARCH:file-name of a "
    "checkpoint); the server's default model if absent. Unknown: 404 unknown_model")]


def integral(value: Any) -> Any:
    """A JSON number with no fractional part (`3.0`, `1e2`) is an integer, as JSON Schema says."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _int_as_text(value: Any) -> Any:
    value = integral(value)
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


# A number given as an external id is kept as its text, which is held to MAX_EXTERNAL_ID_CHARS.
MAX_EXTERNAL_ID_INT = 10**MAX_EXTERNAL_ID_CHARS - 1
MIN_EXTERNAL_ID_INT = -(10 ** (MAX_EXTERNAL_ID_CHARS - 1) - 1)

ExternalId = Annotated[
    str,
    BeforeValidator(_int_as_text),
    TextRule("external_id", MAX_EXTERNAL_ID_CHARS, "invalid_phrase", "An id from your catalogue"),
    WithJsonSchema({"oneOf": [{"type": "string", "minLength": 1, "maxLength": MAX_EXTERNAL_ID_CHARS, "pattern": TEXT_PATTERN},
                              {"type": "integer", "minimum": MIN_EXTERNAL_ID_INT, "maximum": MAX_EXTERNAL_ID_INT}],
                    "description": f"An id from your catalogue (a number is kept as its text, at most {MAX_EXTERNAL_ID_CHARS} "
                                   "characters)"}),
]
TopK = Annotated[int, Field(ge=1, le=MAX_TOP_K, description="How many matches to return per vocabulary"), BeforeValidator(integral)]


def _check_metadata(value: dict[str, Any]) -> dict[str, Any]:
    size = len(json.dumps(value, ensure_ascii=False).encode("utf-8"))
    if size > MAX_METADATA_BYTES:
        raise PydanticCustomError("invalid_phrase", f"metadata is {size} bytes as JSON; the limit is {MAX_METADATA_BYTES}")
    return value


Metadata = Annotated[
    dict[str, Any],
    AfterValidator(_check_metadata),
    Field(description=f"Any JSON object of at most {MAX_METADATA_BYTES} bytes; returned with every match"),
]


# Base64 (RFC 4648, the standard alphabet, padded): groups of four characters, the last one padded with
# '=' where it holds one or two bytes; at least one group (an empty picture is no picture). A data: URL
# (`data:image/png;base64,…`) is read from its first comma on. The server checks this one pattern, so
# the document states exactly what it accepts as base64 (what the bytes are is checked apart: an image).
_B64_CHAR = "[A-Za-z0-9+/]"
BASE64_PATTERN = rf"^(?:data:[^,]*,)?(?:{_B64_CHAR}{{4}})*(?:{_B64_CHAR}{{4}}|{_B64_CHAR}{{3}}=|{_B64_CHAR}{{2}}==)$"
_BASE64_RE = re.compile(BASE64_PATTERN[1:-1])  # fullmatch: Python's $ also matches before a final newline


def _b64(value: Any) -> bytes:
    if not isinstance(value, str):
        raise PydanticCustomError("invalid_base64", "must be a base64 string")
    if not _BASE64_RE.fullmatch(value):
        raise PydanticCustomError("invalid_base64", "not valid base64 (groups of 4 characters of A-Z, a-z, 0-9, "
                                                    "'+' and '/', the last one padded with '=')")
    if value.startswith("data:"):
        value = value.split(",", 1)[1]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):  # not expected once the pattern holds
        raise PydanticCustomError("invalid_base64", "not valid base64") from None


Base64Image = Annotated[
    bytes,
    BeforeValidator(_b64),
    WithJsonSchema({"type": "string", "format": "image-base64", "minLength": 4, "pattern": BASE64_PATTERN,
                    "contentEncoding": "base64",
                    "description": "An image file (JPEG, PNG, WebP, GIF, TIFF or BMP), base64-encoded; a data: URL is accepted"}),
]
MAX_URL_CHARS = 2000


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise PydanticCustomError("invalid_url", "image_url must be an http or https URL")
    return value


ImageUrl = Annotated[
    str,
    TextRule("image_url", MAX_URL_CHARS, "invalid_url", "A picture, or a IIIF Image API service (its URL or info.json), "
             "by http(s) URL; fetched at the model's size, through the private-address guard", format="image-url",
             pattern=URL_PATTERN),
    AfterValidator(_http_url),
]


def one_image(model: Any, fields: tuple[str, str]) -> Any:
    given = [f for f in fields if getattr(model, f) not in (None, [])]
    if not given:
        raise PydanticCustomError(
            "missing_image",
            "no image: send a multipart field 'image' (curl -F image=@picture.jpg), JSON {\"image_base64\": …}, or image_url",
        )
    if len(given) > 1:
        raise PydanticCustomError("invalid_input", f"give '{fields[0]}' or '{fields[1]}', not both")
    return model


T = TypeVar("T")
Images = Annotated[list[T], Field(min_length=1, max_length=MAX_BATCH_IMAGES)]  # the pictures of one batch


def one_of(*fields: str) -> ConfigDict:
    return ConfigDict(json_schema_extra={"oneOf": [{"required": [f]} for f in fields]})


UploadedImage = Annotated[bytes, Field(description="JPEG, PNG, WebP, GIF (first frame), TIFF or BMP")]


# -- base classes ---------------------------------------------------------------------------------
class Request(BaseModel):
    """A request: unknown fields are refused, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Answer(BaseModel):
    """An answer. Fields may be added over time: clients ignore what they do not know. Reading it
    like the dict it was (`answer["results"]`) still works."""

    model_config = ConfigDict(extra="allow")

    def __getitem__(self, key: str) -> Any:
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and (key in type(self).model_fields or key in (self.model_extra or {}))

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)

    def json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _no_null(value: Any) -> Any:
    if value is None:
        raise PydanticCustomError("null_field", "must not be null: leave the field out instead")
    return value


NotNull = BeforeValidator(_no_null)


_UNION_TAGS = {"text", "object"}  # the tags of a phrase entry (a term, or an object)


# -- validation with clip-gaze's errors --------------------------------------------------------------
M = TypeVar("M", bound=BaseModel)
_TYPE_CODES = {"name": "invalid_name", "top_k": "invalid_top_k", "image_base64": "invalid_base64", "images_base64": "invalid_base64"}
_OWN_CODES = {"invalid_name", "invalid_phrase", "invalid_template", "invalid_base64", "invalid_input", "null_field",
              "invalid_url", "missing_image", "invalid_expiry", "invalid_time", "invalid_language"}


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if part in _UNION_TAGS or (isinstance(part, str) and part.startswith(("function-", "str", "int", "list["))):
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def invalid(exc: ValidationError, prefix: tuple[str, ...] = ()) -> InvalidInput:
    """The first problem of a ValidationError as clip-gaze's InvalidInput (code, readable line)."""
    err = exc.errors(include_url=False)[0]
    kind, loc = err["type"], (*prefix, *err["loc"])
    where = _where(loc)
    if kind == "json_invalid":
        msg = err["msg"]
        if "escape" in msg or "surrogate" in msg:
            msg = "the body holds an escape that is not valid Unicode (a lone surrogate such as \\ud800)"
        elif "recursion" in msg:
            msg = "the body is nested too deeply"
        return InvalidInput(f"the body is not valid JSON: {msg}", code="invalid_json")
    if kind == "model_type" and not loc:
        return InvalidInput("the JSON body must be an object", code="invalid_json")
    if kind in _OWN_CODES:
        code = "invalid_input" if kind == "null_field" else kind
    elif kind == "too_long" and isinstance(err.get("input"), (list, tuple)):
        code = "too_many"
    elif kind == "extra_forbidden":
        return InvalidInput(f"unknown field: {where}", code="invalid_input")
    elif kind == "missing" and loc and loc[-1] in ("image", "image_base64", "images_base64"):
        return InvalidInput(
            "no image: send a multipart field 'image' (curl -F image=@picture.jpg) or JSON {\"image_base64\": …}",
            code="missing_image",
        )
    elif kind in ("missing", "too_short") and loc and loc[0] in ("phrases", "terms"):
        code = "invalid_phrase"
    else:
        code = _TYPE_CODES.get(str(loc[0]) if loc else "", "invalid_input")
    message = err["msg"] if kind in _OWN_CODES else err["msg"][:1].lower() + err["msg"][1:]
    return InvalidInput(f"{where}: {message}" if where else message, code=code)


def parse(model: type[M], data: Any) -> M:
    """Validate Python data (a form, query arguments, CLI input) as `model`, lax about text numbers."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid(exc) from None


def parse_json(model: type[M], raw: bytes | str) -> M:
    """Validate a JSON body as `model`, strictly: types as the schema says, no coercion."""
    try:
        return model.model_validate_json(raw or b"null", strict=True)
    except ValidationError as exc:
        raise invalid(exc) from None


_NAME_ADAPTER: TypeAdapter[str] = TypeAdapter(Name)
_COLLECTION_NAME_ADAPTER: TypeAdapter[str] = TypeAdapter(CollectionName)


def parse_name(name: object) -> str:
    """A vocabulary name from a URL or the command line, checked like any other."""
    try:
        return _NAME_ADAPTER.validate_python(name)
    except ValidationError as exc:
        raise invalid(exc, ("name",)) from None


def parse_collection_name(name: object) -> str:
    """A collection name from a URL or the command line: the vocabulary rule, said of a collection."""
    try:
        return _COLLECTION_NAME_ADAPTER.validate_python(name)
    except ValidationError as exc:
        raise invalid(exc, ("name",)) from None


def split_vocabularies(value: str | list[str] | None) -> list[str] | None:
    """'a, b' or ['a', 'b'] → ['a', 'b']; None or nothing → None (the default set)."""
    if value is None:
        return None
    names = [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value)
    return [n for n in names if n] or None



__all__ = [
    "MAX_TOP_K", "DEFAULT_TOP_K", "MAX_PHRASES_PER_WRITE", "MAX_COMPARE_PHRASES", "MAX_BATCH_IMAGES", "MAX_PAGE_SIZE",
    "DEFAULT_PAGE_SIZE", "MAX_OFFSET", "MAX_NAME_CHARS", "MAX_PHRASE_CHARS", "MAX_TEMPLATE_CHARS", "MAX_TEMPLATES",
    "MAX_EXTERNAL_ID_CHARS", "MAX_METADATA_BYTES", "MAX_DESCRIPTION_CHARS", "MAX_MODEL_CHARS", "MAX_EXTERNAL_ID_INT", "MIN_EXTERNAL_ID_INT",
    "MAX_URL_CHARS", "BASE64_PATTERN", "NAME_PATTERN", "VOCABULARIES_PATTERN", "TEXT_PATTERN", "TEMPLATE_PATTERN", "URL_PATTERN",
    "Answer", "Base64Image", "CollectionName", "KeyName", "Description", "ExternalId", "ImageUrl", "Images", "Metadata", "ModelName", "Name", "NotNull", "Phrase",
    "Request", "Template", "Term", "TextRule", "TopK", "UploadedImage",
    "check_text", "integral", "invalid", "parse", "parse_json", "parse_name", "parse_collection_name",
    "split_vocabularies",
]
