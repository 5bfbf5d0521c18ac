"""`python -m paper.build RESULTS_GRID_DIR ... [--out paper/] [--pdf]`: every table and figure from results.

    python -m paper.build results/demo                 # paper/tables/*.tex, paper/figures/*.{pdf,png}
    python -m paper.build results/demo results/architecture_cpu --pdf   # and compile paper/main.tex

Reads only what grids left on disk (grid.json, each cell's config.yaml, manifest.json, metrics.json,
metrics.csv, evals/*.json, per_position.json, model.pt for attention maps); nothing is retrained.
Writes, per grid, `tables/<grid>_results.tex` with `<grid>_results.provenance.json` (each row's
cells, seeds and code versions) and `<grid>_significance.csv` (every pairwise test, raw and
Holm-adjusted p; `--correction none` for one planned comparison), `<grid>_human.tex` once its stories
are rated on the app's Rate page (evals.human), `<grid>_cross_corpus.tex` and `<grid>_cleaning.tex`
for a dataset-quality grid (paper.datasets), then
`generated/results.tex`, which `main.tex` inputs: the tables, the figures and, for each figure that
could not be drawn, the reason. A row whose cells ran different commits or configs is refused
unless --allow-mixed. The same results give byte-identical tables.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from paper import datasets, figures, studies
from paper.collect import GridRecord, load_grid_dir
from paper.convergence import still_falling
from paper.human import human_table
from paper.knowledge import knowledge_vs_params
from paper.provenance import ALLOW_FLAG, check_rows, generated_header, provenance
from paper.stats import ALPHA, CORRECTIONS, DEFAULT_CORRECTION
from paper.tables import SPREADS, TableOptions, latex_escape, results_table, setup_table
from research.errors import UserError, run_main
from research.io import atomic_write_csv, atomic_write_text

SIGNIFICANCE_COLUMNS = ["metric", "better", "row_a", "row_b", "n_a", "n_b", "mean_a", "mean_b", "std_a", "std_b",
                        "test", "statistic", "p_value", "correction", "p_adjusted", "alpha", "significant"]

TEX_INSTALL = ("sudo apt-get install --no-install-recommends texlive-latex-base texlive-latex-recommended "
               "lmodern latexmk")


def command_line(grid_dirs: list[Path], alpha: float = ALPHA, spread: str = "std", allow_mixed: bool = False,
                 correction: str = DEFAULT_CORRECTION) -> str:
    """The command that rebuilds these tables (the output folder aside), for their first line."""
    args = [str(p) for p in grid_dirs]
    args += [ALLOW_FLAG] if allow_mixed else []
    args += ["--spread", spread] if spread != "std" else []
    args += ["--alpha", f"{alpha:g}"] if alpha != ALPHA else []
    args += ["--correction", correction] if correction != DEFAULT_CORRECTION else []
    return "python -m paper.build " + shlex.join(args)


def build(grid_dirs: list[Path], out: Path, alpha: float = ALPHA, spread: str = "std",
          allow_mixed: bool = False, tables_only: bool = False, correction: str = DEFAULT_CORRECTION) -> dict:
    grids = [load_grid_dir(p) for p in grid_dirs]
    names = [g.name for g in grids]
    if len(set(names)) != len(names):
        raise UserError(f"two results folders hold the same grid name: {names}")
    mixed = {g.name: check_rows(g, allow_mixed) for g in grids}  # refuses before anything is written
    command = command_line(grid_dirs, alpha, spread, allow_mixed, correction)
    tables_dir, figures_dir = out / "tables", out / "figures"
    tables, made, skipped = [], [], []
    for grid in grids:
        header = generated_header(command, [grid])
        prov_name = f"{grid.name}_results.provenance.json"
        falling = still_falling(grid)
        opts = TableOptions(header, alpha, spread, mixed[grid.name], f"tables/{prov_name}", correction,
                            (falling,) if falling else ())
        results, significance = results_table(grid, opts)
        extra, extra_significance = dataset_tables(grid, opts)
        significance += extra_significance
        for kind, text in (("results", results), ("setup", setup_table(grid, header)),
                           ("human", human_table(grid, header)), *extra):
            if text:
                path = tables_dir / f"{grid.name}_{kind}.tex"
                atomic_write_text(path, text)
                tables.append(path)
        record = provenance(grid, command, f"tables/{grid.name}_results.tex", mixed[grid.name],
                            {"significance": {"file": f"tables/{grid.name}_significance.csv", "alpha": alpha,
                                              "spread": spread, "correction": correction}})
        atomic_write_text(tables_dir / prov_name, json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
        atomic_write_csv(tables_dir / f"{grid.name}_significance.csv", significance, SIGNIFICANCE_COLUMNS)
        made += study_outputs(grid, opts, tables_dir, None if tables_only else figures_dir, tables)
        for fn, what in () if tables_only else ((figures.loss_curves, "loss curves"),
                                                 (figures.per_position, "per-position loss"),
                                                 (datasets.cross_corpus_matrix, "train corpus against eval corpus")):
            if fn is datasets.cross_corpus_matrix and not any("cross_corpus" in c.evals for c in grid.cells):
                continue  # not a dataset-quality grid: nothing to say about a missing matrix
            stem = fn(grid, figures_dir)
            (made if stem else skipped).append((stem, f"{what} ({grid.name})",
                                                None if stem else _why(fn, grid)))
    for fn, what, why in () if tables_only else (
        (figures.novelty_vs_perplexity, "novelty against perplexity", "no cell ran the novelty eval"),
        (figures.bpb_vs_size, "validation bits per byte against model size and training FLOPs", "no finished cell"),
        (figures.attention_figure, "attention maps", "no finished cell has an attention model"),
        (knowledge_vs_params, "knowledge eval scores against parameters (mean over seeds, bars: lowest to "
         "highest seed; dotted: chance)", "no cell ran the knowledge eval"),
    ):
        stem = fn(grids, figures_dir)
        (made if stem else skipped).append((stem, what, None if stem else why))
    atomic_write_text(out / "generated" / "results.tex",
                      results_tex(grids, tables, made, skipped, out, generated_header(command, grids)))
    return {"tables": tables, "figures": [m for m in made if m[0]], "skipped": [s for s in skipped if not s[0]]}


def study_outputs(grid: GridRecord, opts: TableOptions, tables_dir: Path, figures_dir: Path | None,
                  tables: list[Path]) -> list[tuple[str, str, None]]:
    """paper.studies' tables (appended to `tables`) and figures (returned) where the grid ran them."""
    made = []
    length = studies.length_table(grid, opts)
    if length is not None:
        tables.append(tables_dir / f"{grid.name}_length_results.tex")
        atomic_write_text(tables[-1], length[0])
        atomic_write_csv(tables_dir / f"{grid.name}_length_significance.csv", length[1], SIGNIFICANCE_COLUMNS)
        stem = studies.length_figure(grid, figures_dir) if figures_dir is not None else None
        if stem:
            made.append((stem, f"loss against position beyond the training length ({grid.name})", None))
    selected = studies.selected_outputs(grid, opts, figures_dir)
    if selected is not None:
        tables.append(tables_dir / f"{grid.name}_selected_results.tex")
        atomic_write_text(tables[-1], selected[0])
        atomic_write_csv(tables_dir / f"{grid.name}_selected_significance.csv", selected[1], SIGNIFICANCE_COLUMNS)
        if selected[2]:
            made.append((selected[2], f"loss curves at the selected values ({grid.name})", None))
    return made


