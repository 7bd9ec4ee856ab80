"""Collections on Ray Data: `clip-gaze collection add|analyze --engine ray`, beyond one machine.

Adding. The driver expands the sources into picture refs (`sources.expand`), merges whatever whole
shards an earlier, interrupted run left behind, and skips the sources already stored with an
embedding for the model. The rest become a Ray Dataset (`ray.data.from_items`):

    refs ─► read and decode (Ray tasks, a fraction of a CPU each) ─► encode (an actor pool: each
    actor builds an Engine and loads the model once; a GPU each where the cluster has GPUs)
    ─► Parquet shards under CLIP_GAZE_HOME/ray-shards/<collection>/<run>/ ─► the driver merges each
    whole shard into SQLite (one transaction per shard) as soon as it appears, then deletes it.

Tasks and actors build what they need from `WorkerSettings`, plain picklable values (the model, the
decoding limits, the fetch allow-list): they never open the store, so only the driver needs it.
Content already embedded with the model (the driver ships the sha256s it holds) is not encoded
again; an embedding already stored for a sha256 is never replaced. Ray's own `write_parquet` writes
each file in place (pyarrow's `write_dataset` into the final name), so a killed writer could leave
half a file: shards are written by `ShardSink` instead, to a temporary name renamed when whole. A
driver killed at any moment therefore leaves whole shards and whole SQLite transactions, and the
same command run again merges the shards, then reads only what is still missing.

Analysing. The driver checks the request like `collection analyze` does (unknown vocabularies,
missing embeddings), puts the vocabularies' index matrices and the collection's stored embeddings
(in chunks of `collections.CHUNK` pictures) in Ray's object store, scores each chunk in a Ray task
with the same kernels as the local path, and writes the rows it gets back, in order, with
`tables.write_blocks` (Parquet, CSV or JSON Lines, atomically): the scoring is spread out, the
writing is the driver's.

Sizing. Actors hold their CPUs for the whole run; an actor pool that takes every CPU starves the
reading and writing tasks and the run hangs without an error (seen with two 1-CPU actors on a
2-CPU Ray). `plan` sizes the pool from `ray.cluster_resources()` so that a reserve of CPUs (at least
one, an eighth of a large cluster) always stays free for those tasks.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np
import numpy.typing as npt

from . import backends, errors
from .errors import ClipGazeError, Conflict
from .image_store import ImageStore, Picture
from .sources import PictureRef, SourceFailure, expand

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

    from .engine import Engine
    from .schema_collections import AddReport, AddSources
    from .specs import ModelSpec
    from .tables import PhraseColumns

INSTALL = "pip install 'clip-gaze[ray]'"
SHARDS = "ray-shards"  # under CLIP_GAZE_HOME: ray-shards/<collection>/<run id>/<shard>.parquet
RETRIES = 3  # a task or an actor that dies is retried (restarted) this many times


class RayUnavailable(ClipGazeError):
    status = 501
    code = "ray_unavailable"


def require_ray() -> Any:
    """The `ray` module with Ray Data, or one clear error naming the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise RayUnavailable(f"--engine ray needs Ray Data, which is not installed: {INSTALL}") from None
    return ray


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[Any]:
    """Ray, joined or started: the Ray this process already runs (tests), else the cluster at
    `address` or $RAY_ADDRESS, else a Ray started here with `num_cpus` (default: every core) and
    stopped at the end."""
    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    try:
        if address:
            ray.init(address=address, log_to_driver=True)
        else:
            ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False)
    except (ConnectionError, TimeoutError, ValueError) as exc:
        raise RayUnavailable(f"cannot join the Ray cluster at {address}: {exc}" if address else f"cannot start Ray: {exc}",
                             code="ray_unreachable") from None
    try:
        yield ray
    finally:
        ray.shutdown()


# -- sizing -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """How a run uses the cluster: the encoding actors and what each reading or writing task takes."""

    actors: int
    actor_cpus: float
    actor_gpus: float
    task_cpus: float  # each reading/decoding and each shard-writing task
    threads: int  # torch threads in each actor

    def describe(self) -> str:
        gpu = f", {self.actor_gpus:g} GPU" if self.actor_gpus else ""
        return (f"{self.actors} encoding actor{'s' * (self.actors != 1)} ({self.actor_cpus:g} CPU{gpu}, "
                f"{self.threads} torch thread{'s' * (self.threads != 1)} each); reading tasks {self.task_cpus:g} CPU each")


