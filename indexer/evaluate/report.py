"""The evaluation report: `metrics.json`, `per_class.csv`, `predictions.csv` and `report.html`, one
self-contained page that opens from disk (plots are PNGs drawn with matplotlib's Agg canvas and
embedded as base64; thumbnails are data: URLs; no script, no external file)."""

from __future__ import annotations

import base64
import csv
import html
import io
from pathlib import Path
from typing import Any, Sequence

from ..atomic import atomic_path, write_text
from ..schema.evaluate import Evaluation, Interval, Metrics
from ..spreadsheet import safe_cell

FILES = ("metrics.json", "per_class.csv", "predictions.csv", "report.html")
MAX_RECALL_BARS = 50

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2327;background:#fafafa;margin:0}
main{max-width:1100px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:1.6em;margin:0 0 6px}h2{font-size:1.2em;margin:32px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.lede{color:#444;margin:4px 0 14px}.note{color:#555;font-size:.92em;max-width:60em}
table{border-collapse:collapse;margin:8px 0;background:#fff}th,td{padding:4px 10px;border:1px solid #e2e2e2;text-align:left}
th{background:#f0f2f4}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.ci{color:#666;font-size:.9em}.plots{display:flex;flex-wrap:wrap;gap:18px}
figure{margin:0;background:#fff;border:1px solid #e2e2e2;padding:8px}figcaption{font-size:.88em;color:#555;max-width:52em}
.pairs{display:flex;flex-wrap:wrap;gap:14px}.pair{background:#fff;border:1px solid #e2e2e2;padding:6px 10px 10px}
.pair h3{font-size:1em;margin:4px 0 8px}.thumbs{display:flex;gap:8px}.thumbs figure{width:130px;border:0;padding:0}
.thumbs img{width:128px;height:128px;object-fit:contain;background:#eee;display:block}
.thumbs figcaption{overflow-wrap:anywhere}.bad{color:#a12}.good{color:#185}
"""


def _png(fig: Any) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def confusion_plot(metrics: Metrics, title: str) -> str | None:
    """The confusion matrix, each row as shares of its label's pictures (counts written in small ones)."""
    import numpy as np
    from matplotlib.figure import Figure

    c = metrics.confusion
    if c is None or not c.labels:
        return None
    counts = np.array(c.matrix, dtype=float)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    n = len(c.labels)
    side = min(11.0, 2.5 + 0.26 * n)
    fig = Figure(figsize=(min(12.0, 2.5 + 0.26 * len(c.predicted)) + 1.2, side))
    ax = fig.add_subplot()
    im = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(c.predicted)), labels=c.predicted, rotation=60, ha="right", fontsize=8 if n > 20 else 9)
    ax.set_yticks(range(n), labels=c.labels, fontsize=8 if n > 20 else 9)
    ax.set_xlabel("the model's best term")
    ax.set_ylabel("label")
    ax.set_title(title, fontsize=10)
    if n <= 40:
        for i in range(n):
            for j in range(len(c.predicted)):
                if counts[i, j]:
                    ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=7,
                            color="white" if shares[i, j] > 0.6 else "#123")
    fig.colorbar(im, ax=ax, fraction=0.04, label="share of the label's pictures")
    return _png(fig)


def reliability_plot(metrics: Metrics, corrected: Metrics | None) -> str | None:
    """Reliability diagram: pictures binned by their best term's probability; in each bin, how often the
    best term was right (bars) against the bin's mean probability (the gap, outlined)."""
    from matplotlib.figure import Figure

    if not metrics.calibration:
        return None
    shown = [(metrics, "#1f5fa8", "plain")] + ([(corrected, "#c0562b", "after the correction")] if corrected else [])
    fig = Figure(figsize=(5.6, 5.4))
    ax, hist = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], ls="--", color="#888", lw=1, label="perfectly calibrated")
    width = 0.1 / len(shown)
    for k, (m, colour, name) in enumerate(shown):
        bins = [b for b in m.calibration if b.count and b.accuracy is not None and b.confidence is not None]
        x = [b.low + width * (k + 0.5) for b in bins]
        ece = f" (ECE {m.ece.value:.3f})" if m.ece.value is not None else ""
        ax.bar(x, [b.accuracy for b in bins], width=width * 0.95, color=colour, alpha=0.85, label=f"{name}{ece}")
        ax.bar(x, [float(b.confidence or 0) - float(b.accuracy or 0) for b in bins], bottom=[b.accuracy for b in bins],
               width=width * 0.95, fill=False, edgecolor=colour, hatch="//", lw=0.8)
        hist.bar(x, [b.count for b in bins], width=width * 0.95, color=colour, alpha=0.85)
    ax.set_ylabel("share right")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title("Reliability of the best term's probability", fontsize=10)
    hist.set_xlabel("probability of the best term (bins of 0.1)")
    hist.set_ylabel("pictures")
    return _png(fig)


def recall_plot(metrics: Metrics) -> str | None:
    """Each label term's recall, worst first."""
    from matplotlib.figure import Figure

    rows = sorted(metrics.per_class, key=lambda c: (c.recall, c.term))[:MAX_RECALL_BARS]
    if not rows:
        return None
    fig = Figure(figsize=(6.4, 1.0 + 0.24 * len(rows)))
    ax = fig.add_subplot()
    ax.barh(range(len(rows)), [c.recall for c in rows], color="#3b7dd8")
    ax.set_yticks(range(len(rows)), labels=[f"{c.term} ({c.support})" for c in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("recall (share of the term's pictures where it is the best term)")
    ax.set_title("Recall per term" + (f", the {len(rows)} lowest" if len(metrics.per_class) > len(rows) else ""), fontsize=10)
    return _png(fig)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _cell(interval: Interval | None, fmt: Any) -> str:
    if interval is None or interval.value is None:
        return '<td class="num">–</td>'
    ci = (f' <span class="ci">[{fmt(interval.low)} – {fmt(interval.high)}]</span>' if interval.low is not None else "")
    return f'<td class="num">{fmt(interval.value)}{ci}</td>'


def _figures_table(ev: Evaluation) -> str:
    e = html.escape
    m, r = ev.metrics, ev.relative.metrics if ev.relative else None
    rows = [
        ("top-1 accuracy", "top1", _pct, "the best term is one of the picture's labels"),
        ("top-5 accuracy", "top5", _pct, "a label is among the five best terms"),
        ("balanced accuracy", "balanced_accuracy", _pct, "mean over label terms of their recall"),
        ("macro-F1", "macro_f1", _num, "mean over label terms of F1"),
        ("mean average precision", "mean_average_precision", _num, "multi-label sets: ranking of each term's pictures"),
        ("expected calibration error", "ece", _num, "gap between the best term's probability and how often it is right"),
        ("Spearman's ρ with ratings", "spearman", _num, "rank agreement of ratings with the term's probability"),
    ]
    head = "<tr><th>figure</th><th>plain</th>" + ("<th>after the correction</th>" if r else "") + "<th>meaning</th></tr>"
    body = []
    for name, key, fmt, meaning in rows:
        if getattr(m, key) is None and (r is None or getattr(r, key) is None):
            continue
        cells = _cell(getattr(m, key), fmt) + (_cell(getattr(r, key), fmt) if r else "")
        body.append(f"<tr><th>{e(name)}</th>{cells}<td>{e(meaning)}</td></tr>")
    return f'<table id="figures-table">{head}{"".join(body)}</table>'


def _winners(ev: Evaluation) -> str:
    e = html.escape

    def table(m: Metrics, caption: str) -> str:
        rows = "".join(f"<tr><td>{e(w.term)}</td><td class='num'>{w.wins}</td><td class='num'>{_pct(w.share)}</td>"
                       f"<td class='num'>{w.labelled}</td></tr>" for w in m.winners)
        return (f"<table><caption>{e(caption)}</caption><tr><th>term</th><th>wins</th><th>share</th>"
                f"<th>of which labelled so</th></tr>{rows}</table>")

    out = table(ev.metrics, "plain")
    if ev.relative:
        out += table(ev.relative.metrics, f"after the {ev.relative.method} correction")
    return f'<div class="plots">{out}</div>'


def _confusions(m: Metrics, thumbs: dict[str, str]) -> str:
    e = html.escape
    if not m.worst_confusions:
        return "<p>No picture was wrong.</p>"
    parts = []
    for pair in m.worst_confusions:
        figs = []
        for ex in pair.examples:
            src = thumbs.get(ex.source)
            img = f'<img alt="{e(ex.external_id or ex.source)}" src="{src}">' if src else '<div class="ci">(no thumbnail)</div>'
            figs.append(f"<figure>{img}<figcaption>{e(ex.external_id or Path(ex.source).name)} · {_pct(ex.probability)}</figcaption></figure>")
        parts.append(f'<div class="pair"><h3>{e(pair.label)} → <span class="bad">{e(pair.term)}</span> '
                     f'<span class="ci">({pair.count} picture{"s" if pair.count != 1 else ""})</span></h3>'
                     f'<div class="thumbs">{"".join(figs)}</div></div>')
    return f"<div class='pairs'>{''.join(parts)}</div>"


def _per_class(ev: Evaluation) -> str:
    e = html.escape
    rel = {c.term: c for c in ev.relative.metrics.per_class} if ev.relative else {}
    head = ("<tr><th>term</th><th>pictures</th><th>predicted</th><th>precision</th><th>recall</th><th>F1</th>"
            + ("<th>average precision</th>" if ev.kind == "multi-label" else "")
            + ("<th>recall after the correction</th>" if rel else "") + "</tr>")
    rows = []
    for c in sorted(ev.metrics.per_class, key=lambda c: (-c.support, c.term)):
        ap = f"<td class='num'>{_num(c.average_precision)}</td>" if ev.kind == "multi-label" else ""
        rr = f"<td class='num'>{_pct(rel[c.term].recall)}</td>" if c.term in rel else ("<td>–</td>" if rel else "")
        rows.append(f"<tr><td>{e(c.term)}</td><td class='num'>{c.support}</td><td class='num'>{c.predicted}</td>"
                    f"<td class='num'>{_pct(c.precision)}</td><td class='num'>{_pct(c.recall)}</td>"
                    f"<td class='num'>{_num(c.f1)}</td>{ap}{rr}</tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _img(src: str | None, alt: str, caption: str) -> str:
    if src is None:
        return ""
    return f'<figure><img alt="{html.escape(alt)}" src="{src}"><figcaption>{html.escape(caption)}</figcaption></figure>'


def render(ev: Evaluation, thumbs: dict[str, str]) -> str:
    """The report page as one string."""
    e = html.escape
    m = ev.metrics
    model = ev.model.preset or ev.model.arch
    rel = ev.relative
    lede = (f"{e(Path(ev.labels).name)} against the vocabulary <b>{e(ev.vocabulary.name)}</b> "
            f"({ev.softmax_over:,} phrases, {ev.terms:,} terms), model <b>{e(model)}</b>. "
            f"{ev.evaluated:,} of {ev.size:,} pictures read, {m.pictures:,} of them with labels in the vocabulary; "
            f"{ev.failed:,} failed, {len(ev.missing_labels):,} labels are not terms of the vocabulary.")
    if rel:
        lede += (f" The correction (<b>{e(rel.method)}</b>) sets each phrase against its scores over the "
                 f"{rel.reference_pictures:,} pictures of the collection <b>{e(rel.collection)}</b>.")
    plots = [
        _img(confusion_plot(m, "plain"), "confusion matrix", "Confusion matrix: rows are labels, columns the model's best term "
             f"(the {len(m.confusion.labels) if m.confusion else 0} most frequent labels, then the terms that are no label but "
             "win most often, a hub among them; '(any other term)' gathers the rest of the vocabulary). Colour: share of the "
             "row's pictures."),
        _img(reliability_plot(m, rel.metrics if rel else None), "reliability diagram",
             "Reliability diagram: pictures grouped by the probability of their best term; bars show how often it was right, "
             "the hatched box the gap to the bin's mean probability (a calibrated model's bars reach the diagonal). Below, "
             "how many pictures fall in each bin."),
        _img(recall_plot(m), "recall per term", "Recall per term (pictures in brackets), worst first."),
    ]
    if rel:
        plots.insert(1, _img(confusion_plot(rel.metrics, f"after the {rel.method} correction"), "confusion matrix after the correction",
                             "The same confusion matrix after the correction."))
    sections = [
        f"<h1>Does CLIP agree with the labels?</h1><p class='lede'>{lede}</p>",
        "<h2>Figures</h2>", _figures_table(ev),
        f"<p class='note'>Intervals: bootstrap 95 % ({ev.bootstrap.resamples:,} resamples of the pictures, seed "
        f"{ev.bootstrap.seed}). Every probability is a relative likelihood within this vocabulary: the softmax over its "
        f"{ev.softmax_over:,} phrases. {e(ev.term_probability)} It says which term CLIP prefers among those offered, not "
        "how true a term is, and it changes when the list changes. Calibration asks whether a best term given 80 % is right "
        "80 % of the time. A <em>hub</em> is a phrase that wins for almost every picture, whatever it shows; the table of "
        "winners below shows whether one dominates.</p>",
        "<h2>Plots</h2>", f"<div class='plots'>{''.join(p for p in plots if p)}</div>",
        "<h2>Terms that win most often</h2>", _winners(ev),
        "<h2>Worst confusions</h2>", _confusions(m, thumbs),
    ]
    if rel:
        sections += ["<h2>Worst confusions after the correction</h2>", _confusions(rel.metrics, thumbs)]
    sections += ["<h2>Per term</h2>", _per_class(ev)]
    if ev.missing_labels:
        items = "".join(f"<li>{e(x.label)} <span class='ci'>({x.pictures} picture{'s' if x.pictures != 1 else ''})</span></li>"
                        for x in ev.missing_labels)
        sections += ["<h2>Labels that are not terms of the vocabulary</h2>", f"<ul id='missing'>{items}</ul>"]
    if ev.errors:
        items = "".join(f"<li>{e(x.source)}: <span class='bad'>{e(x.error_code or '')}</span> {e(x.error or '')}</li>" for x in ev.errors)
        sections += ["<h2>Pictures that could not be read</h2>", f"<ul id='errors'>{items}</ul>"]
    return (f"<!doctype html>\n<html lang='en'><head><meta charset='utf-8'><meta name='viewport' content='width=device-width'>"
            f"<title>clip-gaze evaluation: {e(ev.vocabulary.name)}</title><style>{CSS}</style></head>"
            f"<body><main>{''.join(sections)}<p class='ci'>Made by clip-gaze evaluate; the figures are in metrics.json, per "
            f"term in per_class.csv, per picture in predictions.csv.</p></main></body></html>\n")


def _csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows([safe_cell(v) for v in row] for row in rows)


def write(ev: Evaluation, out: Path, thumbs: dict[str, str]) -> list[str]:
    """Write the report's four files into `out` (created if needed), each whole or not at all; returns
    their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [str(out / f) for f in FILES]
    ev.report = paths
    rel = {c.term: c for c in ev.relative.metrics.per_class} if ev.relative else {}
    _csv(out / "per_class.csv",
         ["term", "support", "predicted", "precision", "recall", "f1", "average_precision",
          "relative_predicted", "relative_precision", "relative_recall", "relative_f1"],
         [[c.term, c.support, c.predicted, c.precision, c.recall, c.f1, c.average_precision,
           *((r.predicted, r.precision, r.recall, r.f1) if (r := rel.get(c.term)) else ("", "", "", ""))]
          for c in ev.metrics.per_class])
    _csv(out / "predictions.csv",
         ["source", "external_id", "sha256", "labels", "term", "phrase", "probability", "correct",
          "relative_term", "relative_probability"],
         [[p.source, p.external_id or "", p.sha256, "|".join(p.labels), p.term, p.phrase, p.probability,
           "" if p.correct is None else p.correct, p.relative.term if p.relative else "",
           p.relative.probability if p.relative else ""] for p in ev.predictions])
    write_text(out / "metrics.json", ev.model_dump_json(indent=2))
    write_text(out / "report.html", render(ev, thumbs))
    return paths
