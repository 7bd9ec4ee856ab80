"""The house keeps its rooms: no import circles, each folder of `indexer/` importing only from lower
floors (as `indexer/__init__.py` declares them), `indexer` never importing the faces, no module over
450 lines, and every room named where a newcomer looks for it. Every import counts, lazy ones and
those under `TYPE_CHECKING` too (`layers.py` reads them from the source)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import layers

ROOT = Path(__file__).resolve().parents[1]

# Modules allowed past MAX_LINES, each with the reason. None today.
LONG_MODULES: dict[str, str] = {}


@pytest.fixture(scope="module")
def graph() -> layers.Graph:
    return layers.read_graph(ROOT)


def test_no_module_imports_itself_back_through_others(graph: layers.Graph):
    assert layers.circles(graph) == []


def test_each_room_of_indexer_imports_only_its_own_modules_and_lower_floors(graph: layers.Graph):
    floor_of = layers.floors(ROOT)
    assert floor_of, "indexer/__init__.py declares no floors"
    arrows = layers.upward(graph, floor_of)
    assert arrows == [], "\n".join(f"{a} imports {b}: {why}" for a, b, why in arrows)


def test_imports_go_one_way_clip_gaze_then_service_then_indexer(graph: layers.Graph):
    assert layers.faces_below(graph) == []
    assert any(t.startswith("indexer.") for t in graph.edges["service.state"])  # the graph does see these imports


def test_no_module_is_over_450_lines(graph: layers.Graph):
    long = {m: graph.lines(m) for m in graph.files if graph.lines(m) > layers.MAX_LINES}
    assert set(long) <= set(LONG_MODULES), long
    assert all(LONG_MODULES[m] for m in long)


def test_the_floor_map_names_every_room_on_disk_and_nothing_else():
    lines = layers.floor_lines(ROOT)
    assert {name for _, name in lines} == layers.rooms_on_disk(ROOT)
    assert len(lines) == len(layers.floors(ROOT)), "one line per room"
    assert [level for level, _ in lines] == sorted((level for level, _ in lines), reverse=True)  # top floor first


def test_each_folder_says_what_each_of_its_modules_holds():
    for init in sorted((ROOT / "indexer").rglob("__init__.py")):
        folder = init.parent
        if folder == ROOT / "indexer":
            continue
        doc = layers.docstring(init)
        named = {m.group(1) for m in re.finditer(r"^[ ]+([a-z_]+)/?[ ]{2,}\S", doc, flags=re.M)}
        inside = {p.stem for p in folder.glob("*.py") if p.name != "__init__.py"} | {
            p.name for p in folder.iterdir() if (p / "__init__.py").is_file()}
        assert named == inside, f"{folder.relative_to(ROOT)}/__init__.py: names {sorted(named)}, holds {sorted(inside)}"


def test_the_readme_map_names_every_room_of_indexer():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## How it works"):]
    block = section[section.index("```\n") + 4:]
    block = block[: block.index("```")]
    for name in layers.rooms_on_disk(ROOT):
        suffix = "/" if (ROOT / "indexer" / name).is_dir() else ".py"
        assert re.search(rf"(^|\s){re.escape(name + suffix)}\s", block, flags=re.M), f"README's map lacks {name}{suffix}"


# -- the checker itself ---------------------------------------------------------------------------
def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    for package in layers.PACKAGES:
        (tmp_path / package).mkdir(exist_ok=True)
        (tmp_path / package / "__init__.py").touch()
    return tmp_path


def test_the_checker_finds_a_circle_held_open_by_a_lazy_import_and_an_arrow_under_type_checking(tmp_path: Path):
    root = _tree(tmp_path, {
        "indexer/__init__.py": '"""Floors.\n\n  2  high/  the upper room\n  1  low.py  the lower module\n"""\n',
        "indexer/high/__init__.py": "",
        "indexer/high/a.py": "def f():\n    from . import b\n",
        "indexer/high/b.py": "from .a import f\n",
        "indexer/low.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .high.a import f\n",
        "service/__init__.py": "",
        "service/views.py": "import clip_gaze\n",
    })
    graph = layers.read_graph(root)
    assert layers.circles(graph) == [["indexer.high.a", "indexer.high.b"]]
    assert layers.floors(root) == {"high": 2, "low": 1}
    assert [(a, b) for a, b, _ in layers.upward(graph, layers.floors(root))] == [("indexer.low", "indexer.high.a")]
    assert layers.faces_below(graph) == [("service.views", "clip_gaze")]
