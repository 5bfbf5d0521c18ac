"""`python -m ablations.status RESULTS_GRID_DIR`: where a grid stands, from its files alone.

One place computes a cell's status, phase and ETA (`cell_state`, `grid_status`) and the grid's
elapsed time and ETA (`grid_times`); this command prints them and the web app serves them.

Status: done / running (claimed by a live runner) / requeued (its SLURM job waits to run again) /
queued (its SLURM job has not started) / stopping (its SLURM job is ending) / stale (claimed by a
dead runner) / failed / partial / pending. Phase comes from the cell's own progress record, which
the trainer writes as it moves from preparing data to training (with its step, every few seconds)
to scoring, sampling and evals (`research.cell.write_progress`); a cell from before that record
falls back to its per-step log. Elapsed time of a SLURM cell runs from the session that first
started it (its claim outlives requeues); the ETA of a training cell is its elapsed time scaled by
the steps left; a SLURM cell shows the requeues it has used of its budget, flagged on the last.
Works on a grid that is running elsewhere (a shared filesystem, a cluster) because it only reads
(and asks `squeue` about jobs).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ablations.claims import SLURM_WAITING, slurm_job_state
from ablations.launchers import submitted_jobs
from ablations.records import CellRecord, read_grid, read_log, read_progress
from ablations.requeue import UNSIZED_REQUEUES, read_requeues
from ablations.text_table import text_table
from research.errors import run_main

#: every status a cell can have, in the order the app counts them
STATUSES = ("done", "running", "requeued", "queued", "stopping", "stale", "partial", "failed", "pending")

#: progress-record phase -> what the status shows (training shows its step instead)
PHASES = {
    "preparing": "starting (loading data)",
    "scoring": "scoring (validation and test splits)",
    "sampling": "sampling text",
    "evaluating": "running evals",
}


@dataclass
class CellStatus:
    """What one cell is doing, for the terminal and the web app (`dataclasses.asdict` is JSON)."""

    cell: str
    seed: int | None
    status: str  # done | running | requeued | queued | stopping | stale | failed | partial | pending
    phase: str | None = None  # a running cell's phase, e.g. "training step 6/12"
    step: int | None = None  # optimizer steps done
    max_steps: int | None = None
    progress: float | None = None  # step / max_steps (1.0 once done)
    elapsed_s: float | None = None  # since its runner claimed it (done: its wall clock over all sessions)
    eta_s: float | None = None  # a training cell's time left
    wall_s: float | None = None  # a done cell's wall clock (metrics.json)
    runner: str | None = None  # who holds it (host:pid, slurm:<job>)
    reason: str | None = None  # why it failed
    updated: float | None = None  # newest mtime of the folder and its files
    metrics: dict = field(default_factory=dict)  # a done cell's numeric final metrics
    axes: dict = field(default_factory=dict)  # axis -> value, as grid.json records it
    requeues: str | None = None  # a SLURM cell's requeues "used/budget"
    last_requeue: bool = False  # it has none left: if this session does not finish it, its job ends

    @property
    def val_loss(self) -> float | None:
        return self.metrics.get("val_loss")

    @property
    def val_bpb(self) -> float | None:
        return self.metrics.get("val_bpb")


def training_step(rec: CellRecord) -> tuple[int | None, dict]:
    """(optimizer steps done, the progress record): the later of the record's step (written every
    few seconds) and the per-step log's (its last 0-based step + 1; the only one an older cell has)."""
    progress = read_progress(rec.path)
    steps = [row["step"] + 1 for row in read_log(rec.path)]
    if isinstance(progress.get("step"), int):
        steps.append(progress["step"])
    return (max(steps) if steps else None), progress


def phase_of(progress: dict, step: int | None, max_steps: int | None) -> str:
    """A running cell's phase line. Without a progress record (an older trainer), the phase is
    inferred from the log: training until the last step, then evaluating."""
    phase = progress.get("phase")
    if phase in PHASES:
        return PHASES[phase]
    if phase is None and step is None:
        return "training (no step logged yet)"
    if phase is None and max_steps and step >= max_steps:
        return "evaluating (final validation)"
    return f"training step {step if step is not None else 0}/{max_steps or '?'}"


