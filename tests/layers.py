"""The import graph of clip-gaze's packages, read from the source (nothing is imported): every import
counts, at the top of a module, inside a function or under `TYPE_CHECKING`.

`tests/test_layers.py` holds the rules; run this file to see the figures it checks:

    python tests/layers.py            # circles, upward arrows, floors and module sizes
    python tests/layers.py --root DIR # the same for another checkout (floors from its indexer/__init__.py)
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("indexer", "service", "clip_gaze")
MAX_LINES = 450
# `  7  collections/  what lives there` or `  1  errors.py  what it holds`: one line per folder or module
FLOOR_LINE = re.compile(r"^\s*(\d+)\s+([a-z_]+)(/|\.py)\s+\S")


@dataclass
class Graph:
    root: Path
    files: dict[str, Path] = field(default_factory=dict)  # module → file
    edges: dict[str, set[str]] = field(default_factory=dict)  # module → modules it imports (ours only)

    def lines(self, module: str) -> int:
        return len(self.files[module].read_text(encoding="utf-8").splitlines())


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def read_graph(root: Path = ROOT) -> Graph:
    graph = Graph(root)
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            graph.files[module_name(root, path)] = path
    for module, path in graph.files.items():
        graph.edges[module] = _imports(graph, module, path)
    return graph


def _imports(graph: Graph, module: str, path: Path) -> set[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from a import b`: the submodule a.b when there is one (then a's contents are not needed), else a
            names = [f"{target}.{alias.name}" if f"{target}.{alias.name}" in graph.files else target for alias in node.names]
        else:
            continue
        for name in names:
            # `import a.b.c` runs a, a.b and a.b.c: the nearest module of ours that exists is what it reaches
            while name and name not in graph.files:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def circles(graph: Graph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    for v in sorted(graph.edges):
        if v not in index:
            visit(v)
    return sorted(out)


def docstring(path: Path) -> str:
    """A module's docstring as written (indentation kept: the maps are indented tables)."""
    return ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")), clean=False) or ""


def floor_lines(root: Path = ROOT) -> list[tuple[int, str]]:
    """(floor, room) of each line of indexer/__init__.py's map of the floors, in the map's order."""
    doc = docstring(root / "indexer" / "__init__.py")
    return [(int(m.group(1)), m.group(2)) for m in map(FLOOR_LINE.match, doc.splitlines()) if m]


def floors(root: Path = ROOT) -> dict[str, int]:
    """Folder or module of indexer/ (`models`, `engine`) → its floor, from indexer/__init__.py's docstring."""
    return {name: level for level, name in floor_lines(root)}


def room(module: str) -> str | None:
    """The folder or module of indexer/ that a module of indexer lives in (None: the package itself)."""
    parts = module.split(".")
    return parts[1] if parts[0] == "indexer" and len(parts) > 1 else None


def upward(graph: Graph, floor_of: dict[str, int]) -> list[tuple[str, str, str]]:
    """Imports inside indexer/ that do not go down: (importer, imported, why). A room may import its
    own modules and those of lower floors only; `indexer` itself (the version) is below every floor."""
    out = []
    for module, targets in sorted(graph.edges.items()):
        here = room(module)
        if here is None or not module.startswith("indexer"):
            continue
        for target in sorted(targets):
            there = room(target)
            if not target.startswith("indexer.") or there == here:
                continue
            if here not in floor_of or there not in floor_of:
                out.append((module, target, "a room the floors do not name"))
            elif floor_of[there] >= floor_of[here]:
                kind = "the same floor" if floor_of[there] == floor_of[here] else "a higher floor"
                out.append((module, target, f"{there} is on {kind} ({floor_of[there]}) than {here} ({floor_of[here]})"))
    return out


def faces_below(graph: Graph) -> list[tuple[str, str]]:
    """Imports against the packages' direction: clip_gaze → service → indexer."""
    rank = {"indexer": 0, "service": 1, "clip_gaze": 2}
    return [(m, t) for m, targets in sorted(graph.edges.items()) for t in sorted(targets)
            if rank[t.split(".")[0]] > rank[m.split(".")[0]]]


def rooms_on_disk(root: Path = ROOT) -> set[str]:
    """The folders (holding modules) and modules directly under indexer/."""
    base = root / "indexer"
    return {p.stem for p in base.glob("*.py") if p.name != "__init__.py"} | {
        p.name for p in base.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}


def report(root: Path) -> str:
    graph = read_graph(root)
    floor_of = floors(root)
    out = [f"{len(graph.files)} modules in {', '.join(PACKAGES)}; "
           f"{sum(graph.lines(m) for m in graph.files if m.startswith('indexer'))} lines in indexer/"]
    found = circles(graph)
    out.append(f"import circles: {len(found)}")
    out += [f"  {' ↔ '.join(c)}" for c in found]
    if floor_of:
        arrows = upward(graph, floor_of)
        out.append(f"upward arrows inside indexer/: {len(arrows)}")
        out += [f"  {a} → {b}: {why}" for a, b, why in arrows]
        for level in sorted(set(floor_of.values()), reverse=True):
            out.append(f"  floor {level}: {'  '.join(sorted(r for r, f in floor_of.items() if f == level))}")
    else:
        out.append("upward arrows inside indexer/: (no floors declared in indexer/__init__.py)")
    wrong = faces_below(graph)
    out.append(f"imports against clip_gaze → service → indexer: {len(wrong)}")
    out += [f"  {a} → {b}" for a, b in wrong]
    sizes = sorted(((graph.lines(m), m) for m in graph.files if m.startswith("indexer")), reverse=True)
    big = [(n, m) for n, m in sizes if n > MAX_LINES]
    out.append(f"indexer modules over {MAX_LINES} lines: {len(big)} of {len(sizes)}")
    out += [f"  {n:5d}  {m}" for n, m in big]
    out.append("largest: " + ", ".join(f"{m.removeprefix('indexer.')} {n}" for n, m in sizes[:8]))
    return "\n".join(out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout to read (default: this one)")
    print(report(parser.parse_args().root.resolve()))
