"""The grid runner end to end through its CLI: real tokenizer, real Lightning Trainer, real files."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import REPO, run_cli, write_grid


def read_summary(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def finished_grid(tmp_path_factory):
    root = tmp_path_factory.mktemp("grid")
    grid = write_grid(root / "tiny.yaml", seeds=(0, 1))
    results = root / "results"
    proc = run_cli(grid, "--results-dir", results)
    assert proc.returncode == 0, proc.stderr
    return grid, results, proc


def test_grid_writes_cells_and_summary(finished_grid):
    grid, results, proc = finished_grid
    rows = read_summary(results / "tiny" / "summary.csv")
    assert len(rows) == 4
    required = ["cell", "seed", "status", "params", "val_loss", "val_ppl", "val_bpb", "train_tokens", "wall_s",
                "tokens_per_s", "model.n_embd"]
    assert all(col in rows[0] for col in required)
    assert {r["status"] for r in rows} == {"done"}
    assert sorted(r["model.n_embd"] for r in rows) == ["16", "16", "24", "24"]
    for row in rows:
        loss, ppl = float(row["val_loss"]), float(row["val_ppl"])
        assert 0 < loss < 6 and ppl == pytest.approx(2.718281828 ** loss, rel=1e-6)
        assert float(row["val_bpb"]) > float(row["floor_bpb"])  # no model beats the grammar's entropy
        assert int(row["train_tokens"]) == 12 * 4 * 32
        cell = results / "tiny" / row["cell"]
        for name in ("config.yaml", "metrics.json", "metrics.csv", "samples/samples.jsonl", "per_position.json",
                     "model.pt", "tokenizer/tokenizer.json", "manifest.json", "DONE"):
            assert (cell / name).exists(), name
        records = json.loads((cell / "per_position.json").read_text())  # at the start, every eval_every, the end
        assert [r["step"] for r in records] == [0, 6, 12] and len(records[0]["loss_by_position"]) == 32
        log = (cell / "metrics.csv").read_text().splitlines()
        assert "train/loss" in log[0] and "val/loss" in log[0]
    # seeds differ in their results; sizes differ in their parameter counts
    small = [r for r in rows if r["model.n_embd"] == "16"]
    assert small[0]["val_loss"] != small[1]["val_loss"]
    assert len({r["params"] for r in rows}) == 2
    assert "cell 4/4" in proc.stderr and "ETA" in proc.stderr


def test_rerun_trains_nothing(finished_grid):
    grid, results, _ = finished_grid
    done = {p: p.stat().st_mtime_ns for p in (results / "tiny").glob("*/DONE")}
    proc = run_cli(grid, "--results-dir", results)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("(kept)") == 4 and "training" not in proc.stderr
    assert {p: p.stat().st_mtime_ns for p in (results / "tiny").glob("*/DONE")} == done


def test_cells_are_deterministic_given_seed(finished_grid, tmp_path):
    grid, results, _ = finished_grid
    again = tmp_path / "again"
    grid = write_grid(tmp_path / "same.yaml", grid={"model.n_embd": [16]}, seeds=(0, 1))
    proc = run_cli(grid, "--results-dir", again)
    assert proc.returncode == 0, proc.stderr
    first = {r["seed"]: r["val_loss"] for r in read_summary(results / "tiny" / "summary.csv")
             if r["model.n_embd"] == "16"}
    second = {r["seed"]: r["val_loss"] for r in read_summary(again / "tiny" / "summary.csv")}
    assert first == second  # same seed, same data order, same result


def test_dry_run_lists_cells_and_trains_nothing(tmp_path):
    grid = write_grid(tmp_path / "g.yaml", grid={"model.n_layer": [1, 2], "train.lr": [1e-3, 3e-3]},
                      seeds=(0, 1, 2))
    proc = run_cli(grid, "--results-dir", tmp_path / "r", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "12 cells" in proc.stdout and "n_layer-2__lr-0.003__s2__" in proc.stdout
    assert not (tmp_path / "r").exists()


def test_killed_grid_resumes_without_losing_or_repeating_cells(tmp_path):
    grid = write_grid(tmp_path / "g.yaml", name="killme", grid={"model.n_embd": [16, 24, 32]},
                      train={"max_steps": 40})
    results = tmp_path / "results"
    proc = subprocess.Popen([sys.executable, "-m", "ablations.run", str(grid), "--results-dir", str(results)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list((results / "killme").glob("*/DONE")):
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p.parent.name: p.stat().st_mtime_ns for p in (results / "killme").glob("*/DONE")}
    assert 1 <= len(finished) < 3
    resumed = run_cli(grid, "--results-dir", results)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stderr.count("(kept)") == len(finished)
    assert resumed.stderr.count(": training") + resumed.stderr.count(": resuming") == 3 - len(finished)
    rows = read_summary(results / "killme" / "summary.csv")
    assert len(rows) == 3 and {r["status"] for r in rows} == {"done"}
    for name, mtime in finished.items():  # finished cells were not touched
        assert (results / "killme" / name / "DONE").stat().st_mtime_ns == mtime


def test_set_overrides_every_cell(tmp_path):
    grid = write_grid(tmp_path / "g.yaml", grid={"model.n_embd": [16]})
    proc = run_cli(grid, "--results-dir", tmp_path / "r", "--set", "train.max_steps=6",
                   "--set", "tokenizer.kind=word", "--set", "eval.samples=0")
    assert proc.returncode == 0, proc.stderr
    (cell,) = [p for p in (tmp_path / "r" / "tiny").iterdir() if p.is_dir() and not p.name.startswith(".")]
    metrics = json.loads((cell / "metrics.json").read_text())
    assert metrics["train_tokens"] == 6 * 4 * 32
    assert "val_word_ppl" in metrics  # word-level data reports per-word perplexity too


def test_killed_cell_resumes_from_its_checkpoint_and_ends_where_it_would(tmp_path):
    grid = write_grid(tmp_path / "g.yaml", name="midcell", grid={"model.n_embd": [16]},
                      train={"max_steps": 300, "checkpoint_every": 25, "eval_every": 100})
    results = tmp_path / "results"
    proc = subprocess.Popen([sys.executable, "-m", "ablations.run", str(grid), "--results-dir", str(results)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    ckpts = results / "midcell"
    while time.time() < deadline and not list(ckpts.glob("*/checkpoints/last.ckpt")):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    (cell,) = [p for p in ckpts.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert not (cell / "DONE").exists(), "the cell finished before it could be killed"
    resumed = run_cli(grid, "--results-dir", results)
    assert resumed.returncode == 0 and "resuming from its last checkpoint" in resumed.stderr, resumed.stderr
    straight = run_cli(grid, "--results-dir", tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr
    a = json.loads((cell / "metrics.json").read_text())
    b = json.loads((tmp_path / "straight" / "midcell" / cell.name / "metrics.json").read_text())
    assert a["train_tokens"] == b["train_tokens"]
    assert abs(a["val_loss"] - b["val_loss"]) < 1e-3, (a["val_loss"], b["val_loss"])
    assert not (cell / "checkpoints").exists()  # removed once the cell is done


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "ablations" / "grids").glob("*.yaml")))
def test_every_shipped_grid_validates(name):
    """Every cell's config of every grid in the repo builds (models included, on the meta device), offline."""
    import torch

    from ablations.grid import load_grid
    from research.models import build_model

    path = REPO / "ablations" / "grids" / name
    assert "../shared" not in path.read_text(), f"{name}: the product must not need ../shared"
    grid = load_grid(path)
    assert grid.cells
    models = {repr(cell.config.model): cell.config.model for cell in grid.cells}  # seeds share a model
    for config in models.values():
        with torch.device("meta"):
            model = build_model(config, 64)
        assert model.num_params() > 0 or not getattr(model, "trainable", True)  # an n-gram stores counts
