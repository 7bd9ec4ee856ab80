"""What runs on Ray's workers: the reading tasks, the encoding actor and the scoring tasks of the
collections' Ray distributor, and the plain, picklable `WorkerSettings` they are built from (the
model, its input size, the driver's `ImageLimits`, the backend). Workers never open the store: only
the driver does (SQLite is not safe on a shared file system).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ...errors import ClipGazeError
from ...models import backends
from ...models.protocol import ClipModel, ModelLoader
from ...models.registry import ModelSpec
from ...pictures.reader import ImageLimits, PictureReader
from ...pictures.sources import PictureRef
from ...pictures.thumbnails import make_thumbnail
from ...scoring.kernels import cosines
from ...scoring.softmax import scores_from_cosine_columns
from ..tables import PhraseColumns, analysis_block

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa
    from PIL import Image

    from ...engine import Engine


@dataclass(frozen=True)
class WorkerSettings:
    """Everything a reading task or an encoding actor needs: plain, picklable values."""

    model: ModelSpec
    target: int  # the model's input size: pictures are reduced to at least twice it
    limits: ImageLimits  # the driver's, as they are: decoding limits and fetch policy
    device: str = "auto"
    threads: int = 0
    loader: ModelLoader | None = None  # how actors load the model (default: the driver's backend)
    backend: str = "auto"
    export: str | None = None  # the driver's ONNX export directory: actors on its machine load it from there

    def with_threads(self, threads: int) -> "WorkerSettings":
        return dataclasses.replace(self, threads=threads)


def worker_settings(engine: "Engine", threads: int | None = None, loader: ModelLoader | None = None) -> WorkerSettings:
    """The driver engine's model, device, torch threads (CLIP_GAZE_THREADS), limits and backend."""
    return WorkerSettings(
        model=engine.spec, target=engine.spec.image_size(), limits=engine.limits, device=engine.device,
        threads=engine.threads if threads is None else threads, loader=loader, backend=engine.backend,
        export=str(backends.export_path(engine.store.home, engine.spec)),
    )


def _arrow() -> Any:
    import pyarrow as pa

    return pa


def read_schema() -> "pa.Schema":
    pa = _arrow()
    return pa.schema([
        ("source", pa.string()), ("external_id", pa.string()), ("metadata", pa.string()), ("sha256", pa.string()),
        ("width", pa.int64()), ("height", pa.int64()), ("error_code", pa.string()), ("error", pa.string()),
        ("mode", pa.string()), ("pw", pa.int64()), ("ph", pa.int64()), ("pixels", pa.binary()),
        ("thumbnail", pa.binary()),  # WebP, longest side 256 (pictures.thumbnails)
    ])


def shard_schema() -> "pa.Schema":
    """A shard's rows: a picture (sha256, size, embedding when this run encoded it) or a failure."""
    pa = _arrow()
    return pa.schema([
        ("source", pa.string()), ("external_id", pa.string()), ("metadata", pa.string()), ("sha256", pa.string()),
        ("width", pa.int64()), ("height", pa.int64()), ("error_code", pa.string()), ("error", pa.string()),
        ("embedding", pa.binary()),  # float32, little-endian; null: already stored, or a failure
        ("encoded", pa.bool_()),  # the first row of this content the actor encoded
        ("thumbnail", pa.binary()),  # WebP, longest side 256; null: none made
    ])


# per worker process: the objects the driver shared (by object id; one run's at a time), and readers
_SHARED: dict[str, Any] = {}
_READERS: dict[tuple[ImageLimits, int], PictureReader] = {}


def _shared(holder: dict[str, Any]) -> Any:
    """An object the driver put in Ray's object store (wrapped in a dict, so Ray does not resolve it
    for us), fetched once per worker process."""
    ref = holder["ref"]
    key = ref.hex()
    if key not in _SHARED:
        import ray

        _SHARED.clear()  # one run's objects at a time
        _SHARED[key] = ray.get(ref)
    return _SHARED[key]


def _reader(s: WorkerSettings) -> PictureReader:
    key = (s.limits, s.target)
    if key not in _READERS:
        _READERS[key] = PictureReader(s.limits, s.target)
    return _READERS[key]


