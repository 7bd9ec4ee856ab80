"""People's verdicts on machine suggestions (migration 006): for a picture of a collection (by the
sha256 of its bytes) and a term of a vocabulary, `accepted` or `rejected`, with an optional note.
One verdict per picture, vocabulary and term: a later one replaces it (one transaction each)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from ..errors import InvalidInput, NotFound
from .phrase_store import Store, timestamp

VERDICTS = ("accepted", "rejected")


@dataclass(frozen=True)
class Review:
    sha256: str
    vocabulary: str
    term: str
    phrase: str  # as the reviewer named it (a phrase of the vocabulary, or its term)
    verdict: str
    note: str | None
    reviewed_at: str


class Reviews:
    """The reviews of the store's collections."""

    def __init__(self, store: Store):
        self.store = store

    def picture_in(self, collection_id: int, sha256: str) -> None:
        """NotFound `unknown_picture` unless the collection holds a stored picture with this content."""
        found = self.store.db.execute("SELECT 1 FROM collection_images WHERE collection_id = ? AND sha256 = ? LIMIT 1",
                                      [collection_id, sha256]).fetchone()
        if found is None:
            raise NotFound(f"the collection holds no picture with sha256 {sha256}", code="unknown_picture")

    def picture_sha(self, collection_id: int, picture: str) -> str:
        """The sha256 `picture` names: itself (64 hexadecimal digits), or that of the collection's one
        stored picture with that external id."""
        if len(picture) == 64 and all(c in "0123456789abcdef" for c in picture):
            return picture
        found = self.store.db.execute("SELECT sha256 FROM collection_images WHERE collection_id = ? AND external_id = ? "
                                      "AND sha256 IS NOT NULL LIMIT 2", [collection_id, picture]).fetchall()
        if not found:
            raise NotFound(f"no stored picture of the collection has the sha256 or external_id {picture!r}",
                           code="unknown_picture")
        if len(found) > 1:
            raise InvalidInput(f"several pictures of the collection have the external_id {picture!r}: name one by its sha256")
        return str(found[0][0])

    def record(self, collection_id: int, review: Review) -> Review:
        """Store a verdict (replacing the picture's earlier one for that term), in one transaction."""
        stamped = Review(**{**review.__dict__, "reviewed_at": review.reviewed_at or timestamp()})
        with self.store.transaction() as db:
            if db.execute("SELECT 1 FROM collection_images WHERE collection_id = ? AND sha256 = ? LIMIT 1",
                          [collection_id, review.sha256]).fetchone() is None:  # removed meanwhile
                raise NotFound(f"the collection holds no picture with sha256 {review.sha256}", code="unknown_picture")
            db.execute(
                "INSERT INTO reviews (collection_id, sha256, vocabulary, term, phrase, verdict, note, reviewed_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (collection_id, sha256, vocabulary, term) DO UPDATE SET "
                "phrase = excluded.phrase, verdict = excluded.verdict, note = excluded.note, reviewed_at = excluded.reviewed_at",
                [collection_id, stamped.sha256, stamped.vocabulary, stamped.term, stamped.phrase, stamped.verdict,
                 stamped.note, stamped.reviewed_at])
        return stamped

    def of_collection(self, collection_id: int, vocabulary: str | None = None) -> Iterator[Review]:
        """The collection's verdicts (of one vocabulary), in the order of picture, vocabulary and term."""
        where, args = ("AND vocabulary = ?", [vocabulary]) if vocabulary is not None else ("", [])
        rows = self.store.db.execute(
            "SELECT sha256, vocabulary, term, phrase, verdict, note, reviewed_at FROM reviews WHERE collection_id = ? "
            f"{where} ORDER BY sha256, vocabulary, term", [collection_id, *args])
        for r in rows:
            yield Review(*r)

    def verdicts(self, collection_id: int) -> dict[tuple[str, str, str], str]:
        """(sha256, vocabulary, term) → verdict, for every verdict of the collection."""
        return {(r.sha256, r.vocabulary, r.term): r.verdict for r in self.of_collection(collection_id)}

    def count(self, collection_id: int) -> int:
        row: Any = self.store.db.execute("SELECT count(*) FROM reviews WHERE collection_id = ?", [collection_id]).fetchone()
        return int(row[0])


__all__ = ["VERDICTS", "Review", "Reviews"]
