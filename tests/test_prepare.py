"""`python -m ablations.prepare`: every distinct dataset of a grid built once, with a table; jobs never tokenize."""

from __future__ import annotations

import json

import pytest

from research.config import DataConfig, TokenizerConfig
from research.data.tokens import prepare_tokens
from research.errors import DataError
from tests.helpers import run_cli, write_grid


def test_prepare_builds_each_dataset_once_and_prints_the_table(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("<|endoftext|>".join(f"Story {i} ends here." for i in range(300)))
    grid = write_grid(tmp_path / "g.yaml", data={"source": "file", "path": str(corpus)},
                      grid={"model.n_embd": [16, 24], "tokenizer.kind": ["char", "word"]})
    proc = run_cli(grid, "--results-dir", tmp_path / "res", module="ablations.prepare")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [ln for ln in proc.stdout.splitlines() if ln.startswith(str(tmp_path)[:20]) or "c.txt" in ln]
    assert len(rows) == 2 and all(r.rstrip().endswith("built") for r in rows)  # 4 cells, 2 datasets
    caches = sorted((tmp_path / "res" / "_cache" / "tokens").glob("*/meta.json"))
    assert len(caches) == 2
    meta = json.loads(caches[0].read_text())
    train_tokens = f"{meta['splits']['train']['tokens']:,}"
    assert any(train_tokens in r for r in rows)
    assert "encode train" in proc.stderr  # the progress bar
    again = run_cli(grid, "--results-dir", tmp_path / "res", module="ablations.prepare")
    assert again.returncode == 0 and again.stdout.count("cached") == 2


def test_prepare_as_one_job(tmp_path):
    """`--launcher slurm` submits one job; submitit's local executor runs it here (no SLURM needed)."""
    pytest.importorskip("submitit")
    grid = write_grid(tmp_path / "g.yaml")
    grid.write_text(grid.read_text() + "resources: {cpus: 1, gpus: 1, time_min: 5}\n")
    proc = run_cli(grid, "--results-dir", tmp_path / "res", "--launcher", "slurm", "--slurm-cluster", "local",
                   "--wait", module="ablations.prepare")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "submitted the data preparation" in proc.stderr and "built" in proc.stdout
    assert len(list((tmp_path / "res" / "_cache" / "tokens").glob("*/meta.json"))) == 1


def test_a_job_that_may_not_tokenize_names_the_prepare_step(tmp_path):
    with pytest.raises(DataError, match="python -m ablations.prepare"):
        prepare_tokens(DataConfig(n_docs=50), TokenizerConfig(), tmp_path, build=False)
    prepare_tokens(DataConfig(n_docs=50), TokenizerConfig(), tmp_path)
    assert prepare_tokens(DataConfig(n_docs=50), TokenizerConfig(), tmp_path, build=False).meta["splits"]
