"""`python -m ablations.status RESULTS_GRID_DIR`: where a grid stands, from its files alone.

One row per cell: done / running (claimed by a live runner) / requeued (its SLURM job waits to
run again) / queued (its SLURM job has not started) / stopping (its SLURM job is ending) / stale
(claimed by a dead runner) / failed / partial / pending, its key metrics, the runner or job, elapsed
time (for a SLURM job, since it first started the cell: its claim outlives requeues), for
running cells an ETA from the last logged step against `train.max_steps`, and the requeues a
SLURM cell has used of its budget (flagged on the last). Works on a grid that is running
elsewhere (a shared filesystem, a cluster) because it only reads (and asks `squeue` about jobs).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ablations.claims import SLURM_WAITING, slurm_job_state
from ablations.launchers import submitted_jobs
from ablations.records import load_cells
from ablations.requeue import UNSIZED_REQUEUES, read_requeues
from research.errors import run_main


def cell_rows(grid_dir: Path) -> list[dict]:
    now = time.time()
    jobs = submitted_jobs(grid_dir)
    rows = []
    for rec in load_cells(grid_dir):
        row = {"cell": rec.id, "status": rec.status, "val_loss": None, "val_bpb": None, "elapsed_s": None,
               "eta_s": None, "progress": None, "reason": rec.reason}
        if rec.status == "done":
            row.update(val_loss=rec.metrics.get("val_loss"), val_bpb=rec.metrics.get("val_bpb"),
                       elapsed_s=rec.metrics.get("wall_s"))
        if rec.claim is not None:
            row["status"] = rec.claim["state"]
            row["elapsed_s"] = now - rec.claim.get("since", now)
            row["runner"] = rec.claim.get("runner")
            steps = [r["step"] for r in rec.log()]
            max_steps = rec.max_steps()
            if steps and max_steps:
                frac = min(1.0, (max(steps) + 1) / max_steps)
                row["progress"] = frac
                row["eta_s"] = row["elapsed_s"] * (1 - frac) / frac if frac > 0 else None
        elif rec.status not in ("done", "failed") and rec.id in jobs:
            state = slurm_job_state(jobs[rec.id])
            if state in SLURM_WAITING:  # with a checkpoint, it ran before: requeued (preempted, timed out)
                row.update(status="requeued" if rec.has_checkpoint() else "queued", runner=f"slurm:{jobs[rec.id]}")
            elif state == "COMPLETING":  # its job is ending (cancelled, failed or being requeued): not yet known
                row.update(status="stopping", runner=f"slurm:{jobs[rec.id]}")
        if row["status"] in ("running", "requeued"):
            row.update(requeue_budget(grid_dir, rec.id, row.get("runner")))
        rows.append(row)
    return rows


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


def format_status(rows: list[dict]) -> str:
    head = ["cell", "status", "runner", "val_loss", "val_bpb", "progress", "elapsed", "eta"]
    table = [[r["cell"], r["status"], _fmt(r.get("runner")), _fmt(r["val_loss"]), _fmt(r["val_bpb"]),
              _fmt(r["progress"], "pct"), _fmt(r["elapsed_s"], "time"), _fmt(r["eta_s"], "time")] for r in rows]
    widths = [max(len(h), *(len(t[i]) for t in table)) if table else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(t, widths)) for t in table]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    lines.append(", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    for r in rows:
        if r["reason"]:
            lines.append(f"{r['cell']}: {r['reason'].splitlines()[0]}")
        if r.get("last_requeue"):
            lines.append(f"{r['cell']}: on its last requeue ({r['requeues']} used); if this session does not finish "
                         "it, raise resources.time_min or resources.max_requeues and submit again to resume it")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ablations.status", description=__doc__.splitlines()[0])
    p.add_argument("grid_dir", type=Path, help="a grid's results folder (results/<grid name>)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = p.parse_args(argv)
    rows = cell_rows(args.grid_dir)
    print(json.dumps(rows, indent=2) if args.json else format_status(rows))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
