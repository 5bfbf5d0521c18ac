"""The SLURM requeue budget, the job named for a cell, and the status of a cell on its last
requeue: the parts that need no cluster (tests/test_slurm.py runs them on a real one)."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest

from ablations.claims import try_claim
from ablations.launchers import record_jobs, record_training_job, slurm_parameters, submitted_jobs
from ablations.requeue import UNSIZED_REQUEUES, sized_budget, write_requeues
from ablations.status import CellStatus, format_status, requeue_budget
from research.errors import ConfigError
from tests.helpers import run_cli, write_grid


def test_budget_is_the_sessions_still_needed_at_this_pace_plus_one():
    # 600 steps, the first session saved 150: three more sessions, and one spare
    assert sized_budget(used=0, max_steps=600, start_step=0, saved=150) == 4
    # sized later (earlier sessions saved nothing): the requeues used count too
    assert sized_budget(used=2, max_steps=600, start_step=100, saved=350) == 2 + 1 + 1
    assert sized_budget(used=0, max_steps=600, start_step=100, saved=100) is None  # no pace to size from


def test_max_requeues_is_checked():
    assert slurm_parameters({"max_requeues": 0})["max_requeues"] == 0
    for bad in (-1, 2.5, True, "3"):
        with pytest.raises(ConfigError, match=r"^resources.max_requeues: expected a whole number >= 0"):
            slurm_parameters({"max_requeues": bad})
    with pytest.raises(ConfigError, match="did you mean 'max_requeues'"):
        slurm_parameters({"max_requeue": 3})


def test_status_flags_a_cell_on_its_last_requeue(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "41")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "0")
    write_requeues(tmp_path, "cellA", used=2, budget=3)
    assert requeue_budget(tmp_path, "cellA", "slurm:41_0") == {"requeues": "2/3", "last_requeue": False}
    assert requeue_budget(tmp_path, "cellA", "slurm:42_0") == {}  # another job's count is not this one's
    write_requeues(tmp_path, "cellA", used=3, budget=3)
    flags = requeue_budget(tmp_path, "cellA", "slurm:41_0")
    assert flags == {"requeues": "3/3", "last_requeue": True}
    write_requeues(tmp_path, "cellB", used=UNSIZED_REQUEUES, budget=None)
    assert requeue_budget(tmp_path, "cellB", "slurm:41_0")["last_requeue"]
    row = CellStatus("cellA", 0, "running", elapsed_s=90.0, runner="slurm:41_0", **flags)
    assert "cellA: on its last requeue (3/3 used); if this session does not finish it, raise " \
           "resources.time_min or resources.max_requeues" in format_status([row])


def test_jobs_json_names_the_job_that_claimed_the_cell(tmp_path, monkeypatch):
    """A later submission does not rename a claimed cell's job; the job that claims a cell names itself."""
    record_jobs(tmp_path, [("cellA", SimpleNamespace(job_id="10_0")), ("cellB", SimpleNamespace(job_id="10_1"))])
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "11")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "0")
    assert try_claim(tmp_path, "cellA") is not None
    record_training_job(tmp_path, "cellA")
    record_jobs(tmp_path, [("cellA", SimpleNamespace(job_id="12_0")), ("cellB", SimpleNamespace(job_id="12_1"))])
    assert submitted_jobs(tmp_path) == {"cellA": "11_0", "cellB": "12_1"}
    assert json.loads((tmp_path / ".submitit" / "jobs.json").read_text()) == submitted_jobs(tmp_path)


@pytest.mark.skipif(shutil.which("srun") is None, reason="Lightning's srun hint needs srun installed (a login node)")
def test_a_local_run_on_a_login_node_prints_no_srun_hint(tmp_path):
    grid = write_grid(tmp_path / "g.yaml", grid={"model.n_embd": [16]}, eval={"samples": 0})
    proc = run_cli(grid, "--results-dir", tmp_path / "r")
    assert proc.returncode == 0, proc.stderr
    assert "srun" not in proc.stderr, proc.stderr
