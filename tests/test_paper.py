"""The paper pipeline on results made by a real tiny grid: tables, significance, provenance,
figures, determinism, PDF."""

from __future__ import annotations

import csv
import json
import math
import shutil
import statistics
import subprocess

import pytest
import yaml

from paper.build import build, compile_pdf
from research.errors import UserError
from tests.helpers import REPO, run_cli, write_grid


@pytest.fixture(scope="module")
def grid_dir(tmp_path_factory):
    """Three seeds of: two position encodings that are equal within noise at lr 3e-3, the same at an
    lr too small to learn anything in 12 steps (clearly worse), and at an lr that diverges (failed)."""
    root = tmp_path_factory.mktemp("paper")
    grid = write_grid(root / "g.yaml", name="ptest",
                      grid={"model.pos": ["learned", "sinusoidal"], "train.lr": [3e-3, 1e-5, 1e9]},
                      seeds=(0, 1, 2))
    proc = run_cli(grid, "--results-dir", root / "results")
    assert proc.returncode == 1, proc.stderr  # the lr=1e9 cells diverge and fail; the others finish
    return root / "results" / "ptest"


def _rows(grid_dir):
    return list(csv.DictReader(open(grid_dir / "summary.csv")))


def _bpbs(grid_dir, pos, lr):
    return {int(r["seed"]): float(r["val_bpb"]) for r in _rows(grid_dir)
            if r["model.pos"] == pos and r["train.lr"] == lr}


def _line(table, start):
    return next(ln for ln in table.splitlines() if ln.startswith(start))


def subset(grid_dir, dest, keep):
    """A results folder holding only the cells `keep(cell spec)` accepts, with their grid.json."""
    spec = json.loads((grid_dir / "grid.json").read_text())
    spec["cells"] = [c for c in spec["cells"] if keep(c)]
    dest.mkdir(parents=True)
    for c in spec["cells"]:
        shutil.copytree(grid_dir / c["id"], dest / c["id"])
    (dest / "grid.json").write_text(json.dumps(spec))
    return dest


def test_tables_aggregate_seeds(grid_dir, tmp_path):
    out = tmp_path / "paper"
    result = build([grid_dir], out)
    table = (out / "tables" / "ptest_results.tex").read_text()
    bpbs = list(_bpbs(grid_dir, "learned", "0.003").values())
    expected = f"{statistics.fmean(bpbs):.3f} $\\pm$ {statistics.stdev(bpbs):.3f}"
    line = _line(table, "pos=learned, lr=0.003")  # a label from grid.json's axes, not the cell id
    assert expected in line and " & 3 & " in line  # mean ± sample std over the three seeds
    assert "\\toprule" in table and "\\bottomrule" in table and "__s0__" not in table
    failed = _line(table, "pos=learned, lr=1e+09")
    assert "---\\textsuperscript{a}" in failed and " & 0 & " in failed
    assert "cell failed: DivergedError: loss became nan" in table  # the footnote says why
    stems = {stem for stem, _, _ in result["figures"]}
    assert {"ptest_loss_curves", "ptest_per_position", "bpb_vs_params_and_flops", "attention_maps"} <= stems
    for stem in stems:
        assert (out / "figures" / f"{stem}.pdf").stat().st_size > 1000
        assert (out / "figures" / f"{stem}.png").exists()
    assert any("novelty" in what for _, what, _ in result["skipped"])
    assert "\\input{tables/ptest_results.tex}" in (out / "generated" / "results.tex").read_text()
    for tex in [*(out / "tables").glob("*.tex"), out / "generated" / "results.tex"]:
        first = tex.read_text().splitlines()[0]
        assert first.startswith("% Generated from ") and f"{grid_dir} (12 finished cells)" in first
        assert f"`python -m paper.build {grid_dir}`" in first and "do not edit" in first


