"""The map's answer as bytes, made once per layout and kept: JSON (the contract's points) or Arrow IPC,
the compact form for large collections: `sha256` as 32 bytes (not 64 hex digits), `external_id`, `x`
and `y` as float32 rounded to 1/65536 (so their low bytes compress), and `index`, each point's position
in the collection's order (the order of /scores' columns). `fields` picks the Arrow columns: 100,000
random sha256 are 3.2 MB that no compression shrinks, so a client that needs less asks for less.

`MapBodies` keeps the encoded bodies (and their gzip) per collection, model, layout and collection
version, format and fields, with an ETag that names exactly that."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import numpy.typing as npt

from .frame import Frame

ARROW_FIELDS = ("sha256", "external_id", "x", "y", "index")  # the Arrow form's columns, in this order
JSON_MEDIA = "application/json"
ARROW_MEDIA = "application/vnd.apache.arrow.stream"
QUANTUM = 65536.0  # x and y in the Arrow form: multiples of 1/65536 (at most 7.6e-6 from the layout's)
GZIP_OVER = 4096  # bytes: smaller bodies go as they are


@dataclass(frozen=True)
class Body:
    media_type: str
    data: bytes
    gzipped: bytes | None  # None: not worth it (small)
    etag: str  # quoted, strong: one representation of one layout


def fields_of(text: str | None) -> tuple[str, ...]:
    """The Arrow columns a `fields` parameter names (every column without one), in ARROW_FIELDS' order."""
    if not text:
        return ARROW_FIELDS
    named = {f.strip() for f in text.split(",") if f.strip()}
    return tuple(f for f in ARROW_FIELDS if f in named)


def quantised(values: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    return (np.round(np.asarray(values, np.float64) * QUANTUM) / QUANTUM).astype(np.float32)


def arrow_body(meta: dict[str, Any], frame: Frame, keep: Sequence[int], xs: Any, ys: Any,
               fields: Sequence[str] = ARROW_FIELDS) -> bytes:
    """The map's points as an Arrow IPC stream of `fields`; the answer's other fields (collection,
    model, version, method, size…) as JSON in the schema's metadata."""
    import pyarrow as pa

    columns: dict[str, Any] = {}
    for name in fields:
        if name == "sha256":
            raw = bytes.fromhex("".join(frame.sha256[i] for i in keep))
            columns[name] = pa.FixedSizeBinaryArray.from_buffers(pa.binary(32), len(keep), [None, pa.py_buffer(raw)])
        elif name == "external_id":
            columns[name] = pa.array([frame.external_id[i] for i in keep], pa.string())
        elif name == "x":
            columns[name] = pa.array(quantised(xs), pa.float32())
        elif name == "y":
            columns[name] = pa.array(quantised(ys), pa.float32())
        elif name == "index":
            columns[name] = pa.array(np.asarray(keep, np.uint32), pa.uint32())
    schema = pa.schema([pa.field(n, c.type) for n, c in columns.items()],
                       metadata={k: json.dumps(v) for k, v in meta.items()})
    table = pa.table(columns, schema=schema) if columns else schema.empty_table()
    out = io.BytesIO()
    with pa.ipc.new_stream(out, table.schema) as writer:
        writer.write_table(table)
    return out.getvalue()


def json_body(meta: dict[str, Any], frame: Frame, keep: Sequence[int], xs: Any, ys: Any) -> bytes:
    """The contract's JSON: {…meta, points: [{sha256, external_id, x, y}]}, written without building
    100,000 dicts' worth of JSON through a generic encoder twice."""
    dumps = json.dumps
    sha, ext = frame.sha256, frame.external_id
    points = ",".join(
        f'{{"sha256":"{sha[i]}","external_id":{dumps(ext[i], ensure_ascii=False)},"x":{x!r},"y":{y!r}}}'
        for i, x, y in zip(keep, np.asarray(xs, np.float32).tolist(), np.asarray(ys, np.float32).tolist()))
    head = dumps(meta, ensure_ascii=False, separators=(",", ":"))
    return (head[:-1] + (',' if len(head) > 2 else '') + f'"points":[{points}]}}').encode("utf-8")


class MapBodies:
    """Encoded map answers, the last `keep` of them, by what makes them differ."""

    def __init__(self, keep: int = 8):
        self.keep = keep
        self._bodies: OrderedDict[tuple[Any, ...], Body] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...], make: Any, media_type: str) -> Body:
        """The body for `key`, made by `make()` (bytes) when not kept."""
        with self._lock:
            found = self._bodies.get(key)
            if found is not None:
                self._bodies.move_to_end(key)
                return found
        data = make()
        gzipped = gzip.compress(data, compresslevel=6) if len(data) > GZIP_OVER else None
        etag = '"map-' + hashlib.sha256(repr(key).encode()).hexdigest()[:32] + '"'
        body = Body(media_type, data, gzipped, etag)
        with self._lock:
            self._bodies[key] = body
            while len(self._bodies) > self.keep:
                self._bodies.popitem(last=False)
        return body


__all__ = ["ARROW_FIELDS", "ARROW_MEDIA", "Body", "JSON_MEDIA", "MapBodies", "arrow_body", "fields_of", "json_body",
           "quantised"]
