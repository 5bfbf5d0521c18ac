"""`model.match_params`: every variant sized to a budget lands within 1% (TOLERANCE), and the result is recorded."""

from __future__ import annotations

import dataclasses

import pytest

from research.config import RunConfig
from research.errors import ConfigError
from research.models import build_model
from research.sizing import TOLERANCE, match_params, width_step

VOCAB = 101

SECTIONS = {
    "gpt": {"arch": "gpt", "n_layer": 2, "n_head": 4, "pos": "rope"},
    "windowed": {"arch": "windowed", "n_layer": 3, "n_head": 2, "windows": "small-large-small"},
    "tapered": {"arch": "tapered", "n_layer": 4, "n_head": 2, "widths": "decreasing", "taper": 0.5},
    "openelm": {"arch": "tapered", "n_layer": 3, "n_head": 4, "head_scale": [0.5, 1.0], "ff_scale": [0.5, 4.0]},
    "shared": {"arch": "shared", "n_layer": 4, "n_head": 2, "sharing": "repeat"},
    "recursive": {"arch": "shared", "n_layer": 4, "n_head": 2, "sharing": "recursive"},
    "residual_root": {"arch": "residual_root", "n_layer": 2, "n_head": 2, "stream_ratio": 2.0},
}


def model_cfg(section: dict, target: float):
    return RunConfig.from_dict({"model": {**section, "block_size": 32, "match_params": target}}).model


@pytest.mark.parametrize("name", list(SECTIONS))
@pytest.mark.parametrize("target", [5.0e4, 3.0e5])
def test_sized_within_tolerance_and_recorded(name, target):
    cfg = model_cfg(SECTIONS[name], target)
    model = build_model(cfg, VOCAB)
    assert abs(model.num_params() - target) <= TOLERANCE * target
    resolved = model.cfg
    assert resolved.match_params is None and resolved.n_embd % width_step(cfg) == 0
    assert resolved.n_layer == cfg.n_layer and resolved.arch == cfg.arch  # only the width moved
    again = build_model(RunConfig.from_dict({"model": dataclasses.asdict(resolved)}).model, VOCAB)
    assert again.num_params() == model.num_params()  # the recorded config rebuilds the same model


def test_feed_forward_is_tuned_when_a_width_step_is_too_coarse():
    """4 heads under RoPE move the width in steps of 8: 2e4 parameters fall between two widths."""
    cfg = model_cfg(SECTIONS["gpt"], 2.0e4)
    plain = [build_model(dataclasses.replace(cfg, match_params=None, n_embd=w), VOCAB).num_params() for w in (24, 32)]
    assert all(abs(p - 2.0e4) > TOLERANCE * 2.0e4 for p in plain)  # neither neighbouring width is close enough
    resolved = match_params(type(build_model(dataclasses.replace(cfg, match_params=None), VOCAB)), cfg, VOCAB)
    assert resolved.d_ff is not None
    assert abs(build_model(resolved, VOCAB).num_params() - 2.0e4) <= TOLERANCE * 2.0e4


def test_user_feed_forward_ratio_is_kept():
    cfg = model_cfg({**SECTIONS["windowed"], "n_embd": 64, "d_ff": 128}, 2.0e5)
    resolved = build_model(cfg, VOCAB).cfg
    assert resolved.d_ff == 2 * resolved.n_embd


@pytest.mark.parametrize("target,message", [(1.0e2, "below the smallest"), (-5.0, "positive")])
def test_impossible_budget_names_the_key(target, message):
    with pytest.raises(ConfigError, match=f"model.match_params: .*{message}"):
        build_model(model_cfg(SECTIONS["shared"], target), VOCAB)
