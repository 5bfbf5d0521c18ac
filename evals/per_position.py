"""Per-position loss of a stored checkpoint: the in-context learning curve at the end of training.

The curve is research.per_position.loss_by_position (mean nats/token at each position 0..T-1
over `n_windows` seeded random windows of the validation stream): the same function and windows
the training callback uses, so this record continues the callback's series. `details.records`
holds [{"step", "loss_by_position"}] (read by ablations.records.read_per_position), the step being
train.max_steps: the stored model.pt is the model at the end of training.

The window is the model's block_size; recurrent models (no block_size) use train.seq_len or 256
tokens from a zero initial state. Metrics (nats/token): `loss_first` (position 0, no context but
the token itself), `loss_last` (position T-1), `loss_mean` (over positions) and `context_gain` =
loss at position T//10 minus loss at T-1: the drop from more context, a window-relative version of
Olsson et al. 2022's in-context learning score (loss at token 500 minus loss at token 50).
"""

from __future__ import annotations

from dataclasses import dataclass

from evals.base import EvalContext, EvalResult
from research.checks import ranged
from research.config import build
from research.errors import ConfigError
from research.per_position import loss_by_position, sample_windows

NAME = "per_position"
VERSION = 1


@dataclass
class PerPositionOptions:
    n_windows: int = ranged(256, ge=1)
    # None: the model's block_size (or train.seq_len, or 256 for recurrent models)
    window: int | None = ranged(None, ge=1)
    seed: int = 0
    batch_size: int = ranged(32, ge=1)
    split: str = "val"


OPTIONS = PerPositionOptions  # the eval's `eval.options.per_position` keys, checked when the grid loads


def evaluate(ctx: EvalContext, options: dict) -> EvalResult:
    opts = build(PerPositionOptions, options or {}, f"eval.options.{NAME}")
    if ctx.load_tokens is None:
        raise ConfigError(f"{NAME}: the eval context has no token streams (load_tokens); run it through evals.run")
    window = opts.window or ctx.model.block_size or ctx.config.train.seq_len or 256
    windows = sample_windows(ctx.load_tokens(opts.split), window, opts.n_windows, opts.seed)
    curve = loss_by_position(ctx.model, windows, opts.batch_size, ctx.device)
    metrics = {
        "loss_first": curve[0],
        "loss_last": curve[-1],
        "loss_mean": sum(curve) / len(curve),
        "context_gain": curve[len(curve) // 10] - curve[-1],
    }
    details = {
        "records": [{"step": ctx.config.train.max_steps, "loss_by_position": curve}],
        "window": window,
        "n_windows": opts.n_windows,
        "split": opts.split,
        "units": "nats/token at each context position 0..window-1",
    }
    return EvalResult(NAME, VERSION, metrics=metrics, n=opts.n_windows * window, details=details)
