"""Tangent descent (train.optimizer: tangent) against one step computed here in plain PyTorch:
each row's base update projected onto the row's tangent space, the step, then the retraction to
the row's norm; row norms are kept to 1e-6 over training; the rest takes the Euclidean fallback."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from research.config import RunConfig
from research.errors import ConfigError
from research.models import build_model
from research.models.gpt import GPT
from research.optim import TangentDescent, build_optimizer, muon_params

V = 29


def cfg(base="adam", **kw):
    return RunConfig.from_dict({"train": {"optimizer": "tangent", "lr": 1e-2, "max_steps": 10, "warmup_steps": 0,
                                          "options": {"tangent": {"base": base}}, **kw}}).train


def by_hand(w: torch.Tensor, update: torch.Tensor, lr: float) -> torch.Tensor:
    """Row by row, with dot products: project, step, retract."""
    out = torch.empty_like(w, dtype=torch.float64)
    for i, (row, u) in enumerate(zip(w.double(), update.double())):
        tangent = u - torch.dot(u, row) / torch.dot(row, row) * row
        moved = row - lr * tangent
        out[i] = moved * row.norm() / moved.norm()
    return out


def test_one_adam_step_equals_projection_then_retraction():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(6, 5))
    w.grad = torch.randn(6, 5)
    before, g = w.detach().clone(), w.grad.clone()
    opt = TangentDescent([w], lr=0.1, base="adam", betas=(0.9, 0.95), eps=1e-8)
    opt.step()
    # Adam's first step: m = 0.1 g, v = 0.05 g^2; bias-corrected, u = g / (|g| + eps)
    u = g / (g.abs() + 1e-8)
    torch.testing.assert_close(w.detach().double(), by_hand(before, u, 0.1), rtol=0, atol=1e-6)
    torch.testing.assert_close(w.norm(dim=1).double(), before.norm(dim=1).double(), rtol=0, atol=1e-6)
    assert (w.detach() - before).abs().max() > 1e-2  # it moved


def test_sgd_momentum_steps_use_the_buffer():
    torch.manual_seed(1)
    w = torch.nn.Parameter(torch.randn(4, 8))
    opt = TangentDescent([w], lr=0.05, base="sgd", momentum=0.9)
    expected, buf = w.detach().clone(), None
    for _ in range(3):
        g = torch.randn(4, 8)
        w.grad = g.clone()
        buf = g if buf is None else 0.9 * buf + g
        expected = by_hand(expected, buf, 0.05).float()
        opt.step()
        torch.testing.assert_close(w.detach(), expected, rtol=0, atol=1e-6)


def test_the_update_along_the_row_is_removed():
    """An update parallel to every row moves nothing: only directions learn."""
    w = torch.nn.Parameter(torch.randn(3, 4))
    before = w.detach().clone()
    w.grad = 5.0 * before
    TangentDescent([w], lr=0.5, base="sgd", momentum=0.0).step()
    torch.testing.assert_close(w.detach(), before, rtol=0, atol=1e-6)


def test_training_keeps_hidden_row_norms_and_the_fallback_moves_the_rest():
    torch.manual_seed(0)
    model = build_model(GPT.tiny_config(), V)
    hidden, rest = muon_params(model)
    norms = [p.detach().norm(dim=1).clone() for p in hidden]
    emb = model.tok_emb.weight.detach().clone()
    opt = build_optimizer(model, cfg(lr=3e-3))
    x = torch.randint(0, V, (8, 17))
    losses = []
    for _ in range(30):
        loss = F.cross_entropy(model(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.3, losses
    for p, n in zip(hidden, norms):
        torch.testing.assert_close(p.detach().norm(dim=1), n, rtol=0, atol=1e-6)
    assert not torch.allclose(model.tok_emb.weight.norm(dim=1), emb.norm(dim=1))  # Euclidean, norms free
    lookups = {id(p) for p in model.embedding_parameters()}
    assert all(p.dim() < 2 or id(p) in lookups for p in rest)


def test_state_dict_round_trip_continues_exactly():
    config = cfg(lr=3e-3, base="adam")
    torch.manual_seed(0)
    a = build_model(GPT.tiny_config(), V)
    b = copy.deepcopy(a)
    opt_a, opt_b = build_optimizer(a, config), build_optimizer(b, config)
    x = torch.randint(0, V, (4, 9))

    def step(model, opt):
        loss = F.cross_entropy(model(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()

    step(a, opt_a)
    b.load_state_dict(a.state_dict())
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))
    step(a, opt_a)
    step(b, opt_b)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb)


def test_bad_base_is_refused_in_one_line():
    with pytest.raises(ConfigError) as err:
        cfg(base="adamw")
    message = str(err.value)
    assert "train.options.tangent.base: 'adamw' is not one of sgd, adam" in message and "\n" not in message
