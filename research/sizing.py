"""Size a model to a parameter budget, so a grid compares architectures at equal size.

`model.match_params: 1.0e6` asks for a model whose unique parameter count (`num_params()`, shared
tensors once, embeddings included) lands within `TOLERANCE` of one million. The search changes
only the width `n_embd`, over multiples that keep heads whole (and even under RoPE), keeping a
user-given feed-forward ratio d_ff / n_embd. A width step moves the count by several percent at
small sizes, so when no width lands within tolerance the feed-forward width `d_ff` of the nearest
widths is then solved for (the count is linear in d_ff) and the choice that changes d_ff least
wins. Everything else (depth, heads, windows, sharing, vocabulary) stays as configured.

Models are built on the meta device, so a search costs no memory and little time. The result is
a plain config with `match_params` cleared and the chosen `n_embd` / `d_ff` filled in; building
from it gives the same model without searching again.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import torch

from research.errors import ConfigError

log = logging.getLogger(__name__)

TOLERANCE = 0.01  # relative distance from the target: equal-size comparisons within 1%
MAX_WIDTH = 1 << 16


def count_params(model_cls, cfg, vocab_size: int) -> int:
    with torch.device("meta"):
        return model_cls(cfg, vocab_size).num_params()


def width_step(cfg) -> int:
    """The width search's step: the model's own rule for whole heads (GPTConfig.head_multiple)."""
    return cfg.head_multiple()


def match_params(model_cls, cfg, vocab_size: int):
    """Return a copy of `cfg` sized so the model's parameter count is within TOLERANCE of the target."""
    target = float(cfg.match_params)
    if not {"n_embd", "d_ff", "n_head"} <= {f.name for f in dataclasses.fields(cfg)} or \
            not callable(getattr(cfg, "head_multiple", None)):
        raise ConfigError(f"model.match_params: arch '{cfg.arch}' has no width (n_embd) to size; remove the key")
    if target <= 0:
        raise ConfigError(f"model.match_params: must be a positive parameter count, got {cfg.match_params}")
    step = width_step(cfg)
    ff_ratio = cfg.d_ff / cfg.n_embd if cfg.d_ff is not None else None

    def at(width: int, d_ff: int | None = None):
        if d_ff is None and ff_ratio is not None:
            d_ff = max(1, round(ff_ratio * width))
        c = dataclasses.replace(cfg, n_embd=width, d_ff=d_ff, match_params=None)
        try:
            c.validate()
        except ValueError as e:
            raise ConfigError(f"model.match_params: width {width} is not a valid {cfg.arch} ({e})") from None
        return c, count_params(model_cls, c, vocab_size)

    def error(c) -> float:
        return abs(c[1] - target) / target

    lo, hi = 1, 1  # in units of `step`: find the first width whose count reaches the target
    smallest = at(step)
    if smallest[1] >= target * (1 + TOLERANCE):
        raise ConfigError(f"model.match_params: {target:.4g} is below the smallest {cfg.arch} here "
                          f"(width {step}: {smallest[1]:,} parameters); raise it or lower n_layer")
    while at(hi * step)[1] < target:
        lo, hi = hi, hi * 2
        if hi * step > MAX_WIDTH:
            raise ConfigError(f"model.match_params: {target:.4g} needs a width above {MAX_WIDTH}; "
                              "raise n_layer or lower the target")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if at(mid * step)[1] < target else (lo, mid)
    near = [at(k * step) for k in sorted({lo, hi})]
    best = min(near, key=error)
    if error(best) <= TOLERANCE:
        return _done(best, target)
    tuned = [t for t in (_tune_ff(at, c, target) for c in near) if t is not None]
    tuned = [t for t in tuned if error(t) <= TOLERANCE]
    if not tuned:
        raise ConfigError(f"model.match_params: no width of {cfg.arch} lands within {TOLERANCE:.0%} of "
                          f"{target:.4g} (nearest: width {best[0].n_embd}, {best[1]:,} parameters); "
                          "change the target or the fixed sizes")
    nominal = {id(t): at(t[0].n_embd)[0].ff_width for t in tuned}
    return _done(min(tuned, key=lambda t: abs(math.log(t[0].ff_width / nominal[id(t)]))), target)


def _tune_ff(at, candidate, target: float):
    """Solve the (linear) parameter count for the d_ff that hits the target at this width."""
    cfg, p0 = candidate
    f0 = cfg.ff_width
    delta = max(1, f0 // 4)
    p1 = at(cfg.n_embd, f0 + delta)[1]
    slope = (p1 - p0) / delta
    if slope <= 0:
        return None  # this model's size does not depend on d_ff
    f = round(f0 + (target - p0) / slope)
    if f < 1:
        return None
    return at(cfg.n_embd, f)


def _done(candidate, target: float):
    cfg, params = candidate
    log.info("match_params %.4g: n_embd=%d d_ff=%s -> %d parameters (%+.2f%%)", target, cfg.n_embd, cfg.d_ff,
             params, 100 * (params - target) / target)
    return cfg
