"""The record of a cell on disk: the one module that reads and writes a grid's result files.

Every other module (the runner, the summary, `ablations.status`, `paper.build`, the web app) goes
through these functions, so the layout below (also in results/README.md) is defined once and a
renamed file or metric is a change here only:

    <grid>/grid.json              the expanded grid: name, axes, overrides, cells [{id, seed, axes}]
    <grid>/.claims/<cell>.json    which runner trains the cell now (ablations.claims owns the format)
    <grid>/<cell>/config.yaml     the resolved run config, written once before training
    <grid>/<cell>/metrics.csv     Lightning's per-step log (train/loss, val/loss, val/bpb, lr, ...)
    <grid>/<cell>/metrics.json    final metrics
    <grid>/<cell>/evals/<n>.json  one eval's result {name, version, status, reason, metrics, details}
    <grid>/<cell>/per_position.json  per-position loss recorded during training
    <grid>/<cell>/manifest.json   code and library versions, device, timings, data
    <grid>/<cell>/error.json      the cell failed: {status, reason, traceback}
    <grid>/<cell>/DONE            written last: a folder without it is unfinished

Every write is atomic (research.io), so a reader never sees half a JSON file; `metrics.csv` is
rewritten by Lightning while a cell trains, so its reader keeps the rows it can parse.
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ablations import claims
from research.errors import UserError
from research.io import atomic_write_json, atomic_write_text

GRID = "grid.json"
CONFIG = "config.yaml"
LOG = "metrics.csv"
METRICS = "metrics.json"
EVALS = "evals"
PER_POSITION = "per_position.json"
MANIFEST = "manifest.json"
ERROR = "error.json"
DONE = "DONE"
#: the per-step log's columns that are loss curves (nats/token)
CURVES = ("train/loss", "val/loss")


def _read_json(path: Path, default: Any = None) -> Any:
    """A result file's content, `default` when it does not exist; a corrupt file is one line naming it."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default
    except ValueError as e:
        raise UserError(f"{path}: not valid JSON ({e}); delete it, or the cell's folder to train it again") from None


# grid ------------------------------------------------------------------------------------------
def write_grid(grid_dir: Path, record: dict) -> None:
    atomic_write_text(Path(grid_dir) / GRID, json.dumps(record, indent=2, default=str) + "\n")


def read_grid(grid_dir: Path, required: bool = True) -> dict:
    """`grid.json`; without it, a one-line error (or {} when not `required`)."""
    spec = _read_json(Path(grid_dir) / GRID)
    if spec is None:
        if required:
            raise UserError(f"{grid_dir}: no {GRID}; pass a grid's results folder (results/<grid name>)")
        return {}
    return spec


def is_grid_dir(path: Path) -> bool:
    path = Path(path)
    return (path / GRID).exists() or any((p / CONFIG).exists() for p in path.iterdir() if p.is_dir())


# one cell's files --------------------------------------------------------------------------------
def cell_status(cell_dir: Path) -> str:
    """done | failed | partial (a folder without DONE: training, or killed midway) | pending."""
    cell_dir = Path(cell_dir)
    if (cell_dir / DONE).exists():
        return "done"
    if (cell_dir / ERROR).exists():
        return "failed"
    if cell_dir.exists():
        return "partial"
    return "pending"


def write_config(cell_dir: Path, config: dict) -> None:
    atomic_write_text(Path(cell_dir) / CONFIG, yaml.safe_dump(config, sort_keys=False))


def read_config(cell_dir: Path) -> dict:
    """The cell's resolved config as a dict ({} before it is written)."""
    try:
        return yaml.safe_load((Path(cell_dir) / CONFIG).read_text()) or {}
    except FileNotFoundError:
        return {}
    except yaml.YAMLError as e:
        raise UserError(f"{Path(cell_dir) / CONFIG}: not valid YAML ({str(e).splitlines()[0]})") from None


def max_steps(config: dict) -> int | None:
    """`train.max_steps` of a stored config, None when it has none (not written yet)."""
    value = (config.get("train") or {}).get("max_steps") if isinstance(config, dict) else None
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def write_metrics(cell_dir: Path, metrics: dict) -> None:
    atomic_write_json(Path(cell_dir) / METRICS, metrics)


def read_metrics(cell_dir: Path) -> dict:
    return _read_json(Path(cell_dir) / METRICS, {})


def write_manifest(cell_dir: Path, manifest: dict) -> None:
    atomic_write_json(Path(cell_dir) / MANIFEST, manifest)


