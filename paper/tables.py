"""LaTeX tables (booktabs) from collected results: one row per configuration, seeds aggregated.

Each cell of a table is mean ± sample standard deviation over the configuration's finished seeds,
with the number of seeds in its own column. The best mean of a column is bold (ties all bold). A
metric a configuration lacks is an em dash with a footnote mark; the notes under the table say why
(not configured, skipped, failed, cell failed or unfinished). Output is a pure function of the
results: the same folders give byte-identical files.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from paper.collect import CellRecord, GridRecord


@dataclass(frozen=True)
class Column:
    header: str  # LaTeX
    keys: tuple[str, ...]  # metric keys, first present wins
    better: str | None  # "low", "high" or None (no bold)
    digits: int
    eval: str | None = None  # the eval that produces it (None: the training run itself)
    spread: bool = True  # print ± std (parameter counts are the same for every seed)
    unit: str = ""  # "count": 34.5k, 1.23M, 4.56G


COLUMNS = [
    Column("Params", ("params",), None, 2, spread=False, unit="count"),
    Column("Non-emb.", ("params_non_embedding",), None, 2, spread=False, unit="count"),
    Column("FLOPs/tok", ("flops_per_token",), None, 2, spread=False, unit="count"),
    Column("Val PPL", ("val_ppl",), "low", 2),
    Column("Val bpb", ("val_bpb",), "low", 3),
    Column("Novelty", ("novelty/novelty_mean", "novelty/mean"), "high", 3, eval="novelty"),
    Column("BLiMP", ("blimp/accuracy", "blimp/acc"), "high", 3, eval="blimp"),
    Column("CoLA MCC", ("cola/mcc", "cola/mcc_in_domain"), "high", 3, eval="cola"),
    Column("HS acc\\_norm", ("hellaswag/acc_norm",), "high", 3, eval="hellaswag"),
    Column("Gram.", ("judge/grammar",), "high", 2, eval="judge"),
    Column("Creat.", ("judge/creativity",), "high", 2, eval="judge"),
    Column("Cons.", ("judge/consistency",), "high", 2, eval="judge"),
    Column("Plot", ("judge/plot",), "high", 2, eval="judge"),
]

MARKS = "abcdefghijklmnopqrstuvwxyz"


def latex_escape(text: str) -> str:
    out = []
    for ch in str(text):
        if ch in "&%$#_{}":
            out.append("\\" + ch)
        elif ch == "~":
            out.append("\\textasciitilde{}")
        elif ch == "^":
            out.append("\\textasciicircum{}")
        elif ch == "\\":
            out.append("\\textbackslash{}")
        else:
            out.append(ch)
    return "".join(out)


def value_of(cell: CellRecord, col: Column) -> float | None:
    for key in col.keys:
        v = cell.metrics.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v):
            return float(v)
    return None


def why_missing(cells: list[CellRecord], col: Column, seeds_only: bool = False) -> str:
    """The reason a configuration has no value for `col` (the first seed's reason)."""
    if seeds_only:
        cells = [c for c in cells if c.status == "done" and value_of(c, col) is None]
    for c in cells:
        if c.status == "failed":
            return f"cell failed: {c.reason}"
        if c.status != "done":
            return "cell not finished"
    if col.eval is not None:
        for c in cells:
            if col.eval in c.missing:
                return f"{col.eval} {c.missing[col.eval]}"
        if not any(col.eval in c.evals for c in cells):
            return f"{col.eval} not configured"
    return "not reported"


@dataclass
class Stat:
    mean: float
    std: float | None
    n: int


def aggregate(values: list[float]) -> Stat:
    std = statistics.stdev(values) if len(values) >= 2 else None
    return Stat(statistics.fmean(values), std, len(values))


def count(value: float) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.{1 if suffix == 'k' else 2}f}{suffix}"
    return f"{value:.0f}"


def fmt(stat: Stat, col: Column) -> str:
    if col.unit == "count":
        return count(stat.mean)
    text = f"{stat.mean:.{col.digits}f}"
    if col.spread and stat.std is not None:
        text += f" $\\pm$ {stat.std:.{col.digits}f}"
    return text