def test_equal_within_noise_is_not_bold(grid_dir, tmp_path):
    """learned and sinusoidal positions at lr 3e-3 are within noise of each other: neither is bold,
    and the CSV holds the paired test, checked here against the t statistic computed by hand."""
    build([grid_dir], tmp_path, tables_only=True)
    table = (tmp_path / "tables" / "ptest_results.tex").read_text()
    assert "\\textbf" not in table
    assert "Nothing bold in Val PPL, Val bpb: the best is not significantly better than every other row" in table
    assert ("paired $t$-test over seeds, two-sided, Holm's correction over the column's pairwise tests, adjusted "
            "$p < 0.05$") in table
    rows = list(csv.DictReader(open(tmp_path / "tables" / "ptest_significance.csv")))
    assert len(rows) == 2 * 6  # val_ppl and val_bpb, every pair of the 4 configurations with results
    a, b = _bpbs(grid_dir, "learned", "0.003"), _bpbs(grid_dir, "sinusoidal", "0.003")
    d = [a[s] - b[s] for s in sorted(a)]
    t = statistics.fmean(d) / (statistics.stdev(d) / math.sqrt(len(d)))
    row = next(r for r in rows if r["metric"] == "val_bpb" and r["row_a"] == "pos=learned, lr=0.003"
               and r["row_b"] == "pos=sinusoidal, lr=0.003")
    assert row["test"] == "paired t-test" and float(row["statistic"]) == pytest.approx(t, rel=1e-4)
    assert float(row["p_value"]) > 0.05 and row["significant"] == "False"
    worse = next(r for r in rows if r["metric"] == "val_bpb" and r["row_a"] == "pos=learned, lr=0.003"
                 and r["row_b"] == "pos=learned, lr=1e-05")
    assert float(worse["p_adjusted"]) < 0.05 and worse["significant"] == "True"
    # Holm over the column's 6 pairs, recomputed by hand: sorted raw p times (m - rank), made monotone
    bpb = [r for r in rows if r["metric"] == "val_bpb"]
    raw = sorted((float(r["p_value"]), i) for i, r in enumerate(bpb))
    running, expected = 0.0, {}
    for rank, (p, i) in enumerate(raw):
        running = max(running, min(1.0, (len(raw) - rank) * p))
        expected[i] = running
    assert [float(r["p_adjusted"]) for r in bpb] == pytest.approx([expected[i] for i in range(len(bpb))], rel=1e-4)
    assert {r["correction"] for r in rows} == {"holm"}


def test_clearly_better_is_bold(grid_dir, tmp_path):
    """lr 3e-3 against lr 1e-5 (same positions): the better row is bold in both loss columns."""
    part = subset(grid_dir, tmp_path / "ptest", lambda c: c["axes"]["model.pos"] == "learned"
                  and c["axes"]["train.lr"] < 1)
    build([part], tmp_path / "out", tables_only=True)
    table = (tmp_path / "out" / "tables" / "ptest_results.tex").read_text()
    good, bad = _line(table, "lr=0.003"), _line(table, "lr=1e-05")
    assert good.count("\\textbf{") == 2 and "\\textbf" not in bad  # Val PPL and Val bpb
    bpbs = list(_bpbs(grid_dir, "learned", "0.003").values())
    assert f"\\textbf{{{statistics.fmean(bpbs):.3f} $\\pm$ {statistics.stdev(bpbs):.3f}}}" in good
    assert "Nothing bold" not in table
    build([part], tmp_path / "se", spread="ci95", tables_only=True)
    table = (tmp_path / "se" / "tables" / "ptest_results.tex").read_text()
    half = 4.302652729911275 * statistics.stdev(bpbs) / math.sqrt(3)  # t(0.975, 2 df), from a printed table
    assert f"{statistics.fmean(bpbs):.3f} $\\pm$ {half:.3f}" in _line(table, "lr=0.003")
    assert "half-width of the 95\\% $t$ confidence interval" in table


def test_unpaired_seeds_use_welch_and_one_seed_bolds_nothing(grid_dir, tmp_path):
    def keep(drop_seeds):
        return lambda c: (c["axes"]["model.pos"] == "learned" and c["axes"]["train.lr"] < 1
                          and not (c["axes"]["train.lr"] < 1e-3 and c["seed"] in drop_seeds))

    build([subset(grid_dir, tmp_path / "w" / "ptest", keep({2}))], tmp_path / "welch", tables_only=True)
    table = (tmp_path / "welch" / "tables" / "ptest_results.tex").read_text()
    assert "Welch's $t$-test over seeds" in table and "\\textbf" in _line(table, "lr=0.003")
    build([subset(grid_dir, tmp_path / "o" / "ptest", keep({1, 2}))], tmp_path / "one", tables_only=True)
    table = (tmp_path / "one" / "tables" / "ptest_results.tex").read_text()
    assert "\\textbf" not in table
    assert "Nothing bold in Val PPL, Val bpb: a configuration has fewer than 2 seeds (lr=1e-05)" in table


def test_provenance_maps_each_row_to_its_cells(grid_dir, tmp_path):
    build([grid_dir], tmp_path, tables_only=True)
    prov = json.loads((tmp_path / "tables" / "ptest_results.provenance.json").read_text())
    spec = json.loads((grid_dir / "grid.json").read_text())
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert prov["generated_by"] == f"python -m paper.build {grid_dir}" and len(prov["rows"]) == 6
    for row in prov["rows"]:
        expected = [c["id"] for c in spec["cells"] if c["axes"] == row["axes"]]
        assert [c["id"] for c in row["cells"]] == expected and len(expected) == 3
        pos, lr = row["axes"]["model.pos"], row["axes"]["train.lr"]
        assert row["label"] == f"pos={pos}, lr={lr:g}"
        assert row["long_label"] == f"model.pos={pos}, train.lr={lr}"
        assert row["seeds"] == ([] if lr > 1 else [0, 1, 2]) and row["mixed"] == []
        for cell in row["cells"]:
            manifest = json.loads((grid_dir / cell["id"] / "manifest.json").read_text()) if lr < 1 else {}
            if lr < 1:
                assert cell["commit"] == head == manifest["git"]["commit"]
                assert cell["dirty"] == manifest["git"]["dirty"]
                assert (grid_dir / cell["id"] / "code.diff").exists() == bool(cell["dirty"])


