"""Results folders -> tidy records for tables and figures; reads files only, never trains.

A *configuration* is a cell without its seed: cells whose axis values recorded in grid.json are
equal are the seeds of one configuration and are aggregated (mean ± std over seeds); the cell id
is never parsed. Each configuration is named by paper.labels (the grid's `labels`, or the axis
values that differ). Every value keeps where it came from, so a table can say why a metric is
missing (not configured, skipped, failed, cell failed), and each cell keeps its manifest (commit,
dirty flag, diff), so a row can be traced to the code that produced it.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from paper.labels import canonical, config_names
from research.errors import UserError


@dataclass
class CellRecord:
    grid: str
    cell: str
    config: str  # the configuration's display label (its axis values, readable, without the seed)
    seed: int
    status: str  # done | failed | partial | pending
    metrics: dict = field(default_factory=dict)  # metrics.json, plus "<eval>/<metric>" from evals/*.json
    missing: dict = field(default_factory=dict)  # "<eval>" -> why it has no metrics (skipped/failed: reason)
    evals: set = field(default_factory=set)  # evals configured for this cell (eval.tasks)
    run_config: dict = field(default_factory=dict)  # config.yaml
    path: Path | None = None
    reason: str | None = None  # why the cell failed
    axes: dict = field(default_factory=dict)  # axis -> value, as grid.json records it
    long_config: str = ""  # every axis key and value: the label's long form
    manifest: dict = field(default_factory=dict)  # manifest.json (commit, dirty flag, diff, versions)


@dataclass
class GridRecord:
    name: str
    path: Path
    axes: list[str]
    description: str
    cells: list[CellRecord]
    labels: dict = field(default_factory=dict)  # axis -> display names of its values (the grid's `labels`)
    overrides: list = field(default_factory=list)  # the --set overrides the grid ran with

    def configs(self) -> list[str]:
        """Configuration labels in grid order (the order of the first seed of each)."""
        seen: dict[str, None] = {}
        for c in self.cells:
            seen.setdefault(c.config, None)
        return list(seen)


def load_grid_dir(path: Path) -> GridRecord:
    path = Path(path)
    spec_file = path / "grid.json"
    if not spec_file.exists():
        raise UserError(f"{path}: no grid.json; pass a grid's results folder (results/<grid name>)")
    spec = json.loads(spec_file.read_text())
    axes = list(spec.get("axes", []))
    cells = [load_cell_record(spec["name"], path / c["id"], c) for c in spec["cells"]]
    name_configs(cells, axes, spec.get("labels") or {})
    return GridRecord(spec["name"], path, axes, spec.get("description", ""), cells, spec.get("labels") or {},
                      list(spec.get("overrides") or []))


def name_configs(cells: list[CellRecord], axes: list[str], given: dict) -> None:
    """Group cells by their recorded axis values and give each group its short and long label."""
    points: dict[str, dict] = {}
    order: dict[str, dict[str, object]] = {a: {} for a in axes}  # axis -> its values in grid-file order
    for c in cells:
        points.setdefault(canonical(c.axes), c.axes)
        for a in axes:
            order[a].setdefault(canonical(c.axes.get(a)), c.axes.get(a))
    keys = list(points)
    short, long = config_names([points[k] for k in keys], axes, given, {a: list(v.values()) for a, v in order.items()})
    by_key = {k: (s, lg) for k, s, lg in zip(keys, short, long)}
    for c in cells:
        c.config, c.long_config = by_key[canonical(c.axes)]


def load_cell_record(grid: str, cell_dir: Path, spec: dict) -> CellRecord:
    from ablations.results import cell_status

    status = cell_status(cell_dir)
    rec = CellRecord(grid, spec["id"], "", int(spec["seed"]), status, path=cell_dir, axes=dict(spec.get("axes") or {}))
    if (cell_dir / "manifest.json").exists():
        rec.manifest = json.loads((cell_dir / "manifest.json").read_text())
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
