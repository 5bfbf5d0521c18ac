"""A cell's files are named in one module, `research.cell`; everything else asks it for them.

The scan reads every string in the packages' code with `ast` (docstrings left out, since prose
may describe the layout) and fails on a cell file's name anywhere but research/cell.py, with
its file and line. The layout functions are also checked against the files a real run leaves.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from research import cell

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["research", "evals", "ablations", "paper", "benchmarks", "app"]
#: names only a cell's folder uses: a string holding one of them re-encodes the layout
FILE_NAMES = ("per_position.json", "model.pt", "last.ckpt", "hpc_ckpt", "metrics.csv", "metrics.json",
              "config.yaml", "manifest.json", "error.json", "code.diff", "progress.json", "generation.jsonl",
              "samples.jsonl", "summary.csv", "grid.json", "jobs.json", "/evals/", "samples/", "checkpoints/")
#: folder names caught when joined onto a path (`cell_dir / "samples"`): common words elsewhere
FOLDERS = ("samples", "checkpoints", "evals", ".claims", ".submitit")


def docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def layout_strings(source: str, where: str) -> list[str]:
    tree = ast.parse(source)
    skip = docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            hit = next((n for n in FILE_NAMES if n in node.value), None)
            if hit is not None or node.value == cell.DONE:
                found.append(f"{where}:{node.lineno}: {node.value!r} names a cell file; ask research.cell")
        elif (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant)
              and node.right.value in FOLDERS):
            found.append(f"{where}:{node.lineno}: / {node.right.value!r} builds a cell path; ask research.cell")
    return found


def test_the_scan_catches_a_cell_file_named_elsewhere():
    assert layout_strings('p = cell_dir / "model.pt"\n', "x.py")
    assert layout_strings('p = cell_dir / "samples" / name\n', "x.py")
    assert layout_strings('p = f"{cell}/evals/{name}.json"\n', "x.py")
    assert not layout_strings('p = "evals/prompts/judge_v1.txt"\n', "x.py")  # the package, not a cell
    assert layout_strings('def f():\n    return Path(d) / "DONE"\n', "x.py")
    assert not layout_strings('"""Writes model.pt."""\nx = {"samples": 3}\n', "x.py")


def test_no_cell_file_is_named_outside_research_cell():
    found = []
    for package in PACKAGES:
        for file in sorted((ROOT / package).rglob("*.py")):
            if file == ROOT / "research" / "cell.py":
                continue
            found += layout_strings(file.read_text(), str(file.relative_to(ROOT)))
    assert not found, "\n".join(found)


def test_the_per_step_log_is_where_lightning_writes_it():
    assert cell.LOG == ExperimentWriter.NAME_METRICS_FILE


def test_an_older_per_position_shape_is_read_and_converted_once(tmp_path):
    records = [{"step": 0, "loss_by_position": [2.0, 1.5]}, {"step": 4, "loss_by_position": [1.9, 1.0]}]
    cell.per_position_path(tmp_path).write_text(json.dumps({"records": records[::-1]}))
    assert cell.read_per_position(tmp_path) == records[::-1]
    assert json.loads(cell.per_position_path(tmp_path).read_text()) == records  # rewritten as the list, by step
    assert cell.read_per_position(tmp_path) == records


def test_per_position_falls_back_to_the_eval_record(tmp_path):
    record = [{"step": 9, "loss_by_position": [1.0]}]
    cell.write_eval(tmp_path, "per_position", {"name": "per_position", "details": {"records": record}})
    assert cell.read_per_position(tmp_path) == record


def test_progress_record_round_trips_and_reads_empty_before_start(tmp_path):
    assert cell.read_progress(tmp_path) == {}
    cell.write_progress(tmp_path, "training", 12, 100)
    got = cell.read_progress(tmp_path)
    assert (got["phase"], got["step"], got["max_steps"]) == ("training", 12, 100) and got["updated"] > 0
