"""GUIDE §6.12: the core modules type-check (the files are listed under [tool.mypy] in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def test_core_modules_type_check():
    pytest.importorskip("mypy", reason="mypy is not installed (pip install -e '.[test]')")
    root = Path(__file__).parents[1]
    done = subprocess.run([sys.executable, "-m", "mypy"], cwd=root, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
