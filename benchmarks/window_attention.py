"""Sliding-window attention on GPU: FlexAttention against the band-mask path, and grid step times.

    python -m benchmarks.window_attention --out window_attention.json

1. Correctness: FlexAttention (block mask) and SDPA with a dense band mask agree in the forward
   pass and the gradients (float32), for several head sizes, with and without grouped queries.
2. Speed: forward + backward of one attention call, full causal vs band mask vs FlexAttention.
3. Grid sizing: milliseconds per training step (bf16 autocast, AdamW) of every model in a grid
   file at its own batch and block size, from which a cell's training time is estimated.

Needs a CUDA device; exits with a message otherwise.
"""

from __future__ import annotations

import argparse
import logging
import time

import torch
import torch.nn.functional as F
import yaml

from research.config import RunConfig
from research.errors import UserError, run_main
from research.io import atomic_write_json
from research.models import build_model
from research.models import window_attention as wa

log = logging.getLogger(__name__)


def timed(fn, repeats: int = 20, warmup: int = 5) -> float:
    """Median milliseconds of `fn()` on the GPU."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return sorted(times)[len(times) // 2]


def check_agreement(device) -> list[dict]:
    rows = []
    for head_dim, heads, kv_heads, T, w in [(16, 4, 4, 256, 32), (32, 4, 2, 300, 17), (52, 8, 8, 512, 64),
                                              (64, 8, 8, 1024, 128)]:
        torch.manual_seed(0)
        q = torch.randn(2, heads, T, head_dim, device=device, requires_grad=True)
        k = torch.randn(2, kv_heads, T, head_dim, device=device, requires_grad=True)
        v = torch.randn(2, kv_heads, T, head_dim, device=device, requires_grad=True)
        gqa = heads != kv_heads
        row = {"head_dim": head_dim, "heads": heads, "kv_heads": kv_heads, "T": T, "window": w,
               "flex_used": wa.flex_supported(q, 0.0)}
        outs = {}
        for name, fn in (("flex", lambda: wa.window_attention(q, k, v, w, enable_gqa=gqa)),
                         ("band", lambda: F.scaled_dot_product_attention(
                             q, k, v, attn_mask=wa.band_mask(T, w, q.device), enable_gqa=gqa))):
            out = fn()
            grads = torch.autograd.grad(out.square().sum(), (q, k, v))
            outs[name] = (out.detach(), grads)
        row["max_abs_diff_out"] = (outs["flex"][0] - outs["band"][0]).abs().max().item()
        row["max_abs_diff_grad"] = max((a - b).abs().max().item() for a, b in zip(outs["flex"][1], outs["band"][1]))
        rows.append(row)
    return rows


def attention_speed(device) -> list[dict]:
    rows = []
    for T, w in [(512, 64), (2048, 128), (8192, 256)]:
        B, H, hd = max(1, 16384 // T), 8, 64
        q, k, v = (torch.randn(B, H, T, hd, device=device, dtype=torch.bfloat16, requires_grad=True)
                   for _ in range(3))

        def run(fn):
            return lambda: fn().sum().backward()

        row = {"B": B, "T": T, "window": w, "head_dim": hd}
        row["causal_ms"] = timed(run(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)))
        row["band_mask_ms"] = timed(run(lambda: F.scaled_dot_product_attention(
            q, k, v, attn_mask=wa.band_mask(T, w, q.device))))
        row["flex_ms"] = timed(run(lambda: wa.window_attention(q, k, v, w)))
        rows.append(row)
    return rows


def grid_steps(path: str, vocab_size: int, device) -> list[dict]:
    doc = yaml.safe_load(open(path))
    base = doc["base"]
    B, steps = base["train"]["batch_size"], base["train"]["max_steps"]
    rows = []
    for section in doc.get("grid", {}).get("model") or [base["model"]]:
        cfg = RunConfig.from_dict({"model": section}).model
        torch.manual_seed(0)
        model = build_model(cfg, vocab_size).to(device)
        T = model.block_size
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
        x = torch.randint(0, vocab_size, (B, T), device=device)

        def step():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits = model(x)
            loss = F.cross_entropy(logits.float().view(-1, vocab_size), x.view(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        ms = timed(step, repeats=20, warmup=5)
        rows.append({"arch": cfg.arch, "section": section, "n_embd": model.cfg.n_embd, "d_ff": model.cfg.d_ff,
                     "params": model.num_params(), "params_non_embedding": model.num_params(non_embedding=True),
                     "flops_per_token": model.flops_per_token(T), "step_ms": ms,
                     "tokens_per_s": B * T / ms * 1e3, "train_min_est": steps * ms / 6e4,
                     **model.architecture_metrics()})
        log.info("%s", rows[-1])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", default="ablations/grids/architecture.yaml")
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--out", default="window_attention.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not torch.cuda.is_available():
        raise UserError("benchmarks.window_attention needs a CUDA device")
    device = torch.device("cuda")
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    result["agreement"] = check_agreement(device)
    log.info("agreement %s", result["agreement"])
    result["attention_speed"] = attention_speed(device)
    log.info("speed %s", result["attention_speed"])
    result["grid_steps"] = grid_steps(args.grid, args.vocab_size, device)
    atomic_write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
