"""Dataset-quality results: the train x eval corpus matrix (heatmap and table) and what cleaning did.

Cells that ran the `cross_corpus` eval (evals.cross_corpus) carry `cross_corpus/<corpus>_bpb` per
eval corpus: bits per UTF-8 byte of that corpus's validation text. The heatmap puts training
configurations on the rows and eval corpora on the columns, mean over seeds in each square with the
spread in its text; the table has one row per eval corpus and bolds, in each row, the training
configuration that is significantly best on that corpus (paper.stats, with the table's
correction). The cleaning table reads each configuration's cleaning counts (manifest.json:
data.cleaning, training split): documents and characters each step changed or dropped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from paper import stats
from paper.collect import GridRecord
from paper.tables import SPREADS, TableOptions, correction_text, latex_escape

PREFIX = "cross_corpus/"


def corpora(grid: GridRecord) -> list[str]:
    """Eval corpus names, in the order the cells' options list them."""
    names: dict[str, None] = {}
    for c in grid.cells:
        listed = (c.run_config.get("eval", {}).get("options", {}).get("cross_corpus") or {}).get("corpora") or {}
        for name in listed:
            if f"{PREFIX}{name}_bpb" in c.metrics:
                names.setdefault(name, None)
    return list(names)


def matrix(grid: GridRecord) -> tuple[list[str], list[str], dict]:
    """(configurations, corpora, (config, corpus) -> {"bpb": seed -> value, "unk": mean unk share})."""
    names = corpora(grid)
    configs = [cf for cf in grid.configs() if any(c.config == cf and c.status == "done" for c in grid.cells)]
    out = {}
    for cf in configs:
        done = [c for c in grid.cells if c.config == cf and c.status == "done"]
        for name in names:
            bpb = {c.seed: c.metrics[f"{PREFIX}{name}_bpb"] for c in done if f"{PREFIX}{name}_bpb" in c.metrics}
            unk = [c.metrics.get(f"{PREFIX}{name}_unk_share", 0.0) for c in done]
            out[(cf, name)] = {"bpb": bpb, "unk": float(np.mean(unk)) if unk else 0.0}
    return configs, names, out


def cross_corpus_table(grid: GridRecord, opts: TableOptions) -> tuple[str, list[dict]] | None:
    """The matrix as a LaTeX table (rows: eval corpora; columns: training configurations) and its
    pairwise tests (one row per eval corpus and pair of training configurations)."""
    configs, names, cells = matrix(grid)
    if not names or not configs:
        return None
    significance, rows_tex, unbold, tests = [], [], {}, set()
    for name in names:
        per_seed = {cf: cells[(cf, name)]["bpb"] for cf in configs}
        verdict = stats.best_rows(per_seed, "low", opts.alpha, 3, opts.correction)
        tests |= verdict.tests
        if verdict.why_none:
            unbold.setdefault(verdict.why_none, []).append(name)
        significance += stats.pairwise(per_seed, f"{PREFIX}{name}_bpb", "low", opts.alpha, opts.correction)
        row = [latex_escape(name)]
        for cf in configs:
            values = per_seed[cf]
            if not values:
                row.append("---")
                continue
            s = stats.summarize(list(values.values()))
            width = SPREADS[opts.spread][1](s)
            text = f"{s.mean:.3f}" + (f" $\\pm$ {width:.3f}" if width is not None else "")
            if cf in verdict.bold:
                text = f"\\textbf{{{text}}}"
            if cells[(cf, name)]["unk"] > 0:
                text += "$^{u}$"
            row.append(text)
        rows_tex.append(" & ".join(row) + r" \\")
    used = [stats.TESTS[t] for t in sorted(tests)] or list(stats.TESTS.values())
    n = sorted({len(cells[(cf, nm)]["bpb"]) for cf in configs for nm in names})
    caption = (f"Grid \\texttt{{{latex_escape(grid.name)}}}: bits per UTF-8 byte of each eval corpus's validation "
               f"text (rows) for the model trained on each corpus (columns), mean $\\pm$ "
               f"{SPREADS[opts.spread][0]} over $n = {'/'.join(map(str, n))}$ seeds. In each row, bold: best and "
               f"significantly better than every other column ({' / '.join(used).replace('t-test', '$t$-test')}, "
               f"two-sided, {correction_text(opts.correction, 'row')} $p < {opts.alpha:g}$; tests in "
               f"\\texttt{{{latex_escape(grid.name)}\\_significance.csv}}). $^u$: part of the text is outside the "
               "model's vocabulary and was scored as \\texttt{<unk>} (share in the cell's cross\\_corpus results).")
    for why, rows in unbold.items():
        why = why.replace("every other row", "every other column")  # here rows are eval corpora
        caption += f" Nothing bold for {latex_escape(', '.join(rows))}: {latex_escape(why)}."
    caption += "".join(f" {note}" for note in opts.notes)
    header = " & ".join(["Eval corpus"] + [latex_escape(cf) for cf in configs]) + r" \\"
    lines = [opts.header, r"\begin{table}[htbp]", r"\centering", r"\scriptsize", r"\setlength{\tabcolsep}{3pt}",
             f"\\caption{{{caption}}}", f"\\label{{tab:{_label(grid.name)}-cross-corpus}}",
             r"\resizebox{\linewidth}{!}{%", f"\\begin{{tabular}}{{l {' '.join('r' for _ in configs)}}}",
             r"\toprule", header, r"\midrule", *rows_tex, r"\bottomrule", r"\end{tabular}}", r"\end{table}"]
    return "\n".join(lines) + "\n", significance