def plan(resources: dict[str, float], threads: int = 0) -> Plan:
    """Size the encoding pool from `ray.cluster_resources()` so it can never take every CPU.

    A reserve (1 CPU, or an eighth of a cluster above 8 CPUs; half of a 1-CPU Ray) stays free for the
    tasks that read, decode and write, and each of them asks for at most half of it, so at least two
    run at once. With GPUs: one actor per GPU, at most 1 CPU each. Without: actors of 1 CPU (fewer
    than 4 CPUs), 2 (fewer than 16) or 4, as many as fit beside the reserve. `threads` (CLIP_GAZE_THREADS)
    overrides the torch threads of each actor, which default to its whole CPUs."""
    cpus = float(resources.get("CPU", 0.0))
    gpus = int(resources.get("GPU", 0.0))
    if cpus <= 0:
        raise RayUnavailable("the Ray cluster has no CPU to read and decode pictures with", code="ray_no_cpu")
    reserve = max(1.0, cpus / 8) if cpus >= 2 else cpus / 2
    room = cpus - reserve
    if gpus >= 1:
        actors, actor_gpus = gpus, 1.0
        actor_cpus = min(1.0, room / actors)
    else:
        per = min(1.0 if cpus < 4 else 2.0 if cpus < 16 else 4.0, room)
        actors, actor_gpus = max(1, int(room // per)), 0.0
        actor_cpus = min(per, room / actors)
    actor_cpus = math.floor(actor_cpus * 1000) / 1000  # Ray's resource granularity
    return Plan(actors=actors, actor_cpus=actor_cpus, actor_gpus=actor_gpus, task_cpus=reserve / 2,
                threads=threads if threads > 0 else max(1, int(actor_cpus)))


# -- what tasks and actors are given ----------------------------------------------------------------
@dataclass(frozen=True)
class WorkerSettings:
    """Everything a reading task or an encoding actor needs: plain, picklable values."""

    model: "ModelSpec"
    target: int  # the model's input size: pictures are reduced to at least twice it
    device: str = "auto"
    threads: int = 0
    max_pixels: int = 60_000_000
    max_request_pixels: int = 1_000_000_000
    decode_concurrency: int = 2
    fetch_allow: tuple[str, ...] = ()
    max_fetch_bytes: int = 32 * 1024 * 1024
    loader: Callable[..., Any] | None = None  # how actors load the model (default: the driver's backend)
    backend: str = "auto"
    export: str | None = None  # the driver's ONNX export directory: actors on its machine load it from there


def worker_settings(engine: "Engine", threads: int | None = None, loader: Callable[..., Any] | None = None) -> WorkerSettings:
    """The driver engine's model, device, torch threads (CLIP_GAZE_THREADS), limits and fetch policy."""
    decoder = engine.decoder
    if threads is None:
        threads = int(getattr(engine, "_threads", 0))
    policy = engine.collections.policy
    return WorkerSettings(
        model=engine.spec, target=engine.spec.image_size(), device=getattr(engine, "_device", "auto"), threads=threads,
        max_pixels=decoder.max_pixels, max_request_pixels=decoder.max_request_pixels,
        fetch_allow=tuple(sorted(policy.allow)), max_fetch_bytes=policy.max_bytes, loader=loader,
        backend=engine.backend, export=str(backends.export_path(engine.store.home, engine.spec)),
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
    ])


def shard_schema() -> "pa.Schema":
    """A shard's rows: a picture (sha256, size, embedding when this run encoded it) or a failure."""
    pa = _arrow()
    return pa.schema([
        ("source", pa.string()), ("external_id", pa.string()), ("metadata", pa.string()), ("sha256", pa.string()),
        ("width", pa.int64()), ("height", pa.int64()), ("error_code", pa.string()), ("error", pa.string()),
        ("embedding", pa.binary()),  # float32, little-endian; null: already stored, or a failure
        ("encoded", pa.bool_()),  # the first row of this content the actor encoded
    ])


_CACHE: dict[str, Any] = {}  # per worker process: readers by settings, shared arrays by object id


def _shared(holder: dict[str, Any]) -> Any:
    """An object the driver put in Ray's object store (wrapped in a dict, so Ray does not resolve it
    for us), fetched once per worker process."""
    ref = holder["ref"]
    key = f"ref:{ref.hex()}"
    if key not in _CACHE:
        import ray

        for old in [k for k in _CACHE if k.startswith("ref:")]:  # one run's objects at a time
            del _CACHE[old]
        _CACHE[key] = ray.get(ref)
    return _CACHE[key]


def _reader(s: WorkerSettings) -> tuple[Any, Callable[[PictureRef], bytes]]:
    key = f"reader:{s.target}:{s.max_pixels}:{s.max_request_pixels}:{s.decode_concurrency}:{s.fetch_allow}:{s.max_fetch_bytes}"
    if key not in _CACHE:
        from .fetch import FetchPolicy
        from .images import Decoder
        from .sources import loader

        policy = FetchPolicy(allow=frozenset(a.lower() for a in s.fetch_allow), max_bytes=s.max_fetch_bytes)
        _CACHE[key] = (Decoder(s.max_pixels, s.max_request_pixels, s.decode_concurrency, target=s.target), loader(policy, s.target))
    return _CACHE[key]  # type: ignore[no-any-return]


def read_pictures(batch: "pa.Table", settings: WorkerSettings, known: dict[str, Any]) -> "pa.Table":
    """A Ray task: each ref's bytes (file, URL or IIIF at the model's size) decoded within the limits,
    as `Collections.read` does; the reduced RGB pixels travel on to the encoder unless the content is
    already embedded. A failure becomes a row with its code and reason, never an exception."""
    from .errors import ClipGazeError

    pa = _arrow()
    decoder, load = _reader(settings)
    shas: npt.NDArray[np.bytes_] = _shared(known)
    schema = read_schema()
    out: dict[str, list[Any]] = {name: [] for name in schema.names}
    for row in batch.to_pylist():
        ref = PictureRef(row["source"], row["kind"], row["external_id"])
        values: dict[str, Any] = {"source": ref.source, "external_id": ref.external_id, "metadata": row["metadata"]}
        try:
            decoded = decoder.decode(load(ref), ref.source)
        except ClipGazeError as exc:
            values.update(error_code=exc.code, error=exc.message)
        except Exception as exc:  # a reader's bug or a library's surprise: recorded, never fatal
            values.update(error_code="read_failed", error=f"{ref.source}: {type(exc).__name__}: {exc}")
        else:
            values.update(sha256=decoded.sha256, width=decoded.width, height=decoded.height)
            i = int(np.searchsorted(shas, decoded.sha256.encode()))
            if not (i < len(shas) and shas[i] == decoded.sha256.encode()):
                image = decoded.image
                values.update(mode=image.mode, pw=image.width, ph=image.height, pixels=image.tobytes())
        for name in schema.names:
            out[name].append(values.get(name))
    return pa.table(out, schema=schema)


def _scratch_home() -> Path:
    """A node-local folder for an actor's Engine: its store is never written, and workers never open the
    collection's store (SQLite is not safe on a shared file system)."""
    return Path(tempfile.gettempdir()) / f"clip-gaze-ray-{os.getuid()}" / "home"


class Encoder:
    """The encoding actor: builds an Engine and loads the model once; encodes a batch of decoded pictures
    with `Engine.encode_pictures`, the local path's own code."""

    def __init__(self, settings: WorkerSettings):
        from .engine import Engine

        options: dict[str, Any] = {"device": settings.device, "threads": settings.threads, "backend": settings.backend}
        if settings.loader is not None:
            options["loader"] = settings.loader
        elif settings.export and backends.choose(settings.backend, settings.device) == "onnx" and backends.exported(
                Path(settings.export)):
            export = Path(settings.export)  # the driver's export, on this machine: not made again per actor

            def load_export(spec: Any, device: str = "auto", threads: int = 0) -> Any:
                from .onnx_model import OnnxModel

                return OnnxModel.load(export, spec, device=device, threads=threads)

            options["loader"] = load_export
        self.engine = Engine(_scratch_home(), settings.model, **options)
        _ = self.engine.model

    def __call__(self, batch: "pa.Table") -> "pa.Table":
        from PIL import Image

        from .images import DecodedImage

        pa = _arrow()
        rows = batch.to_pylist()
        todo: dict[str, DecodedImage] = {}
        for r in rows:
            if r["pixels"] is not None and r["sha256"] not in todo:
                image = Image.frombytes(r["mode"], (r["pw"], r["ph"]), r["pixels"])
                todo[r["sha256"]] = DecodedImage(image, r["sha256"], r["width"], r["height"], None)
        vectors = dict(zip(todo, self.engine.encode_pictures(list(todo.values())))) if todo else {}
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


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _datasink_base() -> type:
    from ray.data import Datasink

    return Datasink  # type: ignore[no-any-return]


def make_shard_sink(folder: Path, model_key: str, collection: str, min_rows: int) -> Any:
    """A Datasink that writes each write task's rows as one Parquet shard, to a temporary name (a dot
    file) renamed once whole and synced: a shard is there entirely or not at all."""

    class ShardSink(_datasink_base()):  # type: ignore[misc]
        def get_name(self) -> str:
            return "ClipGazeShards"

        @property
        def min_rows_per_write(self) -> int:
            return min_rows

        def write(self, blocks: Any, ctx: Any) -> int:
            import pyarrow as pa
            import pyarrow.parquet as pq
            from ray.data.block import BlockAccessor

            tables = [BlockAccessor.for_block(b).to_arrow() for b in blocks]
            tables = [t for t in tables if t.num_rows]
            if not tables:
                return 0
            schema = shard_schema().with_metadata({"clip_gaze_model": model_key, "clip_gaze_collection": collection})
            table = pa.concat_tables([t.select(schema.names).cast(shard_schema()) for t in tables]).replace_schema_metadata(schema.metadata)
            name = f"{int(ctx.task_idx):06d}-{uuid.uuid4().hex[:12]}.parquet"
            tmp = folder / f".{name}.tmp"
            pq.write_table(table, tmp)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, folder / name)
            _fsync_dir(folder)
            return int(table.num_rows)

    return ShardSink()


