"""Optimizers and schedules: the learning-rate curve of each schedule step by step, which
parameters Muon takes, that one scheduler drives both halves of Muon, and that every optimizer
trains. (Muon inside the real Lightning Trainer, checkpoints included, runs in the end-to-end
grid test of tests/models/test_baselines.py.)"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from research.config import RunConfig
from research.errors import ConfigError
from research.models import build_model
from research.models.gpt import GPT
from research.models.rnn import LSTM
from research.optim import CombinedOptimizer, build_optimizer, build_scheduler, muon_params, param_groups

V = 29


def train_cfg(options=None, **kw):
    """A checked train config; `options` is `train.options` (plug-in name -> its settings)."""
    return RunConfig.from_dict({"train": {"lr": 0.1, "max_steps": 100, "warmup_steps": 0, "options": options or {},
                                          **kw}}).train


def tiny_gpt(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return build_model(GPT.tiny_config(), V)


def lr_curve(**kw) -> list[float]:
    cfg = train_cfg(**kw)
    model = tiny_gpt()
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg)
    lrs = []
    for _ in range(cfg.max_steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_constant_ignores_warmup():
    assert lr_curve(schedule="constant", warmup_steps=10) == pytest.approx([0.1] * 100)


def test_warmup_then_constant():
    lrs = lr_curve(schedule="warmup", warmup_steps=4)
    assert lrs[:5] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1])
    assert lrs[5:] == pytest.approx([0.1] * 95)


def test_cosine_ends_at_min_lr():
    lrs = lr_curve(schedule="cosine", warmup_steps=10, min_lr=0.01)
    assert lrs[9] == pytest.approx(0.1 * 10 / 11)
    assert lrs[10] == pytest.approx(0.1)
    assert lrs[55] == pytest.approx(0.01 + 0.09 * 0.5)  # halfway through the decay
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_wsd_is_stable_then_decays_linearly():
    lrs = lr_curve(schedule="wsd", warmup_steps=10, options={"wsd": {"decay_fraction": 0.2}}, min_lr=0.0)
    assert lrs[0] == pytest.approx(0.1 / 11)
    assert lrs[10:80] == pytest.approx([0.1] * 70)
    assert lrs[80:] == pytest.approx([0.1 * (1 - k / 20) for k in range(1, 21)])
    assert lrs[-1] == pytest.approx(0.0)
    default_floor = lr_curve(schedule="wsd", options={"wsd": {"decay_fraction": 0.5}})
    assert default_floor[49] == pytest.approx(0.1) and default_floor[-1] == pytest.approx(0.01)


def test_step_decay_halves_each_epoch_after_the_first_ones():
    lrs = lr_curve(schedule="step_decay", steps_per_epoch=10, max_steps=50,
                   options={"step_decay": {"decay_after_epochs": 2, "lr_decay": 0.5}})
    assert lrs[:20] == pytest.approx([0.1] * 20)
    assert lrs[20:30] == pytest.approx([0.05] * 10)
    assert lrs[30:40] == pytest.approx([0.025] * 10)
    assert lrs[40:] == pytest.approx([0.0125] * 10)


def test_step_decay_needs_the_epoch_length():
    with pytest.raises(ConfigError, match="train.steps_per_epoch"):
        lr_curve(schedule="step_decay")


def test_unknown_names_are_config_errors():
    model = tiny_gpt()
    with pytest.raises(ConfigError, match="train.optimizer: unknown optimizer 'adamv'"):
        build_optimizer(model, train_cfg(optimizer="adamv"))
    with pytest.raises(ConfigError, match="train.schedule"):
        build_scheduler(build_optimizer(model, train_cfg()), train_cfg(schedule="cosin"))


def test_sgd_momentum_and_nesterov():
    model = tiny_gpt()
    opt = build_optimizer(model, train_cfg(optimizer="sgd"))
    assert type(opt) is torch.optim.SGD
    assert opt.defaults["momentum"] == 0.9 and opt.defaults["nesterov"] is False
    plain = build_optimizer(model, train_cfg(optimizer="sgd", options={"sgd": {"momentum": 0.0}}, weight_decay=0.0))
    assert plain.defaults["momentum"] == 0.0
    nesterov = build_optimizer(model, train_cfg(optimizer="sgd", options={"sgd": {"nesterov": True}}))
    assert nesterov.defaults["nesterov"] is True
    with pytest.raises(ConfigError, match=r"^train\.options\.sgd\.nesterov: Nesterov momentum needs momentum > 0$"):
        train_cfg(optimizer="sgd", options={"sgd": {"momentum": 0.0, "nesterov": True}})


def test_adam_couples_weight_decay_and_adamw_does_not():
    model = tiny_gpt()
    adam = build_optimizer(model, train_cfg(optimizer="adam", weight_decay=0.1))
    assert type(adam) is torch.optim.Adam
    assert [g["weight_decay"] for g in adam.param_groups] == [0.1, 0.0]  # norms and biases not decayed
    assert type(build_optimizer(model, train_cfg(optimizer="adamw"))) is torch.optim.AdamW


def test_adam_and_adamw_use_the_fused_kernel_on_cpu_with_the_same_update():
    """The fused kernel replaces PyTorch's per-tensor CPU loop; the trajectory must not change."""
    a, b = tiny_gpt(), tiny_gpt()
    b.load_state_dict(a.state_dict())
    fused = build_optimizer(a, train_cfg(optimizer="adamw", weight_decay=0.1, lr=1e-3))
    assert fused.defaults["fused"] is True
    assert build_optimizer(a, train_cfg(optimizer="adam")).defaults["fused"] is True
    loop = torch.optim.AdamW(param_groups(b, 0.1), lr=fused.defaults["lr"], betas=fused.defaults["betas"],
                             foreach=False)
    x = torch.randint(0, V, (4, 16))
    for _ in range(20):
        for model, opt in ((a, fused), (b, loop)):
            model(x).float().logsumexp(-1).mean().backward()
            opt.step()
            opt.zero_grad()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)