def _why(fn, grid: GridRecord) -> str:
    if not any(c.status == "done" for c in grid.cells):
        return "no finished cell"
    if fn is figures.per_position:
        return "no per-position records (set eval.per_position_every or run the per_position eval)"
    if fn is datasets.cross_corpus_matrix:
        return "no cell ran the cross_corpus eval"
    return "no logged curves"


def results_tex(grids, tables, made, skipped, out: Path, header: str) -> str:
    lines = [header, ""]
    for grid in grids:
        lines.append(f"\\subsection{{Grid \\texttt{{{latex_escape(grid.name)}}}}}")
        if grid.description:
            lines.append(latex_escape(grid.description))
        lines.append("")
        for path in tables:
            if path.name.startswith(f"{grid.name}_"):
                lines.append(f"\\input{{{path.relative_to(out).as_posix()}}}")
        lines.append("")
    for stem, what, _ in made:
        if not stem:
            continue
        lines += [r"\begin{figure}[htbp]", r"\centering",
                  f"\\includegraphics[width=\\linewidth,height=0.4\\textheight,keepaspectratio]{{figures/{stem}.pdf}}",
                  f"\\caption{{{latex_escape(what[0].upper() + what[1:])}.{figure_note(stem)}}}",
                  f"\\label{{fig:{stem.replace('_', '-')}}}", r"\end{figure}", ""]
    missing = [(what, why) for stem, what, why in skipped if not stem]
    if missing:
        lines.append(r"\paragraph{Figures not drawn.}")
        lines.append("; ".join(f"{latex_escape(w)}: {latex_escape(y)}" for w, y in missing) + ".")
    return "\n".join(lines) + "\n"