#: cleaning steps as counted by research.data.cleaning, in the order they run
STEPS = [("encoding_repaired", "Encoding repaired"), ("normalized", "Normalised"), ("dropped_short", "Too short"),
         ("dropped_incomplete", "Incomplete"), ("dropped_vocab", "Rare words")]


def cleaning_counts(cell) -> dict | None:
    """The training split's counts, the vocabulary pass (restrict_vocab) merged in."""
    cleaning = (cell.manifest.get("data") or {}).get("cleaning") or {}
    train = dict(cleaning.get("train") or {})
    if not train:
        return None
    vocab = cleaning.get("train_vocab") or {}
    for key in ("dropped_vocab", "dropped_vocab_chars"):
        if key in vocab:
            train[key] = vocab[key]
    if vocab:
        train["docs_out"], train["chars_out"] = vocab.get("docs_out"), vocab.get("chars_out")
    return train


def cleaning_table(grid: GridRecord, header: str) -> str:
    """Documents and characters each cleaning step changed or dropped, per configuration whose
    cleaning did anything (training split, as recorded with the cell)."""
    rows = []
    for cf in grid.configs():
        cell = next((c for c in grid.cells if c.config == cf and c.status == "done"), None)
        counts = cleaning_counts(cell) if cell is not None else None
        if counts is not None:
            rows.append((cf, cell, counts))
    ran = [(k, name) for k, name in STEPS if any(k in counts for _, _, counts in rows)]
    if not rows or not any(counts.get(k) for _, _, counts in rows for k, _ in ran):
        return ""
    body = []
    for cf, _, counts in rows:
        out = [latex_escape(cf), _n(counts.get("docs_in")), _n(counts.get("chars_in"))]
        for key, _ in ran:
            out.append(f"{_n(counts[key])} / {_n(counts.get(f'{key}_chars'))}" if key in counts else "off")
        out += [_n(counts.get("docs_out")), _n(counts.get("chars_out"))]
        body.append(" & ".join(out) + r" \\")
    head = ["Configuration", "Docs in", "Chars in", *[n for _, n in ran], "Docs out", "Chars out"]
    caption = (f"Cleaning in grid \\texttt{{{latex_escape(grid.name)}}} (training split, from each cell's manifest): "
               "for each step, the documents it changed or dropped / the characters involved (the changed span of a "
               "modified document, all of a dropped one); off: the step was not enabled. Chars out also lack the "
               "whitespace stripped from both ends of every document. Seeds share the data.")
    lines = [header, r"\begin{table}[htbp]", r"\centering", r"\scriptsize", r"\setlength{\tabcolsep}{3pt}",
             f"\\caption{{{caption}}}", f"\\label{{tab:{_label(grid.name)}-cleaning}}",
             r"\resizebox{\linewidth}{!}{%", f"\\begin{{tabular}}{{l {' '.join('r' for _ in head[1:])}}}",
             r"\toprule", " & ".join(head) + r" \\", r"\midrule", *body, r"\bottomrule", r"\end{tabular}}",
             r"\end{table}"]
    return "\n".join(lines) + "\n"


def _n(value) -> str:
    if value is None:
        return "---"
    return f"{int(value):,}".replace(",", "{,}")


def _label(name: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in name)


def cross_corpus_matrix(grid: GridRecord, out_dir: Path) -> str | None:
    """The heatmap: training configuration x eval corpus, colour = mean bpb over seeds, text = mean,
    ± sample std, and the <unk> share where the eval text left the model's vocabulary."""
    from paper.figures import NOTES, _style, plt, save

    configs, names, cells = matrix(grid)
    if not names or not configs:
        return None
    _style()
    means = np.full((len(configs), len(names)), np.nan)
    for i, cf in enumerate(configs):
        for j, name in enumerate(names):
            values = list(cells[(cf, name)]["bpb"].values())
            if values:
                means[i, j] = np.mean(values)
    fig, ax = plt.subplots(figsize=(1.25 * len(names) + 2.6, 0.55 * len(configs) + 1.6))
    image = ax.imshow(means, cmap="viridis_r", aspect="auto")
    finite = means[np.isfinite(means)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0
    for i, cf in enumerate(configs):
        for j, name in enumerate(names):
            values = list(cells[(cf, name)]["bpb"].values())
            if not values:
                ax.text(j, i, "—", ha="center", va="center", fontsize=7)
                continue
            s = stats.summarize(values)
            text = f"{s.mean:.2f}" + (f"\n±{s.std:.2f}" if s.std is not None else "")
            unk = cells[(cf, name)]["unk"]
            if unk > 0:
                text += f"\nunk {unk:.0%}" if unk >= 0.005 else "\nunk <1%"
            ax.text(j, i, text, ha="center", va="center", fontsize=6,
                    color="white" if s.mean > middle else "black")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(configs)), configs)
    ax.set_xlabel("eval corpus (validation split)")
    ax.set_ylabel("trained on")
    ax.spines[:].set_visible(False)
    fig.colorbar(image, ax=ax, label="bits per byte (lower is better)", shrink=0.8)
    n = sorted({len(cells[k]["bpb"]) for k in cells if cells[k]["bpb"]})
    ax.set_title(f"{grid.name}: mean over seeds (n={'/'.join(map(str, n))}), ± sample std", fontsize=8)
    fig.tight_layout()
    stem = f"{grid.name}_cross_corpus"
    unk = sorted({name for (cf, name), v in cells.items() if v["unk"] > 0})
    NOTES[stem] = ("Each square: mean bits per byte over seeds, $\\pm$ sample standard deviation"
                   + (f"; unk: share of the eval text outside the model's vocabulary, scored as "
                      f"\\texttt{{<unk>}} ({latex_escape(', '.join(unk))})." if unk else "."))
    return save(fig, out_dir, stem)
