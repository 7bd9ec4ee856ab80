"""A collection kept in step with a IIIF Change Discovery stream (`clip-gaze collection sync`,
`POST /v1/collections/<name>/sync`): one `SyncRun` reads the stream from its `last` page back to
the `endTime` of this collection's last sync of it (`pictures.change_stream`), plans the newest
activity per manifest, and applies it: Create/Add and Update add or refresh the manifest's pictures
through the ordinary add (`ingest`; an Update reads its stored pictures again, and pictures the
manifest no longer lists go), Delete/Remove take them out (`store.picture_removal`).

Killed at any point and run again, a sync ends as one uninterrupted run would: the plan is stored
(`collection_syncs.pending`, with how far it got) before anything is applied; each step is
idempotent (an add skips what is stored, a removal of what is gone removes nothing), a step is
marked done after it is applied, and the stream's newest `endTime` is recorded only when the plan is
applied whole. The next run finishes a pending plan first, then reads what is newer.

A manifest that cannot be read is recorded as the collection's failure (with that manifest, so a
later Delete or Create of it replaces it); its stored pictures stay as they were. A stream that
cannot be read whole changes nothing."""

from __future__ import annotations

import dataclasses
import secrets
import time
from typing import Any, Callable, Iterable

from ..pictures.change_stream import Change, GetFn, read_changes
from ..pictures.sources import Item, PictureRef, SourceFailure
from ..schema.collections import AddReport, PictureInfo
from ..schema.sync import SyncReport
from ..store.image_store import ImageStore
from ..store.picture_removal import remove_pictures
from ..store.syncs import SyncStore

PLAN_VERSION = 1
MAX_ERRORS = 20
REPORT_COUNTS = ("added", "refreshed", "removed", "failed", "manifests")  # a plan's counts kept in `pending`: the report's
RUN_COUNTS = ("manifests_failed", "refreshed_manifests")  # and the run's (a job's counts)
ExpandFn = Callable[[str], Iterable[Item]]  # a manifest's URL → the pictures it names (`sources.expand`)
AddFn = Callable[[list[Item], set[str], Callable[[AddReport], None] | None], AddReport]  # items, to read again, on_batch
Checkpoint = Callable[[Any], None]


