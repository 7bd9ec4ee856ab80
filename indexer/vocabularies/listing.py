"""The vocabularies of a store as clients see them: names resolved (the default set when none is
given), built-in lists brought into the store when first named (no model needed), the list of all of
them, one with its phrases a page at a time."""

from __future__ import annotations

from typing import Iterable, Sequence

from ..catalog import catalog
from ..errors import NotFound
from ..schema import PageQuery, PhraseRow, Vocabulary, VocabularyPage
from ..store.phrase_store import Store, VocabularyRow


def unknown_vocabularies(names: Sequence[str]) -> NotFound:
    """What naming vocabularies that are not there answers (and, to a caller not granted them, private ones)."""
    return NotFound(
        f"unknown vocabular{'y' if len(names) == 1 else 'ies'}: {', '.join(names)} "
        "(see `clip-gaze vocab list` or GET /v1/vocabularies)",
        code="unknown_vocabulary",
    )


def sync_builtins(store: Store, names: Sequence[str]) -> list[str]:
    """Bring the named built-in vocabularies into the store (no model needed). Returns those that changed."""
    cat = catalog()
    return [n for n in names if n in cat.vocabularies and store.sync_builtin(cat.vocabularies[n])]


class Listing:
    def __init__(self, store: Store):
        self.store = store
        self._builtins_synced = False

    @staticmethod
    def default() -> list[str]:
        """The default set: what is scored when no vocabulary is named."""
        return list(catalog().default)

    def resolve(self, names: Iterable[str] | None) -> list[str]:
        """Vocabulary names (the default set if none), known built-ins brought into the store; an
        unknown name is refused (`unknown_vocabulary`) before any work."""
        wanted = list(dict.fromkeys(n for n in (names or []) if n)) or self.default()
        known = self.store.versions()
        builtin = catalog().vocabularies
        missing_builtins = [n for n in wanted if n not in known and n in builtin]
        if missing_builtins:
            sync_builtins(self.store, missing_builtins)
            known = self.store.versions()
        unknown = [n for n in wanted if n not in known]
        if unknown:
            raise unknown_vocabularies(unknown)
        return wanted

    @staticmethod
    def answer(row: VocabularyRow) -> Vocabulary:
        return Vocabulary(
            name=row.name, size=row.size, builtin=row.builtin, templates=list(row.templates),
            description=row.description, version=row.version, source=row.source, licence=row.licence,
            default=row.name in catalog().default, private=row.private,
        )

    def all(self) -> list[Vocabulary]:
        """Every vocabulary, built-in ones (brought into the store once per listing) and custom ones."""
        if not self._builtins_synced:
            sync_builtins(self.store, list(catalog().vocabularies))
            self._builtins_synced = True
        return [self.answer(r) for r in self.store.list_vocabularies()]

    def get(self, name: str) -> Vocabulary:
        self.resolve([name])
        return self.answer(self.store.get_vocabulary(name))

    def page(self, name: str, page: PageQuery = PageQuery()) -> VocabularyPage:
        vocabulary = self.get(name)
        rows, next_offset = self.store.phrases_page(name, page.offset, page.limit)
        return VocabularyPage(vocabulary=vocabulary, phrases=[PhraseRow(**r) for r in rows], next_offset=next_offset)


__all__ = ["Listing", "sync_builtins", "unknown_vocabularies"]
