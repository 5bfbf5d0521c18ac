"""A cell's folder on disk: the one module that names its files and reads and writes them.

It sits at the bottom of the import order and imports no torch, so every layer (the training
callbacks, the evals, the runner, the status, the paper, the web app) goes through it, and a
renamed file is a change here only (`tests/test_cell_layout.py` fails on a file name used
anywhere else). The layout (also in results/README.md):

    <grid>/grid.json              the expanded grid: name, axes, overrides, cells [{id, seed, axes}]
    <grid>/summary.csv            one row per cell (ablations.summary)
    <grid>/.claims/<cell>.json    which runner trains the cell now (ablations.claims owns the format)
    <grid>/.submitit/jobs.json    cell -> its latest SLURM job
    <grid>/<cell>/config.yaml     the resolved run config, written once before training
    <grid>/<cell>/tokenizer/      the tokenizer the cell trained with
    <grid>/<cell>/progress.json   what the cell is doing now: {phase, step, max_steps, updated}
    <grid>/<cell>/metrics.csv     Lightning's per-step log (train/loss, val/loss, val/bpb, lr, ...)
    <grid>/<cell>/per_position.json  per-position loss recorded during training [{step, loss_by_position}]
    <grid>/<cell>/checkpoints/last.ckpt  the resumable training state (removed when the cell is done)
    <grid>/<cell>/hpc_ckpt_*.ckpt  Lightning's mid-step SLURM checkpoints of older runs (never resumed; removed)
    <grid>/<cell>/model.pt        the trained weights (a plain state dict)
    <grid>/<cell>/samples/<kind>.jsonl  generated text: `samples` (training), `generation` (the eval)
    <grid>/<cell>/evals/<n>.json  one eval's result {name, version, status, reason, metrics, details}
    <grid>/<cell>/metrics.json    final metrics
    <grid>/<cell>/manifest.json   code and library versions, device, timings, data
    <grid>/<cell>/code.diff       the uncommitted change the cell ran with (a dirty tree only)
    <grid>/<cell>/error.json      the cell failed: {status, reason, traceback}
    <grid>/<cell>/DONE            written last: a folder without it is unfinished

Every write is atomic (research.io), so a reader never sees half a file; `metrics.csv` is
rewritten by Lightning while a cell trains, so its reader keeps the rows it can parse. A file
found in an older shape is converted to the current one the first time it is read.
"""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path
from typing import Any

import yaml

from research.errors import UserError
from research.io import atomic_write_bytes, atomic_write_json, atomic_write_text

GRID = "grid.json"
SUMMARY = "summary.csv"
CLAIMS = ".claims"
SUBMITIT = ".submitit"
JOBS = "jobs.json"
CONFIG = "config.yaml"
TOKENIZER = "tokenizer"
PROGRESS = "progress.json"
LOG = "metrics.csv"
PER_POSITION = "per_position.json"
CHECKPOINTS = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
HPC_CHECKPOINTS = "hpc_ckpt_*.ckpt"
WEIGHTS = "model.pt"
SAMPLES = "samples"
EVALS = "evals"
METRICS = "metrics.json"
MANIFEST = "manifest.json"
CODE_DIFF = "code.diff"
ERROR = "error.json"
DONE = "DONE"
#: the per-step log's columns that are loss curves (nats/token)
CURVES = ("train/loss", "val/loss")
#: sample files, preferred first: the generation eval's, then the ones written at the end of training
SAMPLE_KINDS = ("generation", "samples")


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


def summary_path(grid_dir: Path) -> Path:
    return Path(grid_dir) / SUMMARY


def claims_dir(grid_dir: Path) -> Path:
    return Path(grid_dir) / CLAIMS


def jobs_path(grid_dir: Path) -> Path:
    return Path(grid_dir) / SUBMITIT / JOBS


def submitit_dir(grid_dir: Path) -> Path:
    return Path(grid_dir) / SUBMITIT


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


def config_path(cell_dir: Path) -> Path:
    return Path(cell_dir) / CONFIG


def write_config(cell_dir: Path, config: dict) -> None:
    atomic_write_text(config_path(cell_dir), yaml.safe_dump(config, sort_keys=False))


