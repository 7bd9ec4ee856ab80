"""sqlite-utils, imported without pandas.

sqlite-utils imports pandas when it is installed (Ray Data brings it), only to store `pandas.Timestamp`
values as text. clip-gaze never hands it a DataFrame, and that import costs 0.3–0.5 s of every CLI
call here, so it is hidden while sqlite-utils imports (pandas stays importable for everyone else).
"""

from __future__ import annotations

import sys


def _import_without_pandas() -> None:
    if "sqlite_utils" in sys.modules or "pandas" in sys.modules:
        return
    sys.modules["pandas"] = None  # type: ignore[assignment]  # `import pandas` raises ImportError meanwhile
    try:
        import sqlite_utils  # noqa: F401
    finally:
        if sys.modules.get("pandas", 0) is None:
            del sys.modules["pandas"]


_import_without_pandas()

import sqlite_utils  # noqa: E402
from sqlite_utils import Migrations  # noqa: E402

__all__ = ["Migrations", "sqlite_utils"]