def read_manifest(cell_dir: Path) -> dict:
    return _read_json(Path(cell_dir) / MANIFEST, {})


def write_error(cell_dir: Path, reason: str, traceback: str) -> None:
    atomic_write_json(Path(cell_dir) / ERROR, {"status": "failed", "reason": reason, "traceback": traceback})


def read_error(cell_dir: Path) -> str | None:
    """Why the cell failed (None when it has not)."""
    return (_read_json(Path(cell_dir) / ERROR) or {}).get("reason")


def mark_done(cell_dir: Path) -> None:
    """Written last: from here on the folder is a finished cell."""
    atomic_write_text(Path(cell_dir) / DONE, f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n")


def read_evals(cell_dir: Path) -> dict[str, dict]:
    """Eval name -> its stored result, in file-name order."""
    folder = Path(cell_dir) / EVALS
    out: dict[str, dict] = {}
    for file in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        result = _read_json(file, {})
        out[result.get("name", file.stem)] = result
    return out


def eval_columns(results: dict[str, dict]) -> tuple[dict[str, float], dict[str, str]]:
    """`<eval>/<metric>` -> value for the evals that ran, and eval -> why it has none
    ("skipped: <reason>", "failed: <reason>") for those that did not."""
    values: dict[str, float] = {}
    missing: dict[str, str] = {}
    for name, result in results.items():
        if result.get("status") == "ok":
            for key, value in result.get("metrics", {}).items():
                if isinstance(value, (int, float)):
                    values[f"{name}/{key}"] = value
        else:
            missing[name] = f"{result.get('status')}: {result.get('reason')}"
    return values, missing


def read_log(cell_dir: Path) -> list[dict[str, float]]:
    """The per-step log, one dict per row with its finite numeric values (`step` included).

    Lightning rewrites the file while the cell trains: a row cut short is dropped, not an error.
    A non-finite loss (a diverged cell) is left out; the cell's error.json says why it stopped.
    """
    rows: list[dict[str, float]] = []
    try:
        with open(Path(cell_dir) / LOG, newline="") as f:
            for raw in csv.DictReader(f):
                row: dict[str, float] = {}
                for key, text in raw.items():
                    if key is None or not text:
                        continue
                    try:
                        value = float(text)
                    except (TypeError, ValueError):
                        continue
                    if math.isfinite(value):
                        row[key] = value
                if "step" in row:
                    row["step"] = int(row["step"])
                    rows.append(row)
    except (OSError, csv.Error):
        pass
    return rows


def read_curves(cell_dir: Path, keys: tuple[str, ...] = CURVES) -> dict[str, list[tuple[int, float]]]:
    """The per-step log as curves: {"train/loss": [(step, value), ...], "val/loss": [...]}."""
    out: dict[str, list[tuple[int, float]]] = {}
    for row in read_log(cell_dir):
        for key in keys:
            if key in row:
                out.setdefault(key, []).append((row["step"], row[key]))
    return out


def last_step(cell_dir: Path) -> int | None:
    """The last step in the per-step log (0-based), None before the first logged step."""
    steps = [row["step"] for row in read_log(cell_dir)]
    return max(steps) if steps else None


def best_logged_val(cell_dir: Path) -> dict:
    """The lowest of the periodic validation estimates (train.eval_batches fixed batches) and its
    step (1-based): what nanoGPT reports as "best val loss", next to the exact full-split value."""
    best = None
    for row in read_log(cell_dir):
        if "val/loss" in row and (best is None or row["val/loss"] < best[0]):
            best = (row["val/loss"], row["step"])
    return {"val_loss_best_estimate": best[0], "val_loss_best_step": best[1] + 1} if best else {}


def read_per_position(cell_dir: Path) -> list[dict]:
    """Per-position loss records [{step, loss_by_position}], from training or from the eval."""
    for file in (Path(cell_dir) / PER_POSITION, Path(cell_dir) / EVALS / PER_POSITION):
        data = _read_json(file)
        if isinstance(data, dict) and "records" in data:
            return data["records"]
        if isinstance(data, dict) and "details" in data:
            return data["details"].get("records", [])
        if isinstance(data, list):
            return data
    return []


def has_checkpoint(cell_dir: Path) -> bool:
    """A resumable state is on disk: the runner's `checkpoints/last.ckpt` (a SLURM requeue on USR1
    writes it too, at a step boundary: see ablations.requeue)."""
    return (Path(cell_dir) / "checkpoints" / "last.ckpt").exists()


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