class SyncRun:
    """One sync of change stream `stream` into collection `collection` (its id `collection_id`)."""

    def __init__(self, images: ImageStore, collection_id: int, collection: str, stream: str, get: GetFn,
                 expand: ExpandFn, add: AddFn, after_step: Callable[[int], None] | None = None):
        self.images = images
        self.collection_id = collection_id
        self.stream = stream
        self.syncs = SyncStore(images)
        self.get = get
        self.expand = expand
        self.add = add
        self.after_step = after_step  # told each step's index once it is applied (tests stop a run there)
        self.report = SyncReport(collection=collection, stream=stream)
        self.total = 0  # manifests of the plans of this run (a job's counts)
        self.steps = 0
        self.manifests_failed = 0
        self.refreshed_manifests = 0
        self.job_written: dict[str, Any] | None = None
        self.started = time.perf_counter()

    # -- a job's run (jobs.JobRun) ---------------------------------------------------------------
    def carry(self, job_id: str, earlier: dict[str, Any], owner: str | None = None) -> None:
        """A resumed job's counts come from the stored plan (`pending`), not from the job's row."""

    def job_counts(self, report: Any = None) -> dict[str, Any]:
        """The job's counts, in manifests: `total` planned, `done` applied, `failed` not readable
        (their stored pictures kept), `refreshed` of the done, updated ones."""
        return {"total": self.total, "done": self.steps - self.manifests_failed, "skipped": 0,
                "failed": self.manifests_failed, "refreshed": self.refreshed_manifests}

    # -- running ---------------------------------------------------------------------------------
    def execute(self, checkpoint: Checkpoint | None = None) -> SyncReport:
        """The sync: a pending plan finished first (then what is newer read), else the stream planned and applied."""
        end, pending = self.syncs.state(self.collection_id, self.stream)
        if pending is not None and pending.get("version") == PLAN_VERSION:
            self.report.resumed = True
            self._apply(pending, checkpoint)
            end, _ = self.syncs.state(self.collection_id, self.stream)
        pending = self._plan(end)
        if pending["plan"]:
            self.syncs.set_pending(self.collection_id, self.stream, pending)
            self._apply(pending, checkpoint)
        else:
            self.syncs.finish(self.collection_id, self.stream, pending["end_time"], pending["token"])
        self.report.end_time = self.syncs.state(self.collection_id, self.stream)[0]
        self.report.seconds = round(time.perf_counter() - self.started, 3)
        return self.report

    def _plan(self, after: str | None) -> dict[str, Any]:
        """What the stream holds after `after`, as a plan to store (nothing is changed here)."""
        changes = read_changes(self.stream, self.get, after)
        self.report.pages += changes.pages
        self.report.activities += len(changes.activities)
        self.report.ignored += changes.ignored
        plan = changes.plan()
        return {"version": PLAN_VERSION, "token": secrets.token_hex(8), "end_time": changes.newest or after,
                "plan": [c.as_json() for c in plan], "done": 0, "counts": {}}

    def _apply(self, pending: dict[str, Any], checkpoint: Checkpoint | None) -> None:
        plan = [Change(**c) for c in pending["plan"]]
        first = int(pending.get("done") or 0)
        counts = dict(pending.get("counts") or {})
        self._count(counts)  # what earlier runs of this plan applied
        self.total += len(plan)
        self.steps += first
        if checkpoint is not None:
            checkpoint(None)
        for index in range(first, len(plan)):
            before = self._counts()
            self._step(plan[index], checkpoint)
            step = {k: v - before[k] for k, v in self._counts().items()}
            counts = {k: int(counts.get(k, 0)) + step[k] for k in step}
            self.steps += 1
            self.syncs.set_pending(self.collection_id, self.stream, {**pending, "done": index + 1, "counts": counts})
            if self.after_step is not None:
                self.after_step(index)
            if checkpoint is not None:
                checkpoint(None)
        self.syncs.finish(self.collection_id, self.stream, pending["end_time"], pending.get("token"))

    def _counts(self) -> dict[str, int]:
        return {**{k: getattr(self.report, k) for k in REPORT_COUNTS}, **{k: getattr(self, k) for k in RUN_COUNTS}}

    def _count(self, counts: dict[str, Any]) -> None:
        for target, names in ((self.report, REPORT_COUNTS), (self, RUN_COUNTS)):
            for k in names:
                setattr(target, k, getattr(target, k) + int(counts.get(k, 0)))

    def _step(self, change: Change, checkpoint: Checkpoint | None) -> None:
        """One manifest's change, applied idempotently."""
        self.report.manifests += 1
        if change.action == "remove":
            self.report.removed += remove_pictures(self.images, self.collection_id, manifests=[change.manifest])
            return
        items = [dataclasses.replace(it, manifest=change.manifest)
                 if isinstance(it, SourceFailure) and it.manifest is None else it for it in self.expand(change.manifest)]
        unread = next((it for it in items if isinstance(it, SourceFailure) and it.source == change.manifest), None)
        stored = self.syncs.manifest_sources(self.collection_id, change.manifest)
        listed = {it.source for it in items if isinstance(it, (PictureRef, SourceFailure))}
        again: set[str] = set()
        if unread is None:
            gone = sorted(stored - listed)  # no longer in the manifest (or its earlier failure)
            if gone:
                self.report.removed += remove_pictures(self.images, self.collection_id, sources=gone)
            if change.action == "refresh":
                again = {it.source for it in items if isinstance(it, PictureRef)} & stored
        else:
            self.manifests_failed += 1
            items = [unread] if not (stored - {change.manifest}) else []  # a failure kept only where nothing is stored
            if not items:  # else the add counts and lists it
                self.report.failed += 1
                self._error(PictureInfo(source=unread.source, external_id=None, sha256=None, width=None, height=None,
                                        metadata=None, error_code=unread.code, error=unread.error))
        added = self.add(items, again, checkpoint) if items else None
        if added is not None:
            self.report.added += added.added - added.refreshed
            self.report.refreshed += added.refreshed
            self.report.failed += added.failed
            for e in added.errors:
                self._error(e)
        if unread is None and change.action == "refresh":
            self.refreshed_manifests += 1

    def _error(self, info: PictureInfo) -> None:
        if len(self.report.errors) < MAX_ERRORS:
            self.report.errors.append(info)


__all__ = ["PLAN_VERSION", "SyncRun"]
