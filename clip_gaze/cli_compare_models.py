"""`clip-gaze analyze IMAGE --model a,b`: each picture under several models side by side, with their rank
agreement (as POST /v1/compare-models answers it). Parses and formats only; the work is
`indexer.multimodel.side_by_side`'s."""

from __future__ import annotations

from typing import Any, Sequence


from indexer.models.registry import public_model_name as short

from .cli_common import each_image, make_engine


def split_models(model: str | None) -> list[str]:
    """`--model` as names: several when comma-separated."""
    return list(dict.fromkeys(m.strip() for m in (model or "").split(",") if m.strip()))


def analyze_side_by_side(images: Sequence[str], models: Sequence[str], vocabularies: list[str] | None, top_k: int,
                         as_json: bool) -> None:
    from indexer.multimodel.side_by_side import compare_models

    engines = [(name, make_engine(name)) for name in models]
    names = engines[0][1].resolve(vocabularies)
    for _, engine in engines:
        _ = engine.model  # a model problem stops here, once
    each_image(images, lambda path: compare_models(engines, path, names, None, top_k),
               lambda answer: format_side_by_side(answer["file"], answer), as_json, "analysed")


def format_side_by_side(path: str, answer: Any) -> str:
    """Each list: the models' best phrases in columns, then every pair's agreement over the whole list (a
    checkpoint named by its file name, to keep the columns readable)."""
    img = answer.image
    lines = [f"{path}  {img.width}×{img.height}  {len(answer.models)} models side by side "
             "(each share is within the list, under that model)"]
    width = 38
    for vocab in answer.models[0].results:
        first = answer.models[0].results[vocab]
        lines.append(f"  {vocab}: relative to {first.softmax_over:,} phrases")
        lines.append("    " + "".join(f"{short(r.name)[:width - 2]:<{width}}" for r in answer.models).rstrip())
        columns = [r.results[vocab].matches for r in answer.models]
        for row in range(max(len(c) for c in columns)):
            cells = []
            for matches in columns:
                if row < len(matches):
                    m = matches[row]
                    share = f"{100 * m.probability:6.2f}%" if m.probability >= 5e-5 else " <0.01%"
                    cells.append(f"{share} {m.phrase}"[:width - 2].ljust(width))
                else:
                    cells.append(" " * width)
            lines.append("    " + "".join(cells).rstrip())
        for pair in answer.agreement.get(vocab, []):
            rho = "n/a" if pair.spearman is None else f"{pair.spearman:+.3f}"
            lines.append(f"    {short(pair.models[0])} vs {short(pair.models[1])}: Spearman's rho {rho} over the whole list, "
                         f"top-{pair.k} overlap {pair.top_k_overlap:.0%} ({len(pair.shared)} of {pair.k})")
    return "\n".join(lines)
