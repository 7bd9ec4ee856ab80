"""Vocabularies: the built-in catalog, templates, and validation of names and phrases.

Pure Python: imports nothing heavy (no torch, no Flask).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .errors import InvalidInput, NotFound

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
MAX_PHRASE_CHARS = 300
MAX_EXTERNAL_ID_CHARS = 200
MAX_METADATA_BYTES = 4096
MAX_DESCRIPTION_CHARS = 1000
MAX_TEMPLATES = 8


def lists_dir() -> Path:
    """Where the built-in lists live: an installed wheel carries them inside the package."""
    override = os.environ.get("CLIP_GAZE_LISTS")
    if override:
        return Path(override)
    here = Path(__file__).resolve().parent
    packaged = here / "lists"
    return packaged if (packaged / "catalog.json").is_file() else here.parent / "lists"


@dataclass(frozen=True)
class PhraseSpec:
    """One phrase of a vocabulary: the text given to CLIP and where it came from."""

    term: str
    phrase: str
    external_id: str | None = None
    metadata: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class BuiltinVocabulary:
    name: str
    file: str
    templates: tuple[str, ...]
    description: str
    source: str
    licence: str
    constant: str | None = None

    def terms(self) -> list[str]:
        return read_terms(lists_dir() / self.file)

    def phrases(self) -> list[PhraseSpec]:
        return apply_templates(self.terms(), self.templates)


@dataclass(frozen=True)
class Catalog:
    vocabularies: dict[str, BuiltinVocabulary]
    default: tuple[str, ...] = field(default_factory=tuple)

    def get(self, name: str) -> BuiltinVocabulary:
        try:
            return self.vocabularies[name]
        except KeyError:
            raise NotFound(f"no built-in vocabulary named {name!r}", code="unknown_vocabulary") from None


@lru_cache(maxsize=4)
def _load_catalog(path: str) -> Catalog:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    vocabs = {
        v["name"]: BuiltinVocabulary(
            name=v["name"],
            file=v["file"],
            templates=tuple(v["templates"]),
            description=v["description"],
            source=v["source"],
            licence=v["licence"],
            constant=v.get("constant"),
        )
        for v in data["vocabularies"]
    }
    return Catalog(vocabularies=vocabs, default=tuple(data["default"]))


def catalog() -> Catalog:
    return _load_catalog(str(lists_dir() / "catalog.json"))


def read_terms(path: Path) -> list[str]:
    """One term a line, UTF-8; blank lines skipped, surrounding white space stripped."""
    with open(path, encoding="utf-8") as fh:
        return [line.strip() for line in fh if line.strip()]


def apply_template(template: str, term: str) -> str:
    return template.replace("{}", term)


def apply_templates(
    terms: Iterable[str | PhraseSpec], templates: Sequence[str]
) -> list[PhraseSpec]:
    """Each term yields one phrase per template, template by template (as clip-interrogator did).

    A phrase that comes out twice is kept once, first occurrence first.
    """
    items = [t if isinstance(t, PhraseSpec) else PhraseSpec(term=t, phrase=t) for t in terms]
    out: list[PhraseSpec] = []
    seen: set[str] = set()
    for template in templates:
        for item in items:
            phrase = apply_template(template, item.term)
            if phrase not in seen:
                seen.add(phrase)
                out.append(PhraseSpec(item.term, phrase, item.external_id, item.metadata))
    return out


def validate_name(name: object) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InvalidInput(
            f"invalid vocabulary name {name!r}: use 1 to 64 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit",
            code="invalid_name",
        )
    return name


def validate_template(template: object) -> str:
    if not isinstance(template, str) or template.count("{}") != 1:
        raise InvalidInput(
            f"invalid template {template!r}: it must contain '{{}}' exactly once, e.g. 'by {{}}'",
            code="invalid_template",
        )
    if len(template) > MAX_PHRASE_CHARS // 2:
        raise InvalidInput(f"template is longer than {MAX_PHRASE_CHARS // 2} characters", code="invalid_template")
    return template


def validate_templates(templates: object) -> tuple[str, ...]:
    if templates is None:
        return ("{}",)
    if isinstance(templates, str):
        templates = [templates]
    if not isinstance(templates, (list, tuple)) or not templates or len(templates) > MAX_TEMPLATES:
        raise InvalidInput(f"templates must be a list of 1 to {MAX_TEMPLATES} strings", code="invalid_template")
    return tuple(validate_template(t) for t in templates)


def validate_phrase(text: object, what: str = "phrase") -> str:
    if not isinstance(text, str):
        raise InvalidInput(f"{what} must be a string, not {type(text).__name__}", code="invalid_phrase")
    text = text.strip()
    if not text:
        raise InvalidInput(f"empty {what}", code="invalid_phrase")
    if len(text) > MAX_PHRASE_CHARS:
        raise InvalidInput(
            f"{what} is {len(text)} characters long; the limit is {MAX_PHRASE_CHARS}: {text[:40]!r}…",
            code="invalid_phrase",
        )
    if any(ord(ch) < 32 for ch in text):
        raise InvalidInput(f"{what} contains a control character: {text[:40]!r}", code="invalid_phrase")
    return text


def validate_description(text: object) -> str:
    if text is None:
        return ""
    if not isinstance(text, str) or len(text) > MAX_DESCRIPTION_CHARS:
        raise InvalidInput(f"description must be a string of at most {MAX_DESCRIPTION_CHARS} characters")
    return text


def parse_phrase_items(items: object, max_items: int) -> list[PhraseSpec]:
    """Validate the `phrases` of an API body or CLI file: `term` or `{term, external_id?, metadata?}`.

    Returns bare-term specs (templates not yet applied). Raises InvalidInput naming the bad item.
    """
    if not isinstance(items, list):
        raise InvalidInput("'phrases' must be a list of terms or {term, external_id, metadata} objects")
    if not items:
        raise InvalidInput("'phrases' is empty", code="invalid_phrase")
    if len(items) > max_items:
        raise InvalidInput(f"{len(items)} phrases in one request; send at most {max_items} at a time", code="too_many")
    out: list[PhraseSpec] = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            out.append(PhraseSpec(term=validate_phrase(item, f"phrases[{i}]"), phrase=""))
            continue
        if not isinstance(item, dict):
            raise InvalidInput(f"phrases[{i}] must be a string or an object with 'term'", code="invalid_phrase")
        unknown = set(item) - {"term", "external_id", "metadata"}
        if unknown:
            raise InvalidInput(f"phrases[{i}] has unknown field(s): {', '.join(sorted(unknown))}", code="invalid_phrase")
        term = validate_phrase(item.get("term"), f"phrases[{i}].term")
        ext = item.get("external_id")
        if ext is not None:
            if isinstance(ext, int) and not isinstance(ext, bool):
                ext = str(ext)
            if not isinstance(ext, str) or not ext.strip() or len(ext) > MAX_EXTERNAL_ID_CHARS:
                raise InvalidInput(
                    f"phrases[{i}].external_id must be a non-empty string of at most {MAX_EXTERNAL_ID_CHARS} characters",
                    code="invalid_phrase",
                )
            ext = ext.strip()
        meta = item.get("metadata")
        if meta is not None:
            if not isinstance(meta, dict):
                raise InvalidInput(f"phrases[{i}].metadata must be a JSON object", code="invalid_phrase")
            if len(json.dumps(meta, ensure_ascii=False)) > MAX_METADATA_BYTES:
                raise InvalidInput(f"phrases[{i}].metadata is larger than {MAX_METADATA_BYTES} bytes", code="invalid_phrase")
        out.append(PhraseSpec(term=term, phrase="", external_id=ext, metadata=meta))
    return out


def parse_phrase_file(text: str, fmt: str = "lines") -> list[dict[str, str] | str]:
    """A custom vocabulary file. `fmt` is 'lines' (one term a line; commas are part of the term)
    or 'csv' / 'tsv' (`term,external_id` rows; a first row 'term,external_id' is a header).

    Blank lines and lines starting with '#' are skipped.
    """
    import csv
    import io

    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if fmt == "lines":
        return [ln.strip() for ln in lines]
    if fmt not in ("csv", "tsv"):
        raise InvalidInput(f"unknown file format {fmt!r}: use lines, csv or tsv")
    rows = list(csv.reader(io.StringIO("\n".join(lines)), delimiter="\t" if fmt == "tsv" else ","))
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["term", "external_id"]:
        rows = rows[1:]
    out: list[dict[str, str] | str] = []
    for row in rows:
        if len(row) >= 2 and row[1].strip():
            out.append({"term": row[0].strip(), "external_id": row[1].strip()})
        elif row:
            out.append(row[0].strip())
    return out


def file_format(path: str) -> str:
    """'csv' for .csv, 'tsv' for .tsv, else 'lines'."""
    suffix = Path(path).suffix.lower()
    return {".csv": "csv", ".tsv": "tsv"}.get(suffix, "lines")
