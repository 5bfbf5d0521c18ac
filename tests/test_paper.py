"""The paper pipeline on results made by a real tiny grid: tables, figures, determinism, PDF."""

from __future__ import annotations

import csv
import json
import shutil
import statistics

import pytest

from paper.build import build, compile_pdf
from tests.helpers import REPO, run_cli, write_grid


@pytest.fixture(scope="module")
def grid_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper")
    grid = write_grid(root / "g.yaml", name="ptest", grid={"model.n_embd": [16, 24], "train.lr": [3e-3, 1e9]},
                      seeds=(0, 1))
    proc = run_cli(grid, "--results-dir", root / "results")
    assert proc.returncode == 1, proc.stderr  # the lr=1e9 cells diverge and fail; the others finish
    return root / "results" / "ptest"


def test_tables_aggregate_seeds(grid_dir, tmp_path):
    out = tmp_path / "paper"
    result = build([grid_dir], out)
    table = (out / "tables" / "ptest_results.tex").read_text()
    rows = list(csv.DictReader(open(grid_dir / "summary.csv")))
    ok = [r for r in rows if r["model.n_embd"] == "16" and r["train.lr"] == "0.003"]
    bpbs = [float(r["val_bpb"]) for r in ok]
    expected = f"{statistics.fmean(bpbs):.3f} $\\pm$ {statistics.stdev(bpbs):.3f}"
    line = next(ln for ln in table.splitlines() if ln.startswith("n\\_embd=16, lr=0.003"))
    assert expected in line and " & 2 & " in line  # mean ± sample std over the two seeds
    assert "\\textbf{" in table and "\\toprule" in table and "\\bottomrule" in table
    failed = next(ln for ln in table.splitlines() if ln.startswith("n\\_embd=16, lr=1e+09"))
    assert "---\\textsuperscript{a}" in failed and " & 0 & " in failed
    assert "cell failed: DivergedError: loss became nan" in table  # the footnote says why
    stems = {stem for stem, _, _ in result["figures"]}
    assert {"ptest_loss_curves", "loss_vs_params", "attention_maps"} <= stems
    for stem in stems:
        assert (out / "figures" / f"{stem}.pdf").stat().st_size > 1000
        assert (out / "figures" / f"{stem}.png").exists()
    assert any("novelty" in what for _, what, _ in result["skipped"])
    assert "\\input{tables/ptest_results.tex}" in (out / "generated" / "results.tex").read_text()


def test_rebuild_is_byte_identical(grid_dir, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    build([grid_dir], a)
    build([grid_dir], b)
    for sub in ("tables", "generated", "figures"):
        for file in sorted((a / sub).iterdir()):
            assert file.read_bytes() == (b / sub / file.name).read_bytes(), file.name


def test_eval_results_become_columns(grid_dir, tmp_path):
    """A cell's evals/<name>.json turns into its column; a failed eval is a dash with its reason."""
    copy = tmp_path / "ptest"
    shutil.copytree(grid_dir, copy)
    cells = sorted(p for p in copy.iterdir() if (p / "DONE").exists())
    for i, cell in enumerate(cells):
        (cell / "evals").mkdir(exist_ok=True)
        status = "failed" if i < 2 else "ok"  # both seeds of the first configuration
        (cell / "evals" / "blimp.json").write_text(json.dumps({
            "name": "blimp", "version": 1, "metrics": {"accuracy": 0.5 + 0.01 * i} if status == "ok" else {},
            "status": status, "reason": "offline: set eval.options.blimp.path" if status == "failed" else None}))
    build([copy], tmp_path / "out")
    table = (tmp_path / "out" / "tables" / "ptest_results.tex").read_text()
    assert "BLiMP" in table and "blimp failed: offline: set eval.options.blimp.path" in table
    assert "0.525 $\\pm$ 0.007" in table  # 0.52 and 0.53: the second configuration's seeds


def test_pdf_compiles(grid_dir, tmp_path):
    if shutil.which("latexmk") is None:
        pytest.skip("latexmk not installed (CI installs TeX: see .ci/run)")
    out = tmp_path / "paper"
    out.mkdir()
    for name in ("main.tex", "variants.tex"):
        shutil.copy(REPO / "paper" / name, out / name)
    build([grid_dir], out)
    pdf = compile_pdf(out)
    assert pdf.exists() and pdf.read_bytes()[:4] == b"%PDF"


def test_cli_errors(tmp_path):
    proc = run_cli(tmp_path, module="paper.build")
    assert proc.returncode == 2 and "grid.json" in proc.stderr and "Traceback" not in proc.stderr
