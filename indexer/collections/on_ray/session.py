"""Ray itself, for the collections' Ray distributor: whether it is installed, joining or starting it,
how a run's actors are sized on the cluster, and how a run's failures come back as one clip-gaze
error.

Sizing. Actors hold their CPUs for the whole run; an actor pool that takes every CPU starves the
reading and writing tasks and the run hangs without an error (seen with two 1-CPU actors on a
2-CPU Ray). `plan` sizes the pool from `ray.cluster_resources()` so that a reserve of CPUs (at least
one, an eighth of a large cluster) always stays free for those tasks.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from dataclasses import dataclass
from typing import Any, Iterator

from ... import errors
from ...errors import ClipGazeError

INSTALL = "pip install 'clip-gaze[ray]'"
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


@contextlib.contextmanager
def ray_errors(rt: Any, resume: bool = False) -> Iterator[None]:
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
def retries_named() -> Iterator[None]:
    """Bounded retries (`max_retries`, `max_restarts`, `max_task_retries`). Ray Data's own defaults
    retry a dying task or actor forever, so a picture that crashes its worker every time would hang
    the run; Ray 2.60 warns that these options, passed through `**ray_remote_args`, will go away in
    2.64 (with no named replacement yet). The warning is silenced here, and only here."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*ray_remote_args.* is deprecated")
        yield


__all__ = ["INSTALL", "RETRIES", "Plan", "RayUnavailable", "plan", "ray_errors", "ray_session", "require_ray", "retries_named"]
