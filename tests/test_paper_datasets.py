"""The paper's dataset-quality output (cross-corpus table and heatmap, cleaning table), its
convergence note and parameter-matched size figure, from results folders written through the
records API with known numbers (nothing trained: the paper only reads files)."""

from __future__ import annotations

import csv
import statistics

import pytest

from ablations import records
from evals.base import EvalResult, write_result
from paper.build import build
from tests.helpers import run_cli

CORPORA = {"ptb": {"source": "ptb", "path": "ptb"}, "shakespeare": {"source": "shakespeare"}}
#: seed -> (ptb bpb, shakespeare bpb) for the model trained on each corpus
BPB = {
    "PTB": {0: (1.50, 4.10), 1: (1.52, 4.30), 2: (1.51, 4.20)},
    "Shakespeare": {0: (2.90, 2.00), 1: (2.95, 2.02), 2: (2.85, 2.01)},
}
CLEANING = {"PTB": {"docs_in": 100, "chars_in": 5000, "docs_out": 100, "chars_out": 5000},
            "Shakespeare": {"docs_in": 10, "chars_in": 9000, "dropped_incomplete": 2, "dropped_incomplete_chars": 700,
                            "normalized": 1, "normalized_chars": 3, "docs_out": 8, "chars_out": 8300}}
#: validation loss logged at steps 74 and 149: PTB still falling fast, Shakespeare flat within its spread
CURVES = {"PTB": {0: (3.0, 2.0), 1: (3.1, 2.05), 2: (2.9, 1.95)},
          "Shakespeare": {0: (2.0, 2.0), 1: (2.1, 2.1), 2: (1.9, 1.9)}}


@pytest.fixture(scope="module")
def grid_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("dq") / "dq"
    values = [CORPORA["ptb"], CORPORA["shakespeare"]]
    cells = []
    for label, data in zip(BPB, values):
        for seed, (ptb, shakespeare) in BPB[label].items():
            cell_id = f"{data['source']}__s{seed}"
            cell = root / cell_id
            cfg = {"data": data, "tokenizer": {"kind": "char"}, "model": {"arch": "lstm"}, "train": {"seed": seed},
                   "eval": {"tasks": ["cross_corpus"], "options": {"cross_corpus": {"corpora": CORPORA}}}}
            records.write_config(cell, cfg)
            start, end = CURVES[label][seed]
            (cell / records.LOG).write_text(f"step,val/loss\n74,{start}\n149,{end}\n")
            params = 1000 if label == "PTB" else 1010  # matched within 1%
            records.write_metrics(cell, {"params": params, "val_bpb": ptb if label == "PTB" else shakespeare,
                                         "val_loss": 1.0, "flops_per_token": 6 * params,
                                         "train_tokens": 1e4 * (seed + 1)})
            unk = 0.25 if label == "PTB" else 0.0  # the PTB vocabulary has no capitals: Shakespeare's are <unk>
            write_result(cell, EvalResult("cross_corpus", 1, metrics={
                "ptb_bpb": ptb, "shakespeare_bpb": shakespeare, "ptb_unk_share": 0.0, "shakespeare_unk_share": unk,
                "n_failed": 0.0}))
            records.write_manifest(cell, {"git": {"commit": "abc", "dirty": False},
                                          "data": {"cleaning": {"train": CLEANING[label]}}})
            records.mark_done(cell)
            cells.append({"id": cell_id, "seed": seed, "axes": {"data": data}})
    records.write_grid(root, {"name": "dq", "axes": ["data"], "labels": {"data": list(BPB)}, "cells": cells})
    return root


