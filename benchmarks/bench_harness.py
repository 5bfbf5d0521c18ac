"""`python -m benchmarks.bench_harness`: training speed of the harness beside a plain PyTorch loop.

    python -m benchmarks.bench_harness                       # every named config on the default device
    python -m benchmarks.bench_harness shakespeare_cpu --device cpu --steps 300 --repeats 5
    python -m benchmarks.bench_harness 15m 42m --device cuda --out results/bench/h100.csv
    python -m benchmarks.bench_harness 260k --device cuda --profile results/bench/traces   # where the time goes

For each named configuration (the sizes of the peers' published figures: llama2.c's TinyStories
models, nanoGPT's Shakespeare recipes) the same GPT, with the same batch, optimizer and precision,
is trained twice in one process: by a minimal hand-written loop (forward, loss, backward, clip,
AdamW step; the shape of nanoGPT's train.py) and by the harness (LMModule under the Lightning
Trainer every cell uses, batches from the token-cache sampler). The ratio of their tokens/s is the
harness's own overhead, measured rather than assumed. Random tokens: speed does not depend on the
data. Timing starts after warm-up steps (compilation, allocator), and the device is synchronised
only at the ends of the timed window, which holds the training steps and nothing else (not the
validation Lightning runs after the last step).

`--repeats N` runs each loop N times, alternating which goes first, and reports median tokens/s
and the median of the N paired ratios (each CSV column names its statistic: `*_median` over the
repeats, `harness_over_plain_median_of_pairs` the median of the per-repeat harness/plain ratios,
which is not the ratio of the two median columns, `*_peak_mem_mb_max` the largest peak): on a
shared 2-core machine throughput drifts by 10-25% from one minute to the next (measured here: the
same plain loop at 34, 39 and 45 ms/step in three consecutive runs), so a single pair can favour
whichever ran in the faster minute.

MFU = (6 N + 12 L d T) * tokens/s / peak FLOP/s, with N the non-embedding parameters (nanoGPT's
and the PaLM paper's estimate); peak is the device's dense bf16 figure (989 TFLOP/s for an H100
SXM), so MFU is printed on CUDA only.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from research.errors import ConfigError, run_main


@dataclass(frozen=True)
class BenchConfig:
    """A GPT of nanoGPT's shape (learned positions, LayerNorm, GELU, tied, no bias)."""

    n_embd: int
    n_layer: int
    n_head: int
    vocab: int
    seq: int
    batch: int
    dropout: float = 0.0
    n_kv_head: int | None = None


#: ANCHORS.md: (d, layers, heads, vocab, seq, batch), and nanoGPT's Shakespeare recipes
CONFIGS = {
    "260k": BenchConfig(64, 5, 8, 512, 512, 128),
    "15m": BenchConfig(288, 6, 6, 32000, 256, 128),
    "42m": BenchConfig(512, 8, 8, 32000, 1024, 32),
    "110m": BenchConfig(768, 12, 12, 32000, 1024, 32),
    "shakespeare_cpu": BenchConfig(128, 4, 4, 65, 64, 12),
    # host-bound: each step is mostly Python, so harness minus plain step time is the harness's
    # own per-step host cost, the cost that caps a tiny model's throughput on a fast GPU
    "tiny": BenchConfig(32, 2, 2, 64, 32, 4),
    "shakespeare_gpu": BenchConfig(384, 6, 6, 65, 256, 64, dropout=0.2),
}
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def run_config(name: str, device: str, compile_: bool, precision: str):
    from research.config import RunConfig

    b = CONFIGS[name]
    return RunConfig.from_dict({
        "model": {"arch": "gpt", "n_layer": b.n_layer, "n_head": b.n_head, "n_embd": b.n_embd,
                  "block_size": b.seq, "dropout": b.dropout, "pos": "learned", "norm": "layernorm",
                  "mlp": "gelu", "bias": False, "tie_embeddings": True, "n_kv_head": b.n_kv_head},
        "train": {"batch_size": b.batch, "lr": 1e-3, "warmup_steps": 10, "weight_decay": 0.1, "beta2": 0.99,
                  "grad_clip": 1.0, "precision": precision, "compile": compile_,
                  "accelerator": "gpu" if device == "cuda" else "cpu", "log_every": 10, "eval_every": 10**9,
                  "eval_batches": 1},
    })


