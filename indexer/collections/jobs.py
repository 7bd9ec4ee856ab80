"""Jobs: adds run in the background of a service worker, that never say `running` without one.

A job's state is in the store, so any worker answers for it. A job queued or running is owned by one
run of one worker process (`owner`: `process_owner()`, the host, PID namespace, PID and a token of the
process with its start time, then `#` and the run's token) holding a lease (`lease_until`, unix
seconds) that a heartbeat thread (`Leases`) renews every `HEARTBEAT` seconds, whatever the speed of
the job's batches. `LEASE` is longer than the store's busy timeout (60 s) and a beat: a renewal
waiting on a busy store still comes before the lease lapses. A job whose owner is known alive (a
process of this machine and namespace that lives, or a run of this process still running) is never
taken, whatever its lease. A job whose owner is known dead (such a process gone, its PID reused by
another), or of an owner this process cannot see (another host or namespace) whose lease passed, is
owned by no one and never answered as running: the first worker that sees it (when it starts,
every `WATCH` seconds after, or when the job is asked for) takes it atomically (one UPDATE … WHERE no
live owner: only one worker wins) and resumes it from what is stored (`resumed` + 1; the add's plan
skips what earlier runs stored, and the counts are carried on: `AddRun.carry`), or, with
CLIP_GAZE_RESUME_JOBS=0, marks it `interrupted` with a reason. A job stored before jobs kept their
request cannot be resumed: it is marked interrupted too. A run writes its job only while it owns
it (every write is `WHERE owner = ?`): a run whose job was taken from it or handed back stops at
its next checkpoint (`Lost`), leaving the job to its new owner.

Stopping (a worker's SIGTERM): `stop()` tells the running jobs to stop after the batch they are
recording (a batch is one transaction, and the job's counts are written in it: a checkpoint);
`shutdown(deadline)` waits for them until the deadline (CLIP_GAZE_SHUTDOWN_GRACE after the signal),
then leaves each one this worker owns `queued` with no owner, for the next worker to resume.

The same leases keep an add's claims on the sources it reads (`ingest.AddRun`, owned by the run:
`run_owner()`), so that concurrent adds into one collection, in threads or processes, read each
source once.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
import weakref
from collections import Counter
from typing import Any, Callable, Iterable, NamedTuple, Protocol

from pydantic import BaseModel

from ..schema.collections import AddSources, JobInfo
from ..store.callbacks import callback_info
from ..store.image_store import ImageStore

log = logging.getLogger("clip_gaze.jobs")

LEASE = 75.0  # seconds a lease holds without renewal: more than the store's busy timeout (60 s) and a beat
HEARTBEAT = 3.0  # seconds between renewals
WATCH = 5.0  # seconds between a worker's looks for jobs no live worker owns
INTERRUPTED = "the server stopped while it ran; add the source again to finish"
UNRESUMABLE = "the server stopped while it ran (a job of an older version: its request was not kept); add the source again to finish"
MAP_INTERRUPTED = "the server stopped while it computed the map; asking for the map again starts it again"
JOB_FIELDS = tuple(JobInfo.model_fields)

_identity: tuple[int, str] | None = None


def process_owner() -> str:
    """This process, as an owner of leases: host/pid namespace/pid/token (a forked child is another);
    the token begins with the process's start time (`_started`), so a PID reused is told apart."""
    global _identity
    pid = os.getpid()
    if _identity is None or _identity[0] != pid:
        started = _started(pid)
        token = f"{started}.{secrets.token_hex(4)}" if started else secrets.token_hex(4)
        _identity = (pid, f"{socket.gethostname()}/{_namespace()}/{pid}/{token}")
    return _identity[1]


