"""A grid of tiny cells, one at a time against several at once on the same device.

    python -m benchmarks.bench_cells_per_gpu --device cuda --cells 8 --per-gpu 4     # the 260K target
    python -m benchmarks.bench_cells_per_gpu --device cpu --cells 4 --per-gpu 2 \\
        --set train.batch_size=8 --set model.block_size=64 --steps 200                # a CPU-sized check

A 260K-parameter model (llama2.c's stories260K shape: 64 wide, 5 layers, 8 heads, 4 key/value heads,
context 512, a 512-token BPE; batch 128, at which a raw nanoGPT loop of this size reached 3% MFU on
one H100) leaves an H100 about 97% idle, so a grid of such cells should share the device. The same
grid of `--cells` seeds is run twice through `python -m ablations.run`, each time as a whole command
timed from start to exit: serially (one runner), then with `--per-gpu` runners on the one device
(`--cells-per-gpu` on CUDA, `--workers` on the CPU, where the cores are split between workers). The
speed-up is the ratio of the two wall times.

Before the timed runs, one untimed run of a single cell fills the token cache (shared by both
sides) and torch.compile's on-disk cache, so neither side pays them alone. Each side's cells are
real: trained, evaluated on the validation split and written under the results folder.
"""

from __future__ import annotations

import argparse
import copy
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

from ablations.records import load_cells
from research.errors import ConfigError, run_main
from research.io import atomic_write_csv

ROOT = Path(__file__).resolve().parents[1]
CELL = {
    "data": {"source": "builtin", "n_docs": 3000},
    "tokenizer": {"kind": "bpe", "vocab_size": 512},
    "model": {"arch": "llama", "n_layer": 5, "n_head": 8, "n_kv_head": 4, "n_embd": 64, "block_size": 512,
              "dropout": 0.0, "multiple_of": 4},
    "train": {"batch_size": 128, "lr": 5.0e-4, "warmup_steps": 10, "weight_decay": 0.1, "grad_clip": 1.0,
              "log_every": 50},
    "eval": {"samples": 0, "val_max_tokens": 50_000},
}
COLUMNS = ["device", "cells", "steps", "runners", "wall_s", "cell_train_s_mean", "speedup"]


def write_grid(path: Path, name: str, seeds: int, steps: int) -> None:
    base = copy.deepcopy(CELL)
    base["train"].update(max_steps=steps, eval_every=steps, warmup_steps=min(base["train"]["warmup_steps"], steps))
    path.write_text(yaml.safe_dump({"name": name, "base": base, "seeds": list(range(seeds))}, sort_keys=False))


def run_grid(grid: Path, root: Path, device: str, runners: int, sets: list[str]) -> float:
    """Wall seconds of one whole `ablations.run` command."""
    accel = "gpu" if device == "cuda" else "cpu"
    cmd = [sys.executable, "-m", "ablations.run", str(grid), "--results-dir", str(root),
           "--set", f"train.accelerator={accel}", *sum((["--set", s] for s in sets), [])]
    if runners > 1:
        cmd += ["--cells-per-gpu", str(runners)] if device == "cuda" else ["--workers", str(runners)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd[2:])} exited with {proc.returncode}:\n{proc.stderr[-2000:]}")
    return wall


def cell_train_s(grid_dir: Path) -> list[float]:
    return [c.metrics["train_s"] for c in load_cells(grid_dir) if c.status == "done"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_cells_per_gpu", description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    p.add_argument("--cells", type=int, default=8, help="cells in the grid (seeds of one config)")
    p.add_argument("--per-gpu", type=int, default=4, help="cells trained at once in the parallel run")
    p.add_argument("--steps", type=int, default=500, help="training steps per cell")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a cell key")
    p.add_argument("--work", type=Path, default=Path("results/bench/cells_per_gpu"),
                   help="results folder for the runs (cleared first)")
    p.add_argument("--out", type=Path, default=Path("results/bench/cells_per_gpu.csv"))
    args = p.parse_args(argv)
    if args.cells < 1 or args.per_gpu < 2 or args.steps < 1:
        raise ConfigError("--cells and --steps need at least 1, --per-gpu at least 2")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("--device cuda: no CUDA device here; use --device cpu")
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    grids = {name: args.work / f"{name}.yaml" for name in ("warm", "serial", "parallel")}
    write_grid(grids["warm"], "warm", 1, min(args.steps, 20))
    write_grid(grids["serial"], "serial", args.cells, args.steps)
    write_grid(grids["parallel"], "parallel", args.cells, args.steps)
    run_grid(grids["warm"], args.work, args.device, 1, args.set)
    rows = []
    for name, runners in (("serial", 1), ("parallel", args.per_gpu)):
        wall = run_grid(grids[name], args.work, args.device, runners, args.set)
        trains = cell_train_s(args.work / name)
        if len(trains) != args.cells:
            raise RuntimeError(f"the {name} run finished {len(trains)} of {args.cells} cells; see {args.work / name}")
        rows.append({"device": args.device, "cells": args.cells, "steps": args.steps, "runners": runners,
                     "wall_s": wall, "cell_train_s_mean": statistics.mean(trains), "speedup": None})
        print(f"{name}: {runners} runner(s), {wall:.1f} s wall, {statistics.mean(trains):.1f} s training per cell",
              flush=True)
    rows[1]["speedup"] = rows[0]["wall_s"] / rows[1]["wall_s"]
    atomic_write_csv(args.out, rows, COLUMNS)
    print(f"{args.cells} cells: {rows[1]['speedup']:.2f}x faster with {args.per_gpu} at once than one at a time")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
