"""Was training still improving at the last step? A caption should not compare unconverged runs as
if they had converged.

The test, per configuration: over the last 10% of training steps, did the mean validation loss over
seeds fall by more than the seeds' spread (max - min at the last step)? A drop within the spread is
indistinguishable from noise between seeds; a larger one means more steps would still change the
comparison. Curves are the logged `val/loss` (the training loss where no validation was logged),
read at the start of the window by linear interpolation between logged steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from paper.collect import GridRecord, read_curve

WINDOW = 0.1  # the share of training steps at the end that is tested


@dataclass(frozen=True)
class Trend:
    config: str
    drop: float  # mean loss at the window's start minus at the last step (nats/token; > 0: falling)
    spread: float  # max - min over seeds at the last step
    seeds: int

    @property
    def falling(self) -> bool:
        return self.drop > self.spread


def trend(cells, config: str) -> Trend | None:
    """The configuration's drop over the last WINDOW of steps, or None without two logged points."""
    for key in ("val/loss", "train/loss"):
        series = [dict(read_curve(c.path).get(key, [])) for c in cells]
        if not series or not all(series):
            continue
        steps = sorted(set.intersection(*(set(s) for s in series)))
        if len(steps) < 2:
            continue
        last = steps[-1]
        start = last - WINDOW * last
        values = np.array([[s[t] for t in steps] for s in series])  # (seeds, steps)
        at_start = np.array([np.interp(start, steps, row) for row in values])
        at_end = values[:, -1]
        return Trend(config, float(at_start.mean() - at_end.mean()), float(at_end.max() - at_end.min()), len(series))
    return None


def trends(grid: GridRecord) -> list[Trend]:
    out = []
    for config in grid.configs():
        cells = [c for c in grid.cells if c.config == config and c.status == "done"]
        t = trend(cells, config) if cells else None
        if t is not None:
            out.append(t)
    return out


def still_falling(grid: GridRecord) -> str:
    """A caption sentence (LaTeX) when some configuration was still improving at the last step, else ''."""
    from paper.tables import latex_escape

    found = trends(grid)
    falling = [t for t in found if t.falling]
    if not falling:
        return ""
    names = ", ".join(latex_escape(t.config) for t in falling[:6]) + (", ..." if len(falling) > 6 else "")
    return (f"Not converged: for {len(falling)} of {len(found)} configurations ({names}) the mean validation loss "
            f"fell over the last {WINDOW:.0%} of steps by more than its spread over seeds at the last step, "
            "so longer training may change this comparison.").replace("%", "\\%")
