"""Writing rows (of `collection analyze`) to Parquet, CSV or JSON Lines: block by block of columns, so
memory stays bounded, and atomically (a temporary file renamed at the end), so a stopped run leaves
no half-written file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, get_args

from pydantic import BaseModel

from .errors import InvalidInput

FORMATS = (".parquet", ".csv", ".jsonl")


def check_output(path: str | Path) -> Path:
    p = Path(path)
    if p.suffix.lower() not in FORMATS:
        raise InvalidInput(f"{p}: write .parquet, .csv or .jsonl", code="invalid_output")
    if not p.parent.exists():
        raise InvalidInput(f"{p}: no such folder {p.parent}", code="invalid_output")
    return p


def _arrow_schema(model: type[BaseModel]) -> Any:
    import pyarrow as pa

    def arrow(annotation: Any) -> Any:
        kinds = set(get_args(annotation)) - {type(None)} or {annotation}
        return pa.int64() if kinds == {int} else pa.float64() if kinds == {float} else pa.string()

    return pa.schema([(name, arrow(f.annotation)) for name, f in model.model_fields.items()])


def write_blocks(blocks: Iterable[dict[str, list[Any]]], path: str | Path, model: type[BaseModel]) -> int:
    """Write column blocks (each a dict of `model`'s fields to equal-length lists) to `path`, a block at
    a time; returns how many rows were written."""
    import pyarrow as pa

    target = check_output(path)
    schema = _arrow_schema(model)
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
    os.close(fd)
    count = 0
    try:
        suffix = target.suffix.lower()
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            with pq.ParquetWriter(tmp, schema) as writer:
                for block in blocks:
                    table = pa.table(block, schema=schema)
                    writer.write_table(table)
                    count += table.num_rows
        elif suffix == ".csv":
            import pyarrow.csv as pacsv

            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(",".join(schema.names) + "\n")
            options = pacsv.WriteOptions(include_header=False, quoting_style="needed")
            with open(tmp, "ab") as sink, pacsv.CSVWriter(sink, schema, write_options=options) as writer:
                for block in blocks:
                    table = pa.table(block, schema=schema)
                    writer.write_table(table)
                    count += table.num_rows
        else:
            names = list(schema.names)
            with open(tmp, "w", encoding="utf-8") as fh:
                for block in blocks:
                    rows = zip(*(block[n] for n in names))
                    fh.write("".join(json.dumps(dict(zip(names, r)), ensure_ascii=False) + "\n" for r in rows))
                    count += len(block[names[0]])
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count
