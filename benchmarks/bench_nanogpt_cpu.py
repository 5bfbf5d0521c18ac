"""nanoGPT's Tiny Shakespeare CPU recipe, run by nanoGPT itself and by the harness, alternately.

    python -m benchmarks.bench_nanogpt_cpu --nanogpt ~/src/nanoGPT --data input.txt --repeats 3

The peer is nanoGPT's own `train.py` (a checkout you provide: `git clone
https://github.com/karpathy/nanoGPT`; nothing of it is copied into this repository), started with
the flags of its README's CPU recipe:

    train.py config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20
      --log_interval=1 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128
      --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0

in a scratch folder holding copies of its scripts and the `data/shakespeare_char/` files its
`prepare.py` would write (first 90% of the characters train, the last 10% validate, uint16 ids),
made here from `--data` so no download is needed. The harness runs
`ablations/grids/reproduce/shakespeare_char_cpu.yaml` (the same recipe, seed 0 only) through
`ablations.run` into a scratch results folder. Both are separate processes timed from start to exit, so each
pays its own imports, evaluations and checkpoint writes; they alternate (nanoGPT first on even
repeats), because a shared 2-core machine drifts by tens of percent between minutes.

Reported per run: wall seconds; milliseconds per training iteration (nanoGPT: mean of the `time`
it prints for iterations without an evaluation; harness: `train_s` / steps, validation excluded);
and the validation loss each reports (nanoGPT: its 20-batch estimate at iteration 2000; harness:
the exact loss over the whole validation split, nats per character, and its own 20-batch estimate).
"""

from __future__ import annotations

import argparse
import pickle
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ablations import records
from research.errors import UserError, run_main
from research.io import atomic_write_csv

RECIPE = Path(__file__).resolve().parents[1] / "ablations" / "grids" / "reproduce" / "shakespeare_char_cpu.yaml"
NANOGPT_FILES = ("train.py", "model.py", "configurator.py", "config/train_shakespeare_char.py")
NANOGPT_FLAGS = ["--device=cpu", "--compile=False", "--eval_iters=20", "--log_interval=1", "--block_size=64",
                 "--batch_size=12", "--n_layer=4", "--n_head=4", "--n_embd=128", "--dropout=0.0"]
STEP_RE = re.compile(r"^step (\d+): train loss ([\d.]+), val loss ([\d.]+)", re.M)
ITER_RE = re.compile(r"^iter (\d+): loss [\d.]+, time ([\d.]+)ms", re.M)
COLUMNS = ["repeat", "runner", "wall_s", "ms_per_iter", "val_loss_estimate", "val_loss_exact"]


def write_nanogpt_data(text: str, folder: Path) -> int:
    """`data/shakespeare_char/` as nanoGPT's prepare.py writes it; returns the vocabulary size."""
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    n = len(text)
    folder.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", text[: int(n * 0.9)]), ("val", text[int(n * 0.9):])):
        np.array([stoi[c] for c in part], dtype=np.uint16).tofile(folder / f"{name}.bin")
    meta = {"vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": stoi}
    (folder / "meta.pkl").write_bytes(pickle.dumps(meta))
    return len(chars)


