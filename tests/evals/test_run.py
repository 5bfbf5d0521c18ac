"""`evals.run`: isolation of failing evals, unknown names, and the CLI on a stored cell."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from evals import EVALS
from evals.base import EvalContext, EvalResult
from evals.run import main, run_evals
from research.errors import ConfigError, run_main
from research.evaluation import split_loss
from tests.evals.lookup_model import LookupModel
from tests.helpers import store_untrained_cell


def boom(ctx, options):
    raise RuntimeError("kaboom")


def fine(ctx, options):
    return EvalResult("fine", 1, metrics={"x": float(options.get("x", 0))})


@pytest.fixture
def toy_evals(monkeypatch):
    monkeypatch.setitem(EVALS._entries, "boom", "tests.evals.test_run:boom")
    monkeypatch.setitem(EVALS._entries, "fine", "tests.evals.test_run:fine")


def test_a_failing_eval_is_recorded_and_the_others_still_run(tmp_path, toy_evals):
    ctx = EvalContext(model=LookupModel(torch.zeros(3, 3)), tokenizer=None, config=None, cell_dir=tmp_path)
    results = run_evals(ctx, ["boom", "fine"], {"fine": {"x": 2}})
    assert [r.status for r in results] == ["failed", "ok"]
    assert results[0].reason == "RuntimeError: kaboom"
    assert results[1].metrics == {"x": 2.0}
    stored = json.loads((tmp_path / "evals" / "boom.json").read_text())
    assert stored["status"] == "failed" and stored["reason"] == "RuntimeError: kaboom"
    assert json.loads((tmp_path / "evals" / "fine.json").read_text())["metrics"] == {"x": 2.0}


def test_unknown_eval_lists_the_valid_ones():
    ctx = EvalContext(model=None, tokenizer=None, config=None)
    with pytest.raises(ConfigError, match=r"unknown eval 'hellaswg'; did you mean 'hellaswag'\?.*valid: .*blimp"):
        run_evals(ctx, ["perplexity", "hellaswg"])


@pytest.fixture
def cell(tmp_path):
    """A stored cell as the grid runner writes it (config.yaml, tokenizer/, model.pt), untrained."""
    cell_dir, model, tok, corpus = store_untrained_cell(tmp_path, {
        "data": {"source": "builtin", "n_docs": 60}, "tokenizer": {"kind": "char"},
        "model": {"arch": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 32}})
    return cell_dir, model.eval(), tok.encode_docs(corpus.val)


def test_cli_writes_results_into_the_cell(cell, capsys):
    cell_dir, model, val_tokens = cell
    rc = main([str(cell_dir), "--evals", "perplexity", "--set", "eval.options.perplexity.max_tokens=320",
               "--device", "cpu"])
    assert rc == 0
    stored = json.loads((cell_dir / "evals" / "perplexity.json").read_text())
    assert stored["status"] == "ok" and stored["metrics"]["val_tokens"] == 320
    # non-overlapping windows of block_size: the same number as the trainer's exact split loss
    ref = split_loss(model, np.asarray(val_tokens), seq_len=32, max_tokens=320)
    assert stored["metrics"]["val_loss"] == pytest.approx(ref.loss, rel=1e-5)
    assert "perplexity: ok" in capsys.readouterr().out


def test_cli_errors_are_one_line(cell, capsys):
    cell_dir, _, _ = cell
    assert run_main(main, [str(cell_dir), "--evals", "nope"]) == 2
    assert "unknown eval 'nope'" in capsys.readouterr().err
    assert run_main(main, [str(cell_dir), "--evals", "perplexity", "--set", "model.n_embd=8"]) == 2
    assert "only eval.* keys" in capsys.readouterr().err
    assert run_main(main, [str(cell_dir)]) == 2  # the cell lists no eval.tasks
    assert "pass --evals" in capsys.readouterr().err


def test_eval_overrides_are_range_checked_before_the_model_loads(cell, capsys):
    cell_dir, _, _ = cell
    (cell_dir / "model.pt").unlink()  # loading would fail with another message: the checks come first
    assert run_main(main, [str(cell_dir), "--evals", "perplexity", "--set", "eval.temperature=-1"]) == 2
    assert "eval.temperature: must be >= 0, got -1" in capsys.readouterr().err
    args = [str(cell_dir), "--evals", "perplexity", "--set", "eval.options.perplexty.max_tokens=5"]
    assert run_main(main, args) == 2
    assert "eval.options.perplexty: unknown eval 'perplexty'; did you mean 'perplexity'?" in capsys.readouterr().err
