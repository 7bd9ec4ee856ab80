"""Indexing: sync built-in lists into the store, embed what is missing, write index files."""

from __future__ import annotations

import random
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Protocol, Sequence

from .errors import NotIndexed
from .models import LoadedModel
from .store import Store
from .vocab import catalog


class Progress(Protocol):
    def update(self, n: int) -> Any: ...


ProgressFactory = Callable[[int, str], ContextManager[Progress]]

CHUNK = 4096  # phrases embedded and committed together: an interrupted run keeps what it finished


@dataclass
class IndexReport:
    model: str
    vocabularies: list[str] = field(default_factory=list)
    synced: list[str] = field(default_factory=list)
    embedded: int = 0
    indexes_written: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "vocabularies": self.vocabularies, "synced": self.synced,
                "embedded": self.embedded, "indexes_written": self.indexes_written}


def sync_builtins(store: Store, names: Sequence[str]) -> list[str]:
    """Bring the named built-in vocabularies into the store (no model needed). Returns those that changed."""
    cat = catalog()
    return [n for n in names if n in cat.vocabularies and store.sync_builtin(cat.vocabularies[n])]


def embed_missing(
    store: Store,
    model: LoadedModel,
    names: Sequence[str],
    progress: ProgressFactory | None = None,
    model_key: str | None = None,
) -> int:
    """Embed every phrase of these vocabularies that has no embedding for this model yet.

    Phrases are sorted by length (so batches trim well) and cut into chunks that are committed one
    by one; the chunks run in shuffled order so a progress bar's rate, and so its ETA, is honest.
    """
    key = model_key or model.spec.key()
    missing = store.missing_phrases(key, names)
    if not missing:
        return 0
    missing.sort(key=len)
    chunks = [missing[i : i + CHUNK] for i in range(0, len(missing), CHUNK)]
    random.Random(0).shuffle(chunks)
    bar = progress(len(missing), "embedding phrases") if progress else nullcontext(None)
    with bar as b:
        for chunk in chunks:
            vectors = model.encode_texts(chunk, progress=b.update if b is not None else None)
            store.put_embeddings(key, chunk, vectors)
    return len(missing)


def write_indexes(store: Store, model_key: str, names: Sequence[str], force: bool = False) -> list[str]:
    """Write the index file of each vocabulary whose file is missing, stale or damaged."""
    written = []
    for name in names:
        vocab = store.get_vocabulary(name)
        path = store.index_path(model_key, vocab)
        if not force and store.read_index(path, expected=vocab.size) is not None:
            continue
        ids, mat, missing = store.vectors(model_key, vocab.id)
        if missing:
            raise NotIndexed(f"{missing} phrases of {name!r} have no embedding for {model_key}; run `clip-gaze index --vocab {name}`")
        store.write_index(model_key, vocab, ids, mat)
        written.append(name)
    return written


def index(
    store: Store,
    model: LoadedModel,
    names: Sequence[str],
    progress: ProgressFactory | None = None,
    force: bool = False,
) -> IndexReport:
    """`clip-gaze index`: built-ins synced, missing phrases embedded, index files written."""
    key = model.spec.key()
    report = IndexReport(model=model.spec.name, vocabularies=list(names))
    report.synced = sync_builtins(store, names)
    for name in names:
        store.get_vocabulary(name)  # unknown names fail before any embedding
    report.embedded = embed_missing(store, model, names, progress, model_key=key)
    report.indexes_written = write_indexes(store, key, names, force=force)
    return report
