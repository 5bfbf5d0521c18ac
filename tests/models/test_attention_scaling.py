"""Attention that depends on the visible count n_t (model.arch attention_scaling), against a plain
einsum implementation written here: every layer of the variant over GPT, with grouped-query
attention and with per-layer windows, for sum powers p in {0, 0.5, 1}, learned per-head powers and
Scalable-Softmax's log n logits; and older configs that scaled `arch: gpt` loading as the variant."""

from __future__ import annotations

import math

import pytest
import torch

from research import cell
from research.checkpoint import load_run_config
from research.config import RunConfig
from research.errors import ConfigError
from research.models import build_model
from research.models.gpt import CausalSelfAttention

ARCHS = {
    "gpt": {"arch": "attention_scaling", "n_layer": 2, "n_head": 2, "n_embd": 16, "block_size": 16, "pos": "rope"},
    "gqa": {"arch": "attention_scaling", "n_layer": 2, "n_head": 4, "n_kv_head": 2, "n_embd": 32, "block_size": 16,
            "pos": "rope", "norm": "rmsnorm", "mlp": "swiglu"},
    "windowed": {"arch": "attention_scaling_windowed", "n_layer": 3, "n_head": 2, "n_embd": 16, "block_size": 16,
                 "windows": [3, 16, 5], "pos": "none"},
}
SETTINGS = {
    "p=0": {"attn_sum_power": 0.0},
    "p=0.5": {"attn_sum_power": 0.5},
    "p=1": {"attn_sum_power": 1.0},
    "p learned": {"attn_sum_power": 0.5, "attn_sum_power_learned": True},
    "log_n": {"attn_scaling": "log_n"},
}


def reference(layer: CausalSelfAttention, x: torch.Tensor, setting: dict) -> torch.Tensor:
    """out_t = n_t^p sum_j softmax_j(c_t q_t.k_j / sqrt(d)) v_j over the visible j, by einsum.

    c_t = s_h log n_t for log_n (else 1); p per head. Only the projections (and rotary) come
    from the layer (the baseline's split, before the variant scales the queries); masking, scaling,
    softmax and weighting are computed here."""
    B, T, _ = x.shape
    q, k, v = CausalSelfAttention.split_heads(layer, x, x)  # (B, H, T, hd), (B, Hkv, T, hd)
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    t = torch.arange(T)
    visible = (t[None, :] <= t[:, None])
    if layer.window is not None:
        visible &= t[None, :] > t[:, None] - layer.window
    n = visible.sum(-1).double()  # (T,) keys each query sees
    scores = torch.einsum("bhtd,bhsd->bhts", q.double(), k.double()) / math.sqrt(q.shape[-1])
    if setting.get("attn_scaling") == "log_n":
        s = layer.scaling.scale.detach().double()  # (H,)
        scores = scores * (s[:, None] * n.log()[None, :])[None, :, :, None]
    weights = scores.masked_fill(~visible, float("-inf")).softmax(-1)
    if setting.get("attn_scaling") != "log_n":
        p = layer.scaling.power.detach().double()
        assert p.tolist() == [float(setting["attn_sum_power"])] * q.shape[1] or "attn_sum_power_learned" in setting
        weights = weights * (n[None, :] ** p[:, None])[None, :, :, None]
    y = torch.einsum("bhts,bhsd->bhtd", weights, v.double())
    y = y.transpose(1, 2).reshape(B, T, -1)
    return torch.nn.functional.linear(y, layer.proj.weight.double(),
                                      None if layer.proj.bias is None else layer.proj.bias.double())


def layers_of(model) -> list[CausalSelfAttention]:
    return list({id(m): m for m in model.modules() if isinstance(m, CausalSelfAttention)}.values())


@pytest.mark.parametrize("setting", SETTINGS, ids=list(SETTINGS))
@pytest.mark.parametrize("arch", ARCHS, ids=list(ARCHS))
def test_every_layer_matches_einsum_reference(arch, setting):
    torch.manual_seed(0)
    cfg = RunConfig.from_dict({"model": {**ARCHS[arch], **SETTINGS[setting]}}).model
    model = build_model(cfg, vocab_size=11).eval()
    layers = layers_of(model)
    if arch == "windowed":
        assert [layer.window for layer in layers] == [3, None, 5]  # a window >= block_size is plain causal
    for layer in layers:
        if setting == "p learned":  # distinct powers per head, so a mix-up of heads shows
            layer.scaling.power.data = torch.linspace(-0.5, 1.0, layer.n_head)
        if setting == "log_n":
            layer.scaling.scale.data = torch.linspace(0.2, 0.9, layer.n_head)
        x = torch.randn(2, 16, layer.q.in_features)
        with torch.no_grad():
            got = layer(x).double()
        want = reference(layer, x, SETTINGS[setting])
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_zero_power_is_the_baseline_model():
    """p = 0, fixed, is the baseline GPT: the same parameters from the same seed, the same logits."""
    torch.manual_seed(0)
    base = build_model(RunConfig.from_dict({"model": {**ARCHS["gpt"], "arch": "gpt"}}).model, 11)
    torch.manual_seed(0)
    same = build_model(RunConfig.from_dict({"model": {**ARCHS["gpt"], "attn_sum_power": 0.0}}).model, 11)
    assert base.state_dict().keys() == same.state_dict().keys() and base.num_params() == same.num_params()
    idx = torch.randint(0, 11, (2, 16))
    torch.testing.assert_close(same.eval()(idx), base.eval()(idx), rtol=0, atol=0)
    learned = build_model(RunConfig.from_dict({"model": {**ARCHS["gpt"], "attn_sum_power_learned": True}}).model, 11)
    assert learned.num_params() == base.num_params() + 2 * 2  # one p per head and layer


