"""What decoders warn of, counted on the picture and logged at debug level, never written to stderr.

Pillow's plugins warn through the `warnings` module (corrupt EXIF, truncated reads, odd tags), and
libtiff writes its warnings and errors to stderr from C ("ZIPDecode: Decoding error at scanline 0"):
a folder of odd TIFFs wrote hundreds of such lines. `warnings.catch_warnings` changes process-wide
state and is not safe across threads, so both are routed once, for the whole process: Pillow's modules
are given a `warnings` of their own whose `warn`, on a thread inside `capturing`, counts the warning
there and logs it (elsewhere it is Python's, as before), and libtiff's handlers (in the copy Pillow
loaded) count and log a message the same way (elsewhere they write it to stderr, as libtiff would).
"""

from __future__ import annotations

import ctypes
import logging
import platform
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .decode_memory import loaded_library

log = logging.getLogger("clip_gaze.decode")
_local = threading.local()
_install_lock = threading.Lock()
_installed: list[Any] = []  # the routing objects and libtiff callbacks, kept alive


class Warned:
    """The warnings one picture's decoding gave."""

    def __init__(self, name: str):
        self.name = name
        self.count = 0


@contextmanager
def capturing(name: str) -> Iterator[Warned]:
    """Within this block, on this thread, decoders' warnings are counted on the `Warned` it gives and
    logged at debug level, not raised or written to stderr."""
    install()
    outer = getattr(_local, "current", None)
    warned = _local.current = Warned(name)
    try:
        yield warned
    finally:
        _local.current = outer


def _note(text: str) -> bool:
    """Counts and logs `text` for the picture this thread decodes; False when it decodes none."""
    warned: Warned | None = getattr(_local, "current", None)
    if warned is None:
        return False
    warned.count += 1
    log.debug("%s: %s", warned.name, text)
    return True


class _Routed:
    """The `warnings` module as Pillow's modules see it: `warn` captured on a decoding thread."""

    def __init__(self, real: Any):
        self._real = real

    def warn(self, message: Any, category: Any = None, stacklevel: int = 1, source: Any = None, **kw: Any) -> None:
        if getattr(_local, "current", None) is None:
            self._real.warn(message, category, stacklevel + 1, source, **kw)
            return
        kind = category or (type(message) if isinstance(message, Warning) else UserWarning)
        if kind.__name__ == "DecompressionBombWarning":  # says nothing the header check does not
            return
        _note(f"{kind.__name__}: {message}")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


_HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p)


def _tiff_handler(kind: str) -> Any:
    libc = ctypes.CDLL(None) if platform.machine() in ("x86_64", "AMD64") else None
    if libc is not None:
        libc.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]

    def handle(module: bytes | None, fmt: bytes | None, args: int | None) -> None:
        text = (fmt or b"").decode("utf-8", "replace")
        if libc is not None and fmt:  # x86-64: a va_list arrives as the pointer vsnprintf takes
            buf = ctypes.create_string_buffer(1024)
            libc.vsnprintf(buf, len(buf), fmt, args)
            text = buf.value.decode("utf-8", "replace")
        where = (module or b"").decode("utf-8", "replace")
        line = f"{where}: {text}" if where else text
        if not _note(f"libtiff {kind}: {line}"):
            sys.stderr.write(f"{line}\n" if kind == "error" else f"{where}: Warning, {text}\n")
    return _HANDLER(handle)


def install() -> None:
    """Routes Pillow's warnings and libtiff's messages as this module says (once per process)."""
    if _installed:
        return
    with _install_lock:
        if _installed:
            return
        from PIL import Image

        Image.init()  # every plugin imported, so each module's `warnings` is routed now
        routed = _Routed(warnings)
        for name, module in list(sys.modules.items()):
            if name.split(".")[0] == "PIL" and getattr(module, "warnings", None) is warnings:
                module.warnings = routed  # type: ignore[attr-defined]
        keep: list[Any] = [routed]
        libtiff = loaded_library("libtiff", "PIL._imaging", "tiff")
        if libtiff is not None:
            try:
                for setter, kind in (("TIFFSetWarningHandler", "warning"), ("TIFFSetErrorHandler", "error")):
                    handler = _tiff_handler(kind)
                    getattr(libtiff, setter).argtypes = [_HANDLER]
                    getattr(libtiff, setter).restype = ctypes.c_void_p
                    getattr(libtiff, setter)(handler)
                    keep.append(handler)
            except AttributeError:
                pass  # not libtiff after all: its messages stay on stderr
        _installed.extend(keep)


__all__ = ["Warned", "capturing", "install"]
