"""The declared model interface and the one attention class, over the whole registry.

The trainer and the evals read `recurrent`, `trainable`, `block_size`, `architecture_metrics()`
and `attention_weights()` from every model without probing, so each registered model must be a
`LanguageModel` whose declarations match what it implements; and every parameter a model builds
must take part in the loss (a dead one inflates `match_params` and stops DDP unless
`find_unused_parameters` is set).
"""

from __future__ import annotations

import pytest
import torch

from research.models import MODELS, build_model
from research.models.base import LanguageModel
from research.models.gpt import GPT, CausalSelfAttention, GPTConfig
from research.models.variant import LayerAttention, VariantConfig, VariantGPT

VOCAB = 29


@pytest.fixture(params=MODELS.names())
def model(request):
    torch.manual_seed(0)
    cls = MODELS.get(request.param)
    return build_model(cls.tiny_config(), VOCAB)


def overrides(model, method: str) -> bool:
    return getattr(type(model), method) is not getattr(LanguageModel, method)


def test_declarations_match_what_the_model_implements(model):
    assert isinstance(model, LanguageModel)
    assert model.cfg is not None and model.cfg.arch in MODELS.names()
    assert overrides(model, "step") == model.recurrent  # recurrent models carry state through step()
    assert overrides(model, "fit") == overrides(model, "load_fitted") == (not model.trainable)
    assert isinstance(model.architecture_metrics(), dict)
    if model.block_size is not None:
        assert model.block_size == model.cfg.block_size


def test_every_parameter_takes_part_in_the_loss(model):
    if not model.trainable:
        pytest.skip("fitted by counting: no gradient steps")
    idx = torch.randint(0, VOCAB, (2, min(16, model.block_size or 16)))
    model.train()
    model(idx).float().logsumexp(-1).mean().backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None]
    assert not dead, f"parameters outside the computation: {dead}"


def test_a_variant_with_no_hook_overridden_is_the_baseline():
    """The variant base's attention is the baseline's with per-layer sizes (LayerAttention), so the
    same state dict: GPT's weights load into the variant base and give the same logits."""
    cfg = dict(n_layer=2, n_head=4, n_kv_head=2, n_embd=32, block_size=16, pos="rope", mlp="swiglu")
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(**cfg), VOCAB).eval()
    var = VariantGPT(VariantConfig(**cfg), VOCAB).eval()
    assert {k: v.shape for k, v in gpt.state_dict().items()} == {k: v.shape for k, v in var.state_dict().items()}
    var.load_state_dict(gpt.state_dict())
    idx = torch.randint(0, VOCAB, (2, 16))
    torch.testing.assert_close(var(idx), gpt(idx), rtol=0, atol=0)
    assert {type(b.attn) for b in gpt.blocks} == {CausalSelfAttention}
    assert {type(b.attn) for b in var.blocks} == {LayerAttention}


def test_weights_saved_with_a_fused_qkv_projection_still_load():
    """model.pt files written when GPT fused q, k and v into one `qkv` matrix (rows q, k, v)."""
    torch.manual_seed(0)
    cfg = GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=8, bias=True)
    model = GPT(cfg, VOCAB).eval()
    old = {}
    for key, value in model.state_dict().items():
        if ".attn.kv." in key:
            continue
        if ".attn.q." in key:
            kv = model.state_dict()[key.replace(".attn.q.", ".attn.kv.")]
            old[key.replace(".attn.q.", ".attn.qkv.")] = torch.cat([value, kv])
        else:
            old[key] = value
    torch.manual_seed(1)
    fresh = GPT(cfg, VOCAB).eval()
    fresh.load_state_dict(old)
    idx = torch.randint(0, VOCAB, (2, 8))
    torch.testing.assert_close(fresh(idx), model(idx), rtol=0, atol=0)


def test_fused_and_separate_projections_compute_the_same_attention():
    """The separate q / kv projections against the fused qkv matmul a plain GPT would do."""
    torch.manual_seed(0)
    attn = CausalSelfAttention(GPTConfig(n_layer=1, n_head=2, n_kv_head=1, n_embd=16, block_size=8)).eval()
    x = torch.randn(3, 8, 16)
    qkv = x @ torch.cat([attn.q.weight, attn.kv.weight]).T  # (B, T, 16 + 2 * 8)
    q, k, v = qkv.split([16, 8, 8], dim=-1)
    q = q.view(3, 8, 2, 8).transpose(1, 2)
    k, v = (t.view(3, 8, 1, 8).transpose(1, 2).expand(3, 2, 8, 8) for t in (k, v))
    scores = (q @ k.transpose(-1, -2)) / 8**0.5
    scores = scores.masked_fill(torch.ones(8, 8, dtype=torch.bool).triu(1), float("-inf"))
    y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(3, 8, 16)
    torch.testing.assert_close(attn(x), y @ attn.proj.weight.T, rtol=1e-5, atol=1e-6)
