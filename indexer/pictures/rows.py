"""The rows of a CSV/TSV or JSON Lines source file, read as a stream within stated caps.

No more than one line (`MAX_LINE_BYTES`) is held at a time beyond the current row: a line over the cap
is read past in pieces and given back as a failure of that line, never held whole. A CSV field over
`MAX_FIELD_CHARS` is a failure of its row. A line of JSON Lines that is not a JSON object is a failure
of that line; the file's other lines are read as usual. Failures name the line (JSON Lines) or the row's
first line (CSV, where a quoted field may span lines) as a text editor counts them.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterator, Union

from ..errors import InvalidInput

MAX_LINE_BYTES = 1024 * 1024  # a line of a JSON Lines or CSV source
MAX_FIELD_CHARS = 128 * 1024  # a CSV field (Python's csv default, stated here, not changed process-wide)
TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t"}
LINES_SUFFIXES = {".jsonl", ".ndjson"}
_PIECE = 64 * 1024


@dataclass(frozen=True)
class Row:
    line: int  # where the row starts, counting from 1
    fields: dict[str, Any]


@dataclass(frozen=True)
class BadRow:
    line: int
    error: str


class _LineTooLong(Exception):
    def __init__(self, line: int):
        super().__init__(line)
        self.line = line


class _Lines:
    """A text file's lines, each at most `cap` bytes (UTF-8): a longer one is read past in pieces
    and raised as _LineTooLong; iteration goes on after it (an iterator, not a generator, for that)."""

    def __init__(self, f: IO[str], cap: int):
        self.f = f
        self.cap = cap
        self.number = 0

    def __iter__(self) -> "_Lines":
        return self

    def __next__(self) -> str:
        line = self.f.readline(self.cap + 1)
        if not line:
            raise StopIteration
        self.number += 1
        if len(line) > self.cap or len(line.encode("utf-8")) > self.cap:
            while line and not line.endswith("\n"):  # the rest of this line, a piece at a time
                line = self.f.readline(_PIECE)
            raise _LineTooLong(self.number)
        return line


def table_kind(name: str) -> str | None:
    """"csv", "tsv" or "lines" (JSON Lines) for a file name or URL path by its suffix; None for others."""
    suffix = name.lower().rsplit("/", 1)[-1]
    suffix = suffix[suffix.rfind("."):] if "." in suffix else ""
    if suffix in LINES_SUFFIXES:
        return "lines"
    return suffix[1:] if suffix in TABLE_SUFFIXES else None


def read_rows(path: Path) -> Iterator[Union[Row, BadRow]]:
    """The rows of a .csv, .tsv, .jsonl or .ndjson file, each a Row or a BadRow saying why not.

    InvalidInput for the whole file: not UTF-8, or a CSV without an `image` column."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        yield from read_text_rows(f, str(path), table_kind(path.name) or "csv")


def read_text_rows(f: IO[str], name: str, kind: str) -> Iterator[Union[Row, BadRow]]:
    """The rows of text `f` (a file's, or a table fetched by URL), `kind` "csv", "tsv" or "lines", with
    the same caps whatever it comes from; `name` (its path or URL) is how messages name it."""
    try:
        if kind == "lines":
            yield from _json_lines(name, _Lines(f, MAX_LINE_BYTES))
        else:
            yield from _csv_rows(name, _Lines(f, MAX_LINE_BYTES), TABLE_SUFFIXES["." + kind])
    except UnicodeDecodeError:
        raise InvalidInput(f"{name} is not UTF-8 text", code="invalid_source") from None


def _too_long(path: str, line: int) -> BadRow:
    return BadRow(line, f"{path}, line {line}: longer than {MAX_LINE_BYTES // 1024:,} KiB, the limit for a line")


def _field_too_long(path: str, line: int) -> BadRow:
    return BadRow(line, f"{path}, row at line {line}: a field is longer than {MAX_FIELD_CHARS // 1024:,} KiB, "
                        "the limit for a field")


def _json_lines(path: str, lines: _Lines) -> Iterator[Union[Row, BadRow]]:
    while True:
        try:
            line = next(lines)
        except StopIteration:
            return
        except _LineTooLong as exc:
            yield _too_long(path, exc.line)
            continue
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError) as exc:
            yield BadRow(lines.number, f"{path}, line {lines.number}: not JSON ({str(exc)[:200]})")
            continue
        if not isinstance(row, dict):
            yield BadRow(lines.number, f"{path}, line {lines.number}: not a JSON object")
            continue
        yield Row(lines.number, row)


def _csv_rows(path: str, lines: _Lines, delimiter: str) -> Iterator[Union[Row, BadRow]]:
    # csv.reader starts each row afresh, so after a failure (a line too long, a field too large) it reads on.
    reader = csv.reader(lines, delimiter=delimiter)
    header: list[str] | None = None
    while True:
        start = lines.number + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except _LineTooLong as exc:
            if header is None:
                raise InvalidInput(f"{path}: its header line is longer than {MAX_LINE_BYTES // 1024:,} KiB",
                                   code="invalid_source") from None
            yield _too_long(path, exc.line)
            continue
        except csv.Error as exc:
            if header is None:
                raise InvalidInput(f"{path}: its header cannot be read ({exc})", code="invalid_source") from None
            yield _field_too_long(path, start) if "field limit" in str(exc) else \
                BadRow(start, f"{path}, row at line {start}: not CSV ({exc})")
            continue
        if header is None:
            header = [h.strip() for h in cells]
            if "image" not in header:
                raise InvalidInput(f"{path} has no `image` column (columns: {', '.join(header) or 'none'})",
                                   code="invalid_source")
            continue
        if not cells:
            continue
        if any(len(c) > MAX_FIELD_CHARS for c in cells):
            yield _field_too_long(path, start)
            continue
        yield Row(start, dict(zip(header, cells + [""] * (len(header) - len(cells)))))


__all__ = ["BadRow", "LINES_SUFFIXES", "MAX_FIELD_CHARS", "MAX_LINE_BYTES", "Row", "TABLE_SUFFIXES", "read_rows", "read_text_rows",
           "table_kind"]
