"""Results folders -> tidy records for tables and figures; reads files only, never trains.

A *configuration* is a cell without its seed: cells whose grid axes are equal are the seeds of
one configuration and are aggregated (mean ± std over seeds). Every value keeps where it came
from, so a table can say why a metric is missing (not configured, skipped, failed, cell failed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ablations import records
from ablations.records import read_per_position  # noqa: F401 - figures and tests read it from here


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
    spec = records.read_grid(path)
    cells = [load_cell_record(spec["name"], path / c["id"], c) for c in spec["cells"]]
    return GridRecord(spec["name"], path, list(spec.get("axes", [])), spec.get("description", ""), cells)


def load_cell_record(grid: str, cell_dir: Path, spec: dict) -> CellRecord:
    stored = records.CellRecord.load(Path(cell_dir).parent, spec)
    rec = CellRecord(grid, stored.id, config_label(stored.id, stored.seed), stored.seed, stored.status,
                     path=stored.path, run_config=stored.config, reason=stored.reason)
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
