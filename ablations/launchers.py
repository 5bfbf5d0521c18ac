"""Where cells run: this process, several local worker processes, or a SLURM job array.

Every launcher runs the same per-cell code (`ablations.run.run_one`) under the same atomic
claims (`ablations.claims`), so launchers differ only in how many runners they start and where:

- `local`, one worker: cells in order, in this process.
- `local`, k workers: k copies of the runner as subprocesses. With GPUs, worker w sees GPU
  w mod n_gpus only (`CUDA_VISIBLE_DEVICES`), so `--cells-per-gpu k` puts k tiny cells on each
  GPU at once; on CPU the cores are split between workers.
- `slurm`: one submitit job per unfinished cell, resources from the grid's `resources` section.
  A preempted or timed-out job is requeued by submitit (`checkpoint()`), comes back under the
  same runner name, takes its own claim back and resumes the cell from `checkpoints/last.ckpt`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from research.errors import ConfigError

#: grid `resources` keys -> submitit parameters (slurm_* apply on SLURM only)
RESOURCE_KEYS = {
    "gpus": "gpus_per_node",
    "cpus": "cpus_per_task",
    "memory_gb": "mem_gb",
    "time_min": "timeout_min",
    "nodes": "nodes",
    "partition": "slurm_partition",
    "account": "slurm_account",
    "qos": "slurm_qos",
    "constraint": "slurm_constraint",
}


def visible_gpus() -> list[str]:
    import torch

    if not torch.cuda.is_available():
        return []
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env:
        return [g for g in env.split(",") if g.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


def spawn_local_workers(argv: list[str], n_workers: int, gpus: list[str]) -> int:
    """Start `n_workers` runner processes on the same grid and wait for all of them."""
    procs = []
    threads = max(1, (os.cpu_count() or 1) // n_workers)
    for w in range(n_workers):
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[w % len(gpus)]
        procs.append(subprocess.Popen([sys.executable, "-m", "ablations.run", *argv, "--worker"], env=env))
    codes = [p.wait() for p in procs]
    return max(codes)


class CellJob:
    """A submitit job that runs one cell under the claims protocol (picklable: paths and strings)."""

    def __init__(self, grid_path: str, overrides: dict, results_dir: str, cell_id: str):
        self.grid_path, self.overrides, self.results_dir, self.cell_id = grid_path, overrides, results_dir, cell_id

    def __call__(self) -> str:
        from ablations.claims import release, try_claim
        from ablations.grid import load_grid
        from ablations.records import cell_status
        from ablations.results import write_summary
        from ablations.run import quiet_lightning, run_one

        quiet_lightning()
        grid = load_grid(Path(self.grid_path), self.overrides)
        grid_dir = Path(self.results_dir) / grid.name
        cell = next(c for c in grid.cells if c.id == self.cell_id)
        cell_dir = grid_dir / cell.id
        if cell_status(cell_dir) == "done":
            return "done"
        claim = try_claim(grid_dir, cell.id, runner=f"slurm:{self.cell_id}")
        if claim is None:
            return "claimed elsewhere"
        try:
            ok = run_one(cell, cell_dir, Path(self.results_dir) / "_cache", f"[job] {cell.id}")
        finally:
            release(claim)
        write_summary(grid, grid_dir)
        return "done" if ok else "failed"

    def checkpoint(self, *args, **kwargs):
        """Called by submitit on preemption or timeout: requeue this same job (it resumes the cell)."""
        import submitit

        return submitit.helpers.DelayedSubmission(self)


def submit_slurm(grid, grid_path: Path, overrides: dict, results_dir: Path, cluster: str, retry_failed: bool):
    """Submit one job per unfinished cell; returns the submitit jobs."""
    try:
        import submitit
    except ImportError:
        raise ConfigError("--launcher slurm needs the package 'submitit': pip install submitit") from None
    from ablations.records import cell_status

    grid_dir = results_dir / grid.name
    keep = {"done"} if retry_failed else {"done", "failed"}
    todo = [c for c in grid.cells if cell_status(grid_dir / c.id) not in keep]
    executor = submitit.AutoExecutor(folder=str(grid_dir / ".submitit" / "%j"), cluster=cluster)
    params = {"name": f"ablations-{grid.name}", "timeout_min": 60}
    for key, value in (grid.resources or {}).items():
        if key not in RESOURCE_KEYS:
            raise ConfigError(f"resources.{key}: unknown key (valid: {', '.join(RESOURCE_KEYS)})")
        params[RESOURCE_KEYS[key]] = value
    executor.update_parameters(**params)
    jobs = []
    with executor.batch():
        for cell in todo:
            jobs.append(executor.submit(CellJob(str(grid_path), overrides, str(results_dir), cell.id)))
    return jobs
