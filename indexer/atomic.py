"""Files that are there whole or not at all: every writer of a file others read (FAISS indexes,
analysis tables, Ray shards, evaluation reports) writes it through `atomic_path`.

The whole file goes to a temporary name beside the target; then it is flushed (fsync), renamed onto
the target (atomic on POSIX), and the folder is flushed so the rename itself survives a crash. A
writer that fails, or is stopped, leaves the target as it was and removes its temporary file; one
killed outright leaves only a temporary file, never a half-written target.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(target: str | Path, *, hidden: bool = False) -> Iterator[Path]:
    """A temporary path beside `target` to write the whole file to; renamed onto `target` when the
    block ends without an error. `hidden`: the temporary name starts with a dot (for folders whose
    readers skip dot files)."""
    target = Path(target)
    fd, name = tempfile.mkstemp(prefix=("." if hidden else "") + target.name + ".", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(target.parent)


def write_bytes(target: str | Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text(target: str | Path, text: str) -> None:
    write_bytes(target, text.encode("utf-8"))


def fsync_path(path: Path) -> None:
    """Flush a file or a folder (its entries: a rename) to disk, where the system allows it."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


__all__ = ["atomic_path", "fsync_path", "write_bytes", "write_text"]
