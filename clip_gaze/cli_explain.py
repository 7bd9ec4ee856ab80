"""`clip-gaze explain`: a map for each of the best phrases, written as overlay pictures."""

from __future__ import annotations

import re
from pathlib import Path

import click
from pydantic import TypeAdapter, ValidationError

from indexer.schema import Phrase, compare_phrases, invalid
from indexer.schema.explain import MAX_EXPLAIN_TOP_K

from .cli_common import MODEL_OPTION, VOCAB_OPTION, domain_errors, make_engine, say, split_vocabs

_PHRASE: TypeAdapter[str] = TypeAdapter(Phrase)


def slug(text: str, limit: int = 80) -> str:
    """'a red circle' → 'a-red-circle' (letters and digits of any script kept, lower case)."""
    return re.sub(r"[\W_]+", "-", text.lower()).strip("-")[:limit].strip("-") or "phrase"


@click.command()
@click.argument("image", type=click.Path(dir_okay=False, path_type=str))
@VOCAB_OPTION
@click.option("--phrase", "-p", "phrases", multiple=True,
              help="An ad-hoc phrase (repeat it): a softmax over exactly the phrases given, explained first.")
@click.option("--versus", help="Contrast: the best phrase of the first list rather than this one.")
@click.option("--top-k", "-k", default=3, show_default=True, type=click.IntRange(1, MAX_EXPLAIN_TOP_K),
              help="Phrases to explain per list.")
@click.option("--out", "-o", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the overlay pictures (made if missing).")
@MODEL_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object shaped like POST /v1/explain's answer.")
@domain_errors
def explain(image: str, vocab: tuple[str, ...], phrases: tuple[str, ...], versus: str | None, top_k: int, out: Path,
            model: str | None, as_json: bool) -> None:
    """Where in IMAGE each of the best phrases draws its share from: one overlay picture per phrase.

    A map splits the phrase's logit minus its list's probability-weighted mean logit (what moves its
    share) over the model's patch grid; red cells raise the share, blue ones lower it. It is the
    model's attribution, not a region the phrase "is" in. Without --vocab, only the --phrase list is
    explained if given, else the default set.

    \b
    Examples:
        clip-gaze explain painting.jpg --vocab movements --top-k 3 --out maps/
        CLIP_GAZE_MODEL=toy clip-gaze explain examples/red-circle.png --phrase "a red circle" \\
            --phrase "a red square" --versus "a blue circle" --out maps/
    """
    from indexer.explain.maps import explain_image

    wanted = compare_phrases([p.strip() for p in phrases]) if phrases else None
    vs = None
    if versus is not None:
        try:
            vs = _PHRASE.validate_python(versus.strip())
        except ValidationError as exc:
            raise invalid(exc, ("versus",)) from None
    engine = make_engine(model)
    found = explain_image(engine, engine.read(image), split_vocabs(vocab), wanted, top_k, vs, persist=True)
    out.mkdir(parents=True, exist_ok=True)
    answer = found.answer
    several = len(answer.results) > 1
    written: dict[tuple[str, int], Path] = {}
    for key, result in answer.results.items():
        for rank, m in enumerate(result.matches):
            path = out / f"{f'{slug(key)}-' if several else ''}{rank + 1}-{slug(m.phrase)}.png"
            found.overlay(key, rank).save(path)
            written[(key, rank)] = path
    contrast_path = None
    if answer.contrast is not None:
        c = answer.contrast
        contrast_path = out / f"contrast-{slug(c.phrase, 60)}-rather-than-{slug(c.versus, 60)}.png"
        found.overlay_contrast().save(contrast_path)
    if as_json:
        say(answer.model_copy(update={"file": image}).model_dump_json())
        return
    g, img = answer.grid, answer.image
    say(f"{image}  {img.width}×{img.height}  model {answer.model.preset or answer.model.arch}  "
               f"grid {g.rows}×{g.cols} over [{', '.join(f'{v:g}' for v in g.box)}]  "
               f"(last {answer.layers} blocks decomposed)")
    for key, result in answer.results.items():
        say(f"  {key}: relative to {result.softmax_over:,} phrases")
        for rank, m in enumerate(result.matches):
            share = f"{100 * m.probability:6.2f}%" if m.probability >= 5e-5 else " <0.01%"
            say(f"    {rank + 1}. {share}  {m.phrase}   peaks at ({m.peak.x:g}, {m.peak.y:g})  "
                       f"→ {written[(key, rank)]}")
    if answer.contrast is not None:
        c = answer.contrast
        say(f"  {c.phrase} rather than {c.versus}: logit difference {c.logit_difference:+.2f}, "
                   f"peaks at ({c.peak.x:g}, {c.peak.y:g})  → {contrast_path}")