# -- merging shards into the store (the driver) -----------------------------------------------------
@dataclass
class MergeCounts:
    shards: int = 0
    pictures: int = 0  # pictures stored
    failed: int = 0  # failures recorded
    encoded: int = 0  # rows this run's actors encoded (counted for this run's shards only)
    embeddings: int = 0  # new embeddings written
    duplicates: int = 0  # rows for sources already stored with an embedding: skipped
    sources: set[str] = field(default_factory=set)  # stored
    failed_sources: set[str] = field(default_factory=set)
    errors: list[Picture] = field(default_factory=list)


class Merger:
    """Merges whole shards into the store, one transaction per shard, and deletes each once merged.
    Rows for sources already stored with an embedding for the shard's model are skipped; an embedding
    already stored for a sha256 is not replaced. Merging a shard twice changes nothing."""

    def __init__(self, images: ImageStore, collection_id: int):
        self.images = images
        self.collection_id = collection_id
        self._done: dict[str, set[str]] = {}  # model key → sources stored with an embedding
        self.seconds = 0.0

    def done(self, model_key: str) -> set[str]:
        if model_key not in self._done:
            self._done[model_key] = self.images.embedded_sources(self.collection_id, model_key)
        return self._done[model_key]

    def merge(self, path: Path, counts: MergeCounts, count_encoded: bool = True) -> None:
        import pyarrow.parquet as pq

        t0 = time.perf_counter()
        try:
            table = pq.read_table(path)
        except FileNotFoundError:  # merged and deleted by a run that overlapped
            return
        model_key = (table.schema.metadata or {}).get(b"clip_gaze_model", b"").decode()
        done = self.done(model_key)
        pictures: list[Picture] = []
        vectors: dict[str, npt.NDArray[np.float32]] = {}
        for r in table.to_pylist():
            if count_encoded and r["encoded"]:
                counts.encoded += 1
            if r["source"] in done:
                counts.duplicates += 1
                continue
            meta = json.loads(r["metadata"]) if r["metadata"] else None
            p = Picture(r["source"], r["external_id"], meta, r["sha256"], r["width"], r["height"], r["error_code"], r["error"])
            pictures.append(p)
            if r["sha256"] and r["embedding"] is not None:
                vectors[r["sha256"]] = np.frombuffer(r["embedding"], dtype="<f4").astype(np.float32, copy=False)
        if vectors:
            for sha in self.images.cached(model_key, list(vectors)):
                del vectors[sha]  # already stored: kept as it is
        self.images.record(self.collection_id, pictures, model_key, vectors)
        stored = [p for p in pictures if p.sha256]
        failed = [p for p in pictures if not p.sha256]
        done.update(p.source for p in stored)
        counts.shards += 1
        counts.pictures += len(stored)
        counts.failed += len(failed)
        counts.embeddings += len(vectors)
        counts.sources.update(p.source for p in stored)
        counts.failed_sources.update(p.source for p in failed)
        counts.errors.extend(failed[: max(0, 20 - len(counts.errors))])
        path.unlink(missing_ok=True)
        self.seconds += time.perf_counter() - t0

    def merge_folder(self, folder: Path, counts: MergeCounts, count_encoded: bool = True) -> None:
        """Every whole shard of `folder` (dot files are shards being written, or half-written by a
        writer that died: never read), oldest first."""
        if not folder.is_dir():
            return
        shards = sorted((p for p in folder.glob("*.parquet") if p.is_file()), key=lambda p: (p.stat().st_mtime, p.name))
        for path in shards:
            self.merge(path, counts, count_encoded)


