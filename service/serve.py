"""Serving the app under gunicorn (`clip-gaze serve`)."""

from __future__ import annotations

import ctypes
import dataclasses
import ipaddress
import os
import re
import signal
from typing import Any

from indexer.errors import ClipGazeError
from indexer.settings import Settings


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, settings: Settings, has_key: bool | None = None) -> None:
    """Beyond loopback, the server listens only where writes are possible for keys alone: with a key set
    (a CLIP_GAZE_API_TOKENS token, or an active key of the store: `has_key`, read from the store when not
    given), and with no write scope for anonymous callers (CLIP_GAZE_ANONYMOUS)."""
    if is_loopback(host):
        return
    open_writes = sorted(set(settings.anonymous) & {"write", "admin"})
    if open_writes:
        raise ClipGazeError(
            f"refusing to listen on {host} with CLIP_GAZE_ANONYMOUS={','.join(settings.anonymous)}: anyone who can reach "
            f"it could {' and '.join(open_writes)}. Leave write and admin to keys, or listen on 127.0.0.1",
            code="insecure_bind",
        )
    if has_key is None:
        from indexer.store.keys import KeyStore
        from indexer.store.phrase_store import Store

        has_key = bool(settings.api_tokens) or KeyStore(Store(settings.home)).any_active()
    if not has_key:
        raise ClipGazeError(
            f"refusing to listen on {host} with no key set: set CLIP_GAZE_API_TOKENS or create an admin key "
            "(`clip-gaze keys create admin --scopes admin`), so that writes need one; or listen on 127.0.0.1",
            code="insecure_bind",
        )


def threads_per_worker(settings: Settings, workers: int) -> int:
    """Torch intra-op threads per worker: the cores shared out, unless CLIP_GAZE_THREADS says otherwise.

    One forward pass at a time runs in each worker (the batcher), so this never oversubscribes.
    """
    if settings.threads > 0:
        return settings.threads
    return max(1, (os.cpu_count() or 1) // workers)


def limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives each thread that allocates its own arena and rarely returns their memory: with a
    thread per request, a worker's resident memory creeps up by hundreds of MB. Two arenas keep it
    flat at no measurable cost here (bench/memory_start.py). Forked workers inherit the setting."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-8, arenas)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass  # not glibc


ACCESS_LOG_FORMAT = '%(h)s %(t)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s"'


def redacted_request_line(method: str, path: str, query: str, protocol: str) -> str:
    """The request line for the access log with each query value replaced by `…`: a credential sent
    in a query string (refused, but sent) never reaches the log; the parameters' names still do. The
    path is decoded (WSGI's PATH_INFO), so what would end a log line or fake a field (a control
    character, a `"`, a backslash) is written as a `\\xNN` escape: no request can forge a log line."""
    if query:
        names = [part.split("=", 1)[0] for part in query.split("&") if part]
        path += "?" + "&".join(f"{name}=…" for name in names)
    return _UNLOGGED.sub(lambda m: f"\\x{ord(m.group()):02x}", f"{method} {path} {protocol}")


_UNLOGGED = re.compile(r'[\x00-\x1f\x7f-\x9f"\\\u2028\u2029]')


def _access_logger() -> Any:
    from gunicorn.glogging import Logger

    class AccessLogger(Logger):  # type: ignore[misc]
        def atoms(self, resp: Any, req: Any, environ: Any, request_time: Any) -> dict[str, Any]:
            atoms: dict[str, Any] = super().atoms(resp, req, environ, request_time)
            atoms["r"] = redacted_request_line(environ.get("REQUEST_METHOD", "-"), environ.get("PATH_INFO", ""),
                                               environ.get("QUERY_STRING", ""), environ.get("SERVER_PROTOCOL", "-"))
            atoms["q"] = ""
            return atoms

    return AccessLogger


def _post_worker_init(worker: Any) -> None:
    """After gunicorn set the worker's signals: its SIGTERM (a graceful stop) also tells the running
    jobs to stop at their next checkpoint, then gunicorn stops taking connections as it does."""
    state = worker.wsgi.extensions["clip_gaze"]
    graceful = signal.getsignal(signal.SIGTERM)

    def on_term(sig: int, frame: Any) -> None:
        state.stop_jobs()
        if callable(graceful):
            graceful(sig, frame)

    signal.signal(signal.SIGTERM, on_term)
    signal.siginterrupt(signal.SIGTERM, False)
    state.start_warm_up()


def _worker_exit(server: Any, worker: Any) -> None:
    """In the worker, as it exits: jobs reach a checkpoint (within CLIP_GAZE_SHUTDOWN_GRACE of the
    SIGTERM) or are handed back for the next start to resume."""
    state = getattr(getattr(worker, "wsgi", None), "extensions", {}).get("clip_gaze")
    if state is not None:
        state.shutdown_jobs()


def graceful_timeout(shutdown_grace: float) -> int:
    """gunicorn's graceful_timeout: jobs get `shutdown_grace` to reach a checkpoint, requests 30 s, and
    a margin for the worker to hand its jobs back before the arbiter kills it."""
    return int(max(30.0, shutdown_grace + 10.0))


def gunicorn_options(host: str, port: int, workers: int, threads: int, shutdown_grace: float = 20.0) -> dict[str, Any]:
    bind_host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return {
        "bind": f"{bind_host}:{port}",
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread",
        "timeout": 300,  # a large batch on CPU may take a while
        "graceful_timeout": graceful_timeout(shutdown_grace),
        "post_worker_init": _post_worker_init,
        "worker_exit": _worker_exit,
        "accesslog": "-",
        # gunicorn's default format logs %(u)s, the Basic-auth user name: `curl -u TOKEN:` would put a
        # token in the log. No credentials are ever logged.
        "access_log_format": ACCESS_LOG_FORMAT,
        "logger_class": _access_logger(),
        "errorlog": "-",
        "loglevel": "info",
        # No control socket: one shared path (~/.gunicorn/gunicorn.ctl) would be taken over by every
        # other server started by the same user, and clip-gaze does not use gunicornc.
        "control_socket_disable": True,
    }


def run(host: str, port: int, workers: int, threads: int, settings: Settings) -> None:
    from gunicorn.app.base import BaseApplication

    check_bind(host, settings)
    limit_malloc_arenas()
    worker_settings = dataclasses.replace(settings, threads=threads_per_worker(settings, workers), serve_threads=threads)

    class ClipGazeApplication(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in gunicorn_options(host, port, workers, threads, settings.shutdown_grace).items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            from .app import create_app

            return create_app(worker_settings)

    ClipGazeApplication().run()
