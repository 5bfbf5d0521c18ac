"""A cell's status, phase and ETA as the app shows them, in one place.

A cell is `running` while its runner's claim heartbeat (ablations.claims) is alive and `stale` once
the runner is gone, whatever its files' times say; rows carry the phase (training step i/N,
evaluating, writing), elapsed time and an ETA, and grids their elapsed time and ETA.
"""

from __future__ import annotations

import time
from pathlib import Path

from ablations import records
from ablations.claims import is_stale, read_claim

#: a cell's status: on disk (done, failed, partial, pending) or from its runner's claim (running, stale)
STATUSES = ("done", "running", "stale", "partial", "failed", "pending")


def live_status(row: dict, grid_dir: Path, now: float | None = None) -> dict:
    """Fill a cell row that is not done (`status` as on disk) with its step, progress and, from its
    runner's claim heartbeat, `running` or `stale`, the phase, elapsed time and ETA."""
    now = time.time() if now is None else now
    cell_dir = grid_dir / row["cell"]
    status = row["status"]
    claim = read_claim(grid_dir, row["cell"])
    if status == "partial" or claim is not None:
        curve = read_curve(cell_dir)
        row["step"], row["max_steps"] = curve["last_step"], curve["max_steps"]
        if row["step"] is not None and row["max_steps"]:
            row["progress"] = min(1.0, (row["step"] + 1) / row["max_steps"])
    if claim is None:
        return row
    row["runner"] = claim.get("runner")
    since = claim.get("since")
    if is_stale(claim):
        row["status"], row["phase"] = "stale", "runner gone (heartbeat stopped); re-run the grid to resume"
        return row
    row["status"] = "running"
    row["phase"] = cell_phase(cell_dir, row["step"], row["max_steps"])
    if isinstance(since, (int, float)):
        row["elapsed_s"] = max(0.0, now - since)
        if row["phase"].startswith("training step") and row["progress"]:
            row["eta_s"] = row["elapsed_s"] * (1 - row["progress"]) / row["progress"]
    return row


def cell_phase(cell_dir: Path, step: int | None, max_steps: int | None) -> str:
    """What a running cell is doing, from the files the trainer writes in order: config.yaml, the
    training log (Lightning flushes it every 100 steps, so the step shown may lag), model.pt (then
    samples and evals), metrics.json, DONE."""
    if (cell_dir / records.METRICS).exists():
        return "writing results"
    if (cell_dir / "model.pt").exists():
        return "evaluating (samples, evals)"
    if not (cell_dir / records.CONFIG).exists():
        return "starting (loading data)"
    if step is None:
        return "training (no step logged yet)"
    if max_steps and step + 1 >= max_steps:
        return "evaluating (final validation)"
    return f"training step {step + 1}/{max_steps or '?'}"


def grid_times(rows: list[dict], running: bool, now: float) -> dict:
    """The grid's elapsed wall clock (seconds, from its first cell's start) and, while it runs, an
    estimate of the time left: the running cells' own estimates, plus the cells still waiting at
    the mean wall clock of the finished ones, shared among the live runners."""
    starts = [now - r["elapsed_s"] for r in rows if r["elapsed_s"] is not None]
    ends = []
    for r in rows:
        if r["status"] == "done" and r["wall_s"] and r["updated"]:
            starts.append(r["updated"] - r["wall_s"])
            ends.append(r["updated"])
    if not starts:
        return {"elapsed_s": None, "eta_s": None}
    elapsed = (now if running else max(ends or [now])) - min(starts)
    if not running:
        return {"elapsed_s": elapsed, "eta_s": None}
    live = [r for r in rows if r["status"] == "running"]
    waiting = sum(r["status"] in ("pending", "partial", "stale") for r in rows)
    walls = [r["wall_s"] for r in rows if r["status"] == "done" and r["wall_s"]]
    walls = walls or [r["elapsed_s"] + r["eta_s"] for r in live if r["eta_s"] is not None]
    own = [r["eta_s"] for r in live if r["eta_s"] is not None]
    if (waiting and not walls) or (live and not own):
        return {"elapsed_s": elapsed, "eta_s": None}
    eta = max(own, default=0.0) + waiting * (sum(walls) / len(walls) if walls else 0.0) / max(1, len(live))
    return {"elapsed_s": elapsed, "eta_s": eta}


def read_curve(cell_dir: Path) -> dict:
    """Train and val loss (nats/token) by step from the cell's per-step log, which the logger
    rewrites as it trains: a half-written or missing file gives what could be read."""
    curves = records.read_curves(cell_dir)
    train = [[step, value] for step, value in curves.get("train/loss", [])]
    val = [[step, value] for step, value in curves.get("val/loss", [])]
    max_steps = records.max_steps(records.read_config(cell_dir))
    steps = [p[0] for p in train + val]
    return {"unit": "nats/token", "train": train, "val": val, "max_steps": max_steps,
            "last_step": int(max(steps)) if steps else None}