def shards_folder(home: Path, collection: str) -> Path:
    return Path(home) / SHARDS / collection


@contextlib.contextmanager
def _run_lock(folder: Path, collection: str) -> Iterator[None]:
    """One Ray add per collection at a time (the lock goes with the process, even on SIGKILL)."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Conflict(f"another `collection add --engine ray` of {collection!r} is running", code="add_running") from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _leftovers(folder: Path, merger: Merger, counts: MergeCounts) -> None:
    """Shards of earlier runs that were killed before merging them: merged now, not redone."""
    for run in sorted(p for p in folder.iterdir() if p.is_dir()):
        merger.merge_folder(run, counts, count_encoded=False)
        for tmp in run.glob(".*.tmp"):  # half-written by a writer that died with its run
            tmp.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            run.rmdir()


def _known_shas(images: ImageStore, model_key: str) -> npt.NDArray[np.bytes_]:
    """The sha256 of every picture embedded with the model, sorted (binary search in the tasks)."""
    rows = images.db.execute("SELECT sha256 FROM image_embeddings WHERE model = ? ORDER BY sha256", [model_key])
    return np.array([r[0].encode() for r in rows], dtype="S64")


# -- adding -----------------------------------------------------------------------------------------
def ray_add(
    engine: "Engine",
    name: str,
    request: "AddSources",
    *,
    address: str | None = None,
    batch_size: int = 16,
    shard_rows: int | None = None,
    num_cpus: int | None = None,
    threads: int | None = None,
    loader: Callable[..., Any] | None = None,
) -> "AddReport":
    """`Collections.add` on Ray Data (see the module's docstring): the same pictures and embeddings
    land in the same store, and the report counts the same way. Pictures recovered from an earlier
    run's shards count as added by this run, but not as encoded."""
    from .collections import picture_info
    from .schema_collections import AddReport

    require_ray()
    collections = engine.collections
    images: ImageStore = collections.images
    row = images.get(name)
    t0 = time.perf_counter()
    model_key = engine.model_key
    items = [item for source in request.sources for item in expand(source, collections.policy)]
    folder = shards_folder(engine.store.home, name)
    counts = MergeCounts()
    with _run_lock(folder, name):
        merger = Merger(images, row.id)
        _leftovers(folder, merger, counts)
        recovered = set(counts.sources)
        done = merger.done(model_key)
        named = [it for it in items if isinstance(it, PictureRef) and it.source not in done]
        last = {it.source: it for it in named}  # a source named twice is read once, as its last naming says
        refs = list(last.values())
        again = Counter(it.source for it in named) - Counter(list(last))
        stored = [Picture(it.source, it.external_id, it.metadata) for it in items
                  if isinstance(it, PictureRef) and it.source in done and it.source not in recovered]
        relabelled = images.relabel(row.id, stored)
        failures = [Picture(it.source, it.external_id, it.metadata, error_code=it.code, error=it.error)
                    for it in items if isinstance(it, SourceFailure)]
        images.record(row.id, failures, model_key, {})
        if refs:
            settings = worker_settings(engine, threads, loader)
            with ray_session(address, num_cpus) as rt:
                _run(rt, settings, images, merger, counts, refs, folder, model_key, name, batch_size,
                     shard_rows or 8 * batch_size)
    errors = [picture_info(p) for p in (failures + counts.errors)[:20]]
    # counted like a local add, which reads a source named twice twice (the last naming is stored)
    added = counts.pictures + sum(n for s, n in again.items() if s in counts.sources)
    failed = len(failures) + counts.failed + sum(n for s, n in again.items() if s in counts.failed_sources)
    return AddReport(collection=name, model=engine.spec.name, total=len(items), added=added,
                     skipped=len(stored), relabelled=relabelled, failed=failed,
                     encoded=counts.encoded, seconds=round(time.perf_counter() - t0, 3), errors=errors)


@contextlib.contextmanager
def _ray_errors(rt: Any, resume: bool = False) -> Iterator[None]:
    """A run that fails on the cluster (after Ray's retries) as one clip-gaze error: the domain error a
    worker raised (weights missing on a node, say), else the first line of Ray's."""
    try:
        yield
    except ClipGazeError:
        raise
    except Exception as exc:
        if not isinstance(exc, rt.exceptions.RayError) and not type(exc).__module__.startswith("ray"):
            raise
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, ClipGazeError):
            cause = getattr(cause, "cause", None) or cause.__cause__
        after = "; whole shards are kept: run the same command again to resume" if resume else ""
        if isinstance(cause, ClipGazeError):
            raise type(cause)(f"{cause.message} (on a Ray worker){after}", code=cause.code) from None
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
        # an actor whose __init__ raised comes back as ActorDiedError, with the error only in its text
        found = re.findall(r"^indexer\.errors\.(\w+): (.+)$", text, flags=re.M)
        if found and isinstance(getattr(errors, found[-1][0], None), type):
            kind = getattr(errors, found[-1][0])
            if issubclass(kind, ClipGazeError):
                raise kind(f"{found[-1][1]} (on a Ray worker){after}") from None
        first = next((line for line in text.splitlines() if line.strip()), type(exc).__name__)
        raise RayUnavailable(f"the Ray run failed: {first}{after}", code="ray_failed", status=500) from None


