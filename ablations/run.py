"""`python -m ablations.run GRID.yaml`: expand a grid, train every unfinished cell, write the summary.

    python -m ablations.run ablations/grids/demo.yaml
    python -m ablations.run grid.yaml --set data.path=corpus.txt --set train.max_steps=100
    python -m ablations.run grid.yaml --dry-run        # validate and list the cells, train nothing

The whole grid is validated, and every distinct dataset is loaded and tokenized, before the first
cell trains. A cell with `DONE` is kept as it is; a cell folder without it (a killed run) is
cleared and trained again; a failed cell keeps its `error.json` and is retried only with
`--retry-failed`. So re-running the same command resumes a killed grid.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
import traceback
import warnings
from pathlib import Path

from ablations import records
from ablations.grid import Grid, load_grid
from ablations.records import cell_status
from ablations.results import format_table, write_summary
from research.config import parse_overrides
from research.errors import UserError, run_main


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m ablations.run", description=__doc__.splitlines()[0])
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


def results_root(arg: Path | None) -> Path:
    return arg or Path(os.environ.get("ABLATIONS_RESULTS", "results"))


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
    from ablations.launchers import spawn_local_workers, visible_gpus

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
    say(f"grid '{grid.name}': finished in {_hms(time.time() - t0)}; summary: {summary}")
    return code


def launch_slurm(grid: Grid, args, overrides: dict, root: Path, grid_dir: Path) -> int:
    from ablations.launchers import submit_slurm, wait_for_jobs

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


def prepare_all(grid: Grid, cache_root: Path) -> None:
    """Load, clean and tokenize each distinct (data, tokenizer) once, all before any training
    (load_grid has already checked every cell's config, data path and logger package)."""
    from research.data.tokens import cache_key, prepare_tokens

    seen = set()
    for cell in grid.cells:
        key = cache_key(cell.config.data, cell.config.tokenizer)
        if key not in seen:
            seen.add(key)
            prepare_tokens(cell.config.data, cell.config.tokenizer, cache_root)


def grid_record(grid: Grid, args) -> dict:
    return {"name": grid.name, "description": grid.description, "source": str(grid.source), "axes": grid.axes,
            "overrides": args.set, "reproduces": grid.reproduces, "labels": grid.labels,
            "cells": [{"id": c.id, "seed": c.seed, "axes": c.axes} for c in grid.cells]}


def run_cells(grid: Grid, grid_dir: Path, cache_root: Path, retry_failed: bool = False,
              final_report: bool = True) -> int:
    """Train every cell this runner can claim; cells other runners hold are left to them."""
    from ablations.claims import Heartbeat, release, try_claim

    n = len(grid.cells)
    t_start = time.time()
    trained_s: list[float] = []
    failed = 0
    runner = f"{os.uname().nodename}:{os.getpid()}"  # unique even for several workers in one SLURM job
    with Heartbeat() as heartbeat:
        for i, cell in enumerate(grid.cells, 1):
            cell_dir = grid_dir / cell.id
            status = cell_status(cell_dir)
            if status == "done" or (status == "failed" and not retry_failed):
                say(f"cell {i}/{n} {cell.id}: {status} (kept)")
                failed += status == "failed"
                continue
            claim = try_claim(grid_dir, cell.id, runner)
            if claim is None:
                say(f"cell {i}/{n} {cell.id}: claimed by another runner (skipped)")
                continue
            heartbeat.claims.add(claim.path)
            try:
                if cell_status(cell_dir) == "done":  # finished by another runner since we looked
                    continue
                remaining = n - i + 1
                eta = f", ETA {_hms(remaining * sum(trained_s) / len(trained_s))}" if trained_s else ""
                t0 = time.time()
                ok = run_one(cell, cell_dir, cache_root, f"cell {i}/{n}", f"elapsed {_hms(t0 - t_start)}{eta}")
                failed += not ok
                trained_s.append(time.time() - t0)
                write_summary(grid, grid_dir)
            finally:
                heartbeat.claims.discard(claim.path)
                release(claim)
    summary = write_summary(grid, grid_dir)
    if final_report:
        print(format_table(grid, grid_dir))
        say(f"grid '{grid.name}': {n - failed}/{n} cells done in {_hms(time.time() - t_start)}; summary: {summary}")
    return 1 if failed else 0


def run_one(cell, cell_dir: Path, cache_root: Path, label: str, timing: str = "") -> bool:
    """Train one claimed cell: resume from its last checkpoint if it has one, else start clean."""
    from ablations.train_cell import train_cell

    resumable = records.has_checkpoint(cell_dir) and cell_status(cell_dir) != "failed"
    if resumable:
        say(f"{label} {cell.id}: resuming from its last checkpoint{f' ({timing})' if timing else ''}")
    else:
        say(f"{label} {cell.id}: training{f' ({timing})' if timing else ''}")
        if cell_dir.exists():
            shutil.rmtree(cell_dir)
    try:
        metrics = train_cell(cell, cell_dir, cache_root)
    except KeyboardInterrupt:
        raise
    except Exception as e:  # noqa: BLE001 - one cell's failure must not stop the grid
        reason = failure_reason(e)
        records.write_error(cell_dir, reason, traceback.format_exc())
        say(f"{label} {cell.id}: FAILED: {reason.splitlines()[0] if reason else type(e).__name__}")
        return False
    sessions = f" over {metrics['sessions']} sessions" if metrics.get("sessions", 1) > 1 else ""
    say(f"{label} {cell.id}: done in {_hms(metrics['wall_s'])}{sessions}: val_loss {metrics['val_loss']:.4f} "
        f"nats/token, val_bpb {metrics['val_bpb']:.4f}")
    return True


def failure_reason(e: BaseException) -> str:
    import torch

    if isinstance(e, UserError):
        return str(e)
    if isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower():
        return f"out of memory: {str(e).splitlines()[0] if str(e) else ''} (lower train.batch_size or the model size)"
    return f"{type(e).__name__}: {e}"


def say(message: str) -> None:
    print(f"[ablations] {message}", file=sys.stderr, flush=True)


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def quiet_lightning() -> None:
    """Lightning's banner lines (GPU available, TPU available, ...) would bury the grid's progress."""
    import lightning  # noqa: F401 - its import sets its loggers to INFO, so import before lowering them

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*IterableDataset.*__len__.*")
    warnings.filterwarnings("ignore", message=r".*Experiment logs directory .* exists and is not empty.*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    # on a login node: a local run is meant to be local; `--launcher slurm` starts its jobs under srun
    warnings.filterwarnings("ignore", message=r".*The `srun` command is available on your system but is not used.*")


if __name__ == "__main__":
    sys.exit(run_main(main))
