"""Writing rows (of `collection analyze`) to Parquet, CSV or JSON Lines: block by block of columns, so
memory stays bounded, and atomically (a temporary file renamed at the end), so a stopped run leaves
no half-written file. Blocks are Arrow tables built without a Python object per row (`analysis_block`):
picture columns repeated from a chunk's, phrase columns taken from a vocabulary's, numbers straight
from the score arrays."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence, Union, get_args

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel

from ..atomic import atomic_path
from ..errors import InvalidInput
from ..schema.collections import AnalysisRow
from ..spreadsheet import FORMULA_PATTERN

if TYPE_CHECKING:  # pragma: no cover
    from ..scoring.softmax import RowScores
    from ..store.phrase_store import Store

Block = Union[dict[str, list[Any]], Any]  # a dict of equal-length lists, or a pyarrow Table

FORMATS = (".parquet", ".csv", ".jsonl")


def check_output(path: str | Path) -> Path:
    p = Path(path)
    if p.suffix.lower() not in FORMATS:
        raise InvalidInput(f"{p}: write .parquet, .csv or .jsonl", code="invalid_output")
    if not p.parent.exists():
        raise InvalidInput(f"{p}: no such folder {p.parent}", code="invalid_output")
    return p


@functools.lru_cache(maxsize=None)
def _arrow_schema(model: type[BaseModel]) -> Any:
    import pyarrow as pa

    def arrow(annotation: Any) -> Any:
        kinds = set(get_args(annotation)) - {type(None)} or {annotation}
        return pa.int64() if kinds == {int} else pa.float64() if kinds == {float} else pa.string()

    return pa.schema([(name, arrow(f.annotation)) for name, f in model.model_fields.items()])


@dataclass(frozen=True)
class PhraseColumns:
    """A vocabulary's phrases in the order of its index's rows, as Arrow string arrays: read from the
    store once per vocabulary, then taken from by each block's positions."""

    vocabulary: str
    phrase: Any
    term: Any
    external_id: Any
    language: Any

    @classmethod
    def read(cls, store: "Store", vocabulary: str, ids: Sequence[int] | npt.NDArray[np.int64]) -> "PhraseColumns":
        import pyarrow as pa

        rows: dict[int, dict[str, Any]] = {}
        for start in range(0, len(ids), 10_000):  # SQLite's limit on bound parameters
            rows.update(store.phrase_rows(ids[start : start + 10_000]))
        ordered = [rows[int(i)] for i in ids]
        return cls(vocabulary, *(pa.array([r.get(f) for r in ordered], pa.string())
                                 for f in ("phrase", "term", "external_id", "language")))


def analysis_block(vocab: PhraseColumns, external_id: Any, source: Any, sha256: Any, scores: "RowScores",
                   verdicts: Mapping[tuple[str, str, str], str] | None = None, logit_scale: float | None = None,
                   logit_bias: float | None = None) -> Any:
    """The rows of `collection analyze` (AnalysisRow's columns, in order) for a chunk of pictures and one
    vocabulary, as an Arrow table: `external_id`, `source` and `sha256` (one value a picture, lists or
    Arrow arrays; a missing sha256 is written "") are repeated for each match, the phrase columns taken
    from the vocabulary's at the matches' positions, the numbers straight from `scores`; `verdict` from
    `verdicts` ((sha256, vocabulary, term) → a person's verdict; none: null); `sigmoid` from the raw
    cosines for a model with a `logit_bias` (null without one)."""
    from ..scoring.softmax import sigmoids

    import pyarrow as pa

    def strings(values: Any) -> Any:
        if isinstance(values, pa.ChunkedArray):
            return values.combine_chunks()
        return values if isinstance(values, pa.Array) else pa.array(values, pa.string())

    b, k = scores.indices.shape
    each = pa.array(np.repeat(np.arange(b, dtype=np.int64), k))
    pos = pa.array(scores.indices.reshape(-1))
    sha = strings(sha256)
    columns = {
        "external_id": strings(external_id).take(each),
        "source": strings(source).take(each),
        "sha256": (sha.fill_null("") if sha.null_count else sha).take(each),
        "vocabulary": pa.array([vocab.vocabulary], pa.string()).take(pa.array(np.zeros(b * k, dtype=np.int64))),
        "softmax_over": pa.array(np.full(b * k, scores.softmax_over, dtype=np.int64)),
        "rank": pa.array(np.tile(np.arange(1, k + 1, dtype=np.int64), b)),
        "phrase": vocab.phrase.take(pos),
        "term": vocab.term.take(pos),
        "probability": pa.array(scores.probabilities.reshape(-1), pa.float64()),
        "cosine": pa.array(scores.cosines.reshape(-1), pa.float64()),
        "logit": pa.array(scores.logits.reshape(-1), pa.float64()),
        "phrase_external_id": vocab.external_id.take(pos),
    }
    columns["verdict"] = pa.nulls(b * k, pa.string())
    sig = sigmoids(scores.cosines.reshape(-1), logit_scale, logit_bias) if logit_scale is not None else None
    columns["sigmoid"] = pa.nulls(b * k, pa.float64()) if sig is None else pa.array(sig, pa.float64())
    columns["language"] = vocab.language.take(pos)
    return with_verdicts(pa.table(columns, schema=_arrow_schema(AnalysisRow)), verdicts)