def _started(pid: int) -> str | None:
    """The start time of process `pid` (clock ticks since boot, /proc/<pid>/stat's 22nd field)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        return fields[19].decode()
    except (OSError, IndexError, UnicodeDecodeError):
        return None


def run_owner() -> str:
    """An owner for one add run of this process."""
    return f"{process_owner()}#{secrets.token_hex(4)}"


def _namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid").removeprefix("pid:")
    except OSError:
        return "-"


def owner_alive(owner: str) -> bool | None:
    """False when `owner`'s process is known to be gone (it ran on this host, in this PID namespace);
    True when it lives; None when this process cannot tell (another host: its lease tells)."""
    process = owner.split("#", 1)[0]
    parts = process.split("/")
    if len(parts) != 4 or parts[0] != socket.gethostname() or parts[1] != _namespace() or not parts[2].isdigit():
        return None
    pid = int(parts[2])
    if pid == os.getpid():
        return process == process_owner()
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    started = parts[3].split(".", 1)[0] if "." in parts[3] else None
    if started is not None and (now := _started(pid)) is not None and now != started:
        return False  # the PID is another process's now
    return True


def dead_owners(owners: Iterable[str]) -> list[str]:
    return [o for o in owners if owner_alive(o) is False]


_live_runs: set[str] = set()  # owners of the job runs of this process whose thread runs
_live_lock = threading.Lock()


def job_owner_alive(owner: str) -> bool | None:
    """`owner_alive` for a job's owner: one of this process is alive while its run runs (this process
    cannot tell otherwise: its lease tells)."""
    if owner.split("#", 1)[0] == process_owner():
        with _live_lock:
            return True if owner in _live_runs else None
    return owner_alive(owner)


def _liveness(owners: Iterable[str]) -> tuple[list[str], list[str]]:
    """Of job owners, those known dead and those known alive."""
    seen = {o: job_owner_alive(o) for o in owners}
    return [o for o, a in seen.items() if a is False], [o for o, a in seen.items() if a is True]


class Leases:
    """The heartbeat of one process over one store: every `HEARTBEAT` seconds, the leases of the
    owners held (jobs and claims) are renewed for `LEASE` seconds. Its thread runs while it holds any."""

    _all: "weakref.WeakKeyDictionary[ImageStore, Leases]" = weakref.WeakKeyDictionary()
    _made = threading.Lock()

    def __init__(self, images: ImageStore):
        self.images = images
        self.held: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @classmethod
    def of(cls, images: ImageStore) -> "Leases":
        with cls._made:
            if images not in cls._all or cls._all[images]._pid != os.getpid():
                leases = cls(images)
                leases._pid = os.getpid()
                cls._all[images] = leases
            return cls._all[images]

    _pid = 0

    def hold(self, owner: str) -> None:
        with self._lock:
            self.held[owner] += 1
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._beat, name="clip-gaze-leases", daemon=True)
                self._thread.start()

    def drop(self, owner: str) -> None:
        with self._lock:
            self.held[owner] -= 1
            if self.held[owner] <= 0:
                del self.held[owner]

    def _beat(self) -> None:
        try:
            while True:
                time.sleep(HEARTBEAT)
                with self._lock:
                    owners = list(self.held)
                    if not owners:
                        self._thread = None
                        return
                try:
                    self.images.renew(owners, time.time() + LEASE)
                except Exception:  # a busy or closing store: the next beat tries again
                    log.warning("renewing leases failed", exc_info=True)
        finally:
            self.images.store.close()  # this thread's connection


class Stopped(Exception):
    """Raised in a job's thread at a checkpoint, once the worker is stopping."""


class Lost(Stopped):
    """Raised in a job's thread at a checkpoint when its run no longer owns the job (another worker
    took it, or it was handed back): the run stops, and writes the job no more."""


class JobRun(Protocol):
    """What a job runs (`ingest.AddRun`): told its job, it counts for it."""

    def carry(self, job_id: str, earlier: dict[str, Any], owner: str | None = None) -> None: ...

    def job_counts(self, report: Any = None) -> dict[str, Any]: ...

    job_written: dict[str, Any] | None  # the job's counts as last stored for it (by a batch or a checkpoint)


MakeRun = Callable[[str, Any], Any]
Execute = Callable[[Any, Callable[[Any], None]], Any]


class Kind(NamedTuple):
    """A kind of job: its request (kept with the job, so a resumed run has it), how a run is made and
    executed, and the reason an interrupted one is given."""

    request: type[BaseModel]
    make_run: MakeRun
    execute: Execute
    interrupted: str = INTERRUPTED


