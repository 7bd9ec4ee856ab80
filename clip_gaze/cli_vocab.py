"""`clip-gaze vocab …`: list, show, create and change vocabularies."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Sequence

import click

from indexer.schema import MAX_PAGE_SIZE

from .cli_common import MODEL_OPTION, confirm_delete, domain_errors, make_engine, say, shown

LANGUAGE_OPTION = click.option("--language", "-l", help="The phrases' language, a BCP-47 tag (nl, de, en-GB); a file's "
                                                        "`language` column says it per row.")


@click.group()
def vocab() -> None:
    """List, show, create and change vocabularies (lists of phrases).

    \b
    Example:
        clip-gaze vocab create local-artists --file artists.csv --template "by {}"
    """


@vocab.command("list")
@click.option("--json", "as_json", is_flag=True)
@domain_errors
def vocab_list(as_json: bool) -> None:
    """List every vocabulary: built-in ones and your own.

    \b
    Example:
        clip-gaze vocab list --json
    """
    rows = make_engine(None, progress=False).vocabularies()
    if as_json:
        say(json.dumps([r.json_dict() for r in rows], ensure_ascii=False))
        return
    for r in rows:
        kind = "built-in" if r.builtin else "custom"
        star = "*" if r.default else " "
        say(f"{star} {r.name:<22} {r.size:>7,} phrases  {kind:<8} {' | '.join(r.templates):<24} {r.description}")
    say("(* = in the default set)")


@vocab.command("show")
@click.argument("name")
@click.option("--offset", default=0, type=click.IntRange(0))
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, MAX_PAGE_SIZE))
@click.option("--json", "as_json", is_flag=True)
@domain_errors
def vocab_show(name: str, offset: int, limit: int, as_json: bool) -> None:
    """Show a vocabulary's details and phrases.

    \b
    Example:
        clip-gaze vocab show movements --limit 10
    """
    from indexer.schema import PageQuery

    page = make_engine(None, progress=False).vocabulary_page(name, PageQuery(offset=offset, limit=limit))
    if as_json:
        say(page.model_dump_json())
        return
    row = page.vocabulary
    say(f"{row.name}: {row.size:,} phrases, templates {row.templates}, version {row.version}")
    say(f"  {row.description}")
    if row.source:
        say(f"  source: {row.source}\n  licence: {row.licence}")
    for p in page.phrases:
        ext = f"  [{p.external_id}]" if p.external_id else ""
        say(f"  {p.phrase}{ext}" + (f"  @{p.language}" if p.language else ""))
    if page.next_offset is not None:
        say(f"  … more with --offset {page.next_offset}")


def _read_items(file: str | None, terms: Sequence[str]) -> list[Any]:
    from indexer.catalog import file_format, parse_phrase_file

    items: list[Any] = list(terms)
    if file:
        try:
            text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise click.ClickException(shown(f"no such file: {file}")) from None
        except UnicodeDecodeError:
            raise click.ClickException(shown(f"{file} is not UTF-8 text")) from None
        items.extend(parse_phrase_file(text, file_format(file)))
    return items


@vocab.command("create")
@click.argument("name")
@click.option("--file", "-f", "file", type=click.Path(dir_okay=False, allow_dash=True), help="One term a line (.txt), or term,external_id,language rows (.csv/.tsv; or a header naming them); - for stdin.")
@click.option("--template", "-t", "templates", multiple=True, help="Phrase template with {} for the term, e.g. 'by {}'; may be repeated.")
@click.option("--description", "-d", default="", help="What the list is.")
@click.option("--private", is_flag=True, help="Seen through the API only by admin keys and keys granted it (`keys create --vocabularies`).")
@LANGUAGE_OPTION
@click.argument("terms", nargs=-1)
@MODEL_OPTION
@domain_errors
def vocab_create(name: str, file: str | None, templates: tuple[str, ...], description: str, private: bool,
                 language: str | None, terms: tuple[str, ...], model: str | None) -> None:
    """Create vocabulary NAME from a file and/or TERMS, embedding its phrases.

    \b
    Examples:
        clip-gaze vocab create local-artists --file artists.txt --template "by {}"
        clip-gaze vocab create iconography --file terms.csv     # term,external_id rows
        clip-gaze vocab create shapes "a red circle" "a blue square"
        clip-gaze vocab create vormen --language nl "een rode cirkel" "een blauw vierkant"
    """
    from indexer.schema import CreateVocabulary, parse

    body: dict[str, Any] = {"name": name, "phrases": _read_items(file, terms)}
    if templates:
        body["templates"] = list(templates)
    if description:
        body["description"] = description
    if private:
        body["private"] = True
    if language:
        body["language"] = language
    result = make_engine(model).create_vocabulary(parse(CreateVocabulary, body))
    say(f"created {name}: {result.added} phrases")
    _say_collisions(result.collisions)


@vocab.command("add")
@click.argument("name")
@click.argument("terms", nargs=-1)
@click.option("--file", "-f", "file", type=click.Path(dir_okay=False, allow_dash=True), help="As for `vocab create`.")
@LANGUAGE_OPTION
@MODEL_OPTION
@domain_errors
def vocab_add(name: str, terms: tuple[str, ...], file: str | None, language: str | None, model: str | None) -> None:
    """Add TERMS (and/or a file's) to a custom vocabulary; existing phrases are left as they are.

    \b
    Example:
        clip-gaze vocab add local-artists "jan smit" "anna de vries"
    """
    from indexer.schema import AddPhrases, parse

    items = _read_items(file, terms)
    if not items:
        raise click.UsageError("give terms or --file")
    body: dict[str, Any] = {"phrases": items, **({"language": language} if language else {})}
    result = make_engine(model).add_phrases(name, parse(AddPhrases, body))
    say(f"{name}: {result.added} added, {result.unchanged} already there (version {result.version})")
    _say_collisions(result.collisions)


def _say_collisions(collisions: Sequence[Any]) -> None:
    for c in collisions:
        say(f"  not stored (the model's tokenizer reads it as {c.kept!r}): {', '.join(repr(d) for d in c.dropped)}")


@vocab.command("import")
@click.argument("name")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.option("--format", "fmt", type=click.Choice(["skos", "iconclass"]), required=True,
              help="skos: RDF/XML or Turtle (by the file's suffix), prefLabel and altLabel per language, the concept URI "
                   "as external id; iconclass: notation|label lines of one language.")
@click.option("--languages", "-l", help="Comma-separated BCP-47 tags: SKOS labels in these only; an Iconclass file's "
                                        "language (else read from its name, e.g. txt_nl.txt).")
@click.option("--description", "-d", default="", help="For a vocabulary made by the import.")
@click.option("--json", "as_json", is_flag=True)
@MODEL_OPTION
@domain_errors
def vocab_import(name: str, file: str, fmt: str, languages: str | None, description: str, as_json: bool,
                 model: str | None) -> None:
    """Import a thesaurus FILE into vocabulary NAME (made if it does not exist); importing again adds nothing.

    \b
    Examples:
        clip-gaze vocab import aat aat-subset.ttl --format skos --languages nl,de,en
        clip-gaze vocab import iconclass txt_nl.txt --format iconclass
    """
    from indexer.schema.languages import split_languages
    from indexer.vocabularies.importers import import_phrases, read_file

    wanted = split_languages(languages)
    items = read_file(Path(file).read_bytes(), Path(file).name, fmt, wanted)
    engine = make_engine(model)
    report = import_phrases(engine.editor, name, items, fmt, description)
    if as_json:
        say(json.dumps(report.json_dict(), ensure_ascii=False))
        return
    by_language = ", ".join(f"{lang or 'no language'} {n:,}" for lang, n in sorted(report.languages.items()))
    say(f"{'created' if report.created else 'imported into'} {name}: {report.read:,} labels read ({by_language}); "
        f"{report.added:,} added, {report.unchanged:,} already there (version {report.version})")
    _say_collisions(report.collisions)


@vocab.command("remove")
@click.argument("name")
@click.argument("terms", nargs=-1)
@click.option("--external-id", "-e", "external_ids", multiple=True, help="Remove by external id; may be repeated.")
@domain_errors
def vocab_remove(name: str, terms: tuple[str, ...], external_ids: tuple[str, ...]) -> None:
    """Remove TERMS (every phrase made from them) or --external-id entries from a custom vocabulary.

    \b
    Example:
        clip-gaze vocab remove local-artists "jan smit" --external-id ULAN-500012345
    """
    from indexer.schema import RemovePhrases, parse

    body = {"terms": [t.strip() for t in terms] or None, "external_ids": [e.strip() for e in external_ids] or None}
    request = parse(RemovePhrases, {k: v for k, v in body.items() if v})
    result = make_engine(None, progress=False).remove_phrases(name, request)
    say(f"{name}: {result.removed} phrases removed (version {result.version})")


@vocab.command("delete")
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@domain_errors
def vocab_delete(name: str, yes: bool) -> None:
    """Delete a custom vocabulary and its phrases.

    \b
    Example:
        clip-gaze vocab delete local-artists --yes
    """
    engine = make_engine(None, progress=False)
    confirm_delete("vocabulary", name, f"{engine.vocabulary(name).size} phrases", yes)
    result = engine.delete_vocabulary(name)
    say(f"deleted {name} ({result.removed} phrases)")
