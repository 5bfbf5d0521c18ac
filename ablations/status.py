"""`python -m ablations.status RESULTS_GRID_DIR`: where a grid stands, from its files alone.

One row per cell: done / running (claimed by a live runner) / requeued (its SLURM job waits to
run again) / queued (its SLURM job has not started) / stale (claimed by a dead runner) / failed /
partial / pending, its key metrics, the runner or job, elapsed time and, for running cells, an
ETA from the last logged step against `train.max_steps`. Works on a grid that is running
elsewhere (a shared filesystem, a cluster) because it only reads (and asks `squeue` about jobs).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import yaml

from ablations.claims import SLURM_WAITING, owner_state, read_claim, slurm_job_state
from ablations.launchers import submitted_jobs
from ablations.results import cell_status
from research.errors import UserError, run_main


def _last_step(cell_dir: Path) -> int | None:
    file = cell_dir / "metrics.csv"
    if not file.exists():
        return None
    step = None
    with open(file) as f:
        for row in csv.DictReader(f):
            if row.get("step"):
                step = int(row["step"])
    return step


def cell_rows(grid_dir: Path) -> list[dict]:
    spec_file = grid_dir / "grid.json"
    if not spec_file.exists():
        raise UserError(f"{grid_dir}: no grid.json; pass a grid's results folder (results/<grid name>)")
    spec = json.loads(spec_file.read_text())
    now = time.time()
    jobs = submitted_jobs(grid_dir)
    rows = []
    for c in spec["cells"]:
        cell_dir = grid_dir / c["id"]
        status = cell_status(cell_dir)
        row = {"cell": c["id"], "status": status, "val_loss": None, "val_bpb": None, "elapsed_s": None,
               "eta_s": None, "progress": None, "reason": None}
        claim = read_claim(grid_dir, c["id"])
        if status == "done":
            metrics = json.loads((cell_dir / "metrics.json").read_text())
            row.update(val_loss=metrics.get("val_loss"), val_bpb=metrics.get("val_bpb"),
                       elapsed_s=metrics.get("wall_s"))
        elif status == "failed":
            row["reason"] = json.loads((cell_dir / "error.json").read_text()).get("reason")
        if claim is not None and status != "done":
            row["status"] = owner_state(claim)
            row["elapsed_s"] = now - claim.get("since", now)
            row["runner"] = claim.get("runner")
            step = _last_step(cell_dir)
            cfg_file = cell_dir / "config.yaml"
            if step is not None and cfg_file.exists():
                max_steps = (yaml.safe_load(cfg_file.read_text()) or {}).get("train", {}).get("max_steps")
                if max_steps:
                    frac = min(1.0, (step + 1) / max_steps)
                    row["progress"] = frac
                    row["eta_s"] = row["elapsed_s"] * (1 - frac) / frac if frac > 0 else None
        elif status not in ("done", "failed") and c["id"] in jobs:
            state = slurm_job_state(jobs[c["id"]])
            if state in SLURM_WAITING:  # with a checkpoint, it ran before: requeued (preempted, timed out)
                ran = (cell_dir / "checkpoints" / "last.ckpt").exists() or any(cell_dir.glob("hpc_ckpt_*.ckpt"))
                row.update(status="requeued" if ran else "queued", runner=f"slurm:{jobs[c['id']]}")
        rows.append(row)
    return rows


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