@contextlib.contextmanager
def _retries_named() -> Iterator[None]:
    """Bounded retries (`max_retries`, `max_restarts`, `max_task_retries`). Ray Data's own defaults
    retry a dying task or actor forever, so a picture that crashes its worker every time would hang
    the run; Ray 2.60 warns that these options, passed through `**ray_remote_args`, will go away in
    2.64 (with no named replacement yet). The warning is silenced here, and only here."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*ray_remote_args.* is deprecated")
        yield


def _run(rt: Any, settings: WorkerSettings, images: ImageStore, merger: Merger, counts: MergeCounts,
         refs: Sequence[PictureRef], folder: Path, model_key: str, collection: str, batch_size: int, shard_rows: int) -> None:
    data = rt.data  # typed Any: Ray's annotations are narrower than what it accepts
    p = plan(rt.cluster_resources(), settings.threads)
    settings = WorkerSettings(**{**settings.__dict__, "threads": p.threads})
    known = {"ref": rt.put(_known_shas(images, model_key))}
    run = folder / f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"
    run.mkdir(parents=True)
    rows = [{"source": r.source, "kind": r.kind, "external_id": r.external_id,
             "metadata": json.dumps(r.metadata, ensure_ascii=False) if r.metadata else None} for r in refs]
    ds = data.from_items(rows, override_num_blocks=max(1, min(4096, math.ceil(len(rows) / batch_size))))
    with _retries_named():
        ds = ds.map_batches(read_pictures, batch_size=batch_size, batch_format="pyarrow",
                            fn_kwargs={"settings": settings, "known": known}, num_cpus=p.task_cpus, max_retries=RETRIES)
        ds = ds.map_batches(Encoder, batch_size=batch_size, batch_format="pyarrow", fn_constructor_kwargs={"settings": settings},
                            compute=data.ActorPoolStrategy(size=p.actors), num_cpus=p.actor_cpus, num_gpus=p.actor_gpus or None,
                            max_restarts=RETRIES, max_task_retries=RETRIES)
    sink = make_shard_sink(run, model_key, collection, shard_rows)
    finished = threading.Event()
    failure: list[BaseException] = []

    def merge_as_they_come() -> None:
        while not finished.wait(0.25):
            try:
                merger.merge_folder(run, counts)
            except BaseException as exc:  # reported after the write; the shards stay for a rerun
                failure.append(exc)
                return

    merging = threading.Thread(target=merge_as_they_come, name="clip-gaze-ray-merge", daemon=True)
    merging.start()
    try:
        with _retries_named(), _ray_errors(rt, resume=True):
            ds.write_datasink(sink, ray_remote_args={"num_cpus": p.task_cpus, "max_retries": RETRIES})
    finally:
        finished.set()
        merging.join()
    if failure:
        raise failure[0]
    merger.merge_folder(run, counts)
    with contextlib.suppress(OSError):
        run.rmdir()


# -- analysing --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VocabIndex:
    """A vocabulary as scoring tasks need it: its index matrix, and each row's phrase (Arrow columns)."""

    name: str
    matrix: npt.NDArray[np.floating]
    phrases: "PhraseColumns"


