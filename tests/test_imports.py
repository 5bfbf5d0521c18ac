"""Imports point one way: app -> paper -> ablations -> evals -> research.

Every import statement of the packages is read with `ast` (function-level imports included, since
those are how a lower layer would quietly reach up), so a wrong-way import fails here with its
file and line. `benchmarks/` and `tests/` may import anything.
"""

from __future__ import annotations

import ast
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
    assert violations("paper", "from ablations.results import write_summary\n", "x.py")
    assert violations("paper", "from ablations import results\n", "x.py")
    assert not violations("paper", "from ablations import records\nfrom research.io import read_json\n", "x.py")
    assert not violations("app", "from ablations.grid import load_grid\nimport paper.build\n", "x.py")


@pytest.mark.parametrize("package", LAYERS)
def test_imports_point_one_way(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package}/ has no Python files"
    found = [v for f in files for v in violations(package, f.read_text(), str(f.relative_to(ROOT)))]
    assert not found, "\n".join(found)