def read_pictures(batch: "pa.Table", settings: WorkerSettings, known: dict[str, Any]) -> "pa.Table":
    """A Ray task: each ref's bytes (file, URL or IIIF at the model's size) decoded within the limits,
    as the local path's reader does; the reduced RGB pixels travel on to the encoder unless the content is
    already embedded. A failure becomes a row with its code and reason, never an exception."""
    pa = _arrow()
    reader = _reader(settings)
    shas: npt.NDArray[np.bytes_] = _shared(known)
    schema = read_schema()
    out: dict[str, list[Any]] = {name: [] for name in schema.names}
    for row in batch.to_pylist():
        ref = PictureRef(row["source"], row["kind"], row["external_id"], region=row.get("region"))
        values: dict[str, Any] = {"source": ref.source, "external_id": ref.external_id, "metadata": row["metadata"]}
        try:
            decoded = reader.read_ref(ref)
        except ClipGazeError as exc:
            values.update(error_code=exc.code, error=exc.message)
        except Exception as exc:  # a reader's bug or a library's surprise: recorded, never fatal
            values.update(error_code="read_failed", error=f"{ref.source}: {type(exc).__name__}: {exc}")
        else:
            values.update(sha256=decoded.sha256, width=decoded.width, height=decoded.height,
                          thumbnail=make_thumbnail(decoded.image).data)
            i = int(np.searchsorted(shas, decoded.sha256.encode()))
            if not (i < len(shas) and shas[i] == decoded.sha256.encode()):
                image = decoded.image
                values.update(mode=image.mode, pw=image.width, ph=image.height, pixels=image.tobytes())
        for name in schema.names:
            out[name].append(values.get(name))
    return pa.table(out, schema=schema)



def _scratch_home() -> Path:
    """A node-local folder where an actor exports the model when the driver's export is not on its
    machine (nothing else is written there: no store)."""
    return Path(tempfile.gettempdir()) / f"clip-gaze-ray-{os.getuid()}" / "home"


def load_model(settings: WorkerSettings) -> ClipModel:
    """The model, as an actor loads it: with the loader given, else from the driver's ONNX export where
    it is on this machine (not exported again per actor), else as the driver's backend would."""
    if settings.loader is not None:
        return settings.loader(settings.model, device=settings.device, threads=settings.threads)
    if settings.export and backends.choose(settings.backend, settings.device) == "onnx" and backends.exported(
            Path(settings.export)):
        from ...models.onnx_model import OnnxModel

        return OnnxModel.load(Path(settings.export), settings.model, device=settings.device, threads=settings.threads)
    return backends.load(settings.model, home=_scratch_home(), backend=settings.backend, device=settings.device,
                         threads=settings.threads)


class Encoder:
    """The encoding actor: loads the model once, then encodes each batch's pictures that are new
    content (the reading tasks sent their pixels), as the local path embeds them."""

    def __init__(self, settings: WorkerSettings):
        self.model = load_model(settings)

    def __call__(self, batch: "pa.Table") -> "pa.Table":
        from PIL import Image

        pa = _arrow()
        rows = batch.to_pylist()
        todo: dict[str, "Image.Image"] = {}
        for r in rows:
            if r["pixels"] is not None and r["sha256"] not in todo:
                todo[r["sha256"]] = Image.frombytes(r["mode"], (r["pw"], r["ph"]), r["pixels"])
        vectors = dict(zip(todo, self.model.encode_images(list(todo.values())))) if todo else {}
        schema = shard_schema()
        out: dict[str, list[Any]] = {name: [] for name in schema.names}
        first: set[str] = set()
        for r in rows:
            vector = vectors.get(r["sha256"]) if r["sha256"] else None
            for name in schema.names:
                if name not in ("embedding", "encoded"):
                    out[name].append(r[name])
            out["embedding"].append(np.ascontiguousarray(vector, dtype="<f4").tobytes() if vector is not None else None)
            out["encoded"].append(vector is not None and r["sha256"] not in first)
            if vector is not None:
                first.add(r["sha256"])
        return pa.table(out, schema=schema)


@dataclass(frozen=True)
class VocabIndex:
    """A vocabulary as scoring tasks need it: its index matrix, and each row's phrase (Arrow columns)."""

    name: str
    matrix: npt.NDArray[np.floating]
    phrases: PhraseColumns


def score_chunk(batch: "pa.Table", vocabs: dict[str, Any], scale: float, top_k: int,
                bias: float | None = None) -> "pa.Table":
    """A Ray task: the rows of `collection analyze` for a chunk of pictures, every vocabulary, computed
    like `Collections.analyze_blocks` (the same kernel, the same softmax and top-k, the same columns)."""
    pa = _arrow()
    indexes: list[VocabIndex] = _shared(vocabs)
    column = batch.column("embedding").combine_chunks()
    dim = column.type.list_size
    matrix = np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, dim)
    ext, src, sha = (batch.column(n).combine_chunks() for n in ("external_id", "source", "sha256"))
    blocks = [analysis_block(v.phrases, ext, src, sha, scores_from_cosine_columns(cosines(v.matrix, matrix), scale, top_k),
                             logit_scale=scale, logit_bias=bias) for v in indexes]
    return pa.concat_tables(blocks)


__all__ = ["Encoder", "VocabIndex", "WorkerSettings", "load_model", "read_pictures", "read_schema", "score_chunk",
           "shard_schema", "worker_settings"]
