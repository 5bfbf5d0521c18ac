"""The grid-level view of a results folder: every cell's record, read through `research.cell`.

`research.cell` names a cell's files and reads and writes them (it sits at the bottom of the
import order, so the training callbacks and the evals use it too); this module adds what needs
the grid: which runner holds a cell (`ablations.claims`), and one `CellRecord` per cell of
`grid.json`. The cell functions are re-exported here, so the runner, the status, `paper.build`
and the web app keep reading results through `ablations.records`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ablations import claims
from research.cell import (  # noqa: F401 - the cell layer, read through this module by paper/ and app/
    CONFIG,
    CURVES,
    DONE,
    ERROR,
    EVALS,
    GRID,
    LOG,
    MANIFEST,
    METRICS,
    PER_POSITION,
    best_logged_val,
    cell_status,
    checkpoint_dir,
    checkpoints,
    eval_columns,
    eval_path,
    has_checkpoint,
    has_weights,
    is_grid_dir,
    jobs_path,
    last_step,
    mark_done,
    max_steps,
    read_config,
    read_curves,
    read_error,
    read_evals,
    read_grid,
    read_log,
    read_manifest,
    read_metrics,
    read_per_position,
    read_progress,
    remove_checkpoints,
    submitit_dir,
    summary_path,
    tokenizer_dir,
    weights_path,
    write_config,
    write_error,
    write_grid,
    write_manifest,
    write_metrics,
    write_progress,
    write_samples,
)


def claim_state(grid_dir: Path, cell_id: str) -> dict | None:
    """Who trains the cell now: the claim's owner with `state` "running" (its runner is alive),
    "requeued" (a SLURM job waiting to run again) or "stale" (dead, so another runner may take it
    over); None when nobody claims it."""
    claim = claims.read_claim(grid_dir, cell_id)
    if claim is None:
        return None
    return {**claim, "state": claims.owner_state(claim)}


# the whole record --------------------------------------------------------------------------------
@dataclass
class CellRecord:
    """What the disk says about one cell. The per-step log is read on demand (`log()`): it is the
    one large file, and only partial cells and figures need it."""

    id: str
    path: Path
    seed: int | None
    axes: dict
    status: str  # done | failed | partial | pending
    config: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)  # metrics.json (done cells)
    evals: dict = field(default_factory=dict)  # eval name -> stored result (done cells)
    reason: str | None = None  # why the cell failed
    claim: dict | None = None  # claim_state(), for cells not done

    @classmethod
    def load(cls, grid_dir: Path, entry: dict) -> CellRecord:
        """`entry` is the cell's line of grid.json ({id, seed, axes})."""
        cell_dir = Path(grid_dir) / entry["id"]
        status = cell_status(cell_dir)
        seed = entry.get("seed")
        rec = cls(entry["id"], cell_dir, int(seed) if seed is not None else None, dict(entry.get("axes") or {}),
                  status, config=read_config(cell_dir))
        if status == "done":
            rec.metrics = read_metrics(cell_dir)
            rec.evals = read_evals(cell_dir)
        elif status == "failed":
            rec.reason = read_error(cell_dir)
        if status != "done":
            rec.claim = claim_state(grid_dir, entry["id"])
        return rec

    def eval_columns(self) -> tuple[dict[str, float], dict[str, str]]:
        return eval_columns(self.evals)

    def log(self) -> list[dict[str, float]]:
        return read_log(self.path)

    def max_steps(self) -> int | None:
        return max_steps(self.config)

    def has_checkpoint(self) -> bool:
        """A resumable state is on disk: the cell ran before (a requeued job resumes it)."""
        return has_checkpoint(self.path)


def load_cells(grid_dir: Path) -> list[CellRecord]:
    """Every cell listed in the grid's grid.json, in grid order."""
    return [CellRecord.load(grid_dir, c) for c in read_grid(grid_dir).get("cells", [])]
