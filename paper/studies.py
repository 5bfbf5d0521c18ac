"""Study-specific outputs a grid earns by what it ran, next to the generic results table.

- **Length generalisation**: cells whose per_position eval scored beyond the training context
  (`context_multiple` > 1) get a table of the loss within and beyond the training length T
  (`<grid>_length_results.tex`) and a figure of loss against position with T marked
  (`<grid>_length.pdf`), one curve per configuration (mean over seeds, shaded min to max).
- **Selected axis**: a grid with `select:` (e.g. the learning rate per optimizer) gets the results
  table and the loss curves of the chosen cells only (`<grid>_selected_results.tex`,
  `<grid>_selected_loss_curves.pdf`), the choice the runner made on validation and wrote to
  `selected.csv` (ablations.select), so the test metrics never take part in it.

Both read only results files (each cell's metrics and evals, summary.csv, selected.csv), as the
rest of paper/ does.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np

from ablations import records
from paper import figures, stats
from paper.collect import GridRecord
from paper.tables import SPREADS, Column, TableOptions, correction_text, fmt, latex_escape, results_table

LENGTH_COLUMNS = [
    Column("Loss $\\le T$", ("per_position/loss_within",), "low", 3, eval="per_position"),
    Column("Loss $> T$", ("per_position/loss_beyond",), "low", 3, eval="per_position"),
    Column("Last position", ("per_position/loss_last",), "low", 3, eval="per_position"),
]


def _extended_curve(cell) -> tuple[int, list[float]] | None:
    """(training context T, loss at each position) when the cell's per_position eval went beyond T."""
    path = records.eval_path(cell.path, "per_position") if cell.path else None
    if path is None or not path.exists():
        return None
    data = json.loads(path.read_text())
    details = data.get("details") or {}
    trained, window, recs = details.get("trained_context"), details.get("window"), details.get("records") or []
    if data.get("status") != "ok" or not trained or not window or window <= trained or not recs:
        return None
    return int(trained), recs[-1]["loss_by_position"]


def length_curves(grid: GridRecord) -> dict[str, tuple[int, list[list[float]]]]:
    """Configuration -> (T, one curve per finished seed) for cells scored beyond T."""
    out: dict[str, tuple[int, list[list[float]]]] = {}
    for config in grid.configs():
        got = [c for c in (_extended_curve(cell) for cell in grid.cells
                           if cell.config == config and cell.status == "done") if c]
        if got:
            out[config] = (got[0][0], [curve for _, curve in got])
    return out


def length_figure(grid: GridRecord, out_dir: Path) -> str | None:
    """One panel per positional encoding (model.pos), one curve per configuration in it."""
    curves = length_curves(grid)
    if not curves:
        return None
    import matplotlib.pyplot as plt

    pos_of = {c.config: str(c.run_config.get("model", {}).get("pos", "")) for c in grid.cells}
    panels = list(dict.fromkeys(pos_of[config] for config in curves))
    figures._style()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 0.4, 3.4), squeeze=False, sharey=True)
    handles, labels, trained = [], [], set()
    for i, (config, (T, seeds)) in enumerate(curves.items()):
        ax = axes[0, panels.index(pos_of[config])]
        width = min(len(c) for c in seeds)
        values = np.array([c[:width] for c in seeds])
        x = np.arange(1, width + 1)
        color = f"C{i % 10}"
        (line,) = ax.plot(x, values.mean(0), color=color, lw=1.0)
        if len(seeds) > 1:
            ax.fill_between(x, values.min(0), values.max(0), color=color, alpha=0.12, lw=0)
        handles.append(line)
        labels.append(f"{config} (n={len(seeds)})")
        trained.add(T)
    for ax, pos in zip(axes[0], panels):
        for T in sorted(trained):
            ax.axvline(T, color="0.3", lw=0.8, ls="--")
            ax.annotate(f"training length T={T}", (T, 1), xycoords=("data", "axes fraction"), xytext=(3, -10),
                        textcoords="offset points", fontsize=7, color="0.3")
        ax.set_title(f"model.pos: {pos}" if pos else "")
        ax.set_xlabel("context position (tokens seen)")
    axes[0, 0].set_ylabel("loss (nats/token)")
    bottom = figures.legend_below(fig, handles, labels)
    fig.suptitle(f"{grid.name}: loss by position beyond the training length, mean over seeds "
                 "(shaded: min to max)", fontsize=8)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    return figures.save(fig, out_dir, f"{grid.name}_length")