@dataclass
class Measure:
    tokens_per_s: float
    step_ms: float
    peak_mem_mb: float


def median_measure(runs: list[Measure]) -> Measure:
    """Median throughput and step time over repeats; the peak memory is the largest seen."""
    return Measure(statistics.median(m.tokens_per_s for m in runs), statistics.median(m.step_ms for m in runs),
                   max(m.peak_mem_mb for m in runs))


def _peak_mem(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux; process peak


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


class Window:
    """The timed window of one loop: synchronised at both ends, optionally traced.

    With a `trace` path the window runs under torch.profiler (host and, on CUDA, device
    activity) and a Chrome trace is written there: it shows where a step's time goes (host
    launches, gaps where the device waits on the host, synchronisations) without changing the
    loop. The profiler slows the host, so a traced run's tokens/s are not comparable with an
    untraced one's; compare plain and harness traces with each other.
    """

    def __init__(self, device: str, trace: Path | None = None):
        self.device, self.trace = device, trace
        self.t0: float | None = None
        self.t1: float | None = None
        self._prof = None

    def start(self) -> None:
        _sync(self.device)
        if self.trace is not None:
            acts = [torch.profiler.ProfilerActivity.CPU]
            if self.device == "cuda":
                acts.append(torch.profiler.ProfilerActivity.CUDA)
            self._prof = torch.profiler.profile(activities=acts)
            self._prof.__enter__()
        self.t0 = time.perf_counter()

    def stop(self) -> None:
        _sync(self.device)
        self.t1 = time.perf_counter()
        if self._prof is not None:
            self._prof.__exit__(None, None, None)
            self.trace.parent.mkdir(parents=True, exist_ok=True)
            self._prof.export_chrome_trace(str(self.trace))
            self._prof = None

    @property
    def seconds(self) -> float:
        return self.t1 - self.t0


def plain_loop(cfg, vocab: int, tokens: np.ndarray, warmup: int, steps: int, device: str,
               trace: Path | None = None) -> Measure:
    """The peer: a minimal loop of the same model, as nanoGPT's train.py runs it."""
    from research.data.batches import RandomWindows
    from research.models import build_model
    from research.optim import build_optimizer, build_scheduler

    torch.manual_seed(0)
    torch.set_flush_denormal(True)  # as the harness does (see ablations.train_cell.build_trainer)
    model = build_model(cfg.model, vocab).to(device).train()

    def model_loss(x, y):  # model and loss in one compiled graph, as nanoGPT's forward(idx, targets)
        logits = model(x)
        return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1))

    loss_fn = torch.compile(model_loss) if cfg.train.compile else model_loss
    opt = build_optimizer(model, cfg.train)
    sched = build_scheduler(opt, cfg.train)
    data = RandomWindows(tokens, cfg.train.batch_size, cfg.model.block_size, seed=0)
    bf16 = cfg.train.precision.startswith("bf16")
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    window = Window(device, trace)
    for step in range(warmup + steps):
        if step == warmup:
            window.start()
        x, y = data.batch(step)
        if device == "cuda":  # as nanoGPT's get_batch: pinned, so the copy is asynchronous
            x, y = x.pin_memory(), y.pin_memory()
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    window.stop()
    dt = window.seconds
    tok = steps * cfg.train.batch_size * cfg.model.block_size
    return Measure(tok / dt, 1000 * dt / steps, _peak_mem(device))


