"""paper.studies on hand-made results: the length-generalisation table and figure (values and
the paired t-test behind bold checked against scipy), and the table of the cells a grid's
`select:` chose (the lr with the lowest mean validation loss per optimizer)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats as sps

from paper import studies
from paper.collect import GridRecord, PaperCell
from paper.tables import TableOptions


def _cell(root, grid, name, seed, axes, metrics, curve=None, trained=4):
    path = root / f"{name}_{seed}"
    (path / "evals").mkdir(parents=True)
    if curve is not None:
        details = {"window": len(curve), "trained_context": trained,
                   "records": [{"step": 10, "loss_by_position": list(curve)}]}
        (path / "evals" / "per_position.json").write_text(json.dumps({"status": "ok", "details": details}))
    return PaperCell(grid, f"{name}_{seed}", name, seed, "done", metrics=metrics, path=path, axes=axes,
                      evals={"per_position"})


def test_length_table_and_figure(tmp_path):
    rng = np.random.default_rng(0)
    cells, beyond = [], {"softmax": [], "log n": []}
    for name, jump in (("softmax", 1.0), ("log n", 0.2)):
        for seed in range(3):
            curve = np.r_[np.full(4, 1.0), np.full(12, 1.0 + jump)] + rng.normal(0, 0.01, 16)
            beyond[name].append(curve[4:].mean())
            metrics = {"params": 1000, "per_position/loss_within": curve[:4].mean(),
                       "per_position/loss_beyond": curve[4:].mean(), "per_position/loss_last": curve[-1]}
            cells.append(_cell(tmp_path, "lg", name, seed, {"model": name}, metrics, curve))
    grid = GridRecord("lg", tmp_path, ["model"], "", cells)
    table, significance = studies.length_table(grid, TableOptions())
    row = next(line for line in table.splitlines() if line.startswith("log n"))
    assert f"\\textbf{{{np.mean(beyond['log n']):.3f} $\\pm$ {np.std(beyond['log n'], ddof=1):.3f}}}" in row
    assert "$T$ = 4" in table and "paired $t$-test" in table
    test = next(r for r in significance if r["metric"] == "per_position/loss_beyond")
    assert float(test["p_value"]) == pytest.approx(
        sps.ttest_rel(beyond["softmax"], beyond["log n"]).pvalue, rel=1e-4)
    assert studies.length_figure(grid, tmp_path / "fig") == "lg_length"
    assert (tmp_path / "fig" / "lg_length.pdf").exists()


def test_cells_without_extended_eval_give_no_length_outputs(tmp_path):
    cells = [_cell(tmp_path, "g", "a", s, {"model": "a"}, {"val_loss": 1.0}) for s in range(2)]
    grid = GridRecord("g", tmp_path, ["model"], "", cells)
    assert studies.length_table(grid, TableOptions()) is None and studies.length_figure(grid, tmp_path) is None


def test_selected_table_keeps_the_lr_with_the_lowest_mean_val_loss(tmp_path):
    """The choice comes from the runner's selected.csv (written by ablations.select from summary rows)."""
    from types import SimpleNamespace

    from ablations.select import write_selection
    from ablations.summary import COLUMNS
    from research.io import atomic_write_csv

    val = {("adamw", 1e-3): 2.0, ("adamw", 1e-2): 1.5, ("tangent", 1e-3): 1.7, ("tangent", 1e-2): 1.9}
    cells, rows = [], []
    axes = ["train.optimizer", "train.lr"]
    for (opt, lr), loss in val.items():
        for seed in range(3):
            axis_values = {"train.optimizer": opt, "train.lr": lr}
            metrics = {"val_loss": loss + 0.01 * seed, "val_ppl": 3.0, "val_bpb": loss}
            cells.append(_cell(tmp_path, "opt", f"{opt} {lr}", seed, axis_values, metrics))
            rows.append({"cell": cells[-1].cell, "seed": seed, "status": "done", **axis_values, **metrics})
    grid = GridRecord("opt", tmp_path, axes, "", cells)
    assert studies.selected_grid(grid) is None  # no selection written: nothing to show
    atomic_write_csv(tmp_path / "summary.csv", rows, COLUMNS[:3] + axes + ["val_loss", "val_ppl", "val_bpb"])
    write_selection(SimpleNamespace(select={"axis": "train.lr", "by": "val_loss"}, axes=axes), rows, tmp_path)
    sub, select = studies.selected_grid(grid)
    assert select == {"axis": "train.lr", "by": "val_loss"}
    assert sorted({c.config for c in sub.cells}) == ["adamw 0.01", "tangent 0.001"] and len(sub.cells) == 6
    table, _, stem = studies.selected_outputs(grid, TableOptions(), None)
    assert "selected on \\texttt{val\\_loss}" in table and stem is None
