"""The one runner: claim a cell, train it, release it; shared by every way a grid runs.

A local run (`python -m ablations.run`), each of its `--workers` processes and each SLURM job
(`ablations.launchers.CellJob`) train cells through `train_claimed`, so the claims protocol
(`ablations.claims`), resuming from a checkpoint, recording a failure and the progress lines are
the same everywhere. `ablations.run` is only the command line; `ablations.launchers` only starts
runners (processes, SLURM jobs). Neither this module nor the trainer imports either of them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ablations import records
from ablations.claims import Heartbeat, release, try_claim
from ablations.console import hms, say  # noqa: F401 - say is also read from here
from ablations.records import cell_status
from ablations.summary import format_table, write_summary
from research.errors import UserError

if TYPE_CHECKING:
    from ablations.grid import Grid

#: train_claimed's outcomes
TRAINED, FAILED, CLAIMED_ELSEWHERE, DONE_ELSEWHERE = "trained", "failed", "claimed elsewhere", "done elsewhere"


def results_root(arg: Path | None) -> Path:
    return arg or Path(os.environ.get("ABLATIONS_RESULTS", "results"))


def prepare_all(grid: Grid, cache_root: Path) -> None:
    """Load, clean and tokenize each distinct (data, tokenizer) once, all before any training
    (load_grid has already checked every cell's config, data path and logger package)."""
    from research.data.tokens import prepare_tokens

    for data, tok in grid.datasets():
        prepare_tokens(data, tok, cache_root)


def grid_record(grid: Grid, args) -> dict:
    return {"name": grid.name, "description": grid.description, "source": str(grid.source), "axes": grid.axes,
            "overrides": args.set, "reproduces": grid.reproduces, "labels": grid.labels,
            "cells": [{"id": c.id, "seed": c.seed, "axes": c.axes} for c in grid.cells]}


def run_cells(grid: Grid, grid_dir: Path, cache_root: Path, retry_failed: bool = False,
              final_report: bool = True) -> int:
    """Train every cell this runner can claim; cells other runners hold are left to them."""
    n = len(grid.cells)
    t_start = time.time()
    trained_s: list[float] = []
    failed = 0
    runner = f"{os.uname().nodename}:{os.getpid()}"  # unique even for several workers in one SLURM job
    with Heartbeat() as heartbeat:
        for i, cell in enumerate(grid.cells, 1):
            status = cell_status(grid_dir / cell.id)
            if status == "done" or (status == "failed" and not retry_failed):
                say(f"cell {i}/{n} {cell.id}: {status} (kept)")
                failed += status == "failed"
                continue
            remaining = n - i + 1
            eta = f", ETA {hms(remaining * sum(trained_s) / len(trained_s))}" if trained_s else ""
            t0 = time.time()
            outcome = train_claimed(cell, grid_dir, cache_root, runner, f"cell {i}/{n}",
                                    f"elapsed {hms(t0 - t_start)}{eta}", heartbeat)
            if outcome == CLAIMED_ELSEWHERE:
                say(f"cell {i}/{n} {cell.id}: claimed by another runner (skipped)")
            if outcome in (TRAINED, FAILED):
                failed += outcome == FAILED
                trained_s.append(time.time() - t0)
                write_summary(grid, grid_dir)
    summary = write_summary(grid, grid_dir)
    if final_report:
        print(format_table(grid, grid_dir))
        say(f"grid '{grid.name}': {n - failed}/{n} cells done in {hms(time.time() - t_start)}; summary: {summary}")
    return 1 if failed else 0


def train_claimed(cell, grid_dir: Path, cache_root: Path, runner: str, label: str, timing: str = "",
                  heartbeat: Heartbeat | None = None, on_claimed: Callable[[], None] | None = None,
                  keep_claim: Callable[[BaseException], bool] | None = None) -> str:
    """Claim the cell for `runner`, train it (`run_one`) and release it, whatever happens.

    Returns TRAINED, FAILED (its error is recorded in the cell), CLAIMED_ELSEWHERE (another live
    runner holds it; nothing was done) or DONE_ELSEWHERE (it finished between the caller's look
    and the claim). While the claim is held, `heartbeat` (a fresh one when None) keeps it alive.
    `on_claimed` runs once the claim is held; `keep_claim(exc)` True keeps the claim past an
    exception (a SLURM job that is requeued resumes the cell it holds).
    """
    claim = try_claim(grid_dir, cell.id, runner)
    if claim is None:
        return CLAIMED_ELSEWHERE
    keep = False
    with contextlib.ExitStack() as stack:
        beat = heartbeat if heartbeat is not None else stack.enter_context(Heartbeat())
        beat.claims.add(claim.path)
        try:
            cell_dir = Path(grid_dir) / cell.id
            if cell_status(cell_dir) == "done":  # finished by another runner since the caller looked
                return DONE_ELSEWHERE
            if on_claimed is not None:
                on_claimed()
            return TRAINED if run_one(cell, cell_dir, cache_root, label, timing) else FAILED
        except BaseException as e:
            keep = keep_claim is not None and keep_claim(e)
            raise
        finally:
            beat.claims.discard(claim.path)
            if not keep:
                release(claim)


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
    say(f"{label} {cell.id}: done in {hms(metrics['wall_s'])}{sessions}: val_loss {metrics['val_loss']:.4f} "
        f"nats/token, val_bpb {metrics['val_bpb']:.4f}")
    return True


def failure_reason(e: BaseException) -> str:
    import torch

    if isinstance(e, UserError):
        return str(e)
    if isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower():
        return f"out of memory: {str(e).splitlines()[0] if str(e) else ''} (lower train.batch_size or the model size)"
    return f"{type(e).__name__}: {e}"


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

