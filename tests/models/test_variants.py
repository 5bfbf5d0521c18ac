"""The four architecture variants, each tested on its defining property.

Windows: perturbing a token outside a layer's window leaves that layer's output unmoved, a token
just inside moves it, and the model-level receptive field is exact. Sharing: the parameters are
the same tensors, the gradient of a shared weight is the sum over its applications, counts count
it once and FLOPs count every application. Widths: each layer's shapes and the projections where
the width changes. Residual root: token information reaches the stream only through the first
block's attention, and a residual width different from the embedding width works. Every model
configuration in the architecture grids is checked for causality.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml

from research.config import RunConfig
from research.errors import ConfigError
from research.models import MODELS, build_model
from research.models.combined import SharedWindowedGPT
from research.models.gpt import GPT, GPTConfig
from research.models.layer_schedules import layer_values
from research.models.residual_root import ResidualRootConfig, ResidualRootGPT
from research.models.tapered import TaperedConfig, TaperedGPT
from research.models.variant import LayerAttention, VariantConfig, VariantGPT
from research.models.weight_sharing import SharedConfig, SharedGPT
from research.models.window_attention import band_mask, window_attention
from research.models.windowed import WindowedConfig, WindowedGPT

VOCAB = 29
GRIDS = Path(__file__).resolve().parents[2] / "ablations" / "grids"
VARIANTS = ["windowed", "tapered", "shared", "residual_root", "shared_windowed", "tapered_windowed",
            "residual_root_windowed"]
SMALL = dict(n_head=2, n_embd=16, block_size=32)


def model_of(cls, seed: int = 0, **kw):
    torch.manual_seed(seed)
    return cls(cls.Config(**{**SMALL, **kw}), VOCAB).eval()


def assert_causal(model, T: int, atol: float = 1e-5) -> None:
    x = torch.randint(0, VOCAB, (2, T), device=model.lm_head.weight.device)
    with torch.no_grad():
        base = model(x)
        for t in (0, T // 3, T - 2):
            y = x.clone()
            y[:, t + 1:] = (y[:, t + 1:] + 1) % VOCAB
            out = model(y)
            assert torch.allclose(out[:, : t + 1], base[:, : t + 1], atol=atol), f"position <= {t} saw the future"
            assert not torch.allclose(out[:, t + 1:], base[:, t + 1:], atol=atol)


# -- shapes -------------------------------------------------------------------------------------


def test_named_shapes():
    assert layer_values("decreasing", 3, 8, 32, 8) == [32, 24, 8]
    assert layer_values("increasing", 3, 8, 32, 8) == [8, 24, 32]
    assert layer_values("small-large-small", 5, 16, 128) == [16, 72, 128, 72, 16]
    assert layer_values("uniform", 2, 1, 64) == [64, 64]
    assert layer_values([5, 7], 2, 0, 0) == [5, 7]


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="windows: 2 values given for 3 layers"):
        RunConfig.from_dict({"model": {"arch": "windowed", "n_layer": 3, "windows": [4, 8]}})
    with pytest.raises(ConfigError, match="unknown shape 'small-big'"):
        RunConfig.from_dict({"model": {"arch": "tapered", "widths": "small-big"}})
    with pytest.raises(ConfigError, match="multiples of 4"):
        RunConfig.from_dict({"model": {"arch": "tapered", "n_layer": 2, "widths": [64, 30]}})
    with pytest.raises(ConfigError, match="needs n_unique"):
        RunConfig.from_dict({"model": {"arch": "shared", "sharing": "cycle"}})
    with pytest.raises(ConfigError, match="model.sharing"):
        RunConfig.from_dict({"model": {"arch": "shared", "sharing": "sometimes"}})


def test_variant_base_is_gpt_sized():
    """With no hook overridden the variant base has GPT's parameter count and FLOPs exactly."""
    cfg = dict(n_layer=3, n_head=2, n_embd=32, block_size=32, pos="rope", mlp="swiglu", tie_embeddings=False)
    gpt, var = GPT(GPTConfig(**cfg), VOCAB), VariantGPT(VariantConfig(**cfg), VOCAB)
    assert var.num_params() == gpt.num_params()
    assert var.num_params(non_embedding=True) == gpt.num_params(non_embedding=True)
    assert var.flops_per_token(32) == gpt.flops_per_token(32)


# -- windows ------------------------------------------------------------------------------------


def test_band_mask_is_exact_and_cached():
    m = band_mask(6, 3, torch.device("cpu"))
    assert m.tolist()[5] == [False, False, False, True, True, True]
    assert m.tolist()[1] == [True, True, False, False, False, False]
    assert band_mask(6, 3, torch.device("cpu")) is m  # built once per (T, w, device)


