"""A prompt for every picture of a collection, from the stored embeddings (no picture is read again):
rows to a CSV or JSON Lines file and, if asked, one `.txt` per picture named after it (what training
tools such as kohya_ss read beside each picture). Resumable as `collection add` is: a rerun with the same
output skips the pictures the file already holds and appends the others."""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator
from urllib.parse import unquote, urlsplit

from ..atomic import write_text
from ..errors import InvalidInput
from ..schema.analysis import ImageInfo
from ..spreadsheet import safe_cell
from .modes import Options, plan, prompt_for

if TYPE_CHECKING:  # pragma: no cover
    from ..engine import Engine

COLUMNS = ("source", "external_id", "sha256", "mode", "prompt", "cosine", "tokens")
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


@dataclass
class Report:
    collection: str
    out: str
    done: int = 0
    skipped: int = 0  # already in the output file
    sidecars: int = 0


def sidecar_name(source: str, sha256: str, taken: set[str]) -> str:
    """`picture.jpg` → `picture.txt` (a URL: its last path segment); a second picture of the same name
    gets its hash's first 8 digits."""
    path = unquote(urlsplit(source).path) if re.match(r"^https?://", source) else source
    stem = re.sub(r"[\\/:*?\"<>|\x00-\x1f]+", "_", Path(path).stem).strip(". ") or sha256[:16]
    name = f"{stem}.txt"
    if name in taken:
        name = f"{stem}-{sha256[:8]}.txt"
    taken.add(name)
    return name


def _done(out: Path, kind: str) -> set[str]:
    if not out.is_file():
        return set()
    with out.open(encoding="utf-8", newline="") as fh:
        if kind == "csv":
            return {row["source"] for row in csv.DictReader(fh) if row.get("source")}
        found = set()
        for line in fh:
            try:
                found.add(json.loads(line)["source"])
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by an interruption: its picture is done again
        return found


def interrogate_collection(engine: "Engine", name: str, options: Options, out: Path, sidecars: Path | None = None,
                           progress: Callable[[int], None] | None = None) -> Report:
    """Prompts for every embedded picture of collection `name` (see the module's docstring)."""
    kind = FORMATS.get(out.suffix.lower())
    if kind is None:
        raise InvalidInput(f"--out must end in .csv or .jsonl, not {out.name!r}", code="invalid_input")
    if options.captioner is not None:
        raise InvalidInput("a collection is interrogated from its stored embeddings: no captioner (give --caption or "
                           "start vocabularies)", code="invalid_input")
    row = engine.images.get(name)  # unknown_collection
    run = plan(engine, options)
    done = _done(out, kind)
    report = Report(name, str(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    if sidecars is not None:
        sidecars.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    new_file = not out.is_file() or out.stat().st_size == 0
    with out.open("a", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh) if kind == "csv" else None
        if writer is not None and new_file:
            writer.writerow(COLUMNS)
        for picture, emb in _pictures(engine, row.id):
            side = sidecar_name(picture.source, picture.sha256 or "", taken) if sidecars is not None else None
            if picture.source in done:
                report.skipped += 1
                continue
            info = ImageInfo(sha256=picture.sha256 or "", width=picture.width or 0, height=picture.height or 0)
            found = prompt_for(engine, run, emb, info, options.caption, {})
            values = (picture.source, picture.external_id, picture.sha256, found.mode, found.prompt,
                      round(found.cosine, 6), found.tokens)
            if side is not None and sidecars is not None:
                write_text(sidecars / side, found.prompt + "\n")
                report.sidecars += 1
            if writer is not None:
                writer.writerow([safe_cell(v) for v in values])
            else:
                fh.write(json.dumps(dict(zip(COLUMNS, values)), ensure_ascii=False) + "\n")
            fh.flush()
            report.done += 1
            if progress is not None:
                progress(1)
    return report


def _pictures(engine: "Engine", collection_id: int) -> Iterator[tuple[Any, Any]]:
    for chunk in engine.images.vectors(collection_id, engine.model_key, chunk=256):
        yield from zip(chunk.pictures, chunk.matrix)


__all__ = ["COLUMNS", "Report", "interrogate_collection", "sidecar_name"]
