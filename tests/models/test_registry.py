"""Properties every registered model must have, checked over the whole registry.

A new model file gets these tests for free: output shape, an initial loss near ln V (no
information leak at init), causality (changing token t+1 leaves the logits at positions <= t
unchanged), parameter counts, a state-dict round trip, and a few optimizer steps that lower
the loss on a fixed batch.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from research.models import MODELS, build_model

VOCAB = 37
T = 24


def make(name: str, seed: int = 0):
    torch.manual_seed(seed)
    cls = MODELS.get(name)
    model = build_model(cls.tiny_config(), VOCAB)
    if getattr(model, "trainable", True) is False:
        model.fit(np.random.default_rng(0).integers(0, VOCAB, 5000).astype(np.uint16))
    return model.eval()


def seq_len(model) -> int:
    return min(T, model.block_size or T)


@pytest.fixture(params=MODELS.names())
def name(request):
    return request.param


def test_shape_and_initial_loss(name):
    model = make(name)
    n = seq_len(model)
    x = torch.randint(0, VOCAB, (3, n))
    logits = model(x)
    assert logits.shape == (3, n, VOCAB) and torch.isfinite(logits).all()
    if getattr(model, "trainable", True):
        # Against random targets the loss is about ln V + var(logits) / 2: unit-scale logits, as
        # Vaswani et al.'s tied N(0, 1/d) embeddings give, sit half a nat above ln V by design.
        expected = math.log(VOCAB) + logits.float().var(-1).mean().item() / 2
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), torch.randint(0, VOCAB, (3 * n,)))
        assert abs(loss.item() - expected) < 0.5, (loss.item(), expected)
        assert expected < math.log(VOCAB) + 1.0, expected


def test_causal(name):
    model = make(name)
    n = seq_len(model)
    x = torch.randint(0, VOCAB, (2, n))
    base = model(x)
    for t in (0, n // 2, n - 2):
        y = x.clone()
        y[:, t + 1 :] = torch.randint(0, VOCAB, (2, n - t - 1))
        out = model(y)
        torch.testing.assert_close(out[:, : t + 1], base[:, : t + 1], atol=1e-5, rtol=1e-5)
        assert not torch.allclose(out[:, t + 1 :], base[:, t + 1 :])


def test_param_counts(name):
    model = make(name)
    total, non_emb = model.num_params(), model.num_params(non_embedding=True)
    assert total > 0 and 0 <= non_emb <= total
    assert model.flops_per_token(seq_len(model)) >= 0
    assert isinstance(model.lm_head, torch.nn.Linear) or not getattr(model, "trainable", True)


def test_state_dict_round_trip(name, tmp_path):
    model = make(name, seed=0)
    torch.save({"state_dict": model.state_dict()}, tmp_path / "m.pt")
    other = make(name, seed=1)
    state = torch.load(tmp_path / "m.pt", weights_only=True)["state_dict"]
    if hasattr(other, "load_fitted") and getattr(other, "trainable", True) is False:
        other.load_fitted(state)
    else:
        other.load_state_dict(state)
    x = torch.randint(0, VOCAB, (2, seq_len(model)))
    torch.testing.assert_close(other.eval()(x), model(x))


def test_a_few_steps_lower_the_loss(name):
    model = make(name).train()
    if not getattr(model, "trainable", True):
        pytest.skip("count-based model")
    g = torch.Generator().manual_seed(0)
    n = seq_len(model)
    x = torch.randint(0, VOCAB, (4, n + 1), generator=g)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = F.cross_entropy(model(x[:, :-1]).reshape(-1, VOCAB), x[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.3