def test_window_attention_matches_dense_reference():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 10, 8) for _ in range(3))
    w = 4
    scores = q @ k.transpose(-1, -2) / 8**0.5
    i, j = torch.arange(10)[:, None], torch.arange(10)[None, :]
    scores = scores.masked_fill(~((j <= i) & (j > i - w)), float("-inf"))
    ref = scores.softmax(-1) @ v
    assert torch.allclose(window_attention(q, k, v, w), ref, atol=1e-5)
    assert torch.allclose(window_attention(q, k, v, 10), window_attention(q, k, v, None))


@pytest.mark.parametrize("window", [1, 3, 7])
def test_window_layer_ignores_tokens_outside_its_window(window):
    """Layer output at i moves with its input at i-w+1 and not at i-w."""
    torch.manual_seed(0)
    attn = LayerAttention(GPTConfig(**SMALL, pos="rope"), dim=16, window=window).eval()
    x = torch.randn(1, 12, 16)
    i = 11
    base = attn(x)[0, i]
    outside, inside = x.clone(), x.clone()
    outside[0, i - window] += 5.0
    inside[0, i - window + 1] += 5.0
    assert torch.allclose(attn(outside)[0, i], base, atol=1e-6)
    assert not torch.allclose(attn(inside)[0, i], base, atol=1e-4)


def test_windowed_model_layers_and_receptive_field():
    model = model_of(WindowedGPT, n_layer=3, windows=[2, 3, 4])
    assert model.windows() == [2, 3, 4]
    R = model.receptive_field()
    assert R == 1 + 1 + 2 + 3
    # layer 0's output at i does not move when a token outside its window changes
    outs = {}
    model.blocks[0].register_forward_hook(lambda m, a, o: outs.__setitem__("l0", o))
    x = torch.randint(0, VOCAB, (1, 20))
    with torch.no_grad():
        logits = model(x)
        l0 = outs["l0"]
        i = 19
        for j, moves_l0, moves_logits in ((i - 2, False, True), (i - 1, True, True), (i - R, False, False),
                                          (i - R + 1, False, True)):
            y = x.clone()
            y[0, j] = (y[0, j] + 1) % VOCAB
            out = model(y)
            assert torch.allclose(outs["l0"][0, i], l0[0, i], atol=1e-6) != moves_l0, j
            assert torch.allclose(out[0, i], logits[0, i], atol=1e-6) != moves_logits, j


def test_window_flops_count_min_T_w():
    full = model_of(WindowedGPT, n_layer=2, windows=[32, 32])
    local = model_of(WindowedGPT, n_layer=2, windows=[8, 32])
    assert full.num_params() == local.num_params()
    assert full.flops_per_token(32) - local.flops_per_token(32) == 12 * 16 * (32 - 8)
    assert full.flops_per_token(8) == local.flops_per_token(8)  # a window wider than T costs T


def test_window_mask_survives_inference_mode():
    """A band mask first built under inference mode must still work in a later backward."""
    model = model_of(WindowedGPT, n_layer=2, windows=[3, 5], block_size=17)
    x = torch.randint(0, VOCAB, (2, 17))
    with torch.inference_mode():
        model(x)
    model.train()
    model(x).sum().backward()
    assert model.blocks[0].attn.q.weight.grad is not None


# -- sharing ------------------------------------------------------------------------------------


@pytest.mark.parametrize("sharing,n_unique,schedule", [("all", None, [0, 0, 0, 0]), ("repeat", None, [0, 0, 1, 1]),
                                                        ("cycle", 2, [0, 1, 0, 1]), ("recursive", None, [0, 0, 0, 0])])
def test_sharing_uses_the_same_tensors(sharing, n_unique, schedule):
    model = model_of(SharedGPT, n_layer=4, sharing=sharing, n_unique=n_unique)
    assert model.cfg.schedule() == schedule
    for a in range(4):
        for b in range(4):
            same = schedule[a] == schedule[b]
            assert (model.blocks[a] is model.blocks[b]) == same
            assert (model.blocks[a].mlp.up.weight is model.blocks[b].mlp.up.weight) == same
    unique = len(set(schedule))
    one = VariantGPT(VariantConfig(**SMALL, n_layer=unique), VOCAB)
    step = model.step_emb.numel() if sharing == "recursive" else 0
    assert model.num_params() == one.num_params() + step
    deep = VariantGPT(VariantConfig(**SMALL, n_layer=4), VOCAB)
    assert model.flops_per_token(32) == deep.flops_per_token(32)  # compute counts every application


