"""`python -m ablations.run GRID.yaml`: expand a grid, train every unfinished cell, write the summary.

    python -m ablations.run ablations/grids/demo.yaml
    python -m ablations.run grid.yaml --set data.path=corpus.txt --set train.max_steps=100
    python -m ablations.run grid.yaml --dry-run        # validate and list the cells, train nothing

This module is the command line only: the runner (claim, train, release) is `ablations.runner`,
the ways to start several runners are `ablations.launchers`. The whole grid is validated, and
every distinct dataset is loaded and tokenized, before the first cell trains. A finished cell is
kept as it is; an unfinished folder (a killed run) resumes from its checkpoint or is cleared and
trained again; a failed cell keeps its error and is retried only with `--retry-failed`. So
re-running the same command resumes a killed grid.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from ablations import records
from ablations.grid import Grid, load_grid
from ablations.launchers import spawn_local_workers, submit_slurm, visible_gpus, wait_for_jobs
from ablations.records import cell_status
from ablations.runner import (  # noqa: F401 - grid_record and results_root are also read from here
    grid_record,
    hms,
    prepare_all,
    quiet_lightning,
    results_root,
    run_cells,
    say,
)
from ablations.summary import format_table, write_summary
from research.config import parse_overrides
from research.errors import UserError, run_main


def registered_names() -> str:
    """The registered names each config key takes, for --help (a grid or --set names them)."""
    from evals import EVALS
    from research.data.sources import SOURCES
    from research.models import MODELS
    from research.optim import OPTIMIZERS, SCHEDULES
    from research.tokenizers import TOKENIZERS

    keys = {"model.arch": MODELS, "data.source": SOURCES, "tokenizer.kind": TOKENIZERS, "train.optimizer": OPTIMIZERS,
            "train.schedule": SCHEDULES, "eval.tasks": EVALS}
    return "registered names:\n" + "\n".join(f"  {k}: {', '.join(r.names())}" for k, r in keys.items())


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m ablations.run", description=__doc__.splitlines()[0],
                                epilog=registered_names(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("grid", type=Path, help="grid YAML file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key for every cell, e.g. --set train.max_steps=100 (repeatable)")
    p.add_argument("--results-dir", type=Path, default=None,
                   help="where grids are stored (default: $ABLATIONS_RESULTS or ./results)")
    p.add_argument("--dry-run", action="store_true", help="validate and list the cells without training")
    p.add_argument("--retry-failed", action="store_true", help="train again the cells that failed before")
    p.add_argument("--launcher", choices=["local", "slurm"], default="local",
                   help="local: this machine; slurm: a job array, one task per unfinished cell (resources: the grid's)")
    p.add_argument("--workers", type=int, default=None,
                   help="local: runner processes sharing the grid (default: one per GPU x --cells-per-gpu, or 1)")
    p.add_argument("--cells-per-gpu", type=int, default=1, help="local: cells trained at once on each GPU")
    p.add_argument("--wait", action="store_true", help="slurm: wait for the jobs and write the summary")
    p.add_argument("--slurm-cluster", choices=["slurm", "local", "debug"], default="slurm",
                   help=argparse.SUPPRESS)  # submitit's local/debug executors, for tests without SLURM
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # a process started by --workers
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    overrides = parse_overrides(args.set)
    grid = load_grid(args.grid, overrides)
    root = results_root(args.results_dir)
    grid_dir = root / grid.name
    cache_root = root / "_cache"
    if args.dry_run:
        print(dry_run_table(grid, grid_dir))
        return 0
    quiet_lightning()
    follower = os.environ.get("ABLATIONS_CELL")
    if follower and int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0"))) > 0:
        from ablations.train_cell import follow_cell

        cell = next(c for c in grid.cells if c.id == follower)
        follow_cell(cell, grid_dir / cell.id, cache_root)
        return 0
    if args.worker:
        return run_cells(grid, grid_dir, cache_root, args.retry_failed, final_report=False)
    prepare_all(grid, cache_root)
    grid_dir.mkdir(parents=True, exist_ok=True)
    records.write_grid(grid_dir, grid_record(grid, args))
    if args.launcher == "slurm":
        return launch_slurm(grid, args, overrides, root, grid_dir)
    gpus = visible_gpus()
    workers = args.workers or (max(1, len(gpus)) * args.cells_per_gpu if gpus else 1)
    if workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    if workers == 1:
        return run_cells(grid, grid_dir, cache_root, args.retry_failed)
    say(f"{workers} workers on {len(gpus) or 'no'} GPU(s), {args.cells_per_gpu} cell(s) per GPU")
    t0 = time.time()
    argv = [str(args.grid), "--results-dir", str(root), *sum((["--set", s] for s in args.set), [])]
    if args.retry_failed:
        argv.append("--retry-failed")
    code = spawn_local_workers(argv, workers, gpus)
    summary = write_summary(grid, grid_dir)
    print(format_table(grid, grid_dir))
    say(f"grid '{grid.name}': finished in {hms(time.time() - t0)}; summary: {summary}")
    return code


def launch_slurm(grid: Grid, args, overrides: dict, root: Path, grid_dir: Path) -> int:
    submitted = submit_slurm(grid, args.grid.resolve(), overrides, root.resolve(), args.slurm_cluster,
                             args.retry_failed)
    if not submitted:
        say("submitted 0 job(s): all cells finished")
    else:
        arrays = sorted({str(j.job_id).split("_")[0] for _, j in submitted})
        say(f"submitted {len(submitted)} job(s) in SLURM job(s) {', '.join(arrays)}")
        for cell_id, job in submitted:
            say(f"  {cell_id}: job {job.job_id}, log {job.paths.stderr}")
    if not args.wait:
        say(f"follow with: python -m ablations.status {grid_dir}")
        return 0
    problems = wait_for_jobs(submitted, grid_dir, say) if submitted else []
    for line in problems:
        say(line)
    write_summary(grid, grid_dir)
    print(format_table(grid, grid_dir))
    return 1 if problems else 0


def dry_run_table(grid: Grid, grid_dir: Path) -> str:
    lines = [f"grid '{grid.name}': {len(grid.cells)} cells -> {grid_dir}"]
    for cell in grid.cells:
        status = cell_status(grid_dir / cell.id)
        lines.append(f"  {cell.index + 1:>3}. {cell.id}  [{status}]  model={cell.config.model.arch}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(run_main(main))