def read_config(cell_dir: Path, required: bool = False) -> dict:
    """The cell's resolved config as a dict ({} before it is written, or a one-line error when
    `required`). `research.checkpoint.load_run_config` turns it into a RunConfig. A config of an
    older shape (flat optimizer and schedule keys, attention scaling as gpt flags) is rewritten in
    the current one on the way."""
    file = config_path(cell_dir)
    try:
        config = yaml.safe_load(file.read_text()) or {}
    except FileNotFoundError:
        if required:
            raise UserError(f"{file}: not found; is {cell_dir} a cell folder (results/<grid>/<cell>)?") from None
        return {}
    except yaml.YAMLError as e:
        raise UserError(f"{file}: not valid YAML ({str(e).splitlines()[0]})") from None
    moved = move_train_options(config)
    if isinstance(config, dict) and isinstance(config.get("model"), dict) and _upgrade_model(config["model"]):
        moved = True
    if moved:
        write_config(cell_dir, config)
    return config


#: train keys that older configs held flat, now under `train.options.<plug-in>`:
#: old key -> (the optimizers and schedules that read it, its name in their options)
MOVED_TRAIN_KEYS = {
    "momentum": (("sgd", "muon", "tangent"), "momentum"),
    "nesterov": (("sgd", "muon", "tangent"), "nesterov"),
    "tangent_base": (("tangent",), "base"),
    "decay_fraction": (("wsd",), "decay_fraction"),
    "lr_decay": (("step_decay",), "lr_decay"),
    "decay_after_epochs": (("step_decay",), "decay_after_epochs"),
}


def flat_train_options(config: dict) -> dict:
    """A copy of `config` with the moved settings back under their flat train names (the inverse of
    `move_train_options`): the shape cell ids were first hashed in, so a cell keeps its id."""
    train = config.get("train") if isinstance(config, dict) else None
    options = train.get("options") if isinstance(train, dict) else None
    if not isinstance(options, dict):
        return config
    options = {name: dict(given) if isinstance(given, dict) else given for name, given in options.items()}
    flat = {k: v for k, v in train.items() if k != "options"}
    for old, (readers, new) in MOVED_TRAIN_KEYS.items():
        for name in readers:
            if isinstance(options.get(name), dict) and new in options[name]:
                flat[old] = options[name].pop(new)
    kept = {name: given for name, given in options.items() if given not in ({}, None)}
    if kept:
        flat["options"] = kept
    return {**config, "train": flat}


def move_train_options(config: dict) -> bool:
    """In place: flat train keys of an older config moved under `train.options.<plug-in>` for the
    chosen optimizer or schedule that read them; for the others (and null, which meant that
    plug-in's default) the key was unused and is dropped. True when anything moved."""
    train = config.get("train") if isinstance(config, dict) else None
    if not isinstance(train, dict) or not any(k in train for k in MOVED_TRAIN_KEYS):
        return False
    chosen = (train.get("optimizer"), train.get("schedule"))
    for old, (readers, new) in MOVED_TRAIN_KEYS.items():
        if old not in train:
            continue
        value = train.pop(old)
        for name in readers:
            if name in chosen and value is not None:
                options = train.setdefault("options", {})
                options.setdefault(name, {}).setdefault(new, value)
    return True


#: model keys every GPT-family config carried, filled in at these defaults, until attention scaling
#: became its own variant (research.models.attention_scaling)
_SCALING_DEFAULTS = {"attn_scaling": "sum_power", "attn_sum_power": 0.0, "attn_sum_power_learned": False}
#: the architecture a config with attention scaling switched on is now
_SCALED_ARCH = {"gpt": "attention_scaling", "windowed": "attention_scaling_windowed"}


