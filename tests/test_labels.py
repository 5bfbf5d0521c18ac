"""Row labels: names a grid gives its axis values, or names built from what differs; never cell ids."""

from __future__ import annotations

import argparse

import pytest
import yaml

from ablations.grid import load_grid
from ablations.runner import grid_record
from paper.labels import canonical, config_names
from research.errors import ConfigError
from tests.helpers import REPO, write_grid


def names_of(grid):
    points, order = {}, {a: {} for a in grid.axes}
    for c in grid.cells:
        points.setdefault(canonical(c.axes), c.axes)
        for a in grid.axes:
            order[a].setdefault(canonical(c.axes[a]), c.axes[a])
    return config_names(list(points.values()), grid.axes, grid.labels, {a: list(v.values()) for a, v in order.items()})


def test_labels_from_the_grid_file_reach_grid_json_and_the_rows():
    grid = load_grid(REPO / "ablations" / "grids" / "architecture_cpu.yaml")
    assert grid_record(grid, argparse.Namespace(set=[]))["labels"] == grid.labels
    short, long = names_of(grid)
    assert short[:2] == ["GPT", "Windows small-large-small"] and len(set(short)) == 9
    assert "model.arch=windowed" in long[1] and "model.windows=small-large-small" in long[1]


def test_without_labels_names_say_what_differs():
    raw = load_grid(REPO / "ablations" / "grids" / "architecture_cpu.yaml")
    raw.labels = None
    short, _ = names_of(raw)
    assert short[0] == "gpt" and short[1] == "windowed (windows=small-large-small, window_min=8)"
    assert short[5] == "shared (n_layer=8, sharing=repeat)"  # n_layer shown only where it departs from 4
    assert not any("__" in s or "_4-" in s for s in short)  # nothing of the cell ids


def test_scalar_axes_use_their_last_key_and_drop_constant_axes(tmp_path):
    grid = load_grid(write_grid(tmp_path / "g.yaml", grid={"model.n_embd": [16, 24], "train.lr": [3e-3]}))
    assert names_of(grid)[0] == ["n_embd=16", "n_embd=24"]


@pytest.mark.parametrize("labels, message", [
    ({"model.n_emb": ["a", "b"]}, "labels.model.n_emb: not a grid axis; did you mean 'model.n_embd'?"),
    ({"model.n_embd": ["a"]}, "labels.model.n_embd must be a list of 2 non-empty names, one per value"),
    ({"model.n_embd": ["a", "a"]}, "labels.model.n_embd repeats a name"),
    (["a"], "'labels' must map grid axes to lists of names"),
])
def test_bad_labels_are_one_line_errors(tmp_path, labels, message):
    path = write_grid(tmp_path / "g.yaml")
    doc = yaml.safe_load(path.read_text())
    doc["labels"] = labels
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as err:
        load_grid(path)
    assert message in str(err.value) and "\n" not in str(err.value)