def cell_state(grid_dir: Path, entry: dict, now: float | None = None, jobs: dict | None = None) -> CellStatus:
    """One cell's status, phase, progress and ETA. `entry` is its line of grid.json ({id, seed,
    axes}); `jobs` the grid's submitted SLURM jobs (read when None)."""
    now = time.time() if now is None else now
    rec = CellRecord.load(grid_dir, entry)
    row = CellStatus(rec.id, rec.seed, rec.status, reason=rec.reason, updated=_mtime(rec.path),
                     max_steps=rec.max_steps(), axes=rec.axes)
    if rec.status == "done":
        row.metrics = {k: v for k, v in rec.metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        row.progress, row.wall_s = 1.0, row.metrics.get("wall_s")
        row.elapsed_s = row.wall_s
        return row
    progress: dict = {}
    if rec.status == "partial" or rec.claim is not None:
        row.step, progress = training_step(rec)
        if row.step is not None and row.max_steps:
            row.progress = min(1.0, row.step / row.max_steps)
    if rec.claim is None:
        jobs = submitted_jobs(grid_dir) if jobs is None else jobs
        state = slurm_job_state(jobs[rec.id]) if rec.status != "failed" and rec.id in jobs else None
        if state in SLURM_WAITING:  # with a checkpoint it ran before: requeued (preempted, timed out)
            row.status = "requeued" if rec.has_checkpoint() else "queued"
            row.runner = f"slurm:{jobs[rec.id]}"
        elif state == "COMPLETING":  # its job is ending (cancelled, failed or being requeued): not yet known
            row.status, row.runner = "stopping", f"slurm:{jobs[rec.id]}"
        if row.status == "requeued":
            row = dataclasses.replace(row, **requeue_budget(grid_dir, row.cell, row.runner))
        return row
    row.status, row.runner = rec.claim["state"], rec.claim.get("runner")
    if row.status in ("running", "requeued"):
        row = dataclasses.replace(row, **requeue_budget(grid_dir, row.cell, row.runner))
    since = rec.claim.get("since")
    if isinstance(since, (int, float)):
        row.elapsed_s = max(0.0, now - since)
    if row.status == "stale":
        row.phase = "runner gone (heartbeat stopped); re-run the grid to resume"
        return row
    row.phase = phase_of(progress, row.step, row.max_steps)
    if row.phase.startswith("training step") and row.progress and row.elapsed_s is not None:
        row.eta_s = row.elapsed_s * (1 - row.progress) / row.progress
    return row


def grid_status(grid_dir: Path) -> list[CellStatus]:
    """Every cell of the grid's grid.json, in grid order."""
    now = time.time()
    jobs = submitted_jobs(grid_dir)
    return [cell_state(grid_dir, entry, now, jobs) for entry in read_grid(grid_dir).get("cells", [])]


def grid_times(rows: list[CellStatus], running: bool, now: float | None = None) -> dict:
    """The grid's elapsed wall clock (seconds, from its first cell's start) and, while it runs, an
    estimate of the time left: the running cells' own estimates, plus the cells still waiting at
    the mean wall clock of the finished ones, shared among the live runners."""
    now = time.time() if now is None else now
    starts = [now - r.elapsed_s for r in rows if r.elapsed_s is not None and r.status != "done"]
    ends = []
    for r in rows:
        if r.status == "done" and r.wall_s and r.updated:
            starts.append(r.updated - r.wall_s)
            ends.append(r.updated)
    if not starts:
        return {"elapsed_s": None, "eta_s": None}
    elapsed = (now if running else max(ends or [now])) - min(starts)
    if not running:
        return {"elapsed_s": elapsed, "eta_s": None}
    live = [r for r in rows if r.status == "running"]
    waiting = sum(r.status in ("pending", "partial", "stale") for r in rows)
    walls = [r.wall_s for r in rows if r.status == "done" and r.wall_s]
    walls = walls or [r.elapsed_s + r.eta_s for r in live if r.eta_s is not None]
    own = [r.eta_s for r in live if r.eta_s is not None]
    if (waiting and not walls) or (live and not own):
        return {"elapsed_s": elapsed, "eta_s": None}
    eta = max(own, default=0.0) + waiting * (sum(walls) / len(walls) if walls else 0.0) / max(1, len(live))
    return {"elapsed_s": elapsed, "eta_s": eta}


def cell_rows(grid_dir: Path) -> list[dict]:
    """`grid_status` as plain dicts (the `--json` output)."""
    return [dataclasses.asdict(r) for r in grid_status(grid_dir)]


def _mtime(path: Path) -> float | None:
    """The newest mtime among the folder and its direct files: the log files change as a cell trains."""
    if not path.exists():
        return None
    return max([path.stat().st_mtime] + [p.stat().st_mtime for p in path.iterdir() if p.is_file()])


def requeue_budget(grid_dir: Path, cell_id: str, runner: str | None) -> dict:
    """`requeues` ("used/budget") of the cell's job, and `last_requeue` when it has none left: if
    this session does not finish the cell, its job ends and the cell waits to be submitted again."""
    record = read_requeues(grid_dir, cell_id)
    if record is None or runner != f"slurm:{record.get('job')}":
        return {}
    budget = UNSIZED_REQUEUES if record.get("budget") is None else record["budget"]
    return {"requeues": f"{record['used']}/{budget}", "last_requeue": record["used"] >= budget}


def _fmt(value, kind: str = "") -> str:
    if value is None:
        return "-"
    if kind == "time":
        value = int(value)
        return f"{value // 3600}h{value % 3600 // 60:02d}m" if value >= 3600 else f"{value // 60}m{value % 60:02d}s"
    if kind == "pct":
        return f"{100 * value:.0f}%"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def format_status(rows: list[CellStatus]) -> str:
    head = ["cell", "status", "phase", "runner", "val_loss", "val_bpb", "progress", "elapsed", "eta"]
    table = [[r.cell, r.status, _fmt(r.phase), _fmt(r.runner), _fmt(r.val_loss), _fmt(r.val_bpb),
              _fmt(r.progress, "pct"), _fmt(r.elapsed_s, "time"), _fmt(r.eta_s, "time")] for r in rows]
    lines = [text_table(head, table)]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.status] = counts.get(r.status, 0) + 1
    lines.append(", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    for r in rows:
        if r.reason:
            lines.append(f"{r.cell}: {r.reason.splitlines()[0]}")
        if r.last_requeue:
            lines.append(f"{r.cell}: on its last requeue ({r.requeues} used); if this session does not finish "
                         "it, raise resources.time_min or resources.max_requeues and submit again to resume it")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ablations.status", description=__doc__.splitlines()[0])
    p.add_argument("grid_dir", type=Path, help="a grid's results folder (results/<grid name>)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = p.parse_args(argv)
    rows = grid_status(args.grid_dir)
    print(json.dumps([dataclasses.asdict(r) for r in rows], indent=2) if args.json else format_status(rows))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
