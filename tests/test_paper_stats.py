"""Holm's step-down correction against the worked example of Holm (1979) as Wikipedia's
"Holm-Bonferroni method" article states it, and the bold rule with and without it."""

from __future__ import annotations

import math

import pytest

from paper import stats


def test_holm_matches_the_worked_example():
    # Four hypotheses, p = 0.01, 0.04, 0.03, 0.005, alpha = 0.05: sorted, 0.005 < 0.05/4 and
    # 0.01 < 0.05/3 are rejected, 0.03 > 0.05/2 stops the procedure (H1 and H4 rejected).
    p = [0.01, 0.04, 0.03, 0.005]
    adjusted = stats.holm(p)
    # by hand: 4 x 0.005 = 0.02; 3 x 0.01 = 0.03; 2 x 0.03 = 0.06; max(0.06, 1 x 0.04) = 0.06
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert [a < 0.05 for a in adjusted] == [True, False, False, True]


def test_holm_caps_at_one_keeps_order_and_skips_undefined_tests():
    adjusted = stats.holm([0.5, float("nan"), 0.4])  # m = 2: 2 x 0.4 = 0.8, then max(0.8, 0.5)
    assert adjusted[0] == pytest.approx(0.8) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.8)
    assert stats.holm([0.6, 0.55]) == [1.0, 1.0]
    assert stats.adjust([0.5, 0.4], "none") == [0.5, 0.4]


def test_bold_needs_the_corrected_p_unless_the_comparison_was_planned():
    # best row A against four others; each raw p is below 0.05 but not below 0.05 after Holm over 10 pairs
    rows = {"A": {0: 1.0, 1: 1.1, 2: 0.9}}
    for k, name in enumerate("BCDE"):
        rows[name] = {0: 1.5 + k * 0.01, 1: 1.45 + k * 0.01, 2: 1.55 + k * 0.01}
    raw = {(r["row_a"], r["row_b"]): float(r["p_value"]) for r in stats.pairwise(rows, "m", "low", 0.05, "none")}
    a_vs = [p for (a, b), p in raw.items() if a == "A"]
    assert all(p < 0.05 for p in a_vs) and max(a_vs) * 10 > 0.05
    assert stats.best_rows(rows, "low", 0.05, correction="none").bold == {"A"}
    held = stats.best_rows(rows, "low", 0.05, correction="holm")
    assert held.bold == set() and "not significantly better" in held.why_none
    rows_csv = stats.pairwise(rows, "m", "low", 0.05, "holm")
    adjusted = stats.holm([float(r["p_value"]) for r in rows_csv])
    assert [float(r["p_adjusted"]) for r in rows_csv] == pytest.approx(adjusted, rel=1e-5)
    assert all(r["correction"] == "holm" for r in rows_csv)
