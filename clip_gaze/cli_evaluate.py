"""`clip-gaze evaluate`: how a vocabulary's answers agree with human labels or ratings."""

from __future__ import annotations

from typing import Any

import click

from indexer.schema import DEFAULT_HUB_METHOD, HUB_METHODS

from .cli_common import MODEL_OPTION, domain_errors, make_engine, progress_for, say


def _bar(total: int, desc: str) -> Any:
    return progress_for(total, desc, unit=" pictures")


def _fmt(interval: Any, percent: bool) -> str:
    if interval is None or interval.value is None:
        return "–"
    f = (lambda v: f"{100 * v:.1f}%") if percent else (lambda v: f"{v:.3f}")
    return f(interval.value) + (f"  [{f(interval.low)}–{f(interval.high)}]" if interval.low is not None else "")


def format_evaluation(ev: Any) -> str:
    m = ev.metrics
    model = ev.model.preset or ev.model.arch
    lines = [f"{ev.labels} against {ev.vocabulary.name} ({ev.softmax_over:,} phrases, {ev.terms:,} terms), model {model}: "
             f"{ev.evaluated:,} of {ev.size:,} pictures evaluated, {ev.failed:,} failed ({ev.kind})"]
    columns = [("plain", m)] + ([(f"{ev.relative.method} vs {ev.relative.collection} ({ev.relative.reference_pictures:,} pictures)",
                                  ev.relative.metrics)] if ev.relative else [])
    rows = [("top-1 accuracy", "top1", True), ("top-5 accuracy", "top5", True), ("balanced accuracy", "balanced_accuracy", True),
            ("macro-F1", "macro_f1", False), ("mean average precision", "mean_average_precision", False),
            ("calibration error (ECE)", "ece", False), ("Spearman with ratings", "spearman", False)]
    for title, metrics in columns:
        lines.append(f"  {title}: {metrics.pictures:,} labelled pictures" + (f", {metrics.rated_pairs:,} rated pairs" if metrics.rated_pairs else ""))
        for name, key, percent in rows:
            value = getattr(metrics, key)
            if value is not None and value.value is not None:
                lines.append(f"    {name:<26} {_fmt(value, percent)}")
        if metrics.winners:
            w = metrics.winners[0]
            lines.append(f"    most frequent best term    {w.term} ({w.wins:,} pictures, {100 * w.share:.1f}%)")
    lines.append(f"  intervals: bootstrap 95% over pictures ({ev.bootstrap.resamples:,} resamples, seed {ev.bootstrap.seed})")
    if ev.missing_labels:
        shown = ", ".join(f"{x.label} ({x.pictures})" for x in ev.missing_labels[:8])
        more = f" and {len(ev.missing_labels) - 8} more" if len(ev.missing_labels) > 8 else ""
        lines.append(f"  not terms of {ev.vocabulary.name}: {shown}{more}")
    for err in ev.errors[:8]:
        lines.append(f"  failed: {err.source}: {err.error}")
    if len(ev.errors) > 8:
        lines.append(f"  … {len(ev.errors) - 8} more failures (see --json or the report)")
    if ev.report:
        lines.append(f"  report: {next(p for p in ev.report if p.endswith('report.html'))}")
    return "\n".join(lines)


@click.command("evaluate")
@click.argument("labels", required=False, type=click.Path(dir_okay=False, path_type=str))
@click.option("--from-reviews", "from_reviews", metavar="COLLECTION",
              help="Instead of LABELS: the terms people accepted for this collection's pictures (`collection review`).")
@click.option("--vocab", "-v", "vocab", required=True, help="The vocabulary whose terms the labels are.")
@click.option("--relative-to", "relative_to", help="A collection to set each phrase's scores against (the hub correction); "
              "the figures are given with and without it.")
@click.option("--method", type=click.Choice(list(HUB_METHODS)), default=DEFAULT_HUB_METHOD, show_default=True,
              help="The correction with --relative-to: a z-score over the reference pictures, or NNN (Chowdhury et al. 2024).")
@click.option("--report", "report_dir", type=click.Path(file_okay=False, path_type=str),
              help="Write metrics.json, per_class.csv, predictions.csv and report.html (one self-contained page) here.")
@click.option("--resamples", default=1000, show_default=True, type=click.IntRange(0, 100_000),
              help="Bootstrap resamples for the 95% intervals (0: none).")
@click.option("--seed", default=0, show_default=True, type=int, help="The bootstrap's seed.")
@MODEL_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (fields as in the REST answers).")
@domain_errors
def evaluate(labels: str | None, from_reviews: str | None, vocab: str, relative_to: str | None, method: str, report_dir: str | None, resamples: int,
             seed: int, model: str | None, as_json: bool) -> None:
    """Measure how a vocabulary's answers agree with human LABELS: accuracy, F1, calibration, mAP, Spearman.

    LABELS is a CSV/TSV or JSON Lines file with an `image` column (a path relative to the file, an
    absolute path, or a URL), an optional `external_id`, and either `label` (a term of the
    vocabulary; `|` separates several) or `term` and `rating` (graded judgements, one row per picture
    and term). A term's probability is the sum of its phrases' probabilities. Pictures are embedded
    once and stored, so evaluating another vocabulary encodes nothing. Labels missing from the
    vocabulary and pictures that fail are listed, never fatal.

    \b
    Examples:
        printf 'image,label\\nscans/1.jpg,portrait\\nscans/2.jpg,still life|vanitas\\n' > labels.csv
        clip-gaze evaluate labels.csv --vocab genres --report genres-report/
        clip-gaze evaluate labels.csv --vocab genres --relative-to paintings --json > genres.json
        clip-gaze evaluate --from-reviews paintings --vocab genres
    """
    from indexer.evaluate.run import evaluate as run

    names = [n.strip() for n in vocab.split(",") if n.strip()]
    if len(names) != 1:
        raise click.ClickException("evaluate takes one vocabulary (--vocab NAME)")
    if (labels is None) == (from_reviews is None):
        raise click.UsageError("give a LABELS file or --from-reviews COLLECTION (one of them)")
    engine = make_engine(model)
    source: Any = labels
    if from_reviews is not None:
        from indexer.evaluate.labels import from_reviews as reviewed

        source = reviewed(engine.images, from_reviews.strip(), names[0])
    answer = run(engine, source, names[0], relative_to=relative_to.strip() if relative_to else None, method=method,
                 resamples=resamples, seed=seed, report_dir=report_dir, progress=None if as_json else _bar)
    say(answer.model_dump_json() if as_json else format_evaluation(answer))