def _upgrade_model(model: dict) -> bool:
    """Convert an older model section in place; True when it changed. Scaling keys at their
    defaults are dropped (the baseline computes exactly that); a gpt or windowed model that
    scaled its attention becomes the attention-scaling variant, whose keys keep their names.
    Another architecture that scaled its attention has no variant now and keeps its keys, which
    the config checks then name."""
    arch = model.get("arch", "gpt")
    if arch in _SCALED_ARCH.values() or not _SCALING_DEFAULTS.keys() & model.keys():
        return False
    if all(model.get(k, v) == v for k, v in _SCALING_DEFAULTS.items()):
        for key in _SCALING_DEFAULTS:
            model.pop(key, None)
        return True
    if arch not in _SCALED_ARCH:
        return False
    model["arch"] = _SCALED_ARCH[arch]
    return True


def max_steps(config: dict) -> int | None:
    """`train.max_steps` of a stored config, None when it has none (not written yet)."""
    value = (config.get("train") or {}).get("max_steps") if isinstance(config, dict) else None
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def tokenizer_dir(cell_dir: Path) -> Path:
    return Path(cell_dir) / TOKENIZER


def weights_path(cell_dir: Path) -> Path:
    return Path(cell_dir) / WEIGHTS


def has_weights(cell_dir: Path) -> bool:
    return weights_path(cell_dir).exists()


def write_metrics(cell_dir: Path, metrics: dict) -> None:
    atomic_write_json(Path(cell_dir) / METRICS, metrics)


def read_metrics(cell_dir: Path) -> dict:
    return _read_json(Path(cell_dir) / METRICS, {})


def write_manifest(cell_dir: Path, manifest: dict) -> None:
    atomic_write_json(Path(cell_dir) / MANIFEST, manifest)


def read_manifest(cell_dir: Path) -> dict:
    return _read_json(Path(cell_dir) / MANIFEST, {})


def write_code_diff(cell_dir: Path, diff: bytes) -> str:
    """The uncommitted change into the cell; returns its name as the manifest records it."""
    atomic_write_bytes(Path(cell_dir) / CODE_DIFF, diff)
    return CODE_DIFF


def write_error(cell_dir: Path, reason: str, traceback: str) -> None:
    atomic_write_json(Path(cell_dir) / ERROR, {"status": "failed", "reason": reason, "traceback": traceback})


def read_error(cell_dir: Path) -> str | None:
    """Why the cell failed (None when it has not)."""
    return (_read_json(Path(cell_dir) / ERROR) or {}).get("reason")


def error_time(cell_dir: Path) -> float | None:
    """When the failure was recorded (the file's mtime), None when the cell has not failed."""
    try:
        return (Path(cell_dir) / ERROR).stat().st_mtime
    except FileNotFoundError:
        return None


