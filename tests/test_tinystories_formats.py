"""TinyStories in every format it ships in: the loaders, and the reproduction recipes running offline on them."""

from __future__ import annotations

import json

import pytest

from research.config import DataConfig
from research.data import load_corpus
from tests.helpers import REPO, run_cli

FIXTURES = REPO / "tests" / "fixtures" / "tinystories"
FORMATS = {"hf_v2": "hf_v2", "llama2c": "llama2c/TinyStories_all_data", "parquet": "parquet/data"}


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_loads_with_its_official_split(fmt):
    corpus = load_corpus(DataConfig(source="tinystories", path=str(FIXTURES / FORMATS[fmt])))
    assert (len(corpus.train), len(corpus.val)) == (100, 20)
    assert all(d and "<|endoftext|>" not in d for d in corpus.train + corpus.val)
    assert "val_split" not in corpus.meta or "data00.json" in corpus.meta["val_split"]


FEW_STEPS = ["train.max_steps=2", "train.batch_size=2", "train.warmup_steps=0", "train.eval_every=2",
             "train.eval_batches=1", "train.log_every=1", "train.checkpoint_every=0", "eval.samples=0",
             "eval.val_max_tokens=2000", "eval.per_position_windows=4", "train.precision=32-true"]


@pytest.mark.parametrize("recipe,fmt", [
    ("tinystories_260k", "hf_v2"),
    pytest.param("tinystories_260k", "llama2c", marks=pytest.mark.slow),
    pytest.param("tinystories_260k", "parquet", marks=pytest.mark.slow),
    pytest.param("tinystories_15m", "hf_v2", marks=pytest.mark.slow),
])
def test_recipe_runs_a_few_steps_offline(tmp_path, recipe, fmt):
    sets = [f"data.path={FIXTURES / FORMATS[fmt]}", *FEW_STEPS]
    proc = run_cli(REPO / "ablations" / "grids" / "reproduce" / f"{recipe}.yaml", "--results-dir", tmp_path,
                   *sum((["--set", s] for s in sets), []), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (metrics,) = list((tmp_path / recipe).glob("*/metrics.json"))
    m = json.loads(metrics.read_text())
    assert m["val_loss"] > 0 and m["val_tokens"] > 0
