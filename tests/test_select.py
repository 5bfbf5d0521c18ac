"""Choosing a grid axis's value per group on validation (`select:`), through the real runner."""

from __future__ import annotations

import csv

import pytest

from ablations.grid import load_grid
from ablations.select import select_rows
from research.errors import ConfigError
from tests.helpers import run_cli, write_grid


def test_select_picks_lowest_mean_validation_per_group():
    rows = [
        {"model": "a", "train.lr": 0.01, "seed": 0, "status": "done", "val_loss": 1.0, "test_loss": 9.0},
        {"model": "a", "train.lr": 0.01, "seed": 1, "status": "done", "val_loss": 1.2, "test_loss": 9.0},
        {"model": "a", "train.lr": 0.001, "seed": 0, "status": "done", "val_loss": 1.05, "test_loss": 0.1},
        {"model": "a", "train.lr": 0.001, "seed": 1, "status": "done", "val_loss": 1.25, "test_loss": 0.1},
        {"model": "b", "train.lr": 0.01, "seed": 0, "status": "done", "val_loss": 2.0},
        {"model": "b", "train.lr": 0.001, "seed": 0, "status": "failed"},  # diverged: never chosen
    ]
    picked = {r["model"]: r for r in select_rows(rows, ["train.lr", "model"], "train.lr", "val_loss")}
    assert picked["a"]["selected"] == 0.01  # the lower mean validation loss wins, whatever test says
    assert picked["a"]["val_loss_mean"] == pytest.approx(1.1) and picked["a"]["test_loss_mean"] == 9.0
    assert picked["a"]["n_seeds"] == 2 and "0.001: 1.1500" in picked["a"]["swept"]
    assert picked["b"]["selected"] == 0.01 and "failed or unfinished" in picked["b"]["swept"]


@pytest.mark.parametrize("select, message", [
    ({"axis": "train.lr", "by": "test_loss"}, "must be a validation metric"),
    ({"axis": "train.beta2"}, "is not a grid axis"),
])
def test_select_must_name_an_axis_and_a_validation_metric(tmp_path, select, message):
    path = write_grid(tmp_path / "g.yaml", grid={"train.lr": [1e-3, 3e-3]})
    import yaml

    raw = yaml.safe_load(path.read_text())
    raw["select"] = select
    with pytest.raises(ConfigError, match=message):
        load_grid(path, raw=raw)


def test_runner_writes_the_selection(tmp_path):
    import yaml

    path = write_grid(tmp_path / "lr.yaml", name="lr", grid={"train.lr": [1e-3, 1e-2]}, seeds=(0, 1),
                      train={"max_steps": 8})
    raw = yaml.safe_load(path.read_text())
    raw["select"] = {"axis": "train.lr", "by": "val_loss"}
    path.write_text(yaml.safe_dump(raw))
    proc = run_cli(path, "--results-dir", tmp_path / "results")
    assert proc.returncode == 0, proc.stderr
    summary = list(csv.DictReader((tmp_path / "results" / "lr" / "summary.csv").open()))
    (row,) = csv.DictReader((tmp_path / "results" / "lr" / "selected.csv").open())
    means = {lr: sum(float(r["val_loss"]) for r in summary if float(r["train.lr"]) == lr) / 2 for lr in (1e-3, 1e-2)}
    assert float(row["selected train.lr (lowest mean val_loss)"]) == min(means, key=means.get)
    assert row["n_seeds"] == "2"
