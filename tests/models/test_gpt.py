"""The baseline GPT's options: every combination stays causal and counts its parameters right."""

from __future__ import annotations

import itertools

import pytest
import torch

from research.config import RunConfig
from research.models import build_model

V = 50


def gpt(**kw):
    raw = {"arch": "gpt", "n_layer": 2, "n_head": 4, "n_embd": 32, "block_size": 16, **kw}
    return build_model(RunConfig.from_dict({"model": raw}).model, V).eval()


@pytest.mark.parametrize(("pos", "norm", "mlp"), list(itertools.product(
    ["learned", "sinusoidal", "rope", "none"], ["layernorm", "rmsnorm"], ["gelu", "swiglu"])))
def test_options_are_causal(pos, norm, mlp):
    torch.manual_seed(0)
    model = gpt(pos=pos, norm=norm, mlp=mlp)
    x = torch.randint(0, V, (2, 16))
    y = x.clone()
    y[:, 9:] = (y[:, 9:] + 1) % V
    torch.testing.assert_close(model(x)[:, :9], model(y)[:, :9])


def test_parameter_count_by_hand():
    d, L, ff = 32, 2, 128
    model = gpt(pos="learned", norm="layernorm", mlp="gelu", bias=False, tie_embeddings=True)
    per_layer = 4 * d * d + 2 * d * ff + 2 * d  # attention q,k,v,o + MLP + two LayerNorm weights
    assert model.num_params(non_embedding=True) == L * per_layer + d  # + final norm
    assert model.num_params() == L * per_layer + d + V * d + 16 * d  # + tied token table + positions
    untied = gpt(tie_embeddings=False)
    assert untied.num_params() == model.num_params() + V * d
    assert untied.num_params(non_embedding=True) == model.num_params(non_embedding=True)


def test_grouped_query_attention_shrinks_kv():
    full, gqa = gpt(n_kv_head=4), gpt(n_kv_head=1)
    d, head = 32, 8
    assert full.num_params() - gqa.num_params() == 2 * 2 * d * (d - head)  # k and v, two layers
    x = torch.randint(0, V, (1, 16))
    assert gqa(x).shape == (1, 16, V)


def test_tied_embeddings_share_storage():
    model = gpt(tie_embeddings=True)
    assert model.lm_head.weight is model.tok_emb.weight or \
        model.lm_head.weight.data_ptr() == next(iter(model.embedding_parameters())).data_ptr()