def results_table(grid: GridRecord) -> str:
    """The main results table of one grid, as a LaTeX `table` environment."""
    configs = grid.configs()
    by_config = {name: [c for c in grid.cells if c.config == name] for name in configs}
    columns = [col for col in COLUMNS if col.eval is None or any(col.eval in c.evals for c in grid.cells)]
    not_configured = sorted({col.eval for col in COLUMNS if col.eval and col not in columns})

    stats: dict[tuple[str, str], Stat | None] = {}
    seeds: dict[str, int] = {}
    for name, cells in by_config.items():
        done = [c for c in cells if c.status == "done"]
        seeds[name] = len(done)
        for col in columns:
            vals = [v for v in (value_of(c, col) for c in done) if v is not None]
            stats[(name, col.header)] = aggregate(vals) if vals else None

    best: dict[str, float] = {}
    for col in columns:
        means = [s.mean for name in configs if (s := stats[(name, col.header)]) is not None]
        if col.better and len(means) >= 2:
            best[col.header] = min(means) if col.better == "low" else max(means)

    notes: dict[str, str] = {}  # reason -> mark
    rows = []
    for name in configs:
        cells_tex = [latex_escape(name), str(seeds[name])]
        for col in columns:
            s = stats[(name, col.header)]
            if s is None:
                reason = why_missing(by_config[name], col)
                mark = notes.setdefault(reason, MARKS[len(notes) % len(MARKS)])
                cells_tex.append(f"---\\textsuperscript{{{mark}}}")
                continue
            text = fmt(s, col)
            if col.header in best and round(s.mean, 12) == round(best[col.header], 12):
                text = f"\\textbf{{{text}}}"
            if s.n < seeds[name]:  # some seeds lack this metric: say over how many it is
                reason = f"over fewer seeds than $n$: {why_missing(by_config[name], col, seeds_only=True)}"
                text += f"\\textsuperscript{{{notes.setdefault(reason, MARKS[len(notes) % len(MARKS)])}}}"
            cells_tex.append(text)
        rows.append(" & ".join(cells_tex) + r" \\")

    spec = "l r " + " ".join("r" for _ in columns)
    header = " & ".join(["Configuration", "$n$"] + [col.header for col in columns]) + r" \\"
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\scriptsize",
        r"\setlength{\tabcolsep}{3pt}",
        f"\\caption{{Results of grid \\texttt{{{latex_escape(grid.name)}}}: mean $\\pm$ sample std over $n$ seeds. "
        r"Perplexity is per token; bpb is bits per UTF-8 byte of the validation text; "
        r"FLOPs/tok are training FLOPs per token. Best value in bold.}",
        f"\\label{{tab:{_label(grid.name)}}}",
        r"\resizebox{\linewidth}{!}{%" if len(columns) > 8 else "{%",
        f"\\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        header,
        r"\midrule",
        *rows,
        r"\bottomrule",
        r"\end{tabular}}",
    ]
    note_lines = [f"\\textsuperscript{{{mark}}}{latex_escape(reason)}" for reason, mark in notes.items()]
    if not_configured:
        note_lines.append("Not configured in this grid: " + ", ".join(not_configured) + ".")
    if note_lines:
        lines.append(r"\par\smallskip\parbox{\linewidth}{\footnotesize " + "; ".join(note_lines) + "}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def _label(name: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in name)


def setup_table(grid: GridRecord) -> str:
    """The shared training set-up of a grid, from the resolved configs (what every cell has in common)."""
    configs = [c.run_config for c in grid.cells if c.run_config]
    if not configs:
        return ""
    flat = [_flatten(c) for c in configs]
    common = {k: v for k, v in flat[0].items() if all(f.get(k) == v for f in flat[1:])}
    keys = [k for k in sorted(common) if k.split(".")[0] in ("data", "tokenizer", "model", "train")
            and not k.startswith(("train.progress_bar", "train.logger", "train.accelerator", "train.devices"))]
    rows = [f"\\texttt{{{latex_escape(k)}}} & {latex_escape(_show(common[k]))} \\\\" for k in keys]
    varied = sorted({k for f in flat for k in f} - set(common))
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\scriptsize",
        f"\\caption{{Set-up shared by every cell of grid \\texttt{{{latex_escape(grid.name)}}} (resolved configs). "
        f"Varied: {latex_escape(', '.join(varied)) or 'nothing'}.}}",
        f"\\label{{tab:setup-{_label(grid.name)}}}",
        r"\begin{tabular}{ll}",
        r"\toprule",
        r"Key & Value \\",
        r"\midrule",
        *rows,
        r"\bottomrule",
        r"\end{tabular}",
        r"\end{table}",
    ]
    return "\n".join(lines) + "\n"


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _show(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ", ".join(_show(v) for v in value) if value else "[]"
    if isinstance(value, dict):
        return "{}"
    return str(value)
