"""SLURM requeues: taken at a step boundary, kept within a budget, and reported for what they are.

- **USR1** (`scancel --signal=USR1`, or `#SBATCH --signal=USR1@...`). Lightning's own SLURM
  handler saves `hpc_ckpt_*.ckpt` from inside the signal handler, at whatever line training is on:
  mid-step, its loop counters disagree with its weights, and a cell resumed from it logged every
  later row under the wrong step (the values of the row 10 steps before). Lightning's auto-requeue
  is off (`slurm_plugins`); the cell's `research.callbacks.StopOnSignal` takes USR1 instead: the
  handler only sets a flag, and at the next step boundary (all ranks agreeing) the cell saves
  `checkpoints/last.ckpt` like any periodic checkpoint, asks SLURM to requeue the job
  (`requeue_job`) and stops. The resumed cell's log is the uninterrupted run's, row for row.
- **Budget.** A job signalled before its time limit or on preemption (submitit's USR2) is requeued
  by `CellJob.checkpoint` at most `resources.max_requeues` times (submitit's own count of timeouts
  is set out of reach: it cannot size itself to the cell). Without that key the budget is sized from the cell itself:
  at its first requeue, the steps its session saved against the steps left give the sessions it
  still needs at `resources.time_min` per session, plus one spare. Each job's count is in
  `<grid>/.submitit/requeues/<cell>.json`, which `ablations.status` reads to flag a cell on its
  last requeue.
- **Messages.** A job stopped by SIGTERM asks SLURM whether it was requeued (its restart count
  went up: `scontrol requeue`, preemption, USR1, USR2), so its log says either that it resumes by
  itself or that the command must be submitted again.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

from ablations.claims import slurm_job
from research.cell import last_checkpoint, submitit_dir
from research.io import atomic_write_text

#: requeues allowed, when the budget cannot be sized yet (no session has saved a checkpoint)
UNSIZED_REQUEUES = 3


def slurm_plugins() -> list:
    """Lightning's SLURM environment without its auto-requeue (see the module docstring) when this
    process runs under `srun`; elsewhere Lightning picks the environment itself."""
    from lightning.fabric.plugins.environments.slurm import SLURMEnvironment, _is_srun_used

    return [SLURMEnvironment(auto_requeue=False)] if _is_srun_used() else []


def _ignore_sigterm() -> None:
    """In a child before exec (SIG_IGN survives exec): SLURM's SIGTERM to a job it requeues or ends
    reaches every process of the job, and would kill scontrol mid-call."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def requeue_job() -> None:
    """`scontrol requeue` this job; a failure is reported (the cell still resumes when submitted again)."""
    from ablations.console import say

    job = slurm_job()
    if job is None or shutil.which("scontrol") is None:
        say("not requeued: not in a SLURM job; submit the same command again to resume the cell")
        return
    out = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, preexec_fn=_ignore_sigterm)
    if out.returncode != 0:
        say(f"scontrol requeue {job} failed ({out.stderr.strip()}); submit the same command again to resume the cell")


def requeued_by_slurm() -> bool:
    """Whether SLURM has requeued this job (it runs again by itself): its restart count is above
    the one this run started with."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job or shutil.which("scontrol") is None:
        return False
    try:  # asked while SLURM is ending the job, whose processes it sends SIGTERM: scontrol ignores it
        out = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True, timeout=30,
                             preexec_fn=_ignore_sigterm)
    except (OSError, subprocess.SubprocessError):
        return False
    found = re.search(r"\bRestarts=(\d+)", out.stdout)
    return found is not None and int(found.group(1)) > int(os.environ.get("SLURM_RESTART_COUNT", "0"))


def saved_step(cell_dir: Path) -> int:
    """The step of the cell's `checkpoints/last.ckpt` (0 without one)."""
    import torch

    path = last_checkpoint(cell_dir)
    if not path.exists():
        return 0
    return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["global_step"])


def sized_budget(used: int, max_steps: int, start_step: int, saved: int) -> int | None:
    """Requeues a cell may have in all: those used, the sessions it still needs at the pace of this
    one (steps saved since `start_step`), and one spare. None when this session saved nothing."""
    progress = saved - start_step
    if progress <= 0:
        return None
    return used + math.ceil(max(0, max_steps - saved) / progress) + 1


def requeues_path(grid_dir: Path, cell_id: str) -> Path:
    return submitit_dir(grid_dir) / "requeues" / f"{cell_id}.json"


def write_requeues(grid_dir: Path, cell_id: str, used: int, budget: int | None) -> None:
    record = {"job": slurm_job(), "used": used, "budget": budget}
    path = requeues_path(grid_dir, cell_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record) + "\n")


def read_requeues(grid_dir: Path, cell_id: str) -> dict | None:
    """{job, used, budget} of the cell's latest requeued job, None when it was never requeued."""
    try:
        return json.loads(requeues_path(grid_dir, cell_id).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