def score_chunk(batch: "pa.Table", vocabs: dict[str, Any], scale: float, top_k: int) -> "pa.Table":
    """A Ray task: the rows of `collection analyze` for a chunk of pictures, every vocabulary, computed
    like `Collections.analyze_blocks` (the same kernel, the same softmax and top-k, the same columns)."""
    from .kernels import cosines
    from .scoring import scores_from_cosine_columns
    from .tables import analysis_block

    pa = _arrow()
    indexes: list[VocabIndex] = _shared(vocabs)
    column = batch.column("embedding").combine_chunks()
    dim = column.type.list_size
    matrix = np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, dim)
    ext, src, sha = (batch.column(n).combine_chunks() for n in ("external_id", "source", "sha256"))
    blocks = [analysis_block(v.phrases, ext, src, sha, scores_from_cosine_columns(cosines(v.matrix, matrix), scale, top_k))
              for v in indexes]
    return pa.concat_tables(blocks)


def _vocab_indexes(engine: "Engine", names: Sequence[str]) -> list[VocabIndex]:
    from .tables import PhraseColumns

    versions = engine.store.versions()
    out = []
    for n in names:
        idx = engine.indexes.get(n, versions)
        out.append(VocabIndex(n, np.asarray(idx.matrix), PhraseColumns.read(engine.store, n, idx.ids)))
    return out


