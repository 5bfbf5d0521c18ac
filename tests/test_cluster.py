"""Fault tolerance and scale-out: concurrent runners, stale claims, failures, SLURM via submitit, DDP."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys

import pytest

from ablations.claims import read_claim, try_claim
from tests.helpers import REPO, run_cli, write_grid


def rows(grid_dir):
    with open(grid_dir / "summary.csv") as f:
        return list(csv.DictReader(f))


def test_two_concurrent_runners_share_the_grid(tmp_path):
    grid = write_grid(tmp_path / "g.yaml", name="shared", grid={"model.n_embd": [16, 24, 32, 40]},
                      train={"max_steps": 30})
    results = tmp_path / "results"
    prep = run_cli(grid, "--results-dir", results, "--dry-run")
    assert prep.returncode == 0
    cmd = [sys.executable, "-m", "ablations.run", str(grid), "--results-dir", str(results)]
    procs = [subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    logs = "".join(err for _, err in outs)
    for cell in (results / "shared").iterdir():
        if cell.is_dir() and not cell.name.startswith("."):
            assert logs.count(f"{cell.name}: training") == 1, logs  # trained once, by one runner
    assert [r["status"] for r in rows(results / "shared")] == ["done"] * 4
    assert not list((results / "shared" / ".claims").glob("*.json"))  # every claim released


def test_stale_claim_of_a_dead_runner_is_recovered(tmp_path):
    grid_dir = tmp_path / "g"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (grid_dir / ".claims").mkdir(parents=True)
    (grid_dir / ".claims" / "cellA.json").write_text(json.dumps(
        {"host": socket.gethostname(), "pid": dead.pid, "runner": "old", "since": 0}))
    claim = try_claim(grid_dir, "cellA", runner="new")
    assert claim is not None and read_claim(grid_dir, "cellA")["runner"] == "new"
    # a live runner's claim (this test process) is respected
    assert try_claim(grid_dir, "cellA", runner="third") is None


def test_a_claim_names_its_owner_and_only_that_owner_takes_it_back(tmp_path, monkeypatch):
    """A requeued SLURM task (same array job and task, new pid) takes its claim back; a task of
    another submission of the same grid, with a live claim before it, does not."""
    grid_dir = tmp_path / "g"
    (grid_dir / ".claims").mkdir(parents=True)
    monkeypatch.setenv("ABLATIONS_CLAIM_STALE_S", "300")
    (grid_dir / ".claims" / "cellA.json").write_text(json.dumps(
        {"host": "elsewhere", "pid": 1, "runner": "slurm:41_3", "slurm_job": None, "since": 5.0}))
    assert try_claim(grid_dir, "cellA", runner="slurm:42_3") is None
    claim = try_claim(grid_dir, "cellA", runner="slurm:41_3")
    assert claim is not None and claim.owner["since"] == 5.0 and claim.owner["pid"] == os.getpid()
    assert read_claim(grid_dir, "cellA")["runner"] == "slurm:41_3"


def test_failed_cell_is_isolated_and_retried_on_request(tmp_path):
    grid = write_grid(tmp_path / "g.yaml", name="nan", grid={"train.lr": [3e-3, 1e9]})
    results = tmp_path / "results"
    first = run_cli(grid, "--results-dir", results)
    assert first.returncode == 1
    table = {r["train.lr"]: r for r in rows(results / "nan")}
    assert table["0.003"]["status"] == "done" and table["1000000000.0"]["status"] == "failed"
    assert "loss became nan" in table["1000000000.0"]["reason"]
    again = run_cli(grid, "--results-dir", results)
    assert "failed (kept)" in again.stderr and ": training" not in again.stderr
    retry = run_cli(grid, "--results-dir", results, "--retry-failed")
    assert retry.stderr.count(": training") == 1 and "lr-1e+09" in retry.stderr.split(": training")[0]
    status = run_cli(results / "nan", module="ablations.status")
    assert status.returncode == 0 and "1 done, 1 failed" in status.stdout and "loss became nan" in status.stdout


def test_slurm_launcher_through_submitit_local_executor(tmp_path):
    pytest.importorskip("submitit")
    grid = write_grid(tmp_path / "g.yaml", name="slurmish", grid={"model.n_embd": [16, 24]})
    grid.write_text(grid.read_text() + "resources: {cpus: 1, time_min: 10}\n")
    results = tmp_path / "results"
    proc = run_cli(grid, "--results-dir", results, "--launcher", "slurm", "--slurm-cluster", "local", "--wait")
    assert proc.returncode == 0, proc.stderr
    assert "submitted 2 job(s)" in proc.stderr
    assert [r["status"] for r in rows(results / "slurmish")] == ["done", "done"]
    again = run_cli(grid, "--results-dir", results, "--launcher", "slurm", "--slurm-cluster", "local", "--wait")
    assert "submitted 0 job(s)" in again.stderr


def test_unknown_resource_key(tmp_path):
    pytest.importorskip("submitit")
    grid = write_grid(tmp_path / "g.yaml", name="res")
    grid.write_text(grid.read_text() + "resources: {gpu: 1}\n")
    proc = run_cli(grid, "--results-dir", tmp_path / "r", "--launcher", "slurm", "--slurm-cluster", "local")
    assert proc.returncode == 2 and "resources.gpu" in proc.stderr and "Traceback" not in proc.stderr


def test_ddp_on_cpu_with_two_processes(tmp_path):
    grid = write_grid(tmp_path / "g.yaml", name="ddp", grid={"model.n_embd": [16]},
                      train={"strategy": "ddp", "devices": 2, "accelerator": "cpu", "max_steps": 10})
    proc = run_cli(grid, "--results-dir", tmp_path / "r")
    assert proc.returncode == 0, proc.stderr
    (cell,) = [p for p in (tmp_path / "r" / "ddp").iterdir() if p.is_dir() and not p.name.startswith(".")]
    metrics = json.loads((cell / "metrics.json").read_text())
    assert metrics["train_tokens"] == 10 * 4 * 32 * 2  # two ranks, each on its own batches


def test_local_workers(tmp_path):
    grid = write_grid(tmp_path / "g.yaml", name="workers", grid={"model.n_embd": [16, 24, 32]})
    proc = run_cli(grid, "--results-dir", tmp_path / "r", "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    assert "2 workers" in proc.stderr
    assert [r["status"] for r in rows(tmp_path / "r" / "workers")] == ["done"] * 3
    assert os.path.exists(tmp_path / "r" / "workers" / "grid.json")
