"""Per-layer values (widths, attention windows) from a list or a named shape.

A grid says `windows: small-large-small` or `widths: [192, 128, 128, 192]`; this module turns
either into one integer per layer. Named shapes interpolate linearly between a small value `lo`
and a large value `hi` over the layers (first layer = index 0, nearest the embeddings):

- `uniform`: hi everywhere
- `decreasing`: hi at the first layer down to lo at the last (a tapering stack)
- `increasing`: lo up to hi
- `small-large-small`: lo at both ends, hi in the middle (a triangle)
- `large-small-large`: the reverse

Values are rounded to a multiple of `multiple` (a width must split into whole heads) and never
go below one multiple.
"""

from __future__ import annotations

import math
from collections.abc import Callable

SHAPES: dict[str, Callable[[float], float]] = {
    # position u in [0, 1] (first to last layer) -> fraction of the way from lo to hi
    "uniform": lambda u: 1.0,
    "decreasing": lambda u: 1.0 - u,
    "increasing": lambda u: u,
    "small-large-small": lambda u: 1.0 - abs(2.0 * u - 1.0),
    "large-small-large": lambda u: abs(2.0 * u - 1.0),
}


def round_to(value: float, multiple: int) -> int:
    """Nearest multiple (halves round up, unlike Python's round), at least one multiple."""
    return max(multiple, multiple * math.floor(value / multiple + 0.5))


def check_spec(spec: list[int] | str, n_layer: int, name: str) -> None:
    """Raise ValueError (turned into a ConfigError naming the key) for a bad list or shape name."""
    if isinstance(spec, str):
        if spec not in SHAPES:
            raise ValueError(f"{name}: unknown shape '{spec}' (valid: {', '.join(SHAPES)}, or a list of {n_layer})")
        return
    if len(spec) != n_layer:
        raise ValueError(f"{name}: {len(spec)} values given for {n_layer} layers; give one per layer")
    if any(v < 1 for v in spec):
        raise ValueError(f"{name}: every value must be at least 1, got {spec}")


def layer_values(spec: list[int] | str, n_layer: int, lo: float, hi: float, multiple: int = 1) -> list[int]:
    """One integer per layer: a list passes through unchanged, a shape name is interpolated."""
    if not isinstance(spec, str):
        return [int(v) for v in spec]
    frac = SHAPES[spec]
    us = [i / (n_layer - 1) for i in range(n_layer)] if n_layer > 1 else [0.5]
    return [round_to(lo + (hi - lo) * frac(u), multiple) for u in us]


def linear_ramp(lo: float, hi: float, n_layer: int) -> list[float]:
    """lo at the first layer to hi at the last: OpenELM's layer-wise scaling factors (Mehta et al. 2024, eq. 1)."""
    if n_layer == 1:
        return [hi]
    return [lo + (hi - lo) * i / (n_layer - 1) for i in range(n_layer)]
