"""`evals.run`: isolation of failing evals, unknown names, and the CLI on a stored cell."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from evals import EVALS
from evals.base import EvalContext, EvalResult
from evals.run import build_options, eval_module, main, run_evals
from research.errors import ConfigError, run_main
from research.evaluation import split_loss
from tests.evals.lookup_model import LookupModel
from tests.helpers import store_untrained_cell

VERSION = 1  # the toy evals below share this module's contract


@dataclass
class ToyOptions:
    x: float = 0.0


OPTIONS = ToyOptions


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


@pytest.mark.parametrize("name", EVALS.names())
def test_every_registered_eval_keeps_the_contract(name):
    """NAME is its registry name, VERSION an int, OPTIONS a dataclass whose defaults build (or, for an
    eval that needs a setting, such as cross_corpus's corpora, are refused naming that key)."""
    module = eval_module(name)
    assert module.NAME == name and isinstance(module.VERSION, int) and module.VERSION >= 1
    assert dataclasses.is_dataclass(module.OPTIONS)
    try:
        built = build_options(name, {})
    except ConfigError as e:
        assert str(e).startswith(f"eval.options.{name}."), e
    else:
        assert built == module.OPTIONS()


def test_an_eval_without_a_version_is_refused(monkeypatch):
    monkeypatch.setitem(EVALS._entries, "unversioned", "tests.evals.lookup_model:LookupModel")
    with pytest.raises(ConfigError, match="eval 'unversioned'.*declares no VERSION"):
        eval_module("unversioned")


def test_options_are_built_with_did_you_mean_and_ranges():
    with pytest.raises(ConfigError, match=r"eval\.options\.hellaswag\.limt: unknown key; did you mean 'limit'\?"):
        build_options("hellaswag", {"limt": 100})
    with pytest.raises(ConfigError, match=r"eval\.options\.hellaswag\.limit: must be >= 1, got -3"):
        build_options("hellaswag", {"limit": -3})


def test_help_lists_the_registered_evals():
    out = subprocess.run([sys.executable, "-m", "evals.run", "--help"], capture_output=True, text=True, check=True)
    assert all(name in " ".join(out.stdout.split()) for name in EVALS.names())
