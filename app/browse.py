"""Browsing a results folder: its grids, each grid's cells with their status and final metrics, and
the loss curves. Grid and cell names are checked against the folder-name pattern and must resolve
inside the results folder; a grid folder that does not (a symlink out of it) is listed under
`skipped` with the reason.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from http import HTTPStatus
from pathlib import Path

from ablations import records
from ablations.launchers import submitted_jobs
from ablations.records import cell_status
from ablations.status import STATUSES, cell_state, grid_times
from app.configs import band, group_rows
from app.web import NAME, ApiError
from research.errors import UserError

#: the final metrics the grid table shows first; units as in results/README.md
HEADLINE = ["params", "val_loss", "val_ppl", "val_bpb", "test_ppl", "wall_s", "tokens_per_s"]


class Browsing:
    """The read-only views of `App` (needs `results_dir`, and `list_runs` for grids started here)."""

    results_dir: Path

    # paths -----------------------------------------------------------------------------------
    def _child(self, parent: Path, name: str, what: str) -> Path:
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise ApiError(HTTPStatus.BAD_REQUEST, f"{what} {name!r}: not a results folder name")
        path = (parent / name).resolve()
        if path.parent != parent.resolve() or not path.is_relative_to(self.results_dir):
            raise ApiError(HTTPStatus.BAD_REQUEST, f"{what} {name!r}: outside the results folder")
        if not path.is_dir():
            raise ApiError(HTTPStatus.NOT_FOUND, f"{what} '{name}' not found in {self.results_dir}")
        return path

    def grid_dir(self, grid: str) -> Path:
        return self._child(self.results_dir, grid, "grid")

    def cell_dir(self, grid: str, cell: str) -> Path:
        return self._child(self.grid_dir(grid), cell, "cell")

    # grids -----------------------------------------------------------------------------------
    def grid_names(self) -> tuple[list[str], list[dict]]:
        """Grid folders that can be shown, and the others with why they were skipped (a symlink out
        of the results folder, a name that is not a folder name, an unreadable folder)."""
        if not self.results_dir.is_dir():
            return [], []
        names, skipped = [], []
        for p in sorted(self.results_dir.iterdir()):
            if p.name.startswith((".", "_")) or not p.is_dir():
                continue
            try:
                self.grid_dir(p.name)
                if records.is_grid_dir(p):
                    names.append(p.name)
            except ApiError as e:
                skipped.append({"name": p.name, "reason": str(e)})
            except OSError as e:
                skipped.append({"name": p.name, "reason": f"unreadable ({e.strerror})"})
        return names, skipped

    def list_grids(self) -> dict:
        out, (names, skipped) = [], self.grid_names()
        for name in names:
            try:
                detail = self.grid_detail(name)
            except (ApiError, OSError) as e:
                skipped.append({"name": name, "reason": str(e)})
                continue
            counts = {s: 0 for s in STATUSES}
            for row in detail["rows"]:
                counts[row["status"]] += 1
            counts["running_cells"] = counts.pop("running")  # "running": whether the grid is
            out.append({"name": name, "description": detail["description"], "cells": len(detail["rows"]),
                        **counts, "running": detail["running"], "updated": detail["updated"],
                        "elapsed_s": detail["elapsed_s"], "eta_s": detail["eta_s"]})
        return {"grids": out, "skipped": skipped}

    def grid_detail(self, grid: str) -> dict:
        grid_dir = self.grid_dir(grid)
        record = _grid_record(grid_dir) or {}
        listed = [c for c in record.get("cells", []) if isinstance(c, dict) and NAME.fullmatch(str(c.get("id", "")))]
        ids = [c["id"] for c in listed]
        on_disk = sorted(p.name for p in grid_dir.iterdir() if p.is_dir() and NAME.fullmatch(p.name)
                         and (p / records.CONFIG).exists() and p.name not in ids)
        axes = [a for a in record.get("axes", []) if isinstance(a, str)]
        now = time.time()
        jobs = submitted_jobs(grid_dir)
        states = [cell_state(grid_dir, c, now, jobs) for c in [*listed, *({"id": cid} for cid in on_disk)]]
        rows = [_row(state, axes) for state in states]
        updated = max([r["updated"] for r in rows if r["updated"]] + [grid_dir.stat().st_mtime])
        started_here = any(run["running"] for run in self.list_runs() if run["grid"] == grid)
        running = started_here or any(r["status"] == "running" for r in rows)
        names = {k for r in rows for k in r["metrics"]}
        metrics = [k for k in HEADLINE if k in names] + sorted(names - set(HEADLINE))
        labels = record.get("labels") if isinstance(record.get("labels"), dict) else {}
        configs = group_rows(rows, {c["id"]: c for c in listed}, axes, labels)
        return {"name": grid, "description": record.get("description", ""), "axes": axes, "metrics": metrics,
                "rows": rows, "configs": configs, "running": running, "updated": updated,
                **grid_times(states, running, now)}


    def curve(self, grid: str, cell: str) -> dict:
        cell_dir = self.cell_dir(grid, cell)
        return {"cell": cell, "status": cell_status(cell_dir), **read_curve(cell_dir)}

    def grid_curves(self, grid: str) -> dict:
        """Every cell's curve, and per configuration the mean with its min-max band over the seeds."""
        detail = self.grid_detail(grid)
        grid_dir = self.grid_dir(grid)
        cells = {r["cell"]: {"status": r["status"], **read_curve(grid_dir / r["cell"])}
                 for r in detail["rows"] if r["status"] != "pending"}
        configs = {}
        for g in detail["configs"]:
            mine = [cells[c] for c in g["cells"] if c in cells]
            configs[g["config"]] = {kind: band([c[kind] for c in mine]) for kind in ("train", "val")}
            configs[g["config"]]["max_steps"] = max((c["max_steps"] or 0 for c in mine), default=0) or None
        return {"grid": grid, "unit": "nats/token", "cells": cells, "configs": configs}


def _grid_record(grid_dir: Path) -> dict | None:
    """The grid's grid.json, or None when it is missing or unreadable (the page shows what it can)."""
    try:
        return records.read_grid(grid_dir, required=False) or None
    except UserError:
        return None


def _row(state, axes: list[str]) -> dict:
    """One cell as the page shows it: its status, phase, progress and ETA as `ablations.status`
    computes them for the terminal too (a long evaluation stays running, a killed runner shows
    at once as stale), with JSON-safe metrics and the grid's axes shortened."""
    row = dataclasses.asdict(state)
    row["metrics"] = {k: (v if math.isfinite(v) else None) for k, v in state.metrics.items()}  # NaN is not JSON
    row["axes"] = {a: _short(state.axes.get(a)) for a in axes}
    return row


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


def _short(value):
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)[:60]
    return value

