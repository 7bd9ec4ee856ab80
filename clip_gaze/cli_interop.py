"""`clip-gaze collection annotations` and `collection review`: a collection's matches handed back as
IIIF annotation pages, and people's verdicts on them (the library is `indexer.interop`)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import click

from indexer.schema import MAX_TOP_K

from .cli_common import MODEL_OPTION, VOCAB_OPTION, domain_errors, load_settings, make_collections, say, split_vocabs

DEFAULT_BASE = "http://127.0.0.1:8000"  # `clip-gaze serve`'s own address


def page_file(manifest: str | None) -> str:
    """A page's file name: `pictures.json` for the pictures read from no manifest; for a manifest, its
    URL's last readable words and a short hash of the whole URL (two manifests never share a file)."""
    if manifest is None:
        return "pictures.json"
    import hashlib

    words = re.sub(r"[^A-Za-z0-9]+", "-", manifest.split("://", 1)[-1]).strip("-")[-48:].strip("-")
    return f"manifest-{words}-{hashlib.sha256(manifest.encode()).hexdigest()[:10]}.json"


@click.command("annotations")
@click.argument("name")
@VOCAB_OPTION
@click.option("--top-k", "-k", default=3, show_default=True, type=click.IntRange(1, MAX_TOP_K), help="Matches per picture and vocabulary.")
@click.option("--min-probability", default=0.0, show_default=True, type=click.FloatRange(0.0, 1.0),
              help="Leave out matches below this probability.")
@click.option("--regions", is_flag=True, help="Target the region where each match's explanation peaks "
              "(each picture is read again and explained).")
@click.option("--base-url", help=f"The service's address, for the pages' and annotations' ids (default: "
              f"$CLIP_GAZE_PUBLIC_URL, else {DEFAULT_BASE}).")
@click.option("--out", "-o", "out", required=True, type=click.Path(file_okay=False), help="The folder to write the pages to.")
@MODEL_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: the pages written.")
@domain_errors
def annotations_command(name: str, vocab: tuple[str, ...], top_k: int, min_probability: float, regions: bool,
                base_url: str | None, out: str, model: str | None, as_json: bool) -> None:
    """Write NAME's matches as IIIF Presentation 3 annotation pages (W3C Web Annotations, JSON-LD).

    One page per IIIF manifest the pictures were read from (each annotation targets its canvas), and
    `pictures.json` for the others (targeting the picture's URL, or its external_id, or its record
    under the service). Each annotation holds the term, the score in clip-gaze's context
    (probability, softmax_over, vocabulary, rank: a relative likelihood within the list, not a
    confidence) and, with --regions, the region where its explanation peaks. A term a person
    rejected is left out; one accepted is `classifying`.

    \b
    Examples:
        clip-gaze collection annotations paintings --vocab movements -k 3 --out annotations/
        clip-gaze collection annotations paintings --vocab iconclass --regions --min-probability 0.2 --out annotations/
    """
    from indexer.atomic import atomic_path
    from indexer.interop.annotations import Annotator, Request, pages

    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise click.ClickException(f"{out} is not a folder")
    base = base_url or load_settings().public_url or DEFAULT_BASE
    names = split_vocabs(vocab)
    annotator = Annotator(make_collections(model), name, Request(tuple(names) if names else None, top_k, min_probability,
                                                                 None, regions), base, every=True)
    found = pages(annotator)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for manifest, page in sorted(found.items(), key=lambda kv: (kv[0] is not None, kv[0] or "")):
        path = folder / page_file(manifest)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(page, ensure_ascii=False, indent=1), encoding="utf-8")
        written.append({"manifest": manifest, "file": str(path), "id": page["id"], "annotations": len(page["items"])})
    if as_json:
        say(json.dumps({"ok": True, "collection": name, "pages": written}, ensure_ascii=False))
        return
    lines = [f"{name}: {sum(p['annotations'] for p in written):,} annotations in {len(written)} pages"]
    lines += [f"  {p['file']}  {p['annotations']:,}  {p['manifest'] or '(pictures read from no manifest)'}" for p in written]
    say("\n".join(lines))


@click.command("review")
@click.argument("name")
@click.argument("picture")
@click.option("--vocab", "-v", "vocabulary", required=True, help="The vocabulary of the term.")
@click.option("--phrase", "-p", required=True, help="A phrase of the vocabulary, or its term.")
@click.option("--verdict", required=True, type=click.Choice(["accepted", "rejected"]))
@click.option("--note", help="Why, in your words.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (fields as in the REST answer).")
@domain_errors
def review(name: str, picture: str, vocabulary: str, phrase: str, verdict: str, note: str | None, as_json: bool) -> None:
    """Record a person's verdict on a suggestion: the term of PHRASE for PICTURE of collection NAME.

    PICTURE is the sha256 of the picture's bytes, or its external_id in the collection. A later
    verdict on the same term replaces it. Verdicts come back in `collection analyze` (`verdict`), in
    annotation pages, and feed `clip-gaze evaluate --from-reviews`.

    \b
    Examples:
        clip-gaze collection review paintings OBJ-1234 --vocab movements --phrase cubism --verdict accepted
        clip-gaze collection review paintings 9aeb7c97… --vocab movements --phrase fauvism --verdict rejected --note "a copy"
    """
    from indexer.interop.reviews import review as record
    from indexer.schema import parse
    from indexer.schema.interop import ReviewAnswer, ReviewRequest

    collections = make_collections(None, progress=False)
    body: dict[str, Any] = {"vocabulary": vocabulary.strip(), "phrase": phrase.strip(), "verdict": verdict}
    if note:
        body["note"] = note.strip()
    request = parse(ReviewRequest, body)
    from indexer.store.reviews import Reviews

    sha = Reviews(collections.engine.store).picture_sha(collections.images.get(name).id, picture.strip())
    found = record(collections, name, sha, request)
    if as_json:
        say(ReviewAnswer(review=found).model_dump_json())
    else:
        say(f"{name}: {found.term!r} of {found.vocabulary} {found.verdict} for {sha[:12]}")