def names_of(model, params) -> set[str]:
    ids = {id(p) for p in params}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_muon_takes_hidden_matrices_only():
    model = tiny_gpt()
    hidden, rest = muon_params(model)
    assert names_of(model, hidden) == {f"blocks.{i}.{m}.weight" for i in range(2)
                                       for m in ("attn.q", "attn.kv", "attn.proj", "mlp.up", "mlp.down")}
    assert "tok_emb.weight" in names_of(model, rest)  # tied with lm_head: one tensor, AdamW
    assert {p.dim() for p in rest} == {1, 2}
    assert len(hidden) + len(rest) == len(list(model.parameters()))

    torch.manual_seed(0)
    rnn = build_model(dataclasses.replace(LSTM.tiny_config(), n_layer=2), V)
    hidden, rest = muon_params(rnn)
    assert names_of(rnn, hidden) == {f"rnn.weight_{k}_l{i}" for k in ("ih", "hh") for i in range(2)}
    assert {"tok_emb.weight", "lm_head.weight", "lm_head.bias"} <= names_of(rnn, rest)


def test_one_scheduler_drives_both_halves_of_muon():
    cfg = train_cfg(optimizer="muon", schedule="warmup", warmup_steps=4)
    model = tiny_gpt()
    opt = build_optimizer(model, cfg)
    assert isinstance(opt, CombinedOptimizer) and isinstance(opt, torch.optim.Optimizer)
    muon, adamw = opt.optimizers
    assert type(muon) is torch.optim.Muon and type(adamw) is torch.optim.AdamW
    assert muon.defaults["momentum"] == 0.95 and muon.defaults["nesterov"] is True  # Muon's own defaults
    own = build_optimizer(model, train_cfg(optimizer="muon", options={"muon": {"momentum": 0.8, "nesterov": False}}))
    assert own.optimizers[0].defaults["momentum"] == 0.8 and own.optimizers[0].defaults["nesterov"] is False
    sched = build_scheduler(opt, cfg)
    seen = []
    for _ in range(6):
        seen.append((muon.param_groups[0]["lr"], adamw.param_groups[0]["lr"], adamw.param_groups[1]["lr"]))
        opt.step()
        sched.step()
    assert [s[0] for s in seen] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1, 0.1])
    assert all(s[0] == s[1] == s[2] for s in seen)


def batch():
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, V, (4, 17), generator=g)


def loss_of(model, x):
    return F.cross_entropy(model(x[:, :-1]).reshape(-1, V), x[:, 1:].reshape(-1))


def train(opt, model, steps: int = 12) -> list[float]:
    x, losses = batch(), []
    for _ in range(steps):
        loss = loss_of(model, x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize(("name", "lr"), [("sgd", 0.5), ("adam", 3e-3), ("adamw", 3e-3), ("muon", 3e-3)])
def test_every_optimizer_lowers_the_loss(name, lr):
    model = tiny_gpt()
    losses = train(build_optimizer(model, train_cfg(optimizer=name, lr=lr, weight_decay=0.0)), model)
    assert losses[-1] < losses[0] - 0.3, losses


def test_combined_state_dict_round_trip():
    """A resumed Muon run (Lightning saves and reloads `state_dict`) continues exactly."""
    cfg = train_cfg(optimizer="muon", lr=3e-3)
    a = tiny_gpt()
    opt_a = build_optimizer(a, cfg)
    train(opt_a, a, steps=3)
    b = tiny_gpt(seed=1)
    b.load_state_dict(a.state_dict())
    opt_b = build_optimizer(b, cfg)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))  # as if read back from a checkpoint file
    assert len(opt_b.state) == len(opt_a.state) == len(list(a.parameters()))
    train(opt_a, a, steps=2)
    train(opt_b, b, steps=2)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb)


def test_muon_run_resumed_in_lightning_matches_an_uninterrupted_one(tmp_path):
    """Real Trainer: 6 steps, checkpoint, resume to 10 (weights_only load, as the runner does)
    gives the weights and learning rates of 10 uninterrupted steps."""
    import lightning as L
    import numpy as np
    from torch.utils.data import DataLoader

    from research.data.batches import RandomWindows
    from research.lightning_module import LMModule

    tokens = np.random.default_rng(0).integers(0, V, 3000)
    raw = {"model": {"arch": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 16},
           "train": {"optimizer": "muon", "schedule": "wsd", "max_steps": 10, "warmup_steps": 2, "batch_size": 4}}

    def fit(steps, start=0, ckpt=None):
        L.seed_everything(0, verbose=False)
        module = LMModule(raw, V, 0)
        trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
        data = DataLoader(RandomWindows(tokens, 4, 16, seed=0, start_step=start), batch_size=None)
        trainer.fit(module, data, ckpt_path=ckpt, weights_only=True)
        return module, trainer

    full, _ = fit(10)
    _, half = fit(6)
    half.save_checkpoint(tmp_path / "half.ckpt")
    resumed, trainer = fit(10, start=6, ckpt=tmp_path / "half.ckpt")
    for a, b in zip(full.parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b)
    muon, adamw = trainer.optimizers[0].optimizers
    assert muon.param_groups[0]["lr"] == adamw.param_groups[0]["lr"] == pytest.approx(1e-4)  # wsd floor lr / 10
