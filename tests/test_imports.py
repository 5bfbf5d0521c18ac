"""Imports point one way: app -> paper -> ablations -> evals -> research.

Every import statement of the packages is read with `ast` (function-level imports included, since
those are how a lower layer would quietly reach up), so a wrong-way import fails here with its
file and line. `benchmarks/` and `tests/` may import anything.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: lowest layer first: a package may import its own layer and the ones before it
LAYERS = ["research", "evals", "ablations", "paper", "app"]
#: paper reads results files only through the cell record, never the runner
ONLY_THROUGH = {"paper": {"ablations": "ablations.records"}}


def imported_modules(source: str) -> list[tuple[int, str]]:
    """(line, dotted module) for every import in `source`; `from pkg import mod` also yields `pkg.mod`
    (from a top-level package, the name imported may be a module)."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
            if "." not in node.module:
                out += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return out


def violations(package: str, source: str, where: str) -> list[str]:
    rank = LAYERS.index(package)
    found = []
    for line, module in imported_modules(source):
        top = module.split(".")[0]
        if top not in LAYERS or top == package:
            continue
        if LAYERS.index(top) > rank:
            found.append(f"{where}:{line}: {package} imports {module} (a layer above it)")
            continue
        only = ONLY_THROUGH.get(package, {}).get(top)
        if only is not None and module not in (top, only) and not module.startswith(only + "."):
            found.append(f"{where}:{line}: {package} imports {module}; it reads results through ablations.records")
    return found


def test_the_checker_catches_a_wrong_way_import():
    assert violations("research", "from ablations.grid import load_grid\n", "x.py") == [
        "x.py:1: research imports ablations.grid (a layer above it)"]
    assert violations("evals", "def f():\n    import paper.tables\n", "x.py")  # inside a function too
    assert violations("paper", "from ablations.summary import write_summary\n", "x.py")
    assert violations("paper", "from ablations import results\n", "x.py")
    assert not violations("paper", "from ablations import records\nfrom research.io import read_json\n", "x.py")
    assert not violations("app", "from ablations.grid import load_grid\nimport paper.build\n", "x.py")


@pytest.mark.parametrize("package", LAYERS)
def test_imports_point_one_way(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package}/ has no Python files"
    found = [v for f in files for v in violations(package, f.read_text(), str(f.relative_to(ROOT)))]
    assert not found, "\n".join(found)


# cycles ------------------------------------------------------------------------------------------
#: a registry entry ("package.module:attr") is an import by name, made when the entry is used
REGISTRY_ENTRY = re.compile(r"""["']([a-z_][a-z_0-9]*(?:\.[a-z_][a-z_0-9]*)+):[A-Za-z_][A-Za-z_0-9]*["']""")


def module_name(file: Path) -> str:
    parts = list(file.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(sources: dict[str, str]) -> dict[str, set[str]]:
    """module -> the modules of `sources` it imports: at the top, inside functions, or through a
    registry entry. `from pkg import sub` points at the submodule when `sub` is one (a parent
    package is always loaded first, so that is no edge back to it)."""
    def resolve(name: str) -> str | None:
        while name and name not in sources:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in sources}
    for module, source in sources.items():
        targets = []
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                targets += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets += [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in sources else node.module
                            for a in node.names]
        targets += REGISTRY_ENTRY.findall(source)
        graph[module] = {t for t in map(resolve, targets) if t is not None and t != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_sees_imports_inside_functions_and_registry_entries():
    hidden = {"p.a": "def f():\n    from p.b import g\n", "p.b": "import p.a\n", "p": ""}
    assert cycles(import_graph(hidden)) == [["p.a", "p.b"]]
    registry = {"p": 'R = {"x": "p.x:X"}\n', "p.x": "from p import R\n"}
    assert cycles(import_graph(registry)) == [["p", "p.x"]]
    submodule = {"p": "def load():\n    from p.s import f\n", "p.s": "from p import t\n", "p.t": ""}
    assert cycles(import_graph(submodule)) == []  # `from p import t` reaches p.t, not p's own code


def test_no_import_cycles():
    sources = {module_name(f): f.read_text() for package in LAYERS for f in sorted((ROOT / package).rglob("*.py"))}
    found = cycles(import_graph(sources))
    assert not found, "import cycles (one module of each must stop importing the other):\n" + \
        "\n".join(" <-> ".join(c) for c in found)