def nanogpt_tree(checkout: Path, text: str, scratch: Path) -> Path:
    missing = [f for f in NANOGPT_FILES if not (checkout / f).is_file()]
    if missing:
        raise UserError(f"--nanogpt {checkout}: not a nanoGPT checkout (missing {', '.join(missing)}); "
                        "git clone https://github.com/karpathy/nanoGPT and pass its folder")
    work = scratch / "nanogpt"
    for f in NANOGPT_FILES:
        (work / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(checkout / f, work / f)
    write_nanogpt_data(text, work / "data" / "shakespeare_char")
    return work


def parse_nanogpt_log(out: str, steps: int, eval_interval: int = 250) -> dict:
    evals = {int(s): float(v) for s, _, v in STEP_RE.findall(out)}
    times = [float(ms) for it, ms in ITER_RE.findall(out) if int(it) % eval_interval]
    if steps not in evals or not times:
        raise RuntimeError(f"nanoGPT's output has no 'step {steps}: ... val loss' line or no iteration times; "
                           f"its last lines:\n{out[-2000:]}")
    return {"ms_per_iter": statistics.fmean(times), "val_loss_estimate": evals[steps], "val_loss_exact": None}


def run_nanogpt(work: Path, steps: int) -> dict:
    cmd = [sys.executable, "train.py", "config/train_shakespeare_char.py", *NANOGPT_FLAGS,
           f"--max_iters={steps}", f"--lr_decay_iters={steps}", f"--out_dir={work / 'out'}"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"nanoGPT exited with {proc.returncode}:\n{proc.stderr[-2000:]}")
    return {"wall_s": wall, **parse_nanogpt_log(proc.stdout, steps)}


def one_seed_recipe(scratch: Path) -> Path:
    """The recipe with seed 0 only: the benchmark times a run, it does not average seeds."""
    import yaml

    recipe = yaml.safe_load(RECIPE.read_text())
    recipe["seeds"] = [0]
    path = scratch / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def run_harness(recipe: Path, data: Path, scratch: Path, steps: int, repeat: int) -> dict:
    """One run of the recipe into a fresh results folder."""
    root = scratch / f"results{repeat}"
    cmd = [sys.executable, "-m", "ablations.run", str(recipe), "--results-dir", str(root),
           "--set", f"data.path={data}", "--set", f"train.max_steps={steps}"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"the harness exited with {proc.returncode}:\n{proc.stderr[-2000:]}")
    (grid_dir,) = (p.parent for p in root.glob(f"*/{records.GRID}"))
    (cell,) = records.load_cells(grid_dir)
    m = cell.metrics
    return {"wall_s": wall, "ms_per_iter": 1000 * m["train_s"] / steps,
            "val_loss_estimate": m.get("val_loss_best_estimate"), "val_loss_exact": m["val_loss"]}


def summary(rows: list[dict]) -> str:
    med = {r: {k: statistics.median(x[k] for x in rows if x["runner"] == r) for k in ("wall_s", "ms_per_iter")}
           for r in ("nanogpt", "harness")}
    lines = ["runner   | runs | median wall s | median ms/iter"]
    for r in ("nanogpt", "harness"):
        n = sum(x["runner"] == r for x in rows)
        lines.append(f"{r:8} | {n:4} | {med[r]['wall_s']:13.1f} | {med[r]['ms_per_iter']:14.2f}")
    lines.append(f"harness speed / nanoGPT speed: {med['nanogpt']['wall_s'] / med['harness']['wall_s']:.3f} (wall), "
                 f"{med['nanogpt']['ms_per_iter'] / med['harness']['ms_per_iter']:.3f} (per training iteration)")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_nanogpt_cpu", description=__doc__.splitlines()[0])
    p.add_argument("--nanogpt", type=Path, required=True, help="a nanoGPT checkout (its train.py is run)")
    p.add_argument("--data", type=Path, required=True, help="Tiny Shakespeare input.txt")
    p.add_argument("--repeats", type=int, default=3, help="runs of each, alternating (default 3)")
    p.add_argument("--steps", type=int, default=2000, help="training iterations (the recipe's 2000; a multiple of 250)")
    p.add_argument("--out", type=Path, default=Path("results/bench/nanogpt_cpu.csv"))
    args = p.parse_args(argv)
    if args.steps < 250 or args.steps % 250:
        raise UserError(f"--steps {args.steps}: nanoGPT evaluates every 250 iterations; use a multiple of 250")
    if not args.data.is_file():
        raise UserError(f"--data {args.data}: no such file (Tiny Shakespeare's input.txt)")
    text = args.data.read_text(encoding="utf-8")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_nanogpt_") as tmp:
        scratch = Path(tmp)
        work = nanogpt_tree(args.nanogpt.expanduser(), text, scratch)
        recipe = one_seed_recipe(scratch)
        for i in range(args.repeats):
            order = ("nanogpt", "harness") if i % 2 == 0 else ("harness", "nanogpt")
            for runner in order:
                res = run_nanogpt(work, args.steps) if runner == "nanogpt" else run_harness(
                    recipe, args.data.resolve(), scratch, args.steps, i)
                rows.append({"repeat": i, "runner": runner, **res})
                print(f"repeat {i} {runner}: {res['wall_s']:.1f} s wall, {res['ms_per_iter']:.2f} ms/iter, "
                      f"val loss {res['val_loss_estimate']} (estimate) / {res['val_loss_exact']} (exact)",
                      file=sys.stderr, flush=True)
    atomic_write_csv(args.out, rows, COLUMNS)
    print(summary(rows))
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
