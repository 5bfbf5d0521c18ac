"""Pick the best value of one grid axis per group of cells, on validation (`select:` in a grid).

A grid that sweeps `train.lr` next to a `model` axis compares architectures at each one's tuned
learning rate only if the rate is chosen per architecture, and chosen on data the comparison does
not report. `select: {axis: train.lr, by: val_loss}` groups the cells by every other axis, averages
`by` over the seeds of each value of `axis`, and keeps the value with the lowest mean. Test metrics
are reported for the chosen value only and never take part in the choice; `by` must be a
validation metric.

The choice is written to `<grid>/selected.csv`: one row per group with the chosen value, the
metric of every swept value (the sweep is part of the table's provenance), and mean and standard
deviation over seeds of the chosen cells' validation and test metrics.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from research.errors import ConfigError
from research.io import atomic_write_csv

#: metrics reported for the chosen cells (units: nats/token, perplexity, bits per UTF-8 byte)
REPORTED = ["val_loss", "val_ppl", "val_bpb", "test_loss", "test_ppl", "test_bpb"]


def check_select(select, axes: list[str], where: str) -> dict | None:
    """Validate a grid's `select:` section against its axes; one line naming the key on error."""
    if select is None:
        return None
    if not isinstance(select, dict) or set(select) - {"axis", "by"} or "axis" not in select:
        raise ConfigError(f"{where}: select: expected {{axis: <a grid axis>, by: <validation metric>}}, got {select!r}")
    axis, by = select["axis"], select.get("by", "val_loss")
    if axis not in axes:
        raise ConfigError(f"{where}: select.axis: '{axis}' is not a grid axis (axes: {', '.join(axes) or 'none'})")
    if not isinstance(by, str) or not by.startswith("val_"):
        raise ConfigError(f"{where}: select.by: '{by}' must be a validation metric such as val_loss "
                          "(choosing on test would report a tuned test number)")
    return {"axis": axis, "by": by}


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _number(value) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) else out


def select_rows(rows: list[dict], axes: list[str], axis: str, by: str) -> list[dict]:
    """Summary rows (one per cell: the axes, `seed`, `status`, metrics) -> one row per group.

    A value is eligible only when every one of its cells is done with a finite `by`, so a half-run
    or diverged setting never wins on the seeds that happened to finish.
    """
    others = [a for a in axes if a != axis]
    groups: dict[tuple, dict] = {}
    for row in rows:
        key = tuple(str(row.get(a)) for a in others)
        groups.setdefault(key, {}).setdefault(row.get(axis), []).append(row)
    out = []
    for key, by_value in groups.items():
        scores = {}
        for value, cells in by_value.items():
            metric = [_number(r.get(by)) if r.get("status") == "done" else None for r in cells]
            scores[value] = statistics.fmean(metric) if all(m is not None for m in metric) else math.nan
        finite = {v: s for v, s in scores.items() if not math.isnan(s)}
        row = dict(zip(others, key))
        row["swept"] = " | ".join(f"{v}: {'failed or unfinished' if math.isnan(s) else f'{s:.4f}'}"
                                  for v, s in scores.items())
        if not finite:
            row.update({"selected": "", "n_seeds": 0})
            out.append(row)
            continue
        best = min(finite, key=finite.get)
        chosen = by_value[best]
        row.update({"selected": best, "n_seeds": len(chosen)})
        for metric in REPORTED:
            values = [v for v in (_number(r.get(metric)) for r in chosen) if v is not None]
            if values:
                row[f"{metric}_mean"], row[f"{metric}_std"] = _mean_std(values)
        out.append(row)
    return out


def write_selection(grid, rows: list[dict], grid_dir: Path) -> Path | None:
    """`<grid>/selected.csv` for a grid with `select:`; None for one without."""
    if not grid.select:
        return None
    axis, by = grid.select["axis"], grid.select["by"]
    picked = select_rows(rows, grid.axes, axis, by)
    others = [a for a in grid.axes if a != axis]
    columns = others + ["selected", "n_seeds"] + [f"{m}_{s}" for m in REPORTED for s in ("mean", "std")] + ["swept"]
    header = [*others, f"selected {axis} (lowest mean {by})", *columns[len(others) + 1 :]]
    path = grid_dir / "selected.csv"
    atomic_write_csv(path, ({h: r.get(c, "") for h, c in zip(header, columns)} for r in picked), header)
    return path
