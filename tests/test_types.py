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


def test_the_engine_holds_its_model_as_a_clip_model_which_both_runtimes_are(engine, toy):
    """The engine's seams are typed (mypy checks the runtimes against `ClipModel` where `backends.load`
    returns them); at run time both runtimes offer every member of the protocol."""
    import typing

    from indexer.engine import Engine
    from indexer.models.onnx_model import OnnxModel
    from indexer.models.protocol import ClipModel, ModelLoader

    assert typing.get_type_hints(Engine.model.fget)["return"] is ClipModel  # type: ignore[attr-defined]
    assert typing.get_type_hints(Engine.__init__)["loader"] == ModelLoader | None
    assert isinstance(toy, ClipModel)
    served = Engine(engine.store.home, "toy").model  # the session's ONNX export, as served by default
    assert isinstance(served, OnnxModel) and isinstance(served, ClipModel)
    assert not isinstance(object(), ClipModel)
