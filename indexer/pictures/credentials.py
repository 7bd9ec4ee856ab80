"""Credentials for protected sources (CLIP_GAZE_FETCH_AUTH_FILE): what a fetch sends to one host, and to
no other.

The file is JSON, one entry per host (a name or address as URLs give it, optionally `:port`), each with
exactly one of

    {"images.museum.example": {"bearer": "…"},
     "iiif.museum.example:8443": {"basic": "user:password"},
     "manifests.museum.example": {"header": {"X-Api-Key": "…"}}}

A fetch adds the headers of its hop's own host (`host:port` before `host`) to that request only: a
redirect to another host gets that host's credentials or none, never the first host's. The values are
never shown: not in a message, a log line, an answer or the repr of a policy (an error in the file names
the host and the field, not the value).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidInput

KINDS = ("bearer", "basic", "header")


class CredentialsError(InvalidInput):
    code = "invalid_fetch_auth_file"


@dataclass(frozen=True)
class Credentials:
    """Headers per host (`host` or `host:port`, lowercase), kept out of every repr."""

    by_host: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = field(default=(), repr=False)

    def headers(self, host: str, port: int) -> tuple[tuple[str, str], ...]:
        """The headers for a request to `host` on `port` (none for a host the file does not name)."""
        found = dict(self.by_host)
        host = host.lower()
        return found.get(f"[{host}]:{port}" if ":" in host else f"{host}:{port}") or found.get(host) or ()

    def __repr__(self) -> str:
        return f"Credentials({len(self.by_host)} hosts)"

    @classmethod
    def load(cls, path: str) -> Credentials:
        """The file's credentials ('' names none); a file that cannot be read or is not as above is refused."""
        if not path:
            return cls()
        try:
            data = json.loads(Path(path).expanduser().read_text(encoding="utf-8"))
        except OSError as exc:
            raise CredentialsError(f"CLIP_GAZE_FETCH_AUTH_FILE: cannot read {path} ({exc.strerror})") from None
        except ValueError as exc:
            raise CredentialsError(f"CLIP_GAZE_FETCH_AUTH_FILE: {path} is not JSON ({type(exc).__name__})") from None
        if not isinstance(data, dict):
            raise CredentialsError(f"CLIP_GAZE_FETCH_AUTH_FILE: {path} must hold an object of hosts")
        return cls(tuple((host.strip().lower(), _headers(host, entry)) for host, entry in data.items()))


def _headers(host: str, entry: Any) -> tuple[tuple[str, str], ...]:
    where = f"CLIP_GAZE_FETCH_AUTH_FILE, host {host[:100]!r}"
    if not isinstance(entry, dict) or len(entry) != 1 or next(iter(entry)) not in KINDS:
        raise CredentialsError(f"{where}: give exactly one of {', '.join(KINDS)}")
    kind, value = next(iter(entry.items()))
    if kind == "header":
        if not isinstance(value, dict) or not value or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise CredentialsError(f"{where}: header must be an object of header names and text values")
        pairs = tuple(value.items())
    elif not isinstance(value, str) or not value:
        raise CredentialsError(f"{where}: {kind} must be a non-empty text")
    elif kind == "basic":
        if ":" not in value:
            raise CredentialsError(f"{where}: basic must be user:password")
        pairs = (("Authorization", "Basic " + base64.b64encode(value.encode("utf-8")).decode("ascii")),)
    else:
        pairs = (("Authorization", f"Bearer {value}"),)
    for name, text in pairs:
        if not name.replace("-", "").isalnum() or any(c in text for c in "\r\n\0"):
            raise CredentialsError(f"{where}: a header name must be letters, digits and '-', a value one line")
    return pairs


__all__ = ["Credentials", "CredentialsError"]