def with_verdicts(block: Any, verdicts: Mapping[tuple[str, str, str], str] | None) -> Any:
    """A block of analysis rows with its `verdict` column from `verdicts` ((sha256, vocabulary, term) →
    a person's verdict); as it is without any."""
    if not verdicts or not block.num_rows:
        return block
    import pyarrow as pa

    keys = zip(*(block.column(c).to_pylist() for c in ("sha256", "vocabulary", "term")))
    return block.set_column(block.schema.get_field_index("verdict"), "verdict",
                            pa.array([verdicts.get(key) for key in keys], pa.string()))


def _table(block: Block, schema: Any) -> Any:
    import pyarrow as pa

    if isinstance(block, dict):
        return pa.table(block, schema=schema)
    return block if block.schema.equals(schema) else block.select(schema.names).cast(schema)


def spreadsheet_safe(table: Any) -> Any:
    """`table` with every text cell a spreadsheet would run as a formula prefixed with `'` (`spreadsheet`)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    columns = []
    for column, field in zip(table.columns, table.schema):
        if pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
            formula = pc.match_substring_regex(column, FORMULA_PATTERN)
            column = pc.if_else(formula, pc.binary_join_element_wise("'", column, ""), column)
        columns.append(column)
    return pa.table(columns, schema=table.schema)


def write_blocks(blocks: Iterable[Block], path: str | Path, model: type[BaseModel]) -> int:
    """Write blocks of `model`'s rows (Arrow tables with its columns, or dicts of its fields to
    equal-length lists) to `path`, a block at a time; returns how many rows were written."""
    target = check_output(path)
    schema = _arrow_schema(model)
    count = 0
    with atomic_path(target) as tmp:
        suffix = target.suffix.lower()
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            with pq.ParquetWriter(tmp, schema) as writer:
                for block in blocks:
                    table = _table(block, schema)
                    writer.write_table(table)
                    count += table.num_rows
        elif suffix == ".csv":
            import pyarrow.csv as pacsv

            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(",".join(schema.names) + "\n")
            options = pacsv.WriteOptions(include_header=False, quoting_style="needed")
            with open(tmp, "ab") as sink, pacsv.CSVWriter(sink, schema, write_options=options) as writer:
                for block in blocks:
                    table = _table(block, schema)
                    writer.write_table(spreadsheet_safe(table))
                    count += table.num_rows
        else:
            with open(tmp, "wb") as out:
                for block in blocks:
                    table = _table(block, schema)
                    for batch in table.to_batches(max_chunksize=JSON_LINES_BATCH):
                        out.write(json_lines(batch))
                    count += table.num_rows
    return count


JSON_LINES_BATCH = 65_536  # rows formatted at a time (an Arrow string array holds at most 2 GiB)
_NEEDS_ESCAPE = r'[\x00-\x1f"\\]'  # what json.dumps(ensure_ascii=False) escapes in a string


def json_lines(batch: Any) -> bytes:
    """A record batch as JSON Lines, byte for byte what ``json.dumps(row, ensure_ascii=False) + "\\n"``
    writes for each row (a dict of the columns, in order), built column by column in Arrow rather than
    a row at a time: each distinct string is quoted as it is (json.dumps only where one holds a quote,
    a backslash or a control character), integers cast, floats cast where Arrow's shortest form is
    Python's repr (from 1e-4 up to 1e9, not integral) and formatted by json.dumps elsewhere."""
    import pyarrow as pa
    import pyarrow.compute as pc

    pieces: list[Any] = []
    for i, (name, column) in enumerate(zip(batch.schema.names, batch.columns)):
        pieces.append(("{" if i == 0 else ", ") + json.dumps(name, ensure_ascii=False) + ": ")
        pieces.append(_json_values(column, pa, pc))
    pieces.append("}\n")
    lines = pc.binary_join_element_wise(*pieces, "")
    if not len(lines):
        return b""
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)[lines.offset : lines.offset + len(lines) + 1]
    return bytes(memoryview(lines.buffers()[2])[offsets[0] : offsets[-1]])


def _json_values(column: Any, pa: Any, pc: Any) -> Any:
    """A column's values as JSON texts (a string array; null for null)."""
    kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        encoded = pc.dictionary_encode(column)  # each distinct value formatted once (a picture's repeat k times)
        values = encoded.dictionary
        text = pc.binary_join_element_wise('"', values, '"', "")
        special = pc.match_substring_regex(values, _NEEDS_ESCAPE)
        slow = [json.dumps(v, ensure_ascii=False) for v in pc.filter(values, special).to_pylist()]
        text = (pc.replace_with_mask(text, special, pa.array(slow, text.type)) if slow else text).take(encoded.indices)
    elif pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        text = pc.cast(column, pa.string()) if pa.types.is_integer(kind) else pc.if_else(column, "true", "false")
    elif pa.types.is_floating(kind):
        text = pc.cast(pc.cast(column, pa.float64()), pa.string())
        v = np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)
        with np.errstate(invalid="ignore"):
            a = np.abs(v)
            special = ~((a >= 1e-4) & (a < 1e9) & (v != np.floor(v)))  # NaN: never inside
        if column.null_count:
            special &= column.is_valid().to_numpy(zero_copy_only=False)
        if special.any():
            slow = [json.dumps(float(x)) for x in v[special]]
            text = pc.replace_with_mask(text, pa.array(special), pa.array(slow, pa.string()))
    else:
        slow = [json.dumps(v, ensure_ascii=False) for v in column.to_pylist()]
        return pa.array(slow, pa.string())
    return pc.fill_null(text, "null")