def ray_analyze(
    engine: "Engine",
    name: str,
    vocabularies: Sequence[str] | None,
    top_k: int,
    out: str | Path,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
) -> int:
    """`collection analyze` with the scoring in Ray tasks; the driver writes the rows, in the local
    path's order, to `out` (.parquet, .csv or .jsonl). Returns the number of rows."""
    from .collections import CHUNK
    from .schema_collections import AnalysisRow
    from .tables import check_output, write_blocks

    require_ray()
    check_output(out)
    collections = engine.collections
    collections.analyze_blocks(name, vocabularies, top_k)  # the same refusals, before any work
    row = collections.images.get(name)
    names = engine.resolve(vocabularies)
    vocabs = _vocab_indexes(engine, names)
    scale = float(engine.model.logit_scale)
    pa = _arrow()
    with ray_session(address, num_cpus) as rt:
        refs = []
        for chunk in collections.images.vector_columns(row.id, engine.model_key, CHUNK):
            dim = chunk.matrix.shape[1]
            refs.append(rt.put(pa.table({
                "external_id": pa.array(chunk.external_id, pa.string()),
                "source": pa.array(chunk.source, pa.string()),
                "sha256": pa.array(chunk.sha256, pa.string()),
                "embedding": pa.FixedSizeListArray.from_arrays(pa.array(chunk.matrix.ravel(), pa.float32()), dim),
            })))
        if not refs:
            return write_blocks([], out, AnalysisRow)
        ctx = rt.data.DataContext.get_current()
        keep = ctx.execution_options.preserve_order
        ctx.execution_options.preserve_order = True
        try:
            with _retries_named():
                ds = rt.data.from_arrow_refs(refs).map_batches(
                    score_chunk, batch_size=None, batch_format="pyarrow", num_cpus=1, max_retries=RETRIES,
                    fn_kwargs={"vocabs": {"ref": rt.put(vocabs)}, "scale": scale, "top_k": top_k})
            blocks = ds.iter_batches(batch_size=None, batch_format="pyarrow")
            with _ray_errors(rt):
                return write_blocks(blocks, out, AnalysisRow)
        finally:
            ctx.execution_options.preserve_order = keep


__all__ = ["Plan", "RayUnavailable", "WorkerSettings", "plan", "ray_add", "ray_analyze", "ray_session", "require_ray"]
