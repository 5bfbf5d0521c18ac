"""Peak memory of evaluating a 32k-vocabulary model: sliced per-token NLL against one cross-entropy.

    python -m benchmarks.bench_eval_memory                     # 15M config, 32 x 256 tokens, CPU
    python -m benchmarks.bench_eval_memory --device cuda --batch 128

The exact split loss (`research.evaluation.split_loss`, which the harness runs after every cell, and
its validation step) scores logits with `research.loss.token_nats`, a slice of rows at a time. The
peer is the usual `F.cross_entropy(logits.float(), ...)` over the whole batch, as nanoGPT and the
harness before it did. Each side runs in its own process on the same random model and tokens, so
the peak is that side's alone: peak RSS on CPU, `max_memory_allocated` on CUDA. Prints a table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from research.errors import ConfigError, run_main

ROOT = Path(__file__).resolve().parents[1]


def measure(side: str, config: str, batch: int, device: str, bf16: bool) -> dict:
    """One side, in this process: build, score one batch of windows, report the peak."""
    import resource

    import numpy as np
    import torch
    import torch.nn.functional as F

    from benchmarks import bench_harness as bench
    from research.evaluation import split_loss
    from research.models import build_model

    torch.manual_seed(0)
    b = bench.CONFIGS[config]
    cfg = bench.run_config(config, device, False, "32-true")
    model = build_model(cfg.model, b.vocab).to(device).eval()
    tokens = np.random.default_rng(0).integers(0, b.vocab, batch * b.seq + 1)

    def peak_mb() -> float:
        if device == "cuda":
            return torch.cuda.max_memory_allocated() / 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    before = peak_mb()
    t0 = time.perf_counter()
    with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
        if side == "sliced":
            loss = split_loss(model, tokens, b.seq, batch_size=batch, device=device).loss
        else:
            x = torch.from_numpy(tokens[:-1].reshape(batch, b.seq)).to(device)
            y = torch.from_numpy(tokens[1:].reshape(batch, b.seq)).to(device)
            logits = model(x)
            loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1)).item()
    if device == "cuda":
        torch.cuda.synchronize()
    return {"side": side, "loss": loss, "seconds": time.perf_counter() - t0, "before_mb": before,
            "peak_mb": peak_mb()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_eval_memory", description=__doc__.splitlines()[0])
    p.add_argument("--config", default="15m", help="a benchmarks.bench_harness config (default 15m: 32k vocabulary)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--side", choices=["sliced", "whole"], help=argparse.SUPPRESS)  # the child process
    p.add_argument("--bf16", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("--device cuda: no CUDA device here; use --device cpu")
    if args.side:
        print(json.dumps(measure(args.side, args.config, args.batch, args.device, args.bf16)))
        return 0
    print(f"{args.config}, {args.batch} windows, {args.device}")
    print("precision | side   | loss (nats/token) | peak MB | added by scoring, MB | seconds")
    for bf16 in (False, True):
        for side in ("whole", "sliced"):
            cmd = [sys.executable, "-m", "benchmarks.bench_eval_memory", "--side", side, "--config", args.config,
                   "--batch", str(args.batch), "--device", args.device] + (["--bf16"] if bf16 else [])
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            if proc.returncode:
                print(f"the {side} side failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
                return 1
            r = json.loads(proc.stdout)
            print(f"{'bf16' if bf16 else 'fp32':9} | {side:6} | {r['loss']:17.6f} | {r['peak_mb']:7.0f} | "
                  f"{r['peak_mb'] - r['before_mb']:20.0f} | {r['seconds']:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