def test_shared_gradients_sum_over_applications():
    """dL/dW of a shared block equals the sum of dL/dW_l of an unshared copy with tied values."""
    shared = model_of(SharedGPT, n_layer=4, sharing="cycle", n_unique=2).train()
    unshared = VariantGPT(VariantConfig(**SMALL, n_layer=4), VOCAB).train()
    state = {k: v for k, v in shared.state_dict().items()}  # blocks.2.* holds block 0's tensors, and so on
    unshared.load_state_dict(state)
    x = torch.randint(0, VOCAB, (2, 16))
    assert torch.allclose(shared(x), unshared(x), atol=1e-6)
    target = torch.randint(0, VOCAB, (2 * 16,))
    for m in (shared, unshared):
        torch.nn.functional.cross_entropy(m(x).reshape(-1, VOCAB), target).backward()
    for u, apps in ((0, (0, 2)), (1, (1, 3))):
        g = shared.blocks[u].attn.q.weight.grad
        parts = [unshared.blocks[a].attn.q.weight.grad for a in apps]
        assert torch.allclose(g, parts[0] + parts[1], rtol=1e-4, atol=1e-9)
        assert not torch.allclose(g, parts[0], rtol=1e-2, atol=1e-9)


def test_recursive_step_embedding_acts_per_step():
    model = model_of(SharedGPT, n_layer=3, sharing="recursive")
    x = torch.randint(0, VOCAB, (1, 10))
    with torch.no_grad():
        before = model(x)
        model.step_emb[1] += 1.0
        assert not torch.allclose(model(x), before)
    assert any(p is model.step_emb for p in model.embedding_parameters())


def test_shared_state_dict_round_trip():
    a = model_of(SharedWindowedGPT, seed=0, n_layer=4, sharing="repeat", windows=[4, 32])
    b = model_of(SharedWindowedGPT, seed=1, n_layer=4, sharing="repeat", windows=[4, 32])
    b.load_state_dict(a.state_dict())
    x = torch.randint(0, VOCAB, (2, 20))
    assert torch.equal(a(x), b(x))
    assert b.blocks[0] is b.blocks[1] and b.windows() == [4, 4, None, None]
    assert b.receptive_field() == 32


# -- widths -------------------------------------------------------------------------------------


def test_tapered_shapes_and_projections():
    model = model_of(TaperedGPT, n_layer=4, n_embd=32, widths="decreasing", taper=0.5)
    widths = [32, 26, 22, 16]
    assert model.cfg.layer_widths() == widths
    for layer, d in enumerate(widths):
        blk = model.blocks[layer]
        assert blk.attn.q.weight.shape == (d, d) and blk.attn.proj.weight.shape == (d, d)
        assert blk.mlp.up.weight.shape == (4 * d, d) and blk.norm1.weight.shape == (d,)
    assert isinstance(model.resize[0], torch.nn.Identity)  # 32 -> 32
    assert [tuple(p.weight.shape) for p in model.resize[1:]] == [(26, 32), (22, 26), (16, 22)]
    assert model.resize_out.weight.shape == (32, 16)
    seen = []
    for blk in model.blocks:
        blk.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[-1]))
    assert model(torch.randint(0, VOCAB, (2, 9))).shape == (2, 9, VOCAB)
    assert seen == widths


def test_layerwise_scaling_openelm():
    model = model_of(TaperedGPT, n_layer=3, n_head=4, n_embd=32, head_scale=[0.5, 1.0], ff_scale=[0.5, 4.0])
    heads = [b.attn.n_head for b in model.blocks]
    ff = [b.mlp.down.weight.shape[1] for b in model.blocks]
    assert heads == [2, 3, 4]  # alpha = 0.5, 0.75, 1.0 of 4 heads, head size 8 kept
    assert [b.attn.q.weight.shape[0] for b in model.blocks] == [16, 24, 32]
    assert ff == [16, 72, 128]  # beta = 0.5, 2.25, 4.0 times d = 32
    assert model(torch.randint(0, VOCAB, (1, 8))).shape == (1, 8, VOCAB)
    with pytest.raises(ConfigError, match="n_kv_head"):
        RunConfig.from_dict({"model": {"arch": "tapered", "head_scale": [0.5, 1.0], "n_kv_head": 2}})


# -- residual root ------------------------------------------------------------------------------