def test_cross_corpus_table_bolds_per_eval_corpus_with_holm(grid_dir, tmp_path):
    build([grid_dir], tmp_path)
    table = (tmp_path / "tables" / "dq_cross_corpus.tex").read_text()
    ptb_row = next(ln for ln in table.splitlines() if ln.startswith("ptb &"))
    own = [v[0] for v in BPB["PTB"].values()]
    assert f"\\textbf{{{statistics.fmean(own):.3f} $\\pm$ {statistics.stdev(own):.3f}}}" in ptb_row
    shakespeare_row = next(ln for ln in table.splitlines() if ln.startswith("shakespeare &"))
    assert "$^{u}$" in shakespeare_row.split("&")[1] and "\\textbf" in shakespeare_row.split("&")[2]
    assert "Holm's correction" in table and "Eval corpus & PTB & Shakespeare" in table
    rows = [r for r in csv.DictReader(open(tmp_path / "tables" / "dq_significance.csv"))
            if r["metric"].startswith("cross_corpus/")]
    assert {r["metric"] for r in rows} == {"cross_corpus/ptb_bpb", "cross_corpus/shakespeare_bpb"}
    assert all(r["correction"] == "holm" and r["p_adjusted"] == r["p_value"] for r in rows)  # one pair: m = 1


def test_cleaning_table_counts_documents_and_characters(grid_dir, tmp_path):
    build([grid_dir], tmp_path, tables_only=True)
    table = (tmp_path / "tables" / "dq_cleaning.tex").read_text()
    line = next(ln for ln in table.splitlines() if ln.startswith("Shakespeare &"))
    assert "2 / 700" in line and "1 / 3" in line and "9{,}000" in line and "8{,}300" in line
    ptb = next(ln for ln in table.splitlines() if ln.startswith("PTB &"))
    assert "off" in ptb  # the step was not enabled for that corpus


def test_heatmap_convergence_note_and_matched_parameters(grid_dir, tmp_path):
    result = build([grid_dir], tmp_path)
    stems = {stem for stem, _, _ in result["figures"]}
    assert "dq_cross_corpus" in stems and (tmp_path / "figures" / "dq_cross_corpus.png").stat().st_size > 5000
    tex = (tmp_path / "generated" / "results.tex").read_text()
    assert "unk: share of the eval text outside the model's vocabulary" in tex
    assert "Parameters are not drawn: every configuration has 1.0k--1.0k parameters (matched within 5\\%)" in tex
    # PTB's mean loss falls from 3.0 (step 74) to 2.0 (step 149): read at step 134.1 it is 2.199, a drop of
    # 0.199 over the last 10% of steps, against a spread of 2.05 - 1.95 = 0.1 at the last step
    note = "Not converged: for 1 of 2 configurations (PTB) the mean validation loss fell over the last 10\\% of steps"
    assert note in (tmp_path / "tables" / "dq_results.tex").read_text()
    assert note in tex  # the loss-curve caption


def test_flat_curves_get_no_convergence_note(grid_dir, tmp_path):
    for seed, (start, end) in CURVES["PTB"].items():  # PTB flat: a drop of 0.08 x 0.199 / 0.8 within 0.1
        (grid_dir / f"ptb__s{seed}" / records.LOG).write_text(f"step,val/loss\n74,{end + 0.08}\n149,{end}\n")
    try:
        build([grid_dir], tmp_path, tables_only=True)
    finally:
        for seed, (start, end) in CURVES["PTB"].items():
            (grid_dir / f"ptb__s{seed}" / records.LOG).write_text(f"step,val/loss\n74,{start}\n149,{end}\n")
    assert "Not converged" not in (tmp_path / "tables" / "dq_results.tex").read_text()


def test_pdf_without_main_tex_is_refused_before_anything_is_written(grid_dir, tmp_path):
    out = tmp_path / "elsewhere"
    proc = run_cli(grid_dir, "--out", out, "--pdf", module="paper.build")
    assert proc.returncode != 0 and "main.tex: not found" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists() or not any(out.rglob("*"))


def test_correction_none_is_named_for_a_planned_comparison(grid_dir, tmp_path):
    build([grid_dir], tmp_path, tables_only=True, correction="none")
    table = (tmp_path / "tables" / "dq_cross_corpus.tex").read_text()
    assert "uncorrected for multiple comparisons (one planned comparison)" in table
    rows = [r for r in csv.DictReader(open(tmp_path / "tables" / "dq_significance.csv"))]
    assert {r["correction"] for r in rows} == {"none"} and all(r["p_adjusted"] == r["p_value"] for r in rows)
    assert "--correction none" in table.splitlines()[0]  # the command that rebuilds it
