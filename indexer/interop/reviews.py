"""People's verdicts on machine suggestions (what Omeka S's and DiSSCo's workflows keep): a picture of
a collection, a term of a vocabulary, `accepted` or `rejected`. The phrase named must be a phrase of
the vocabulary or one of its terms (the verdict is the term's: its every templated phrase); a picture
is named by the sha256 of its bytes and must be stored in the collection. Verdicts come back in
`collection analyze` rows (`verdict`), in annotation pages (`review`; accepted as `classifying`,
rejected left out) and in `clip-gaze evaluate --from-reviews` (accepted terms as labels)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import UnknownReference
from ..schema.interop import ReviewInfo, ReviewRequest
from ..store.phrase_store import timestamp
from ..store.reviews import Review, Reviews

if TYPE_CHECKING:  # pragma: no cover
    from ..collections.local import Collections


def term_of(collections: "Collections", vocabulary: str, phrase: str) -> str:
    """The term of `vocabulary` that `phrase` is (a phrase's text, else a term, exactly, else ignoring
    case); 422 `unknown_phrase` when it is neither."""
    engine = collections.engine
    [name] = engine.resolve([vocabulary])
    vocab_id = engine.store.get_vocabulary(name).id
    db = engine.store.db
    for sql in ("SELECT term FROM phrases WHERE vocabulary_id = ? AND phrase = ? LIMIT 1",
                "SELECT term FROM phrases WHERE vocabulary_id = ? AND term = ? LIMIT 1",
                "SELECT term FROM phrases WHERE vocabulary_id = ? AND (lower(phrase) = lower(?) OR lower(term) = lower(?)) LIMIT 1"):
        found = db.execute(sql, [vocab_id, phrase, *([phrase] if sql.count("?") == 3 else [])]).fetchone()
        if found is not None:
            return str(found[0])
    raise UnknownReference(f"{phrase!r} is neither a phrase nor a term of the vocabulary {name!r} "
                           f"(see `clip-gaze vocab show {name}`)", code="unknown_phrase")


def review(collections: "Collections", name: str, sha256: str, request: ReviewRequest) -> ReviewInfo:
    """Record a person's verdict (one transaction; a later verdict on the same term replaces it)."""
    row = collections.images.get(name)
    reviews = Reviews(collections.engine.store)
    reviews.picture_in(row.id, sha256)
    term = term_of(collections, request.vocabulary, request.phrase)
    stored = reviews.record(row.id, Review(sha256, request.vocabulary, term, request.phrase, request.verdict, request.note,
                                           timestamp()))
    return info(name, stored)


def info(name: str, r: Review) -> ReviewInfo:
    return ReviewInfo(collection=name, sha256=r.sha256, vocabulary=r.vocabulary, term=r.term, phrase=r.phrase,
                      verdict=r.verdict, note=r.note, reviewed_at=r.reviewed_at)  # type: ignore[arg-type]


__all__ = ["info", "review", "term_of"]
