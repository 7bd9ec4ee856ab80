"""Importing what museums have: SKOS thesauri (RDF/XML or Turtle, e.g. the Getty AAT or a museum's own)
and Iconclass `notation|label` text files, each label a phrase with its language and its concept's id.

- SKOS (`read_skos`, through `rdflib`, the `thesauri` extra): every `skos:prefLabel` and `skos:altLabel`
  of every subject that has one, a phrase each, with the literal's language tag and the concept's URI as
  `external_id` (so a term's labels in several languages share it), and `{"label": "prefLabel"}` or
  `altLabel` as metadata. `languages` keeps the labels in those languages (untagged labels then go).
- Iconclass (`read_iconclass`): a line `notation|label` is a phrase with the notation as `external_id`.
  Its language is the one `languages` names (one language per file), else read from the file name's
  first part of two letters between `_`, `-` or `.` (`txt_nl.txt`, `iconclass-de.txt`, `nl.txt`).

`import_phrases` writes them like `vocab add` (the vocabulary made first if it does not exist): in
writes of at most MAX_PHRASES_PER_WRITE phrases, idempotent (importing again adds nothing).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..errors import InvalidInput
from ..schema import MAX_PHRASES_PER_WRITE, AddPhrases, Collision, CreateVocabulary, parse
from ..schema.languages import canonical_language, picks
from .editing import Editor

FORMATS = ("skos", "iconclass")
_RDF_FORMATS = {".ttl": "turtle", ".turtle": "turtle", ".n3": "n3", ".nt": "nt", ".rdf": "xml", ".xml": "xml",
                ".owl": "xml", ".jsonld": "json-ld", ".json": "json-ld", ".trig": "trig"}


@dataclass
class ImportReport:
    vocabulary: str
    format: str
    read: int = 0  # labels read from the file
    added: int = 0
    unchanged: int = 0
    created: bool = False
    version: int = 0
    languages: dict[str, int] = field(default_factory=dict)  # labels read per language ("" for none)
    collisions: list[Collision] = field(default_factory=list)

    def json_dict(self) -> dict[str, Any]:
        return {"ok": True, "vocabulary": self.vocabulary, "format": self.format, "read": self.read, "added": self.added,
                "unchanged": self.unchanged, "created": self.created, "version": self.version,
                "languages": self.languages, "collisions": [c.json_dict() for c in self.collisions]}


def _tag(value: str | None, where: str) -> str | None:
    if not value:
        return None
    try:
        return canonical_language(value)
    except ValueError as exc:  # PydanticCustomError is a ValueError
        raise InvalidInput(f"{where}: {exc}", code="invalid_language") from None


def read_skos(data: bytes, file_name: str, languages: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The labels of a SKOS file as phrase items (see the module's docstring)."""
    try:
        import rdflib
        from rdflib.namespace import SKOS
    except ImportError:  # pragma: no cover - the thesauri extra
        raise InvalidInput("reading SKOS needs rdflib: pip install 'clip-gaze[thesauri]' (or pip install rdflib)",
                           code="missing_dependency") from None
    graph = rdflib.Graph()
    fmt = _RDF_FORMATS.get(Path(file_name).suffix.lower())
    tried = [fmt] if fmt else ["turtle", "xml"]
    problem = ""
    for kind in tried:
        try:
            graph.parse(data=data, format=kind)
            break
        except Exception as exc:  # rdflib raises many kinds (SAX, BadSyntax, …)
            problem = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    else:
        raise InvalidInput(f"{file_name}: not readable as {' or '.join(tried)} RDF ({problem})", code="invalid_file")
    items: list[dict[str, Any]] = []
    for kind, predicate in (("prefLabel", SKOS.prefLabel), ("altLabel", SKOS.altLabel)):
        for subject, label in graph.subject_objects(predicate):
            if not isinstance(label, rdflib.Literal) or not str(label).strip():
                continue
            lang = _tag(label.language, f"{file_name}: the label {str(label)[:60]!r}")
            if languages and not picks(languages, lang):
                continue
            item: dict[str, Any] = {"term": " ".join(str(label).split()), "metadata": {"label": kind}}
            if isinstance(subject, rdflib.URIRef):
                item["external_id"] = str(subject)
            if lang:
                item["language"] = lang
            items.append(item)
    order = {"prefLabel": 0, "altLabel": 1}
    items.sort(key=lambda i: (i.get("external_id", ""), order[i["metadata"]["label"]], i.get("language", ""), i["term"]))
    return items