class _Timer:
    """Starts the window after `warmup` optimizer steps and stops it when the last step's batch
    ends, so the window holds exactly `steps` training steps, as the plain loop's does. Not at the
    end of `fit`: Lightning validates after the last step (`val_check_interval` is capped at
    `max_steps`) and then tears down the loop, costs nanoGPT's timed loop does not carry either."""

    def __init__(self, warmup: int, steps: int, device: str, trace: Path | None = None):
        import lightning as L

        outer = self

        class Callback(L.Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                if trainer.global_step == warmup and outer.window.t0 is None:
                    outer.window.start()

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                if outer.window.t0 is not None and outer.window.t1 is None:
                    outer.timed_steps += 1
                    if trainer.global_step == warmup + steps:
                        outer.window.stop()

        self.callback = Callback()
        self.window = Window(device, trace)
        self.timed_steps = 0


def set_steps(cfg, total: int) -> None:
    """Train for `total` steps; a window shorter than the recipe's learning-rate warm-up warms up within it."""
    cfg.train.max_steps = total
    cfg.train.warmup_steps = min(cfg.train.warmup_steps, total)


def harness_loop(cfg, vocab: int, tokens: np.ndarray, warmup: int, steps: int, device: str, root: Path,
                 trace: Path | None = None) -> Measure:
    """The harness: the cell trainer's Trainer and LMModule, batches from the cache sampler."""
    import tempfile

    from torch.utils.data import DataLoader

    from ablations.runner import quiet_lightning
    from ablations.train_cell import build_trainer
    from research.data.batches import RandomWindows, fixed_windows
    from research.lightning_module import LMModule

    quiet_lightning()
    torch.manual_seed(0)
    set_steps(cfg, warmup + steps)
    module = LMModule(cfg.to_dict(), vocab, eot_id=0)
    timer = _Timer(warmup, steps, device, trace)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        from lightning.pytorch.loggers import CSVLogger

        trainer = build_trainer(cfg, Path(tmp), CSVLogger(tmp, name="", version=""), [timer.callback])
        data = RandomWindows(tokens, cfg.train.batch_size, cfg.model.block_size, seed=0)
        val = fixed_windows(tokens, 1, cfg.train.batch_size, cfg.model.block_size)
        trainer.fit(module, DataLoader(data, batch_size=None, pin_memory=device == "cuda"),
                    DataLoader(val, batch_size=None))
    if timer.timed_steps != steps:
        raise RuntimeError(f"the harness timed {timer.timed_steps} steps, not {steps}")
    dt = timer.window.seconds
    tok = steps * cfg.train.batch_size * cfg.model.block_size
    return Measure(tok / dt, 1000 * dt / steps, _peak_mem(device))


def mfu(model, cfg, tokens_per_s: float, device: str) -> float | None:
    if device != "cuda":
        return None
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_FLOPS.items() if k in name), None)
    if peak is None:
        return None
    m = cfg.model
    flops = 6 * model.num_params(non_embedding=True) + 12 * m.n_layer * m.n_embd * m.block_size
    return flops * tokens_per_s / peak


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_harness", description=__doc__.splitlines()[0])
    p.add_argument("configs", nargs="*", help=f"named configs (default: all): {', '.join(CONFIGS)}")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default: 30 on cuda, 50 on cpu)")
    p.add_argument("--warmup", type=int, default=8)
    p.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                   help="torch.compile the model in both loops (auto: on for cuda)")
    p.add_argument("--out", type=Path, default=Path("results/bench/bench.csv"))
    p.add_argument("--order", choices=["plain-first", "harness-first"], default="plain-first",
                   help="who runs first in the first repeat (then they alternate)")
    p.add_argument("--profile", type=Path, default=None, metavar="DIR",
                   help="trace each timed window with torch.profiler into DIR/<config>_<loop>_<repeat>.json "
                        "(Chrome trace); traced throughput is slower than untraced")
    p.add_argument("--repeats", type=int, default=1,
                   help="runs of each loop, alternating; medians are reported (use 3+ on a shared machine)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    names = args.configs or list(CONFIGS)
    for n in names:
        if n not in CONFIGS:
            raise ConfigError(f"unknown bench config '{n}' (valid: {', '.join(CONFIGS)})")
    if args.repeats < 1:
        raise ConfigError(f"--repeats {args.repeats}: needs at least 1 run of each loop")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device here; use --device cpu")
    compile_ = args.compile == "on" or (args.compile == "auto" and args.device == "cuda")
    precision = "bf16-mixed" if args.device == "cuda" else "32-true"
    steps = args.steps or (30 if args.device == "cuda" else 50)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in names:
        b = CONFIGS[name]
        cfg = run_config(name, args.device, compile_, precision)
        tokens = np.random.default_rng(0).integers(0, b.vocab, 2_000_000, dtype=np.int64).astype(
            np.uint16 if b.vocab < 65536 else np.int32)
        from research.models import build_model

        with torch.device("meta"):  # for its parameter counts only: no weights allocated
            model = build_model(cfg.model, b.vocab)
        n_params = model.num_params()
        runs: dict[str, list[Measure]] = {"plain": [], "harness": []}
        for repeat in range(args.repeats):  # alternate who goes first: a shared machine drifts
            order = ["plain", "harness"] if (args.order == "plain-first") == (repeat % 2 == 0) else ["harness", "plain"]
            for which in order:
                run_cfg = run_config(name, args.device, compile_, precision)
                trace = args.profile / f"{name}_{which}_{repeat}.json" if args.profile else None
                if which == "plain":
                    runs[which].append(plain_loop(run_cfg, b.vocab, tokens, args.warmup, steps, args.device, trace))
                else:
                    runs[which].append(harness_loop(run_cfg, b.vocab, tokens, args.warmup, steps, args.device,
                                                    args.out.parent, trace))
                print(f"  {name} repeat {repeat}: {which} {runs[which][-1].tokens_per_s:,.0f} tok/s", file=sys.stderr,
                      flush=True)
                if args.device == "cuda":
                    torch.cuda.empty_cache()
        result = {k: median_measure(v) for k, v in runs.items()}
        pair_ratios = [h.tokens_per_s / p.tokens_per_s for p, h in zip(runs["plain"], runs["harness"])]
        p, h = result["plain"], result["harness"]
        rows.append({
            "config": name, "device": device_name(args.device), "params": n_params, "batch": b.batch, "seq": b.seq,
            "steps": steps, "repeats": args.repeats, "compile": compile_, "precision": precision,
            "profiled": args.profile is not None,
            "plain_tokens_per_s_median": p.tokens_per_s, "harness_tokens_per_s_median": h.tokens_per_s,
            "harness_over_plain_median_of_pairs": statistics.median(pair_ratios),
            "plain_step_ms_median": p.step_ms, "harness_step_ms_median": h.step_ms,
            "plain_peak_mem_mb_max": p.peak_mem_mb, "harness_peak_mem_mb_max": h.peak_mem_mb,
            "harness_mfu_of_median": mfu(model, cfg, h.tokens_per_s, args.device),
        })
        print(format_row(rows[-1]), file=sys.stderr, flush=True)
    from research.io import atomic_write_csv

    atomic_write_csv(args.out, rows, list(rows[0]))
    print(table(rows))
    print(f"written: {args.out}")
    return 0


def device_name(device: str) -> str:
    import os

    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"cpu x{os.cpu_count()} ({torch.get_num_threads()} threads)"


def format_row(r: dict) -> str:
    return (f"{r['config']}: plain {r['plain_tokens_per_s_median']:,.0f} tok/s, "
            f"harness {r['harness_tokens_per_s_median']:,.0f} tok/s (x{r['harness_over_plain_median_of_pairs']:.3f})")


def table(rows: list[dict]) -> str:
    head = ["config", "params", "plain tok/s (median)", "harness tok/s (median)", "ratio (median of pairs)",
            "step ms (h)", "peak MB (h)", "MFU (h)"]
    lines = [" | ".join(head)]
    for r in rows:
        m = r["harness_mfu_of_median"]
        lines.append(" | ".join([
            r["config"], f"{r['params'] / 1e6:.2f}M", f"{r['plain_tokens_per_s_median']:,.0f}",
            f"{r['harness_tokens_per_s_median']:,.0f}", f"{r['harness_over_plain_median_of_pairs']:.3f}",
            f"{r['harness_step_ms_median']:.1f}",
            f"{r['harness_peak_mem_mb_max']:.0f}", f"{100 * m:.1f}%" if m is not None else "-"]))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(run_main(main))