class Jobs:
    """The jobs of one worker process: started, renewed, stopped at a checkpoint, resumed."""

    def __init__(self, images: ImageStore, make_run: MakeRun, execute: Execute, resume: bool = True):
        self.images = images
        self.kinds: dict[str, Kind] = {"add_sources": Kind(AddSources, make_run, execute)}
        self.resume = resume
        self.halting = False  # set by `stop`, in a signal handler: a plain flag, no lock taken
        self.stopping = threading.Event()  # set by `shutdown`: wakes the watcher
        self.threads: dict[str, threading.Thread] = {}
        self.owners: dict[str, str] = {}  # job → the owner its run here holds it as
        self._lock = threading.Lock()
        self._watching: threading.Thread | None = None
        # Job callbacks (`collections.callbacks.Deliveries`, set by `Collections`): a callback URL is
        # checked before its job is made; a job's end wakes the deliveries.
        self.check_callback: Callable[[str], None] = _no_callbacks
        self.ended: Callable[[str], None] = lambda job_id: None

    def _new_owner(self) -> str:
        """An owner for one run of a job here, alive (`job_owner_alive`) until the run ends."""
        owner = run_owner()
        with _live_lock:
            _live_runs.add(owner)
        return owner

    @staticmethod
    def _ended(owner: str) -> None:
        with _live_lock:
            _live_runs.discard(owner)

    def register(self, kind: str, request: type[BaseModel], make_run: MakeRun, execute: Execute,
                 interrupted: str = INTERRUPTED) -> None:
        """Another kind of job (`start(…, kind=)`), resumed like the adds."""
        self.kinds[kind] = Kind(request, make_run, execute, interrupted)

    def start(self, name: str, request: BaseModel, callback_url: str | None = None, kind: str = "add_sources") -> str:
        """The job of `request` (of `kind`) started here; with `callback_url` (checked first:
        `check_callback`), its answer is POSTed there, signed, when it ends."""
        if callback_url is not None:
            self.check_callback(callback_url)
        owner = self._new_owner()
        try:
            job_id = self.images.create_job(kind, name, request.model_dump_json(), owner, time.time() + LEASE,
                                            callback_url=callback_url)
        except BaseException:
            self._ended(owner)
            raise
        self._spawn(job_id, name, request, carried={}, owner=owner, kind=kind)
        return job_id

    def info(self, job_id: str) -> JobInfo:
        """The job as stored; one that no live worker owns is taken here first (resumed or interrupted)."""
        row = self.images.job(job_id)
        if row["state"] in ("queued", "running") and not self._owned(row):
            self.take(job_id)
            row = self.images.job(job_id)
        return JobInfo(**{k: row[k] for k in JOB_FIELDS if k in row}, callback=callback_info(self.images, row))

    def _owned(self, row: dict[str, object]) -> bool:
        owner, lease = row.get("owner"), row.get("lease_until")
        if not isinstance(owner, str):
            return False
        alive = job_owner_alive(owner)
        if alive is not None:
            return alive
        return isinstance(lease, (int, float)) and lease >= time.time()

    # -- taking over -----------------------------------------------------------------------------
    def take(self, job_id: str) -> bool:
        """Resumes (or interrupts) a job that no live worker owns; False if another worker has it."""
        if self.halting:
            return False
        row = self.images.job(job_id)
        dead, alive = _liveness([row["owner"]] if row.get("owner") else [])
        now = time.time()
        kind = self.kinds.get(str(row["kind"]))
        request = self._request(kind, row.get("request"))
        if request is None or not self.resume:
            reason = MAP_INTERRUPTED if row["kind"] == "map" else UNRESUMABLE if request is None else \
                kind.interrupted if kind else INTERRUPTED
            taken = self.images.take_job(job_id, now, dead, {"state": "interrupted", "reason": reason, "lease_until": None},
                                         alive=alive)
            if taken:
                log.warning("job %s interrupted: %s", job_id, reason)
            return taken
        owner = self._new_owner()
        try:
            taken = self.images.take_job(job_id, now, dead, {"state": "running", "lease_until": now + LEASE}, owner=owner,
                                         resumed=True, alive=alive)
        except BaseException:
            self._ended(owner)
            raise
        if not taken:
            self._ended(owner)
            return False
        log.info("resuming job %s (%s)", job_id, row["collection"])
        self._spawn(job_id, str(row["collection"]), request, carried=dict(row), owner=owner, resumed=True,
                    kind=str(row["kind"]))
        return True

    @staticmethod
    def _request(kind: Kind | None, text: object) -> BaseModel | None:
        if not isinstance(text, str) or kind is None:
            return None
        try:
            return kind.request.model_validate_json(text)
        except ValueError:
            return None

    def take_unowned(self) -> int:
        """Every job no live worker owns, taken (resumed or interrupted): how many this worker took."""
        dead, alive = _liveness(self.images.job_owners())
        return sum(self.take(job_id) for job_id in self.images.unowned_jobs(time.time(), dead, alive))

    def watch(self) -> None:
        """Takes unowned jobs now and every `WATCH` seconds after, until the worker stops."""
        def loop() -> None:
            try:
                while not self.halting:
                    try:
                        self.take_unowned()
                    except Exception:  # the store busy: the next look tries again
                        log.warning("looking for unowned jobs failed", exc_info=True)
                    self.stopping.wait(WATCH)
            finally:
                self.images.store.close()

        if self._watching is None:
            self._watching = threading.Thread(target=loop, name="clip-gaze-jobs-watch", daemon=True)
            self._watching.start()

    # -- running ---------------------------------------------------------------------------------
    def _spawn(self, job_id: str, name: str, request: BaseModel, carried: dict[str, object], owner: str,
               resumed: bool = False, kind: str = "add_sources") -> None:
        """The job's run in a thread of its own, as `owner` (alive until it ends)."""
        make_run, execute = self.kinds[kind].make_run, self.kinds[kind].execute
        leases = Leases.of(self.images)
        leases.hold(owner)

        def checkpoint(_: Any) -> None:
            """After the plan, each batch and while waiting for other runs: the counts (a batch wrote
            them in its transaction; the plan's skipped and relabelled are written here), then a stop,
            or the end of a run that no longer owns its job."""
            counts = add.job_counts()
            if counts != add.job_written:
                if not self.images.update_job(job_id, held_by=owner, **counts):
                    raise Lost()
                add.job_written = counts
            elif self.images.job_owner(job_id) != owner:
                raise Lost()
            if self.halting:
                raise Stopped()

        add: JobRun

        def run() -> None:
            nonlocal add
            try:
                if not resumed and not self.images.update_job(job_id, held_by=owner, state="running"):
                    raise Lost()
                add = make_run(name, request)
                add.carry(job_id, carried, owner=owner)
                report = execute(add, checkpoint)
                if not self.images.update_job(job_id, held_by=owner, state="done", owner=None, lease_until=None,
                                              **add.job_counts(report)):
                    raise Lost()
            except Lost:
                log.warning("job %s was taken over by another worker (or handed back); this run of it stops", job_id)
            except Stopped:
                self.images.release_job(job_id, owner)
                log.info("job %s stopped at a checkpoint; the next start resumes it", job_id)
            except Exception as exc:  # reported by the job, never lost
                self.images.update_job(job_id, held_by=owner, state="failed", owner=None, lease_until=None,
                                       error=str(getattr(exc, "message", exc)))
            finally:
                self._ended(owner)
                leases.drop(owner)
                with self._lock:
                    self.threads.pop(job_id, None)
                    self.owners.pop(job_id, None)
                self.ended(job_id)
                self.images.store.close()  # this thread's connection

        thread = threading.Thread(target=run, name=f"clip-gaze-job-{job_id}", daemon=True)
        with self._lock:
            self.threads[job_id] = thread
            self.owners[job_id] = owner
        thread.start()

    def stop(self) -> None:
        """Running jobs stop at their next checkpoint; no job is taken after. Safe in a signal handler
        (a SIGTERM may come twice, from the supervisor and from gunicorn's arbiter, the second one
        inside the first): it only sets a flag, never a lock (an Event's would deadlock there)."""
        self.halting = True

    def shutdown(self, deadline: float) -> None:
        """`stop`, wait for the jobs until `deadline` (time.monotonic()), then hand back to the store
        every job this worker still owns (`queued`, no owner: the next worker resumes it)."""
        self.stop()
        self.stopping.set()
        with self._lock:
            threads = list(self.threads.values())
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        with self._lock:
            left = dict(self.owners)
        for job_id, owner in left.items():
            self.images.release_job(job_id, owner)
            log.warning("job %s did not reach a checkpoint in time; the next start resumes it", job_id)


def _no_callbacks(url: str) -> None:
    from ..errors import InvalidInput

    raise InvalidInput("this server delivers no job callbacks", code="no_webhook_secret", status=422)


__all__ = ["HEARTBEAT", "INTERRUPTED", "LEASE", "Jobs", "Kind", "Leases", "Lost", "Stopped", "dead_owners", "job_owner_alive",
           "owner_alive", "process_owner", "run_owner"]
