"""The human-evaluation table: a grid's blind pairwise ratings (the app's Rate page) as evals.human
aggregates them, pooled over the four judge dimensions, one row per rated cell labelled with its
configuration and seed."""

from __future__ import annotations

import math

from evals import human
from paper.collect import GridRecord
from paper.tables import latex_escape


def _f(v: float, digits: int = 2) -> str:
    return "--" if v is None or math.isnan(v) else f"{v:.{digits}f}"


def human_table(grid: GridRecord, header: str) -> str | None:
    """tables/<grid>_human.tex, or None when nobody has rated this grid's stories."""
    if not human.all_ratings(grid.path):
        return None
    report = human.summarize(grid.path)
    pooled = report["dimensions"]["all"]
    names = {c.cell: (c.config, c.seed) for c in grid.cells}
    lines = [header, r"\begin{table}[htbp]", r"\centering\small", r"\begin{tabular}{lrrrrrr}", r"\toprule",
             r"Configuration & Seed & Wins & Losses & Ties & Win rate [95\% CI] & BT \\", r"\midrule"]
    for cell in pooled["ranking"]:
        s = pooled["cells"][cell]
        config, seed = names.get(cell, (cell, "--"))
        lines.append(f"{latex_escape(config)} & {seed} & {s['wins']} & {s['losses']} & {s['ties']} & "
                     f"{_f(s['win_rate'])} [{_f(s['ci_low'])}, {_f(s['ci_high'])}] & {_f(s['bt'])} \\\\")
    judge, raters = pooled["judge"], pooled["raters"]
    caption = (f"Blind pairwise human ratings of stories from the same prompt: {report['n_ratings']} pairs rated by "
               f"{len(report['raters'])} rater(s), each on grammar, creativity, consistency and plot "
               f"({pooled['n']} comparisons pooled). Win rate = wins / (wins + losses), ties apart, with a 95\\% "
               "Wilson interval; BT = Bradley-Terry log-strength (ties as half a win each). "
               f"Agreement with the LLM judge on the same pairs: Cohen's $\\kappa$ = {_f(judge['kappa'])} over "
               f"{judge['n']} comparisons; Spearman $\\rho$ between mean judge score and BT = {_f(judge['spearman'])} "
               f"over {judge['n_cells']} cells. Between raters: $\\kappa$ = {_f(raters['kappa'])} over "
               f"{raters['n']} comparisons rated twice. Built by \\texttt{{python -m evals.human}}.")
    lines += [r"\bottomrule", r"\end{tabular}", f"\\caption{{{caption}}}",
              f"\\label{{tab:{grid.name.replace('_', '-')}-human}}", r"\end{table}"]
    return "\n".join(lines) + "\n"
