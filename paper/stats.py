"""Significance over seeds: which configuration is best, and is the difference real?

A table may bold a value only when a named test says it beats every other row. The tests are
scipy's: a paired t-test (`scipy.stats.ttest_rel`) when the two configurations ran the same seeds
(seed k fixes the data order, so seed k of one row pairs with seed k of the other), Welch's
t-test (`scipy.stats.ttest_ind(equal_var=False)`) otherwise; both two-sided. Rows with fewer than
two seeds cannot be tested, so nothing in their column is bold, and the reason is returned for the
caption. The level is the caller's (default 0.05).

A table of k rows invites k(k-1)/2 comparisons per column, so by default the p-values of a column
are adjusted together with Holm's step-down method (Holm 1979), which keeps the family-wise error
rate at the level without assuming independence; `correction="none"` keeps raw p-values, for one
comparison planned in advance.
"""

from __future__ import annotations

import math
import statistics
import warnings
from dataclasses import dataclass
from itertools import combinations

from scipy import stats as sps

ALPHA = 0.05
TESTS = {"paired": "paired t-test", "welch": "Welch's t-test"}
CORRECTIONS = {"holm": "Holm-corrected over the column's pairwise tests", "none": "uncorrected"}
DEFAULT_CORRECTION = "holm"


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input's order: the i-th smallest of m p-values is
    multiplied by (m - i + 1), made non-decreasing along that order, and capped at 1. A p-value that
    is nan (an undefined test) stays nan and is not counted in m."""
    order = sorted((p, i) for i, p in enumerate(pvalues) if not math.isnan(p))
    m = len(order)
    out = [float("nan")] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def adjust(pvalues: list[float], correction: str) -> list[float]:
    if correction == "none":
        return list(pvalues)
    if correction == "holm":
        return holm(pvalues)
    raise ValueError(f"unknown correction '{correction}' (valid: {', '.join(CORRECTIONS)})")


@dataclass(frozen=True)
class Summary:
    """Mean, sample std, standard error and a 95% t confidence half-width over n seeds."""

    mean: float
    std: float | None
    n: int

    @property
    def se(self) -> float | None:
        return None if self.std is None else self.std / math.sqrt(self.n)

    @property
    def ci95(self) -> float | None:
        return None if self.se is None else float(sps.t.ppf(0.975, self.n - 1)) * self.se


def summarize(values: list[float]) -> Summary:
    return Summary(statistics.fmean(values), statistics.stdev(values) if len(values) >= 2 else None, len(values))


@dataclass(frozen=True)
class Comparison:
    test: str  # a key of TESTS
    statistic: float
    p: float  # nan when the test is undefined (both rows constant and equal)


def compare(a: dict[int, float], b: dict[int, float]) -> Comparison | None:
    """Two-sided test of a's seeds (seed -> value) against b's; None with fewer than 2 seeds a side."""
    if len(a) < 2 or len(b) < 2:
        return None
    with warnings.catch_warnings():  # scipy warns on (near-)constant samples; the p-value says enough
        warnings.simplefilter("ignore", RuntimeWarning)
        if set(a) == set(b):
            seeds = sorted(a)
            res = sps.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds])
            return Comparison("paired", float(res.statistic), float(res.pvalue))
        res = sps.ttest_ind(list(a.values()), list(b.values()), equal_var=False)
        return Comparison("welch", float(res.statistic), float(res.pvalue))


def significant(c: Comparison | None, alpha: float) -> bool:
    return c is not None and not math.isnan(c.p) and c.p < alpha


@dataclass
class Verdict:
    bold: set[str]  # rows significantly best (ties at the top all bold)
    why_none: str | None  # when nothing is bold although rows could be compared: why
    tests: set[str]  # the tests used for the decision


def column_tests(rows: dict[str, dict[int, float]], correction: str = DEFAULT_CORRECTION
                 ) -> dict[tuple[str, str], tuple[Comparison | None, float]]:
    """Every pair of rows with seeds tested: (a, b) -> (comparison, p adjusted over the column's family)."""
    pairs = list(combinations([r for r, v in rows.items() if v], 2))
    comps = [compare(rows[a], rows[b]) for a, b in pairs]
    tested = [i for i, c in enumerate(comps) if c is not None]
    adjusted = adjust([comps[i].p for i in tested], correction)
    out = {pair: (c, float("nan")) for pair, c in zip(pairs, comps)}
    for i, p in zip(tested, adjusted):
        out[pairs[i]] = (comps[i], p)
    return out


def best_rows(rows: dict[str, dict[int, float]], better: str, alpha: float = ALPHA, digits: int = 12,
              correction: str = DEFAULT_CORRECTION) -> Verdict:
    """The rows whose mean is best (equal at `digits` decimals: a tie) when each of them is
    significantly better than every other row (p adjusted over all the column's pairwise tests by
    `correction`); otherwise no row, with the reason."""
    rows = {r: v for r, v in rows.items() if v}
    if len(rows) < 2:
        return Verdict(set(), None, set())
    small = sorted(r for r, v in rows.items() if len(v) < 2)
    if small:
        return Verdict(set(), f"a configuration has fewer than 2 seeds ({small[0]})", set())
    means = {r: statistics.fmean(v.values()) for r, v in rows.items()}
    sign = 1 if better == "high" else -1
    top_value = round(max(sign * m for m in means.values()), digits)
    top = {r for r, m in means.items() if round(sign * m, digits) == top_value}
    tested = column_tests(rows, correction)
    tests, beaten_by_all = set(), True
    for t in sorted(top):
        for o in sorted(set(rows) - top):
            c, p = tested.get((t, o)) or tested[(o, t)]
            tests.add(c.test)
            if not (not math.isnan(p) and p < alpha and sign * (means[t] - means[o]) > 0):
                beaten_by_all = False
    if not beaten_by_all:
        return Verdict(set(), "the best is not significantly better than every other row", tests)
    if top == set(rows):
        return Verdict(set(), "every row has the same mean", tests)
    return Verdict(top, None, tests)


def pairwise(rows: dict[str, dict[int, float]], metric: str, better: str | None, alpha: float = ALPHA,
             correction: str = DEFAULT_CORRECTION) -> list[dict]:
    """Every pair of rows tested, one dict per pair (the significance CSV's rows): raw p, and p
    adjusted over the column's family; `significant` is judged on the adjusted p."""
    out = []
    for (a, b), (c, p_adj) in column_tests(rows, correction).items():
        sa, sb = summarize(list(rows[a].values())), summarize(list(rows[b].values()))
        out.append({
            "metric": metric, "better": better or "", "row_a": a, "row_b": b, "n_a": sa.n, "n_b": sb.n,
            "mean_a": _num(sa.mean), "mean_b": _num(sb.mean), "std_a": _num(sa.std), "std_b": _num(sb.std),
            "test": TESTS[c.test] if c else "none (fewer than 2 seeds)",
            "statistic": _num(c.statistic) if c else "", "p_value": _num(c.p) if c else "",
            "correction": correction, "p_adjusted": _num(p_adj) if c else "",
            "alpha": alpha, "significant": c is not None and not math.isnan(p_adj) and p_adj < alpha,
        })
    return out


def _num(x: float | None) -> str:
    return "" if x is None else f"{x:.6g}"
