"""The wide CSV of `collection analyze --layout wide`, for systems that take spreadsheets keyed by
object number: one row a picture (`external_id`, `source`), then for each vocabulary its top term,
that term's probability and the phrase's external id (`<vocabulary>:term`, `<vocabulary>:probability`,
`<vocabulary>:phrase_external_id`), and the verdict a person gave that term (`<vocabulary>:verdict`,
empty without one). The same scores as the long rows' rank 1. Every text cell goes through
`spreadsheet.safe_cell`, so no cell runs as a formula; written atomically."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ..atomic import atomic_path
from ..errors import InvalidInput
from ..spreadsheet import safe_cell

if TYPE_CHECKING:  # pragma: no cover
    from ..collections.local import Collections

FIELDS = ("term", "probability", "phrase_external_id", "verdict")


def header(vocabularies: Sequence[str]) -> list[str]:
    return ["external_id", "source", *(f"{v}:{f}" for v in vocabularies for f in FIELDS)]


def write_wide(collections: "Collections", name: str, vocabularies: Sequence[str] | None, path: str | Path) -> int:
    """Write the wide CSV of collection `name` to `path` (a .csv); returns how many pictures it holds."""
    target = Path(path)
    if target.suffix.lower() != ".csv":
        raise InvalidInput(f"{target}: the wide layout is a .csv file", code="invalid_output")
    if not target.parent.exists():
        raise InvalidInput(f"{target}: no such folder {target.parent}", code="invalid_output")
    names = collections.engine.resolve(list(vocabularies) if vocabularies else None)
    blocks = collections.analyze_blocks(name, names, 1)
    count = 0
    with atomic_path(target) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(header(names))
        chunk: list[list[dict[str, object]]] = []
        for block in blocks:
            chunk.append(block.to_pylist())
            if len(chunk) < len(names):
                continue
            for rows in zip(*chunk):  # a picture's top match in each vocabulary, in order
                cells: list[object] = [safe_cell(rows[0]["external_id"] or ""), safe_cell(rows[0]["source"])]
                for row in rows:
                    cells += [safe_cell(row["term"]), row["probability"], safe_cell(row["phrase_external_id"] or ""),
                              row.get("verdict") or ""]
                out.writerow(cells)
                count += 1
            chunk = []
    return count


__all__ = ["FIELDS", "header", "write_wide"]
