"""Reproduction recipes: every recipe validates offline; the report judges real trained cells."""

from __future__ import annotations

import csv

import pytest
import yaml

from ablations.grid import load_grid
from ablations.reproduce import RECIPES, parse_target, recipe_names
from research.errors import ConfigError
from tests.helpers import run_cli, write_grid

EXPECTED = {"shakespeare_char_cpu", "shakespeare_char_gpu", "char_lstm_shakespeare", "tinystories_260k",
            "tinystories_15m", "ptb_lstm_small", "ptb_lstm_medium"}


def test_recipes_validate_offline():
    names = recipe_names()
    assert EXPECTED <= set(names)
    for name in names:
        path = RECIPES / f"{name}.yaml"
        grid = load_grid(path)
        target = parse_target(grid.reproduces, str(path))
        assert target.source and target.metric
        if target.tolerance:
            assert target.published is not None
        result = run_cli(path, "--dry-run")
        assert result.returncode == 0, result.stderr
        assert grid.name in result.stdout


@pytest.mark.parametrize("block, message", [
    (None, "needs a 'reproduces:' mapping"),
    ({"metric": "val_loss", "published": 1.0, "tolerance": {"max": 2}}, "reproduces.source is missing"),
    ({"metric": "val_loss", "source": "x", "published": 1.0, "tolerance": {"below": 2}}, "reproduces.tolerance"),
    ({"metric": "val_loss", "source": "x", "tolerance": {"relative": 0.02}}, "needs reproduces.published"),
    ({"metric": "val_loss", "source": "x", "publshed": 1.0}, "did you mean 'published'"),
])
def test_bad_reproduces_block_is_one_clear_line(block, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("'", "'")):
        parse_target(block, "recipe.yaml")


def _recipe(tmp_path, name, tolerance, published=2.0):
    path = write_grid(tmp_path / f"{name}.yaml", name=name, grid={}, seeds=(0, 1))
    doc = yaml.safe_load(path.read_text())
    doc["reproduces"] = {"metric": "val_loss", "unit": "nats/char", "published": published, "source": "a test",
                         "tolerance": tolerance}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_reproduce_trains_then_reports_pass_and_fail(tmp_path):
    results = tmp_path / "results"
    loose = _recipe(tmp_path, "loose", {"max": 100.0})
    strict = _recipe(tmp_path, "strict", {"relative": 0.0001}, published=0.01)
    out = run_cli(loose, strict, "--results-dir", results, "--set", "train.max_steps=8",
                  module="ablations.reproduce")
    assert out.returncode == 1, out.stdout + out.stderr  # one recipe fails its tolerance
    rows = {r["recipe"]: r for r in csv.DictReader((results / "reproduce.csv").open())}
    assert rows["loose"]["status"] == "pass" and rows["strict"]["status"] == "fail"
    assert rows["loose"]["seeds"] == "2" and float(rows["loose"]["ours_std"]) >= 0.0
    assert 0.0 < float(rows["loose"]["ours"]) < 10.0

    # Reading again, without the --set used for training: the recorded overrides find the same cells,
    # and nothing is retrained.
    mtime = max(p.stat().st_mtime for p in (results / "loose").rglob("DONE"))
    again = run_cli(loose, "--results-dir", results, "--report-only", "--csv", tmp_path / "t.csv",
                    module="ablations.reproduce")
    assert again.returncode == 0, again.stderr
    assert "pass" in again.stdout
    assert max(p.stat().st_mtime for p in (results / "loose").rglob("DONE")) == mtime
    row = next(csv.DictReader((tmp_path / "t.csv").open()))
    assert row["ours"] == rows["loose"]["ours"]


def test_unknown_recipe_names_the_choices(tmp_path):
    out = run_cli("shakespeare_char_cpo", "--results-dir", tmp_path, module="ablations.reproduce")
    assert out.returncode == 2
    assert "did you mean 'shakespeare_char_cpu'" in out.stderr and "Traceback" not in out.stderr
