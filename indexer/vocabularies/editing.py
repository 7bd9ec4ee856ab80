"""Changing custom vocabularies: create one, add phrases, remove phrases, delete it.

Every write is validated before (the request models) and is one transaction in the store;
embeddings are computed before the write, so a model failure stores nothing. After a write, the new
version's index file is written at once, so other workers load it rather than rebuild it.
"""

from __future__ import annotations

from typing import Sequence

from ..catalog import PhraseSpec, apply_templates, catalog
from ..errors import Conflict, ReadOnly
from ..schema import AddPhrases, Collision, CreateVocabulary, PhraseItem, RemovePhrases, WriteAnswer, parse_name
from ..store.index_files import IndexFiles
from ..store.phrase_store import VocabularyRow, WriteResult, spec_key
from .collisions import model_tokenizer, without_collisions
from .embedder import PhraseEmbedder
from .index_cache import IndexCache
from .listing import Listing


class Editor:
    """Changes the custom vocabularies of one store, embedding with one model (its `embedder`)."""

    def __init__(self, listing: Listing, embedder: PhraseEmbedder, indexes: IndexCache, files: IndexFiles):
        self.listing = listing
        self.store = listing.store
        self.embedder = embedder
        self.indexes = indexes
        self.files = files
        self.model_key = embedder.model_key

    def create(self, request: CreateVocabulary) -> WriteAnswer:
        name = request.name
        if name in catalog().vocabularies:
            raise Conflict(f"{name!r} is the name of a built-in vocabulary; choose another", code="vocabulary_exists")
        templates = request.template_list()
        specs = apply_templates(_phrase_specs(request.phrases, request.language), templates)
        if self.store.find_vocabulary(name) is not None:  # fail before embedding; the write checks again
            raise Conflict(f"a vocabulary named {name!r} already exists", code="vocabulary_exists")
        key = self.embedder.model_key
        specs, collisions = without_collisions(model_tokenizer(self.embedder.model()), [], specs, key)
        vectors = self.embedder.lookup([spec_key(key, s) for s in specs])  # before the write: a model failure stores nothing
        result = self.store.create_vocabulary(name, templates, request.description or "", specs, self.model_key, vectors,
                                              private=request.private)
        self.indexes.refresh(name)
        return self._write_answer(result, collisions)

    def add(self, name: str, request: AddPhrases) -> WriteAnswer:
        vocab = self._writable(name)
        specs = apply_templates(_phrase_specs(request.phrases, request.language), vocab.templates)
        tokenize, key = model_tokenizer(self.embedder.model()), self.embedder.model_key
        specs, collisions = without_collisions(tokenize, self.store.phrase_texts(vocab.id, key) if tokenize else [], specs, key)
        vectors = self.embedder.lookup([spec_key(key, s) for s in specs])
        result = self.store.add_phrases(name, specs, self.model_key, vectors)
        if result.added:
            self.indexes.refresh(name)
        return self._write_answer(result, collisions)

    def remove(self, name: str, request: RemovePhrases) -> WriteAnswer:
        self._writable(name)
        result = self.store.remove_phrases(name, request.terms or [], [str(e) for e in request.external_ids or []])
        if result.removed:
            self.indexes.refresh(name)
        return self._write_answer(result)

    def delete(self, name: str) -> WriteAnswer:
        row = self._writable(name)
        result = self.store.delete_vocabulary(name)
        self.files.drop(name, row.id)
        self.indexes.drop(name)
        before = self.listing.answer(row)
        return WriteAnswer(vocabulary=before, removed=result.removed, version=result.version, deleted=name)

    def _writable(self, name: str) -> VocabularyRow:
        """A custom vocabulary to change; says so before any embedding if it is built-in or unknown."""
        parse_name(name)
        self.listing.resolve([name])
        row = self.store.get_vocabulary(name)
        if row.builtin:
            raise ReadOnly(f"{name!r} is a built-in vocabulary and cannot be changed; create your own with `vocab create`")
        return row

    def _write_answer(self, result: WriteResult, collisions: Sequence[Collision] = ()) -> WriteAnswer:
        vocabulary = self.listing.answer(self.store.get_vocabulary(result.vocabulary))
        return WriteAnswer(vocabulary=vocabulary, added=result.added, removed=result.removed,
                           unchanged=result.unchanged, version=result.version, collisions=list(collisions))


def _phrase_specs(entries: Sequence[str | PhraseItem], language: str | None = None) -> list[PhraseSpec]:
    return [
        PhraseSpec(term=e, phrase="", language=language) if isinstance(e, str)
        else PhraseSpec(term=e.term, phrase="", external_id=e.external_id, metadata=e.metadata,
                        language=e.language or language)
        for e in entries
    ]


__all__ = ["Editor"]