def test_mixed_commits_or_configs_are_refused(grid_dir, tmp_path):
    copy = tmp_path / "ptest"
    shutil.copytree(grid_dir, copy)
    cell = next(p for p in sorted(copy.iterdir()) if (p / "DONE").exists())
    manifest = json.loads((cell / "manifest.json").read_text())
    manifest["git"] = {"commit": "0" * 40, "dirty": False}
    (cell / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match=f"mixes code versions: {cell.name} at 0000000000;.*--allow-mixed"):
        build([copy], tmp_path / "refused", tables_only=True)
    assert not (tmp_path / "refused").exists()  # nothing written
    proc = run_cli(copy, "--out", tmp_path / "cli", module="paper.build")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and cell.name in proc.stderr

    build([copy], tmp_path / "allowed", allow_mixed=True, tables_only=True)
    table = (tmp_path / "allowed" / "tables" / "ptest_results.tex").read_text()
    label = next(r["label"] for r in json.loads(
        (tmp_path / "allowed" / "tables" / "ptest_results.provenance.json").read_text())["rows"] if r["mixed"])
    assert _line(table, label.replace("_", "\\_")).split(" & ")[0].endswith("$^\\dagger$")
    assert "built with \\texttt{-{}-allow-mixed}" in table
    assert table.splitlines()[0].endswith(f"`python -m paper.build {copy} --allow-mixed`; do not edit.")

    manifest["git"] = json.loads((grid_dir / cell.name / "manifest.json").read_text())["git"]
    (cell / "manifest.json").write_text(json.dumps(manifest))
    config = yaml.safe_load((cell / "config.yaml").read_text())
    config["train"]["max_steps"] = 13
    (cell / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(UserError, match=f"mixes configs: .*{cell.name}.* differ in train.max_steps"):
        build([copy], tmp_path / "refused", tables_only=True)


def test_grid_labels_name_the_rows(grid_dir, tmp_path):
    copy = tmp_path / "ptest"
    shutil.copytree(grid_dir, copy)
    spec = json.loads((copy / "grid.json").read_text())
    spec["labels"] = {"model.pos": ["Learned positions", "Sinusoidal positions"]}
    (copy / "grid.json").write_text(json.dumps(spec))
    build([copy], tmp_path / "out", tables_only=True)
    table = (tmp_path / "out" / "tables" / "ptest_results.tex").read_text()
    assert _line(table, "Sinusoidal positions, lr=0.003")
    prov = json.loads((tmp_path / "out" / "tables" / "ptest_results.provenance.json").read_text())
    assert prov["rows"][0]["long_label"] == "model.pos=learned, train.lr=0.003"


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
        status = "failed" if i < 3 else "ok"  # the three seeds of the first configuration
        (cell / "evals" / "blimp.json").write_text(json.dumps({
            "name": "blimp", "version": 1, "metrics": {"accuracy": 0.5 + 0.01 * i} if status == "ok" else {},
            "status": status, "reason": "offline: set eval.options.blimp.path" if status == "failed" else None}))
    build([copy], tmp_path / "out", tables_only=True)
    table = (tmp_path / "out" / "tables" / "ptest_results.tex").read_text()
    assert "BLiMP" in table and "blimp failed: offline: set eval.options.blimp.path" in table
    assert "0.540 $\\pm$ 0.010" in table  # 0.53, 0.54, 0.55: the second configuration's seeds
    assert "\\textbf{0.600 $\\pm$ 0.010}" in table  # the fourth, higher by 0.03 on every seed: best


def test_pdf_compiles(grid_dir, tmp_path):
    if shutil.which("latexmk") is None:
        pytest.skip("latexmk not installed (CI installs TeX: see .ci/run)")
    out = tmp_path / "paper"
    out.mkdir()
    for name in ("main.tex", "variants.tex", "knowledge.tex", "studies.tex"):
        shutil.copy(REPO / "paper" / name, out / name)
    build([grid_dir], out)
    pdf = compile_pdf(out)
    assert pdf.exists() and pdf.read_bytes()[:4] == b"%PDF"


def test_cli_errors(tmp_path):
    proc = run_cli(tmp_path, module="paper.build")
    assert proc.returncode == 2 and "grid.json" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli(tmp_path, "--alpha", "5", module="paper.build")
    assert proc.returncode == 2 and "--alpha 5: a significance level lies between 0 and 1" in proc.stderr