def test_learned_power_gets_a_gradient():
    torch.manual_seed(0)
    model = build_model(RunConfig.from_dict({"model": {**ARCHS["gpt"], "attn_sum_power_learned": True}}).model, 11)
    idx = torch.randint(0, 11, (2, 16))
    model(idx).logsumexp(-1).mean().backward()
    assert all(layer.scaling.power.grad.abs().sum() > 0 for layer in layers_of(model))


@pytest.mark.parametrize("model, message", [
    ({"attn_sum_power": 1.5}, "model.attn_sum_power: must be <= 1"),
    ({"attn_sum_power": -2}, "model.attn_sum_power: must be >= -1"),
    ({"attn_scaling": "log-n"}, "model.attn_scaling: unknown attention scaling 'log-n'; did you mean 'log_n'?"),
    ({"attn_scaling": "log_n", "attn_sum_power": 0.5}, "model.attn_sum_power: applies to attn_scaling sum_power"),
])
def test_out_of_range_settings_are_refused_with_one_line(model, message):
    with pytest.raises(ConfigError) as err:
        RunConfig.from_dict({"model": {**ARCHS["gpt"], **model}})
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("pos", ["rope", "none", "sinusoidal"])
def test_extended_context_keeps_the_trained_positions(pos):
    """Beyond block_size the model runs on; the first block_size positions are unchanged (causal)."""
    torch.manual_seed(0)
    model = build_model(RunConfig.from_dict({"model": {**ARCHS["gpt"], "pos": pos, "attn_sum_power": 0.5}}).model,
                        11).eval()
    idx = torch.randint(0, 11, (2, 64))
    short = model(idx[:, :16])
    model.extend_context(64)
    long = model(idx)
    assert long.shape == (2, 64, 11)
    torch.testing.assert_close(long[:, :16], short, rtol=1e-5, atol=1e-5)


def test_learned_positions_refuse_to_extend_in_one_line():
    model = build_model(RunConfig.from_dict({"model": {**ARCHS["gpt"], "pos": "learned"}}).model, 11)
    with pytest.raises(ConfigError) as err:
        model.extend_context(64)
    assert "learned absolute positions stop at block_size 16" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (FlexAttention and flash SDPA paths)")
@pytest.mark.parametrize("setting", ["p=0.5", "p learned", "log_n"])
def test_gpu_kernels_match_the_cpu_reference(setting):
    """On CUDA the windowed layers take FlexAttention and the full ones flash SDPA: same function."""
    torch.manual_seed(0)
    arch = {**ARCHS["windowed"], "n_embd": 64, "n_head": 2, "block_size": 256, "windows": [16, 256, 40]}
    cfg = RunConfig.from_dict({"model": {**arch, **SETTINGS[setting]}}).model
    model = build_model(cfg, vocab_size=11).eval()
    for layer in layers_of(model):
        x = torch.randn(2, 256, 64)
        want = reference(layer, x, SETTINGS[setting])
        with torch.no_grad():
            got = layer.cuda()(x.cuda()).double().cpu()
        torch.testing.assert_close(got, want, rtol=2e-3, atol=2e-3)


#: what `arch: gpt` stored in config.yaml before attention scaling was its own variant (every default filled in)
OLD_GPT = {"arch": "gpt", "match_params": None, "n_layer": 2, "n_head": 2, "n_kv_head": None, "n_embd": 16,
           "d_ff": None, "block_size": 16, "dropout": 0.0, "pos": "rope", "norm": "layernorm", "mlp": "gelu",
           "bias": False, "tie_embeddings": True, "rope_base": 10000.0, "attn_scaling": "sum_power",
           "attn_sum_power": 0.0, "attn_sum_power_learned": False}


@pytest.mark.parametrize("old, arch", [
    ({}, "gpt"),
    ({"attn_sum_power": 0.5}, "attention_scaling"),
    ({"attn_scaling": "log_n"}, "attention_scaling"),
    ({"arch": "windowed", "windows": [3, 16], "window_min": 16, "window_max": None, "attn_sum_power_learned": True},
     "attention_scaling_windowed"),
])
def test_older_cell_configs_load_as_the_variant(tmp_path, old, arch):
    """A cell written before the move loads with the same settings, and its config.yaml is rewritten once."""
    cell.write_config(tmp_path, {"model": {**OLD_GPT, **old}})
    model = load_run_config(tmp_path).model
    assert model.arch == arch
    stored = cell.read_config(tmp_path)["model"]
    assert stored["arch"] == arch and (arch != "gpt") == ("attn_sum_power" in stored)
    for key in ("attn_scaling", "attn_sum_power", "attn_sum_power_learned", "windows", "pos"):
        if key in stored:
            assert getattr(model, key) == {**OLD_GPT, **old}[key]


def test_the_baseline_refuses_scaling_keys():
    with pytest.raises(ConfigError, match="model.attn_sum_power: unknown key"):
        RunConfig.from_dict({"model": {**ARCHS["gpt"], "arch": "gpt", "attn_sum_power": 0.5}})