def figure_note(stem: str) -> str:
    """What a figure function found worth saying in the caption (LaTeX, with a leading space)."""
    note = figures.NOTES.get(stem)
    return f" {note}" if note else ""


def dataset_tables(grid: GridRecord, opts: TableOptions) -> tuple[list[tuple[str, str]], list[dict]]:
    """The dataset-quality tables of a grid ((kind, LaTeX) pairs: the cross-corpus matrix where cells
    ran cross_corpus, the cleaning counts where cleaning changed anything) and the matrix's tests."""
    out, significance = [], []
    matrix = datasets.cross_corpus_table(grid, opts)
    if matrix:
        out.append(("cross_corpus", matrix[0]))
        significance = matrix[1]
    cleaning = datasets.cleaning_table(grid, opts.header)
    if cleaning:
        out.append(("cleaning", cleaning))
    return out, significance


def check_pdf_build(out: Path) -> None:
    """What compiling needs, checked before anything is written."""
    if shutil.which("latexmk") is None:
        raise UserError(f"latexmk not found: install TeX to build the PDF ({TEX_INSTALL}), or drop --pdf")
    if not (out / "main.tex").exists():
        raise UserError(f"{out / 'main.tex'}: not found; --out must be the paper folder that holds main.tex "
                        f"(copy paper/main.tex and paper/variants.tex there), or drop --pdf; nothing was written")


def compile_pdf(out: Path) -> Path:
    check_pdf_build(out)
    proc = subprocess.run(["latexmk", "-pdf", "-interaction=nonstopmode", "-halt-on-error", "-output-directory=build",
                           "main.tex"], cwd=out, capture_output=True, text=True)
    if proc.returncode != 0:
        log = out / "build" / "main.log"
        raise UserError(f"LaTeX failed (see {log}): " + _first_error(proc.stdout + proc.stderr))
    return out / "build" / "main.pdf"


def _first_error(text: str) -> str:
    for line in text.splitlines():
        if line.startswith("!"):
            return line
    return text.strip().splitlines()[-1] if text.strip() else "unknown error"


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m paper.build", description=__doc__.splitlines()[0])
    p.add_argument("grids", nargs="+", type=Path, help="results folders of grids (results/<grid name>)")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="paper folder (default: paper/)")
    p.add_argument("--pdf", action="store_true", help="also compile main.tex with latexmk")
    p.add_argument("--alpha", type=float, default=ALPHA, help="significance level for bold values (default 0.05)")
    p.add_argument("--spread", choices=sorted(SPREADS), default="std",
                   help="what follows ±: sample std (default), standard error, or 95%% confidence half-width")
    p.add_argument("--correction", choices=list(CORRECTIONS), default=DEFAULT_CORRECTION,
                   help="family-wise correction of the bold rule: holm (default), or none for one planned comparison")
    p.add_argument("--tables-only", action="store_true", help="write the tables, no figures (seconds faster per grid)")
    p.add_argument(ALLOW_FLAG, action="store_true",
                   help="average rows whose cells ran different commits or configs (the caption says so)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    for g in args.grids:
        if not g.is_dir():
            raise UserError(f"{g}: no such results folder")
    if not 0 < args.alpha < 1:
        raise UserError(f"--alpha {args.alpha:g}: a significance level lies between 0 and 1, e.g. --alpha 0.05")
    if args.pdf:
        check_pdf_build(args.out)
    result = build(args.grids, args.out, args.alpha, args.spread, args.allow_mixed, args.tables_only,
                   args.correction)
    for path in result["tables"]:
        print(f"table   {path}")
    for stem, what, _ in result["figures"]:
        print(f"figure  {args.out / 'figures' / stem}.pdf  ({what})")
    for _, what, why in result["skipped"]:
        print(f"skipped {what}: {why}")
    if args.pdf:
        print(f"pdf     {compile_pdf(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