@pytest.mark.parametrize("ratio", [0.5, 1.0, 2.0])
def test_residual_root_token_path(ratio):
    model = model_of(ResidualRootGPT, n_layer=3, n_embd=16, stream_ratio=ratio)
    d = model.cfg.d_model
    assert d == int(16 * ratio) and model.blocks[1].attn.q.weight.shape == (d, d)
    assert model.blocks[0].attn.kv.weight.shape == (2 * d, 16)  # keys/values read the 16-wide embeddings
    starts = []
    model.blocks[0].register_forward_pre_hook(lambda m, a: starts.append(a[0].clone()))
    x, y = torch.randint(0, VOCAB, (2, 12)), torch.randint(0, VOCAB, (2, 12))
    with torch.no_grad():
        out_x, out_y = model(x), model(y)
        assert torch.equal(starts[0], starts[1])  # the stream starts at the root whatever the tokens
        assert torch.allclose(starts[0][0, 0], model.root)
        assert not torch.allclose(out_x, out_y)
        model.blocks[0].attn.kv.weight.zero_()  # cut the one path: logits no longer depend on tokens
        assert torch.allclose(model(x), model(y), atol=1e-6)


def test_residual_root_learns_through_the_path():
    """Counting (next token = this token + 1, random start) needs the current token's identity,
    which only the read-in attention can deliver; a residual width twice the embedding width."""
    model = model_of(ResidualRootGPT, n_layer=2, n_embd=16, stream_ratio=2.0).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x = (torch.randint(0, VOCAB, (8, 1)) + torch.arange(17)) % VOCAB
    losses = []
    for _ in range(80):
        loss = torch.nn.functional.cross_entropy(model(x[:, :-1]).reshape(-1, VOCAB), x[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.45 * losses[0], losses[::10]


# -- grids: causality of every model configuration ----------------------------------------------


def grid_models() -> list[tuple[str, dict]]:
    out = []
    for path in sorted(GRIDS.glob("architecture*.yaml")):
        doc = yaml.safe_load(path.read_text())
        sections = doc.get("grid", {}).get("model") or [{}]
        for i, section in enumerate(sections):
            model = {**doc["base"].get("model", {}), **section} if section else doc["base"]["model"]
            out.append((f"{path.stem}[{i}]:{model.get('arch')}", model))
    return out


@pytest.mark.parametrize("label,section", grid_models(), ids=lambda v: v if isinstance(v, str) else "")
def test_grid_models_are_causal(label, section):
    """Each grid model as configured (windows, sharing, widths), at a narrow width to stay fast."""
    cfg = RunConfig.from_dict({"model": section}).model
    narrow = dataclasses.replace(cfg, match_params=None, n_embd=cfg.n_head * 4, d_ff=None)
    torch.manual_seed(0)
    model = build_model(narrow, VOCAB).eval()
    assert_causal(model, min(cfg.block_size, 96))  # longer than every small window in the grids


@pytest.mark.parametrize("name", VARIANTS)
def test_every_variant_tiny_config_is_causal(name):
    cls = MODELS.get(name)
    torch.manual_seed(0)
    assert_causal(cls(cls.tiny_config(), VOCAB).eval(), 24)


def test_configs_from_yaml_build_the_variant():
    raw = {"arch": "shared_windowed", "n_layer": 4, "n_head": 2, "n_embd": 16, "block_size": 32,
           "sharing": "cycle", "n_unique": 2, "windows": "increasing", "window_min": 4}
    cfg = RunConfig.from_dict({"model": raw}).model
    assert isinstance(cfg, SharedConfig) and isinstance(cfg, WindowedConfig)
    model = build_model(cfg, VOCAB)
    assert model.windows() == [4, None, 4, None]
    assert isinstance(RunConfig.from_dict({"model": {"arch": "tapered"}}).model, TaperedConfig)
    assert isinstance(RunConfig.from_dict({"model": {"arch": "residual_root"}}).model, ResidualRootConfig)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("head_dim,kv_heads", [(16, 4), (64, 2)])
def test_flex_path_matches_band_mask_on_gpu(head_dim, kv_heads):
    from research.models.window_attention import flex_supported

    torch.manual_seed(0)
    q = torch.randn(2, 4, 200, head_dim, device="cuda", requires_grad=True)
    k, v = (torch.randn(2, kv_heads, 200, head_dim, device="cuda", requires_grad=True) for _ in range(2))
    assert flex_supported(q, 0.0)
    gqa = kv_heads != 4
    flex = window_attention(q, k, v, 24, enable_gqa=gqa)
    band = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=band_mask(200, 24, q.device),
                                                            enable_gqa=gqa)
    assert torch.allclose(flex, band, atol=2e-3)
    g_flex = torch.autograd.grad(flex.square().sum(), (q, k, v))
    g_band = torch.autograd.grad(band.square().sum(), (q, k, v))
    for a, b in zip(g_flex, g_band):
        assert torch.allclose(a, b, atol=2e-2, rtol=1e-2)
    model = model_of(WindowedGPT, n_layer=3, windows=[4, 32, 8]).cuda().train()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        model(torch.randint(0, VOCAB, (2, 32), device="cuda")).float().sum().backward()
    assert_causal(model.eval(), 32, atol=1e-4)
