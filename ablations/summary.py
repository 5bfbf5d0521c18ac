"""The grid's results folder -> one summary row per cell (`<results>/<grid>/summary.csv`).

Rows come from what is on disk, read through `ablations.records`, never from memory, so the
summary of a resumed grid or of results copied back from a cluster is the
same as that of an uninterrupted local run.
"""

from __future__ import annotations

import math
from pathlib import Path

from ablations import records
from ablations.text_table import text_table
from research.io import atomic_write_csv

#: fixed leading columns; units: val_loss nats/token, val_bpb bits per UTF-8 byte, wall_s seconds
COLUMNS = ["cell", "seed", "status", "params", "params_non_embedding", "flops_per_token", "val_loss", "val_ppl",
           "val_bpb", "test_loss", "test_ppl", "test_bpb", "train_tokens", "wall_s", "tokens_per_s"]


def cell_row(cell, cell_dir: Path, axes: list[str]) -> dict:
    from ablations.grid import axis_value

    status = records.cell_status(cell_dir)
    row: dict = {"cell": cell.id, "seed": cell.seed, "status": status}
    for key in axes:
        row[key] = axis_value(cell, key)
    if status == "done":
        metrics = records.read_metrics(cell_dir)
        row.update({k: v for k, v in metrics.items() if not isinstance(v, (dict, list))})
        values, missing = records.eval_columns(records.read_evals(cell_dir))
        row.update(values)
        row.update({f"{name}/status": why for name, why in missing.items()})
    elif status == "failed":
        row["reason"] = records.read_error(cell_dir)
    return row


def summary_rows(grid, grid_dir: Path) -> list[dict]:
    return [cell_row(c, grid_dir / c.id, grid.axes) for c in grid.cells]


def write_summary(grid, grid_dir: Path) -> Path:
    """`summary.csv`, and `selected.csv` where the grid selects an axis's value on validation."""
    from ablations.select import write_selection

    rows = summary_rows(grid, grid_dir)
    write_selection(grid, rows, grid_dir)
    columns = COLUMNS[:3] + list(grid.axes) + COLUMNS[3:]
    extra = sorted({k for r in rows for k in r} - set(columns))
    columns += extra
    path = records.summary_path(grid_dir)
    atomic_write_csv(path, ({k: _fmt(row.get(k)) for k in columns} for row in rows), columns)
    return path


def _fmt(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    return value


def format_table(grid, grid_dir: Path) -> str:
    """A compact text table for the terminal: the axes and the headline metrics."""
    rows = summary_rows(grid, grid_dir)
    cols = ["cell", "status", "params", "val_loss", "val_ppl", "val_bpb", "val_tokens", "floor_bpb", "test_ppl",
            "wall_s", "tokens_per_s"]
    cols = [c for c in cols if any(c in r for r in rows)]
    return text_table(cols, [[_short(r.get(c)) for c in cols] for r in rows])


def _short(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
    if isinstance(value, int) and value >= 10_000:
        return f"{value / 1e6:.3f}M" if value >= 1_000_000 else f"{value / 1e3:.1f}k"
    return str(value)
