"""Statistics of pairwise comparisons: the Wilson interval of a win rate, Bradley-Terry strengths,
and Cohen's kappa between two raters. Plain Python, checked against scipy and sklearn in
tests/evals/test_human.py."""

from __future__ import annotations

import math
from collections import defaultdict

Z95 = 1.959963984540054  # the 97.5% quantile of the standard normal


def wilson(wins: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval for a binomial proportion (nan, nan when n = 0)."""
    if n == 0:
        return math.nan, math.nan
    p = wins / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def bradley_terry(outcomes: list[tuple[str, str, float]], cells: list[str], iters: int = 10_000,
                  tol: float = 1e-12) -> dict[str, float]:
    """Log-strengths from (i, j, score of i: 1 win, 0.5 tie, 0 loss) by the MM iteration, each cell
    with one virtual tie against a fixed reference of strength 1 (see the module docstring)."""
    wins = {c: 0.5 for c in cells}  # the virtual tie
    games: dict[tuple[str, str], float] = defaultdict(float)
    for i, j, s in outcomes:
        wins[i] += s
        wins[j] += 1 - s
        games[(i, j)] += 1
    p = {c: 1.0 for c in cells}
    for _ in range(iters):
        denom = {c: 1 / (p[c] + 1.0) for c in cells}  # the reference game
        for (i, j), n in games.items():
            denom[i] += n / (p[i] + p[j])
            denom[j] += n / (p[i] + p[j])
        new = {c: wins[c] / denom[c] for c in cells}
        done = max(abs(math.log(new[c] / p[c])) for c in cells) < tol if cells else True
        p = new
        if done:
            break
    return {c: math.log(p[c]) for c in cells}


def cohen_kappa(x: list[str], y: list[str]) -> float:
    """Cohen's kappa of two raters' labels on the same items (nan when undefined)."""
    n = len(x)
    if n == 0:
        return math.nan
    cats = sorted(set(x) | set(y))
    observed = sum(a == b for a, b in zip(x, y)) / n
    expected = sum((x.count(c) / n) * (y.count(c) / n) for c in cats)
    return (observed - expected) / (1 - expected) if expected < 1 else math.nan