def mark_done(cell_dir: Path) -> None:
    """Written last: from here on the folder is a finished cell."""
    atomic_write_text(Path(cell_dir) / DONE, f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n")


# progress: what the cell does now, written by the trainer ------------------------------------------
def write_progress(cell_dir: Path, phase: str, step: int | None = None, max_steps: int | None = None) -> None:
    """The cell's own progress record: its phase (preparing, training, scoring, sampling,
    evaluating) and, while training, its optimizer step. Readers take phase and ETA from here
    rather than guessing from which files exist."""
    atomic_write_json(Path(cell_dir) / PROGRESS, {"phase": phase, "step": step, "max_steps": max_steps,
                                                  "updated": time.time()})


def read_progress(cell_dir: Path) -> dict:
    """{phase, step, max_steps, updated}; {} for a cell that has not started (or predates the record)."""
    try:
        return _read_json(Path(cell_dir) / PROGRESS, {}) or {}
    except UserError:  # a progress record is advisory: a damaged one reads as absent
        return {}


# evals -------------------------------------------------------------------------------------------
def eval_path(cell_dir: Path, name: str) -> Path:
    return Path(cell_dir) / EVALS / f"{name}.json"


def write_eval(cell_dir: Path, name: str, result: dict) -> Path:
    path = eval_path(cell_dir, name)
    atomic_write_json(path, result)
    return path


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


# the per-step log --------------------------------------------------------------------------------
def log_dir(cell_dir: Path) -> Path:
    """Where the CSV logger writes `metrics.csv` (the cell folder itself)."""
    return Path(cell_dir)


def log_path(cell_dir: Path) -> Path:
    return Path(cell_dir) / LOG


def read_log(cell_dir: Path) -> list[dict[str, float]]:
    """The per-step log, one dict per row with its finite numeric values (`step` included).

    Lightning rewrites the file while the cell trains: a row cut short is dropped, not an error.
    A non-finite loss (a diverged cell) is left out; the cell's error.json says why it stopped.
    """
    rows: list[dict[str, float]] = []
    try:
        with open(log_path(cell_dir), newline="") as f:
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


# per-position loss -------------------------------------------------------------------------------
def per_position_path(cell_dir: Path) -> Path:
    return Path(cell_dir) / PER_POSITION


def write_per_position(cell_dir: Path, records: list[dict]) -> None:
    """[{step, loss_by_position}], sorted by step: the one shape of `per_position.json`."""
    atomic_write_json(per_position_path(cell_dir), sorted(records, key=lambda r: r["step"]))


def read_per_position(cell_dir: Path) -> list[dict]:
    """Per-position loss records [{step, loss_by_position}]: those recorded during training, else
    the per_position eval's record of the finished model. An older `{"records": [...]}` file is
    rewritten in the current shape on the way."""
    file = per_position_path(cell_dir)
    data = _read_json(file)
    if isinstance(data, dict) and isinstance(data.get("records"), list):
        data = data["records"]
        write_per_position(cell_dir, data)
    if isinstance(data, list):
        return data
    result = _read_json(eval_path(cell_dir, "per_position"))
    if isinstance(result, dict):
        return (result.get("details") or {}).get("records", [])
    return []


# checkpoints -------------------------------------------------------------------------------------
def checkpoint_dir(cell_dir: Path) -> Path:
    return Path(cell_dir) / CHECKPOINTS


def last_checkpoint(cell_dir: Path) -> Path:
    """Where the runner keeps the resumable training state."""
    return checkpoint_dir(cell_dir) / LAST_CHECKPOINT


def checkpoints(cell_dir: Path) -> list[Path]:
    """The resumable state on disk: the runner's `checkpoints/last.ckpt` (a SLURM requeue on USR1
    writes it too, at a step boundary: see ablations.requeue). Lightning's own `hpc_ckpt_*.ckpt`,
    saved mid-step, is never resumed from."""
    return [p for p in (last_checkpoint(cell_dir),) if p.exists()]


def has_checkpoint(cell_dir: Path) -> bool:
    return bool(checkpoints(cell_dir))


def remove_checkpoints(cell_dir: Path) -> None:
    """The resumable states of a finished cell: `model.pt` holds the result."""
    import shutil

    shutil.rmtree(checkpoint_dir(cell_dir), ignore_errors=True)
    for hpc in Path(cell_dir).glob(HPC_CHECKPOINTS):
        hpc.unlink()


# samples -----------------------------------------------------------------------------------------
def samples_path(cell_dir: Path, kind: str) -> Path:
    """`samples/<kind>.jsonl`; kind is one of SAMPLE_KINDS."""
    if kind not in SAMPLE_KINDS:
        raise ValueError(f"sample kind {kind!r}: expected one of {', '.join(SAMPLE_KINDS)}")
    return Path(cell_dir) / SAMPLES / f"{kind}.jsonl"


def samples_dir(cell_dir: Path) -> Path:
    return Path(cell_dir) / SAMPLES


def write_samples(cell_dir: Path, kind: str, rows: list[dict]) -> Path:
    """One JSON object a line, atomically."""
    path = samples_path(cell_dir, kind)
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def sample_files(cell_dir: Path) -> list[Path]:
    """The cell's sample files that exist, preferred first (SAMPLE_KINDS)."""
    return [p for p in (samples_path(cell_dir, k) for k in SAMPLE_KINDS) if p.exists()]


def relative(cell_dir: Path, path: Path) -> str:
    """`path` as a result file records it: relative to the cell folder, with forward slashes."""
    return Path(path).relative_to(Path(cell_dir)).as_posix()


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def read_samples(cell_dir: Path, kind: str) -> list[dict] | None:
    """The rows of `samples/<kind>.jsonl`, None when the cell has none of that kind."""
    path = samples_path(cell_dir, kind)
    return read_jsonl(path) if path.exists() else None
