"""Vocabularies: the built-in catalog, list files, templates and custom vocabulary files.

Validation of what users send lives in `schema`.

Pure Python: imports nothing heavy (no torch, no Flask).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .errors import InvalidInput, NotFound


def lists_dir() -> Path:
    """Where the built-in lists live: an installed wheel carries them inside the package."""
    override = os.environ.get("CLIP_GAZE_LISTS")
    if override:
        return Path(override)
    here = Path(__file__).resolve().parent
    packaged = here / "lists"
    return packaged if (packaged / "catalog.json").is_file() else here.parent / "lists"


# A model that reads a phrase with its language (NLLB-CLIP: the language's code is part of its input)
# embeds the same text in two languages as two inputs: its embeddings are keyed by the text and the tag.
LANGUAGE_KEY_SEPARATOR = "\x1f"  # a control character, which no stored phrase holds (schema.fields refuses them)
LANGUAGE_READING_ARCHES = ("nllb",)  # open_clip architectures whose tokenizer sets a language (by name prefix)


def reads_languages(model_key: str) -> bool:
    """Whether the model (its store key `ARCH:…`, or its architecture) reads each phrase's language."""
    return model_key.split(":", 1)[0].lower().startswith(LANGUAGE_READING_ARCHES)


def phrase_key(text: str, language: str | None) -> str:
    """What a language-reading model embeds a phrase as: its text, and its tag when it has one."""
    return text if language is None else f"{text}{LANGUAGE_KEY_SEPARATOR}{language}"


def split_key(key: str) -> tuple[str, str | None]:
    """`phrase_key` undone: (text, tag or None)."""
    text, sep, language = key.partition(LANGUAGE_KEY_SEPARATOR)
    return (text, language) if sep else (text, None)


@dataclass(frozen=True)
class PhraseSpec:
    """One phrase of a vocabulary: the text given to CLIP and where it came from."""

    term: str
    phrase: str
    external_id: str | None = None
    metadata: Mapping[str, Any] | None = None
    language: str | None = None  # BCP-47, canonical case (schema.languages)


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
    # (term, external_id, metadata, language) of each: a built-in list's plain terms make no PhraseSpec of their own.
    items = [(t.term, t.external_id, t.metadata, t.language) if isinstance(t, PhraseSpec) else (t, None, None, None)
             for t in terms]
    out: list[PhraseSpec] = []
    seen: set[str] = set()
    for template in templates:
        for term, external_id, metadata, language in items:
            phrase = apply_template(template, term)
            if phrase not in seen:
                seen.add(phrase)
                out.append(PhraseSpec(term, phrase, external_id, metadata, language))
    return out


def parse_phrase_file(text: str, fmt: str = "lines") -> list[dict[str, str] | str]:
    """A custom vocabulary file. `fmt` is 'lines' (one term a line; commas are part of the term)
    or 'csv' / 'tsv': `term,external_id,language` rows (the last two optional), or rows under a header
    naming its columns (`term` and any of `external_id`, `language`, in any order).

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
    columns = ["term", "external_id", "language"]
    head = [c.strip().lower() for c in rows[0]] if rows else []
    if "term" in head and set(head) <= {"term", "external_id", "language", ""}:
        columns = head
        rows = rows[1:]
    out: list[dict[str, str] | str] = []
    for row in rows:
        item = {c: v.strip() for c, v in zip(columns, row) if c in ("term", "external_id", "language") and v.strip()}
        if set(item) - {"term"}:
            out.append(item)
        elif row:
            out.append(item.get("term", ""))
    return out


def file_format(path: str) -> str:
    """'csv' for .csv, 'tsv' for .tsv, else 'lines'."""
    suffix = Path(path).suffix.lower()
    return {".csv": "csv", ".tsv": "tsv"}.get(suffix, "lines")
