"""Per-position loss of a stored checkpoint: the in-context learning curve at the end of training.

The curve is research.per_position.loss_by_position (mean nats/token at each position 0..T-1
over `n_windows` seeded random windows of the validation stream): the same function and windows
the training callback uses, so this record continues the callback's series. `details.records`
holds [{"step", "loss_by_position"}] (read by ablations.records.read_per_position), the step being
train.max_steps: the stored model.pt is the model at the end of training.

The window is the model's block_size; recurrent models (no block_size) use train.seq_len or 256
tokens from a zero initial state. `context_multiple: k` (or a `window` above block_size) scores
k times the training context, for length generalisation: the model is extended on a copy
(`extend_context`), which rotary, sinusoidal and absent positions allow and learned absolute
positions refuse with one line. Beyond the training length T the metrics add `loss_within`
(mean over positions 0..T-1) and `loss_beyond` (mean over positions T..window-1).
Metrics (nats/token): `loss_first` (position 0, no context but the token itself), `loss_last`
(position T-1), `loss_mean` (over positions) and `context_gain` = loss at position T//10 minus
loss at T-1: the drop from more context, a window-relative version of Olsson et al. 2022's
in-context learning score (loss at token 500 minus loss at token 50).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from evals.base import EvalContext, EvalResult
from research.checks import ranged
from research.config import build
from research.errors import ConfigError
from research.per_position import loss_by_position, sample_windows

NAME = "per_position"
VERSION = 2


@dataclass
class PerPositionOptions:
    n_windows: int = ranged(256, ge=1)
    # None: context_multiple x the model's block_size (or train.seq_len, or 256 for recurrent models)
    window: int | None = ranged(None, ge=1)
    context_multiple: int = ranged(1, ge=1)  # the window in units of the training context (4: evaluate to 4T)
    seed: int = 0
    batch_size: int = ranged(32, ge=1)
    split: str = "val"


OPTIONS = PerPositionOptions  # the eval's `eval.options.per_position` keys, checked when the grid loads


def evaluate(ctx: EvalContext, options: dict) -> EvalResult:
    opts = build(PerPositionOptions, options or {}, f"eval.options.{NAME}")
    if ctx.load_tokens is None:
        raise ConfigError(f"{NAME}: the eval context has no token streams (load_tokens); run it through evals.run")
    if opts.context_multiple < 1:
        raise ConfigError(f"eval.options.{NAME}.context_multiple: must be >= 1, got {opts.context_multiple}")
    trained = ctx.model.block_size or ctx.config.train.seq_len or 256
    window = opts.window or trained * opts.context_multiple
    model = ctx.model
    if hasattr(model, "extend_context") and model.block_size is not None and window > model.block_size:
        model = copy.deepcopy(model)  # the cell's model keeps its training context
        model.extend_context(window)
    windows = sample_windows(ctx.load_tokens(opts.split), window, opts.n_windows, opts.seed)
    curve = loss_by_position(model, windows, opts.batch_size, ctx.device)
    metrics = {
        "loss_first": curve[0],
        "loss_last": curve[-1],
        "loss_mean": sum(curve) / len(curve),
        "context_gain": curve[len(curve) // 10] - curve[-1],
    }
    if window > trained:
        metrics["loss_within"] = sum(curve[:trained]) / trained
        metrics["loss_beyond"] = sum(curve[trained:]) / (window - trained)
    details = {
        "records": [{"step": ctx.config.train.max_steps, "loss_by_position": curve}],
        "window": window,
        "trained_context": trained,
        "n_windows": opts.n_windows,
        "split": opts.split,
        "units": "nats/token at each context position 0..window-1",
    }
    return EvalResult(NAME, VERSION, metrics=metrics, n=opts.n_windows * window, details=details)