_NAME_LANGUAGE = re.compile(r"(?:^|[_.\-])([A-Za-z]{2})(?=$|[_.\-])")


def iconclass_language(file_name: str, languages: Sequence[str] | None) -> str:
    """The language of an Iconclass file: the one `languages` names, else read from its file name."""
    if languages:
        if len(languages) > 1:
            raise InvalidInput(f"an Iconclass file holds one language; give one with --languages, not "
                               f"{', '.join(languages)}", code="invalid_language")
        return languages[0]
    found = _NAME_LANGUAGE.search(Path(file_name).stem)
    if found is None:
        raise InvalidInput(f"{file_name}: no language in the file name (e.g. txt_nl.txt); give it with --languages nl",
                           code="invalid_language")
    return _tag(found.group(1), file_name) or ""


def read_iconclass(text: str, file_name: str, languages: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The `notation|label` lines of an Iconclass text file as phrase items (blank lines and '#' skipped)."""
    language = iconclass_language(file_name, languages)
    items: list[dict[str, Any]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        notation, bar, label = line.partition("|")
        if not bar or not notation.strip() or not label.strip():
            raise InvalidInput(f"{file_name}, line {number}: expected 'notation|label', not {line[:80]!r}", code="invalid_file")
        items.append({"term": " ".join(label.split()), "external_id": notation.strip(), "language": language})
    return items


def read_file(data: bytes, file_name: str, fmt: str, languages: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Phrase items from a file's bytes in `fmt` (skos or iconclass)."""
    if fmt == "skos":
        return read_skos(data, file_name, languages)
    if fmt == "iconclass":
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise InvalidInput(f"{file_name} is not UTF-8 text", code="invalid_file") from None
        return read_iconclass(text, file_name, languages)
    raise InvalidInput(f"unknown import format {fmt!r}: use {' or '.join(FORMATS)}", code="invalid_input")


def import_phrases(editor: Editor, name: str, items: Sequence[dict[str, Any]], fmt: str,
                   description: str = "") -> ImportReport:
    """Write `items` into vocabulary `name` (made first, with template '{}', if it does not exist)."""
    if not items:
        raise InvalidInput(f"no labels to import into {name!r} (none in the file, or none in the languages asked for)",
                           code="invalid_file")
    report = ImportReport(name, fmt, read=len(items))
    for item in items:
        lang = item.get("language", "")
        report.languages[lang] = report.languages.get(lang, 0) + 1
    if editor.store.find_vocabulary(name) is None:
        first = editor.create(parse(CreateVocabulary, {"name": name, "description": description,
                                                        "phrases": list(items[:MAX_PHRASES_PER_WRITE])}))
        report.created, start = True, MAX_PHRASES_PER_WRITE
        report.added, report.unchanged, report.version = first.added, first.unchanged, first.version
        report.collisions.extend(first.collisions)
    else:
        start = 0
    for at in range(start, len(items), MAX_PHRASES_PER_WRITE):
        answer = editor.add(name, parse(AddPhrases, {"phrases": list(items[at : at + MAX_PHRASES_PER_WRITE])}))
        report.added += answer.added
        report.unchanged += answer.unchanged
        report.version = answer.version
        report.collisions.extend(answer.collisions)
    return report


__all__ = ["FORMATS", "ImportReport", "import_phrases", "iconclass_language", "read_file", "read_iconclass", "read_skos"]
