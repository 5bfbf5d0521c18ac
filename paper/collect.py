"""Results folders -> tidy records for tables and figures; reads files only, never trains.

A *configuration* is a cell without its seed: cells whose axis values recorded in grid.json are
equal are the seeds of one configuration and are aggregated (mean ± std over seeds); the cell id
is never parsed. Each configuration is named by paper.labels (the grid's `labels`, or the axis
values that differ). Every value keeps where it came from, so a table can say why a metric is
missing (not configured, skipped, failed, cell failed), and each cell keeps its manifest (commit,
dirty flag, diff), so a row can be traced to the code that produced it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ablations import records
from ablations.records import read_per_position  # noqa: F401 - figures and tests read it from here
from paper.labels import canonical, config_names


@dataclass
class PaperCell:
    """One cell as tables and figures see it: `ablations.records.CellRecord` (what the disk says)
    plus its configuration's label and its eval columns flattened into `metrics`."""

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
    cells: list[PaperCell]
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
    spec = records.read_grid(path)
    axes = list(spec.get("axes", []))
    cells = [load_cell_record(spec["name"], path / c["id"], c) for c in spec["cells"]]
    name_configs(cells, axes, spec.get("labels") or {})
    return GridRecord(spec["name"], path, axes, spec.get("description", ""), cells, spec.get("labels") or {},
                      list(spec.get("overrides") or []))


def name_configs(cells: list[PaperCell], axes: list[str], given: dict) -> None:
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


def load_cell_record(grid: str, cell_dir: Path, spec: dict) -> PaperCell:
    stored = records.CellRecord.load(Path(cell_dir).parent, spec)
    rec = PaperCell(grid, stored.id, "", stored.seed, stored.status, path=stored.path, run_config=stored.config,
                     reason=stored.reason, axes=dict(stored.axes), manifest=records.read_manifest(stored.path))
    rec.evals = set(rec.run_config.get("eval", {}).get("tasks", []))
    if stored.status != "done":
        return rec
    rec.metrics = dict(stored.metrics)
    values, rec.missing = stored.eval_columns()
    rec.metrics.update({k: float(v) for k, v in values.items()})
    rec.evals |= set(stored.evals)
    return rec


def read_curve(cell_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """metrics.csv -> {"train/loss": [(step, value), ...], "val/loss": [...]}."""
    return records.read_curves(cell_dir)
