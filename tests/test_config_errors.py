"""Bad input: one clear line on stderr naming the key or file, exit code 2, nothing on disk touched."""

from __future__ import annotations

import pytest

from research.config import RunConfig
from research.errors import ConfigError
from tests.helpers import run_cli, write_grid


def one_line_error(proc) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("updates", "expected"),
    [
        ({"train": {"max_stepz": 10}}, ["train.max_stepz", "did you mean 'max_steps'"]),
        ({"model": {"n_layers": 2}}, ["model.n_layers", "did you mean 'n_layer'"]),
        ({"train": {"lr": "fast"}}, ["train.lr", "fast"]),
        ({"train": {"batch_size": 2.5}}, ["train.batch_size"]),
        ({"model": {"arch": "gtp"}}, ["model.arch", "gtp", "gpt"]),
        ({"data": {"source": "file", "path": "/nonexistent/corpus.txt"}}, ["data.path", "/nonexistent/corpus.txt"]),
        ({"tokenizer": {"kind": "sentencepiece"}}, ["tokenizer.kind", "char", "bpe"]),
    ],
)
def test_config_errors_name_the_key(tmp_path, updates, expected):
    grid = write_grid(tmp_path / "bad.yaml", **updates)
    results = tmp_path / "results"
    (results / "tiny").mkdir(parents=True)
    (results / "tiny" / "keep.txt").write_text("finished work")
    line = one_line_error(run_cli(grid, "--results-dir", results))
    for fragment in expected:
        assert fragment in line, line
    assert [p.name for p in (results / "tiny").iterdir()] == ["keep.txt"]
    assert (results / "tiny" / "keep.txt").read_text() == "finished work"


def test_unknown_model_lists_the_valid_ones():
    with pytest.raises(ConfigError) as err:
        RunConfig.from_dict({"model": {"arch": "transformerxl"}})
    assert "model.arch" in str(err.value) and "gpt" in str(err.value)


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: x\nbase:\n  train: {max_steps: 3\n")
    line = one_line_error(run_cli(bad))
    assert "broken.yaml" in line and "line" in line


def test_missing_grid_file(tmp_path):
    line = one_line_error(run_cli(tmp_path / "nope.yaml"))
    assert "nope.yaml" in line


def test_unknown_top_level_key_and_bad_set(tmp_path):
    grid = tmp_path / "g.yaml"
    write_grid(grid)
    grid.write_text(grid.read_text() + "seed: [1]\n")
    line = one_line_error(run_cli(grid, "--dry-run"))
    assert "seed" in line and "did you mean 'seeds'" in line
    write_grid(grid)
    line = one_line_error(run_cli(grid, "--dry-run", "--set", "train.max_steps"))
    assert "--set" in line and "dotted.key=value" in line
    line = one_line_error(run_cli(grid, "--dry-run", "--set", "train.optimiser=sgd"))
    assert "train.optimiser" in line and "optimizer" in line


def test_later_cell_error_stops_before_any_training(tmp_path):
    grid = write_grid(tmp_path / "g.yaml", grid={"model.n_head": [2, 5]})  # 16 dims / 5 heads fails
    results = tmp_path / "results"
    line = one_line_error(run_cli(grid, "--results-dir", results))
    assert "n_head-5" in line
    assert not results.exists()


def test_offline_preset_without_local_copy_fails_fast(tmp_path):
    grid = write_grid(tmp_path / "g.yaml", data={"source": "wikitext2"})
    line = one_line_error(run_cli(grid, "--results-dir", tmp_path / "r"))
    assert "wikitext2" in line and "data.path" in line


def test_config_round_trip():
    cfg = RunConfig.from_dict({"model": {"arch": "gpt", "n_layer": 3}, "train": {"lr": 1e-3}})
    again = RunConfig.from_dict(cfg.to_dict())
    assert again == cfg and again.model.n_layer == 3


def test_optional_logger_without_its_package(tmp_path):
    import importlib.util

    if importlib.util.find_spec("wandb"):
        pytest.skip("wandb is installed here")
    grid = write_grid(tmp_path / "g.yaml", train={"logger": "wandb"})
    line = one_line_error(run_cli(grid, "--results-dir", tmp_path / "r"))
    assert "train.logger" in line and "pip install wandb" in line
