"""Settings, as one table: code, `--help`, the API and the README all read this.

Every setting comes from an environment variable; `Settings.from_env()` reads them once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping


def _default_home() -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "clip-gaze")


@dataclass(frozen=True)
class Setting:
    env: str
    default: Callable[[], str]
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("CLIP_GAZE_HOME", _default_home, "Data directory: the SQLite store and the FAISS indexes."),
    Setting("CLIP_GAZE_MODEL", lambda: "vit-b-32", "Model: a preset (see `clip-gaze models`), ARCH:PRETRAINED or ARCH:/path/to/checkpoint."),
    Setting("CLIP_GAZE_MODELS", lambda: "", "Several models served side by side, comma-separated (e.g. vit-b-32,sd15,sdxl): the first is the default, the others answer requests that name them (`model`). Empty: CLIP_GAZE_MODEL alone; set, it is used in its place."),
    Setting("CLIP_GAZE_API_TOKENS", lambda: "", "Comma-separated bearer tokens with every scope (full-power keys; `clip-gaze keys` makes scoped ones). With neither tokens nor keys, writes are refused and the server binds to loopback only."),
    Setting("CLIP_GAZE_BACKEND", lambda: "auto", "What runs the model: onnx (ONNX Runtime over an export in CLIP_GAZE_HOME, made once from the open_clip model), torch (open_clip itself), or auto (onnx where the model can be exported, else torch)."),
    Setting("CLIP_GAZE_DEVICE", lambda: "auto", "Device: auto (a GPU when present: ONNX Runtime's CUDA provider with onnxruntime-gpu, else torch's CUDA), cpu or cuda."),
    Setting("CLIP_GAZE_THREADS", lambda: "0", "Intra-op threads of the model (ONNX Runtime or torch); 0: one per core (shared out among `serve`'s workers)."),
    Setting("CLIP_GAZE_MAX_UPLOAD_MB", lambda: "32", "Largest request body the API accepts, in MB (413 beyond)."),
    Setting("CLIP_GAZE_MAX_PIXELS", lambda: "60000000", "Largest image, in pixels, that is decoded (decompression-bomb guard)."),
    Setting("CLIP_GAZE_MAX_REQUEST_PIXELS", lambda: "1000000000", "Largest number of pixels decoded for one request, all its images together (413 beyond)."),
    Setting("CLIP_GAZE_MAX_DECODES", lambda: "2", "Images a process decodes at once; others wait (bounds the memory of large uploads)."),
    Setting("CLIP_GAZE_BATCH_WINDOW_MS", lambda: "2", "How long the service waits to gather images from concurrent requests into one forward pass."),
    Setting("CLIP_GAZE_COMPACT_INDEXES", lambda: "0", "1: hold index vectors in memory as float16 (half the memory; probabilities change by less than 1e-3)."),
    Setting("CLIP_GAZE_FETCH_ALLOW", lambda: "", "Comma-separated hosts (host or host:port) that URLs may be fetched from although they resolve to private, loopback or link-local addresses. Empty: only public addresses are fetched."),
    Setting("CLIP_GAZE_MAX_FETCHES", lambda: "16", "URLs a server process fetches at once for requests (`image_url`, a batch's `image_urls`), all callers together; a request beyond it gets 503 `busy` with `retry_after`. A server also keeps one request thread free of fetches, so health and reads never wait behind them."),
    Setting("CLIP_GAZE_MAX_FETCHES_PER_CALLER", lambda: "8", "Of those, how many one caller (a bearer token, else a client address) may have in flight; a batch fetches that many of its URLs at once."),
    Setting("CLIP_GAZE_SHUTDOWN_GRACE", lambda: "20", "Seconds a stopping server (SIGTERM) gives running jobs to reach a stored checkpoint before it exits; a job stopped there is resumed at the next start."),
    Setting("CLIP_GAZE_RESUME_JOBS", lambda: "1", "1: at start, jobs a stopped or killed server left unfinished are resumed from what was stored; 0: they are marked `interrupted`, with the reason."),
    Setting("CLIP_GAZE_ANONYMOUS", lambda: "read,analyze", "What a caller without a key may do: comma-separated scopes (read, analyze), or none for a closed deployment where every route but health, the document and the page needs a key."),
    Setting("CLIP_GAZE_RATE_LIMIT", lambda: "0", "Requests per minute one caller (a key, else a client address) may make to each server process; a computing route (analyze, explain, …) counts as 5, a read or write as 1. Beyond it: 429 `rate_limited` with Retry-After. 0: no limit."),
    Setting("CLIP_GAZE_FETCH_AUTH_FILE", lambda: "", "A JSON file of credentials per host (host or host:port, each with one of bearer, basic as user:password, or header as an object of header names and values), sent when fetching pictures, manifests and IIIF services from that host only, never after a redirect to another host, never logged or answered."),
    Setting("CLIP_GAZE_DECODE_MEMORY", lambda: "1024", "Memory, in MB, that the decodes of one process may hold together, each estimated from its size and mode before it starts; a decode that does not fit waits for others to finish."),
    Setting("CLIP_GAZE_PUBLIC_URL", lambda: "", "The address clients reach the service at (e.g. https://clip-gaze.museum.org), for the ids of annotation pages; empty: the address each request came to, and for the CLI http://127.0.0.1:8000."),
    Setting("CLIP_GAZE_WEBHOOK_SECRET", lambda: "", "The secret that signs job callbacks (`callback_url`): header X-Clip-Gaze-Signature `t=<unix time>,v1=<hex HMAC-SHA256 of t.body>`, the Stripe scheme. Empty: a request with a `callback_url` is refused (422 `no_webhook_secret`)."),
)

@dataclass(frozen=True)
class Settings:
    """The values of `SETTINGS` (their defaults are there, and only there)."""

    home: Path
    model: str
    api_tokens: tuple[str, ...]
    device: str
    threads: int
    max_upload_bytes: int
    max_pixels: int
    batch_window_ms: float
    compact_indexes: bool
    max_request_pixels: int
    max_decodes: int
    fetch_allow: tuple[str, ...]  # hosts or host:port admitted past the fetch address guard
    backend: str
    max_fetches: int
    max_fetches_per_caller: int
    shutdown_grace: float
    resume_jobs: bool
    decode_memory_bytes: int
    anonymous: tuple[str, ...] = ("read", "analyze")  # scopes of a caller without a key (CLIP_GAZE_ANONYMOUS)
    rate_limit: int = 0  # requests (cost units) per minute per caller and process; 0: none
    fetch_auth_file: str = ""  # per-host credentials for fetching (indexer.pictures.credentials)
    models: tuple[str, ...] = ()  # every model served, the default (`model`) first
    preload: bool = False  # every served model loads at a worker's start (`serve --preload`), not by a variable
    serve_threads: int = 0  # request threads of a `serve` worker (0: not under gunicorn); set by `serve`, not by a variable
    public_url: str = ""  # where clients reach the service ("": where each request came to)
    webhook_secret: str = ""  # signs job callbacks (indexer.collections.callbacks); "": callbacks refused

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> "Settings":
        env = os.environ if environ is None else environ
        raw = {s.env: (env.get(s.env) or s.default()) for s in SETTINGS}
        values: dict[str, object] = dict(
            home=Path(raw["CLIP_GAZE_HOME"]).expanduser(),
            model=raw["CLIP_GAZE_MODEL"].strip(),
            api_tokens=tuple(t.strip() for t in raw["CLIP_GAZE_API_TOKENS"].split(",") if t.strip()),
            device=raw["CLIP_GAZE_DEVICE"].strip().lower(),
            threads=_int(raw, "CLIP_GAZE_THREADS"),
            max_upload_bytes=int(_float(raw, "CLIP_GAZE_MAX_UPLOAD_MB") * 1024 * 1024),
            max_pixels=_int(raw, "CLIP_GAZE_MAX_PIXELS"),
            batch_window_ms=_float(raw, "CLIP_GAZE_BATCH_WINDOW_MS"),
            compact_indexes=_bool(raw, "CLIP_GAZE_COMPACT_INDEXES"),
            max_request_pixels=_int(raw, "CLIP_GAZE_MAX_REQUEST_PIXELS"),
            max_decodes=max(1, _int(raw, "CLIP_GAZE_MAX_DECODES")),
            fetch_allow=tuple(h.strip() for h in raw["CLIP_GAZE_FETCH_ALLOW"].split(",") if h.strip()),
            backend=_choice(raw, "CLIP_GAZE_BACKEND", ("auto", "onnx", "torch")),
            max_fetches=max(1, _int(raw, "CLIP_GAZE_MAX_FETCHES")),
            max_fetches_per_caller=max(1, _int(raw, "CLIP_GAZE_MAX_FETCHES_PER_CALLER")),
            shutdown_grace=max(0.0, _float(raw, "CLIP_GAZE_SHUTDOWN_GRACE")),
            resume_jobs=_bool(raw, "CLIP_GAZE_RESUME_JOBS"),
            decode_memory_bytes=int(max(1.0, _float(raw, "CLIP_GAZE_DECODE_MEMORY")) * 1024 * 1024),
            anonymous=_scopes(raw, "CLIP_GAZE_ANONYMOUS"),
            rate_limit=max(0, _int(raw, "CLIP_GAZE_RATE_LIMIT")),
            fetch_auth_file=raw["CLIP_GAZE_FETCH_AUTH_FILE"].strip(),
            public_url=raw["CLIP_GAZE_PUBLIC_URL"].strip().rstrip("/"),
            webhook_secret=raw["CLIP_GAZE_WEBHOOK_SECRET"].strip(),
        )
        values.update({k: v for k, v in overrides.items() if v is not None})
        several = tuple(m.strip() for m in raw["CLIP_GAZE_MODELS"].split(",") if m.strip())
        if "models" in overrides and overrides["models"] is not None:
            several = tuple(overrides["models"])  # type: ignore[arg-type]
        if several and overrides.get("model") is None:
            values["model"] = several[0]
        values["models"] = several_models(str(values["model"]), several)
        return cls(**values)  # type: ignore[arg-type]


def several_models(default: str, models: tuple[str, ...]) -> tuple[str, ...]:
    """The served models: `default` first, then the others of `models` once each, in their order."""
    rest = [m for m in models if m != default]
    return (default, *dict.fromkeys(rest))


def _int(raw: Mapping[str, str], key: str) -> int:
    try:
        return int(raw[key])
    except ValueError:
        raise ValueError(f"{key} must be a whole number, not {raw[key]!r}") from None


def _float(raw: Mapping[str, str], key: str) -> float:
    try:
        return float(raw[key])
    except ValueError:
        raise ValueError(f"{key} must be a number, not {raw[key]!r}") from None


def _choice(raw: Mapping[str, str], key: str, choices: tuple[str, ...]) -> str:
    value = raw[key].strip().lower()
    if value not in choices:
        raise ValueError(f"{key} must be one of {', '.join(choices)}, not {raw[key]!r}")
    return value


# What a key (or an anonymous caller) may do; each operation of the API declares one (service/openapi.py).
SCOPES = ("read", "analyze", "write", "admin")


def _scopes(raw: Mapping[str, str], key: str) -> tuple[str, ...]:
    """Comma-separated scopes; `none` (or nothing) for none."""
    given = [s.strip().lower() for s in raw[key].split(",") if s.strip()]
    if given == ["none"]:
        return ()
    wrong = [s for s in given if s not in SCOPES]
    if wrong:
        raise ValueError(f"{key} takes scopes among {', '.join(SCOPES)} (or none), not {', '.join(wrong)}")
    return tuple(s for s in SCOPES if s in given)


def _bool(raw: Mapping[str, str], key: str) -> bool:
    value = raw[key].strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{key} must be 1 or 0, not {raw[key]!r}")


def settings_help() -> str:
    """The settings table as text, for `--help` and the README."""
    return "\n".join(f"  {s.env:<26} {s.help} (default: {s.default()})" for s in SETTINGS)


__all__ = ["SCOPES", "SETTINGS", "Setting", "Settings", "settings_help"]