def length_table(grid: GridRecord, opts: TableOptions) -> tuple[str, list[dict]] | None:
    """Loss within and beyond the training length, mean ± spread over seeds, bold by the test."""
    curves = length_curves(grid)
    if not curves:
        return None
    configs = [c for c in grid.configs() if c in curves]
    Ts = sorted({T for T, _ in curves.values()})
    rows_tex, significance, tests, unbold = [], [], set(), {}
    per_seed = {}
    for col in LENGTH_COLUMNS:
        rows = {name: {c.seed: float(c.metrics[col.keys[0]]) for c in grid.cells
                       if c.config == name and c.status == "done" and col.keys[0] in c.metrics} for name in configs}
        per_seed[col.header] = rows
        verdict = stats.best_rows(rows, col.better, opts.alpha, col.digits, opts.correction)
        per_seed[col.header + "/bold"] = verdict.bold
        tests |= verdict.tests
        if verdict.why_none:
            unbold.setdefault(verdict.why_none, []).append(col.header)
        significance += stats.pairwise(rows, col.keys[0], col.better, opts.alpha, opts.correction)
    for name in configs:
        cells = [c for c in grid.cells if c.config == name and c.status == "done"]
        params = next((c.metrics.get("params") for c in cells if c.metrics.get("params")), None)
        line = [latex_escape(name), str(len(cells)), "---" if params is None else f"{params / 1e3:.1f}k"]
        for col in LENGTH_COLUMNS:
            values = list(per_seed[col.header][name].values())
            if not values:
                line.append("---")
                continue
            text = fmt(stats.summarize(values), col, opts.spread)
            line.append(f"\\textbf{{{text}}}" if name in per_seed[col.header + "/bold"] else text)
        rows_tex.append(" & ".join(line) + r" \\")
    used = [stats.TESTS[t].replace("t-test", "$t$-test") for t in sorted(tests)] or ["paired $t$-test"]
    caption = (f"Length generalisation in grid \\texttt{{{latex_escape(grid.name)}}}: loss (nats/token) averaged "
               f"over context positions 1..$T$ (the training length, $T$ = {', '.join(map(str, Ts))}) and "
               f"$T$+1..the evaluated length, and at the last position; mean $\\pm$ {SPREADS[opts.spread][0]} over "
               f"$n$ seeds, each seed scoring the same seeded validation windows. Bold: best and significantly "
               f"better than every other row ({' or '.join(used)} over seeds, two-sided, "
               f"{correction_text(opts.correction)} $p < {opts.alpha:g}$); raw and adjusted pairwise $p$-values in "
               f"\\texttt{{{latex_escape(grid.name)}\\_length\\_significance.csv}}.")
    for why, cols in unbold.items():
        caption += f" Nothing bold in {', '.join(cols)}: {latex_escape(why)}."
    label = "".join(ch if ch.isalnum() else "-" for ch in grid.name)
    lines = [opts.header, r"\begin{table}[htbp]", r"\centering", r"\scriptsize",
             f"\\caption{{{caption}}}", f"\\label{{tab:{label}-length}}",
             r"\begin{tabular}{l r r " + " ".join("r" for _ in LENGTH_COLUMNS) + "}", r"\toprule",
             " & ".join(["Configuration", "$n$", "Params"] + [c.header for c in LENGTH_COLUMNS]) + r" \\",
             r"\midrule", *rows_tex, r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n", significance


def selected_grid(grid: GridRecord) -> tuple[GridRecord, dict] | None:
    """The grid restricted to the cells of the value `select:` chose per group, or None.

    The choice is the runner's, read from `selected.csv` (ablations.select): its rows name the
    other axes' values and the chosen one as `summary.csv` writes them, which names the cells."""
    selected, summary = _read_csv(grid.path / "selected.csv"), _read_csv(records.summary_path(grid.path))
    column = next((c for c in (selected[0] if selected else {}) if c.startswith("selected ")), None)
    if column is None or not summary:
        return None
    axis, _, by = column[len("selected "):].partition(" (lowest mean ")
    by = by.rstrip(")")
    others = [a for a in grid.axes if a != axis]
    chosen = {tuple(r.get(a, "") for a in others): r[column] for r in selected if r[column] != ""}
    ids = {r["cell"] for r in summary if chosen.get(tuple(r.get(a, "") for a in others)) == r.get(axis)}
    keep = [c for c in grid.cells if c.cell in ids]
    if not keep:
        return None
    return dataclasses.replace(grid, name=f"{grid.name}_selected", cells=keep), {"axis": axis, "by": by}


def _read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def selected_outputs(grid: GridRecord, opts: TableOptions, figures_dir: Path | None
                     ) -> tuple[str, list[dict], str | None] | None:
    """(table, significance rows, loss-curve figure stem) of the selected cells, or None."""
    picked = selected_grid(grid)
    if picked is None:
        return None
    sub, select = picked
    table, significance = results_table(sub, opts)
    note = (f"Each row at the value of \\texttt{{{latex_escape(select['axis'])}}} selected on "
            f"\\texttt{{{latex_escape(select['by'])}}} (lowest mean over seeds, among values every seed finished; "
            f"ablations.select; the sweep is in \\texttt{{selected.csv}}). ")
    table = table.replace("\\caption{", "\\caption{" + note, 1)
    stem = figures.loss_curves(sub, figures_dir) if figures_dir is not None else None
    return table, significance, stem
