"""The cell record (ablations.records) against real cells: one finished, one failed, one killed midway.

Each value the record returns is checked against the files read independently here (csv, json,
yaml) or against the model rebuilt from the stored config, not against the record itself.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from ablations import records
from ablations.records import CellRecord, load_cells
from evals.base import EvalResult, write_result
from research.checkpoint import load_cell
from research.config import RunConfig
from research.errors import UserError
from tests.helpers import REPO, run_cli, write_grid


@pytest.fixture(scope="module")
def grid_dir(tmp_path_factory):
    """A grid of two real cells: one sized by match_params that finishes, one whose loss diverges."""
    tmp = tmp_path_factory.mktemp("records")
    grid = write_grid(tmp / "g.yaml", name="rec", grid={"train.lr": [3e-3, 1e9]},
                      model={"match_params": 12000, "n_embd": 16})
    proc = run_cli(grid, "--results-dir", tmp / "results")
    assert proc.returncode == 1, proc.stderr[-2000:]  # one cell failed, the grid went on
    return tmp / "results" / "rec"


def by_lr(cells):
    return {c.axes["train.lr"]: c for c in cells}


def test_a_finished_cell_round_trips(grid_dir):
    done = by_lr(load_cells(grid_dir))[3e-3]
    assert done.status == "done" and done.claim is None and done.reason is None
    on_disk = yaml.safe_load((done.path / "config.yaml").read_text())
    assert done.config == on_disk
    assert done.metrics == json.loads((done.path / "metrics.json").read_text())
    # the one configuration in the folder is the resolved one: rebuilt from it, the model has the
    # parameter count the cell reported, and Lightning wrote no second (unresolved) copy
    cfg = RunConfig.from_dict(on_disk)
    assert cfg.model.match_params is None and cfg.model.n_embd != 16
    assert cfg.train.steps_per_epoch is not None
    assert load_cell(done.path).model.num_params() == done.metrics["params"]  # weights fit the config
    assert records.read_manifest(done.path) == json.loads((done.path / "manifest.json").read_text())
    assert not (done.path / "hparams.yaml").exists()

    with open(done.path / "metrics.csv", newline="") as f:
        raw = list(csv.DictReader(f))
    train = [(int(r["step"]), float(r["train/loss"])) for r in raw if r.get("train/loss")]
    val = [(int(r["step"]), float(r["val/loss"])) for r in raw if r.get("val/loss")]
    curves = records.read_curves(done.path)
    assert curves["train/loss"] == train and curves["val/loss"] == val
    assert [s for s, _ in train] == [2, 5, 8, 11]  # log_every 3 over 12 steps (0-based)
    best_step, best_value = min(val, key=lambda p: p[1])
    assert done.metrics["val_loss_best_estimate"] == best_value
    assert done.metrics["val_loss_best_step"] == best_step + 1
    assert records.last_step(done.path) == 11


def test_eval_results_become_columns_in_one_place(grid_dir, tmp_path):
    cell = tmp_path / "cell"
    write_result(cell, EvalResult("blimp", 1, metrics={"acc": 0.75, "n": 100}))
    write_result(cell, EvalResult("judge", 2, status="skipped", reason="no OPENAI_API_KEY"))
    values, missing = records.eval_columns(records.read_evals(cell))
    assert values == {"blimp/acc": 0.75, "blimp/n": 100}
    assert missing == {"judge": "skipped: no OPENAI_API_KEY"}


def test_a_failed_cell_keeps_its_reason(grid_dir):
    failed = by_lr(load_cells(grid_dir))[1e9]
    assert failed.status == "failed" and failed.metrics == {} and failed.evals == {}
    assert "loss became nan" in failed.reason
    assert failed.reason == json.loads((failed.path / "error.json").read_text())["reason"]
    assert failed.claim is None  # the runner released it
    rows = {r["train.lr"]: r for r in csv.DictReader(open(grid_dir / "summary.csv"))}
    assert rows["1000000000.0"]["reason"] == failed.reason and rows["1000000000.0"]["status"] == "failed"


def test_a_corrupt_result_file_is_one_line_naming_it(grid_dir, tmp_path):
    cell = tmp_path / "broken"
    cell.mkdir()
    (cell / "DONE").write_text("x\n")
    (cell / "metrics.json").write_text('{"val_loss": 1.2')  # cut short
    with pytest.raises(UserError, match="metrics.json: not valid JSON") as err:
        CellRecord.load(tmp_path, {"id": "broken", "seed": 0})
    assert "\n" not in str(err.value)


def test_a_cell_killed_midway_is_partial_with_a_stale_claim(tmp_path):
    grid = write_grid(tmp_path / "g.yaml", name="killed", grid={"model.n_embd": [16]},
                      train={"max_steps": 5000, "log_every": 1})
    results = tmp_path / "results"
    proc = subprocess.Popen([sys.executable, "-m", "ablations.run", str(grid), "--results-dir", str(results)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not any(len(c.log()) >= 3 for c in _cells(results / "killed")):
            time.sleep(0.05)
        running = _cells(results / "killed")
        assert running and running[0].claim is not None and running[0].claim["state"] == "running"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    (cell,) = load_cells(results / "killed")
    assert cell.status == "partial" and cell.metrics == {} and cell.reason is None
    assert cell.claim["state"] == "stale" and cell.claim["pid"] == proc.pid  # its runner is dead
    assert cell.max_steps() == 5000 and 2 <= records.last_step(cell.path) < 5000
    status = run_cli(results / "killed", "--json", module="ablations.status")
    (row,) = json.loads(status.stdout)
    assert row["status"] == "stale" and 0 < row["progress"] < 1


def _cells(grid_dir):
    return load_cells(grid_dir) if (grid_dir / "grid.json").exists() else []
