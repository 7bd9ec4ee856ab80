"""`Explorer`: what the explorer page asks of a collection, made beside its `Collections` (and so
handed the engine they work through): the map, scores and facets against a vocabulary filtered by
`where`, a picture's record and its thumbnail."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import numpy.typing as npt

from ..errors import InvalidInput, NotFound, NotIndexed
from ..scoring.kernels import cosines
from ..schema.explore import Facet, FacetsAnswer, MapAnswer, PictureRecord, ScoresAnswer, Thumbnail
from ..store.image_store import CollectionRow
from ..store.thumbnails import ThumbnailStore
from ..vocabularies.index_cache import LoadedIndex
from .frame import Frame, Frames
from .maps import Layout, Maps, points_of
from .scores import Reading, Readings
from .wire import ARROW_MEDIA, JSON_MEDIA, Body, MapBodies, arrow_body, fields_of, json_body
from .where import Above, Column, Condition, Top, compare, parse_where

if TYPE_CHECKING:  # pragma: no cover
    from ..collections.local import Collections


class Explorer:
    def __init__(self, collections: "Collections"):
        self.collections = collections
        self.engine = collections.engine
        self.images = collections.images
        self.frames = Frames(self.images)
        self.readings = Readings()
        self.maps = Maps(self.images, self.frames, self.engine.model_key, self.engine.spec.name)
        self.thumbnails = ThumbnailStore(self.engine.store)
        self.bodies = MapBodies()

    # -- the pictures ---------------------------------------------------------------------------
    def frame(self, name: str) -> tuple[CollectionRow, Frame]:
        row = self.images.get(name)
        self.collections._embedded(row)  # not_indexed for pictures without this model's embedding
        return row, self.frames.get(row, self.engine.model_key)

    # -- the map ----------------------------------------------------------------------------------
    def map(self, name: str, wait: bool = False) -> tuple[MapAnswer, Frame, list[int], Any, Any]:
        """The map's answer with no `points` (`points(...)` makes them: 100,000 are not validated one by
        one), the frame, and the points' positions in the frame and coordinates as arrays (for Arrow)."""
        row, frame = self.frame(name)
        if wait:
            found: Layout | None = self.maps.compute_now(row)
            job_id = None
        else:
            found, job_id = self.maps.ensure(row)
        job = self.collections.job(job_id) if job_id else None
        if job is not None and job.state == "done" and (found is None or found.version != row.version):
            found, _ = self.maps.stored(row)  # it ended meanwhile
        keep, xs, ys = points_of(frame, found)
        running = job is not None and job.state in ("queued", "running")
        answer = MapAnswer(collection=name, model=self.engine.spec.name, version=found.version if found else None,
                           current_version=row.version, method=found.method if found else None, size=len(keep),
                           job=job if running or (job is not None and (found is None or found.version != row.version)) else None,
                           index=keep if len(keep) != len(frame) else None, points=[])
        return answer, frame, keep, xs, ys

    def map_body(self, name: str, fmt: str = "json", fields: str | None = None) -> tuple[MapAnswer, Body]:
        """The map's answer (no `points`) and its body in `fmt` (json, or arrow with `fields`), encoded once
        per layout and collection version and kept while no job runs for it."""
        answer, frame, keep, xs, ys = self.map(name)
        meta = {k: v for k, v in answer.json_dict().items() if k != "points" and (fmt == "json" or k != "index")}
        columns = fields_of(fields)
        if fmt == "arrow":
            def make() -> bytes:
                return arrow_body(meta, frame, keep, xs, ys, columns)
        else:
            def make() -> bytes:
                return json_body(meta, frame, keep, xs, ys)
        media = ARROW_MEDIA if fmt == "arrow" else JSON_MEDIA
        if answer.job is not None:  # its state moves: made afresh
            return answer, MapBodies(0).get((), make, media)
        key = (name, frame.collection_id, self.engine.spec.name, self.engine.model_key, answer.version, answer.method,
               answer.current_version, frame.version, len(keep), fmt, columns if fmt == "arrow" else ())
        return answer, self.bodies.get(key, make, media)

    @staticmethod
    def points(frame: Frame, keep: list[int], xs: Any, ys: Any) -> list[dict[str, Any]]:
        """The map's points as the answer has them (MapPoint's fields)."""
        return [{"sha256": frame.sha256[i], "external_id": frame.external_id[i], "x": x, "y": y}
                for i, x, y in zip(keep, xs.tolist(), ys.tolist())]

    # -- scores and facets ------------------------------------------------------------------------
    def _index(self, vocabulary: str) -> LoadedIndex:
        engine = self.engine
        names = engine.resolve([vocabulary])  # unknown_vocabulary
        versions = engine.store.versions()
        engine.indexes.prepare(names, versions)
        return engine.indexes.get(names[0], versions)

    def _phrases(self, idx: LoadedIndex) -> list[dict[str, Any]]:
        rows = self.engine.store.phrase_rows(idx.ids) if len(idx.ids) <= 10_000 else {}
        if len(idx.ids) > 10_000:
            for start in range(0, len(idx.ids), 10_000):
                rows.update(self.engine.store.phrase_rows(idx.ids[start:start + 10_000]))
        return [rows[int(i)] for i in idx.ids]

    def _row_of(self, phrases: list[dict[str, Any]], phrase: str, vocabulary: str) -> int:
        """The index row of a phrase (its text, else the first phrase of a term)."""
        for i, p in enumerate(phrases):
            if p["phrase"] == phrase:
                return i
        for i, p in enumerate(phrases):
            if p["term"] == phrase:
                return i
        raise InvalidInput(f"{phrase!r} is no phrase or term of vocabulary {vocabulary!r}", code="unknown_phrase")

    def _reading(self, frame: Frame, idx: LoadedIndex, relative_to: str | None, phrase: int | None = None) -> Reading:
        engine = self.engine
        relative = None
        if relative_to is not None:
            engine.hubs.reference(idx, relative_to)  # refusals first
            relative = (relative_to, lambda: engine.hubs.reference(idx, relative_to))
        return self.readings.read(frame, idx, engine.model.logit_scale, relative, phrase)

    def _mask(self, frame: Frame, conditions: Sequence[Condition], relative_to: str | None) -> npt.NDArray[np.bool_] | None:
        if not conditions:
            return None
        mask = np.ones(len(frame), bool)
        for c in conditions:
            if isinstance(c, Column):
                mask &= frame.column(c.column) == c.value  # None equals no text
                continue
            idx = self._index(c.vocabulary)
            row = self._row_of(self._phrases(idx), c.phrase, c.vocabulary)
            if isinstance(c, Top):
                mask &= self._reading(frame, idx, relative_to).top == row
            elif isinstance(c, Above):
                mask &= np.asarray(compare(c.op, self._reading(frame, idx, relative_to, row).phrases[row], c.threshold))
        return mask

    def scores(self, name: str, vocabulary: str, phrase: str | None = None, relative_to: str | None = None,
               where: Sequence[str] | str | None = None) -> ScoresAnswer:
        conditions = parse_where(where)
        _, frame = self.frame(name)
        idx = self._index(vocabulary)
        phrases = self._phrases(idx)
        row = self._row_of(phrases, phrase, vocabulary) if phrase is not None else None
        reading = self._reading(frame, idx, relative_to, row)
        mask = self._mask(frame, conditions, relative_to)
        keep = np.flatnonzero(mask) if mask is not None else None

        def take(a: npt.NDArray[Any]) -> npt.NDArray[Any]:
            return a[keep] if keep is not None else a

        return ScoresAnswer.model_construct(
            ok=True, collection=name, model=self.engine.model_info(), vocabulary=vocabulary, softmax_over=len(idx.ids),
            phrase=phrases[row]["phrase"] if row is not None else None, size=len(frame),
            matched=len(keep) if keep is not None else len(frame),
            index=keep.tolist() if keep is not None else None, phrases=[p["phrase"] for p in phrases],
            terms=[p["term"] for p in phrases], top=take(reading.top).tolist(),
            top_probability=np.round(take(reading.top_probability).astype(np.float64), 6).tolist(),
            probability=np.round(take(reading.phrases[row]).astype(np.float64), 6).tolist() if row is not None else None)

    def facets(self, name: str, vocabulary: str, relative_to: str | None = None,
               where: Sequence[str] | str | None = None) -> FacetsAnswer:
        conditions = parse_where(where)
        _, frame = self.frame(name)
        idx = self._index(vocabulary)
        phrases = self._phrases(idx)
        reading = self._reading(frame, idx, relative_to)
        mask = self._mask(frame, conditions, relative_to)
        top = reading.top[mask] if mask is not None else reading.top
        counts = np.bincount(top, minlength=len(phrases))
        order = sorted(np.flatnonzero(counts).tolist(), key=lambda i: (-int(counts[i]), i))
        return FacetsAnswer(collection=name, vocabulary=vocabulary, softmax_over=len(idx.ids), size=int(len(top)),
                            facets=[Facet(term=phrases[i]["term"], phrase=phrases[i]["phrase"],
                                          external_id=phrases[i].get("external_id"), count=int(counts[i])) for i in order])

    def column_facets(self, name: str, column: str, where: Sequence[str] | str | None = None,
                      relative_to: str | None = None, limit: int = 1000) -> FacetsAnswer:
        """A metadata column's values (or external_id's) by count, among the pictures `where` keeps."""
        conditions = parse_where(where)
        _, frame = self.frame(name)
        mask = self._mask(frame, conditions, relative_to)
        texts = frame.column(column)
        values = Counter(t for t in (texts[mask] if mask is not None else texts) if t is not None)
        return FacetsAnswer(collection=name, vocabulary=None, column=column, softmax_over=None,
                            size=int(mask.sum()) if mask is not None else len(frame),
                            facets=[Facet(term=v, phrase=v, external_id=None, count=c) for v, c in values.most_common(limit)])

    # -- one picture ------------------------------------------------------------------------------
    def picture(self, name: str, sha256: str, vocabularies: Sequence[str] = (), top_k: int = 5) -> PictureRecord:
        """The picture's record; with `vocabularies`, its best `top_k` phrases of each (`results`)."""
        row = self.images.get(name)
        found = list(self.images.db.query(
            "SELECT * FROM collection_images WHERE collection_id = ? AND sha256 = ? ORDER BY id", [row.id, sha256]))
        if not found:
            raise NotFound(f"collection {name!r} has no picture {sha256!r}", code="unknown_picture")
        r = found[0]
        import json

        has_thumb = bool(self.thumbnails.have([sha256]))
        return PictureRecord(
            collection=name, sha256=sha256, source=r["source"], external_id=r["external_id"], width=r["width"],
            height=r["height"], metadata=json.loads(r["metadata"]) if r["metadata"] else None,
            image_service=r.get("image_service"), manifest=r.get("manifest"),
            thumbnail=f"/v1/collections/{name}/pictures/{sha256}/thumbnail" if has_thumb else None, sources=len(found),
            results=self.results(sha256, vocabularies, top_k) if vocabularies else None)

    def results(self, sha256: str, vocabularies: Sequence[str], top_k: int) -> dict[str, Any]:
        """The picture's best `top_k` phrases of each vocabulary, from its stored embedding."""
        from ..scoring.softmax import scores_from_cosines

        vector = self.images.cached(self.engine.model_key, [sha256]).get(sha256)
        if vector is None:
            raise NotIndexed(f"picture {sha256!r} has no embedding for model {self.engine.spec.name}")
        out: dict[str, Any] = {}
        for vocabulary in vocabularies:
            idx = self._index(vocabulary)
            phrases = self._phrases(idx)
            s = scores_from_cosines(cosines(idx.matrix, vector[None, :])[:, 0], self.engine.model.logit_scale, top_k)
            out[vocabulary] = {"softmax_over": s.softmax_over, "matches": [
                {"phrase": phrases[i]["phrase"], "term": phrases[i]["term"], "probability": float(p), "cosine": float(c)}
                for i, p, c in zip(s.indices.tolist(), s.probabilities.tolist(), s.cosines.tolist())]}
        return out

    def thumbnail(self, name: str, sha256: str) -> Thumbnail:
        row = self.images.get(name)
        if not self.images.db.execute("SELECT 1 FROM collection_images WHERE collection_id = ? AND sha256 = ? LIMIT 1",
                                      [row.id, sha256]).fetchone():
            raise NotFound(f"collection {name!r} has no picture {sha256!r}", code="unknown_picture")
        found = self.thumbnails.get(sha256)
        if found is None:
            raise NotFound(f"picture {sha256!r} has no thumbnail yet: add the collection's sources again "
                           f"(`clip-gaze collection add {name} SOURCE`) to make those missing", code="no_thumbnail")
        return found


__all__ = ["Explorer"]
