"""Results folders -> tidy records for tables and figures; reads files only, never trains.

A *configuration* is a cell without its seed: cells whose grid axes are equal are the seeds of
one configuration and are aggregated (mean ± std over seeds). Every value keeps where it came
from, so a table can say why a metric is missing (not configured, skipped, failed, cell failed).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from research.errors import UserError


@dataclass
class CellRecord:
    grid: str
    cell: str
    config: str  # the configuration's label (axes without the seed)
    seed: int
    status: str  # done | failed | partial | pending
    metrics: dict = field(default_factory=dict)  # metrics.json, plus "<eval>/<metric>" from evals/*.json
    missing: dict = field(default_factory=dict)  # "<eval>" -> why it has no metrics (skipped/failed: reason)
    evals: set = field(default_factory=set)  # evals configured for this cell (eval.tasks)
    run_config: dict = field(default_factory=dict)  # config.yaml
    path: Path | None = None
    reason: str | None = None  # why the cell failed


@dataclass
class GridRecord:
    name: str
    path: Path
    axes: list[str]
    description: str
    cells: list[CellRecord]

    def configs(self) -> list[str]:
        """Configuration labels in grid order (the order of the first seed of each)."""
        seen: dict[str, None] = {}
        for c in self.cells:
            seen.setdefault(c.config, None)
        return list(seen)


def config_label(cell_id: str, seed: int) -> str:
    """The configuration's name: the cell id's axis parts (`n_embd-32__lr-0.003__s0__ab12cd` ->
    `n_embd=32, lr=0.003`), so seeds of one configuration share it and two settings never do."""
    parts = cell_id.split("__")[:-1]  # the last part is the config hash
    parts = [p for p in parts if p != f"s{seed}"]
    return ", ".join(p.replace("-", "=", 1) for p in parts) or "base"


def load_grid_dir(path: Path) -> GridRecord:
    path = Path(path)
    spec_file = path / "grid.json"
    if not spec_file.exists():
        raise UserError(f"{path}: no grid.json; pass a grid's results folder (results/<grid name>)")
    spec = json.loads(spec_file.read_text())
    cells = [load_cell_record(spec["name"], path / c["id"], c) for c in spec["cells"]]
    return GridRecord(spec["name"], path, list(spec.get("axes", [])), spec.get("description", ""), cells)


def load_cell_record(grid: str, cell_dir: Path, spec: dict) -> CellRecord:
    from ablations.results import cell_status

    status = cell_status(cell_dir)
    rec = CellRecord(grid, spec["id"], config_label(spec["id"], int(spec["seed"])), int(spec["seed"]), status,
                     path=cell_dir)
    if (cell_dir / "config.yaml").exists():
        rec.run_config = yaml.safe_load((cell_dir / "config.yaml").read_text()) or {}
        rec.evals = set(rec.run_config.get("eval", {}).get("tasks", []))
    if status == "failed":
        rec.reason = json.loads((cell_dir / "error.json").read_text()).get("reason")
    if status != "done":
        return rec
    rec.metrics = json.loads((cell_dir / "metrics.json").read_text())
    for file in sorted((cell_dir / "evals").glob("*.json")) if (cell_dir / "evals").is_dir() else []:
        result = json.loads(file.read_text())
        name = result.get("name", file.stem)
        rec.evals.add(name)
        if result.get("status") == "ok":
            for key, value in result.get("metrics", {}).items():
                if isinstance(value, (int, float)):
                    rec.metrics[f"{name}/{key}"] = float(value)
        else:
            rec.missing[name] = f"{result.get('status')}: {result.get('reason')}"
    return rec


def read_curve(cell_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """metrics.csv -> {"train/loss": [(step, value), ...], "val/loss": [...]}."""
    file = Path(cell_dir) / "metrics.csv"
    out: dict[str, list[tuple[int, float]]] = {}
    if not file.exists():
        return out
    with open(file) as f:
        for row in csv.DictReader(f):
            for key in ("train/loss", "val/loss"):
                if row.get(key):
                    out.setdefault(key, []).append((int(row["step"]), float(row[key])))
    return out


def read_per_position(cell_dir: Path) -> list[dict]:
    """Per-position loss records [{step, loss_by_position}], from training or from the stored checkpoint."""
    for file in (Path(cell_dir) / "per_position.json", Path(cell_dir) / "evals" / "per_position.json"):
        if file.exists():
            data = json.loads(file.read_text())
            if isinstance(data, dict) and "records" in data:
                return data["records"]
            if isinstance(data, dict) and "details" in data:
                return data["details"].get("records", [])
            if isinstance(data, list):
                return data
    return []
