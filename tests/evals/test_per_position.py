"""Per-position loss: hand-computed curves, the training callback's records, the checkpoint eval."""

from __future__ import annotations

import json
import math

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from evals import per_position
from evals.base import EvalContext, write_result
from paper.collect import read_per_position
from research.callbacks import PerPositionLoss
from research.config import RunConfig
from research.lightning_module import LMModule
from research.per_position import loss_by_position, sample_windows
from tests.evals.lookup_model import LookupModel, random_table


class PeriodTwoModel(nn.Module):
    """Predicts token t+1 = token t-1 with logit 8; at position 0 it has no such token: uniform.

    On an alternating stream "abab..." its loss is ln V at position 0 and ln(1 + (V-1) e^-8) after.
    """

    def __init__(self, vocab_size: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.lm_head = nn.Linear(1, 1)  # the contract's name; unused

    def forward(self, idx):
        B, T = idx.shape
        logits = torch.zeros(B, T, self.vocab_size)
        prev = idx[:, :-1]  # token t-1 for t >= 1
        logits[:, 1:].scatter_(-1, prev[..., None], 8.0)
        return logits


def test_in_context_curve_known_by_hand():
    V, T = 7, 6
    stream = np.array([2, 5] * 40)
    windows = sample_windows(stream, T, n_windows=9, seed=0)
    assert windows.shape == (9, T + 1)
    curve = loss_by_position(PeriodTwoModel(V), windows, batch_size=4)
    assert len(curve) == T
    assert curve[0] == pytest.approx(math.log(V), rel=1e-6)
    assert curve[1:] == pytest.approx([math.log1p((V - 1) * math.exp(-8))] * (T - 1), rel=1e-4)


def test_bigram_curve_matches_hand_sums_and_windows_are_seeded():
    V = 6
    model = LookupModel(random_table(V, seed=2))
    stream = np.random.default_rng(0).integers(0, V, size=200)
    windows = sample_windows(stream, 5, n_windows=11, seed=3)
    assert (windows == sample_windows(stream, 5, 11, seed=3)).all()
    assert not (windows == sample_windows(stream, 5, 11, seed=4)).all()
    curve = loss_by_position(model, windows, batch_size=3)
    for t in range(5):
        hand = -np.mean([model.logp(int(w[t]), int(w[t + 1])) for w in windows])
        assert curve[t] == pytest.approx(hand, rel=1e-5)


def test_checkpoint_eval_writes_records_the_paper_reads(tmp_path):
    V = 5
    model = PeriodTwoModel(V)
    model.block_size = 8
    cfg = RunConfig.from_dict({"train": {"max_steps": 77, "warmup_steps": 7}})
    ctx = EvalContext(model=model, tokenizer=None, config=cfg, cell_dir=tmp_path,
                      load_tokens=lambda split: np.array([1, 3] * 50))
    res = per_position.evaluate(ctx, {"n_windows": 4})
    write_result(tmp_path, res)
    records = read_per_position(tmp_path)
    assert [r["step"] for r in records] == [77] and len(records[0]["loss_by_position"]) == 8
    assert res.metrics["loss_first"] == pytest.approx(math.log(V), rel=1e-6)
    # window 8: T//10 = 0, the context-free position: the gain is ln V minus the in-context loss
    assert res.metrics["context_gain"] == pytest.approx(math.log(V) - math.log1p((V - 1) * math.exp(-8)), rel=1e-5)
    long = per_position.evaluate(ctx, {"n_windows": 4, "window": 20})  # T//10 = 2: already in context
    assert long.details["window"] == 20 and long.metrics["context_gain"] == pytest.approx(0.0, abs=1e-6)


def tiny_module(vocab_size: int, max_steps: int) -> LMModule:
    cfg = {"model": {"arch": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 8},
           "train": {"max_steps": max_steps, "batch_size": 4, "warmup_steps": 1, "lr": 1e-2, "log_every": 1,
                     "compile": False}}
    return LMModule(cfg, vocab_size, eot_id=0)


def cycle_batches(stream, T, n, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        w = sample_windows(stream, T, 4, int(rng.integers(1 << 30)))
        out.append((torch.from_numpy(w[:, :-1]), torch.from_numpy(w[:, 1:])))
    return out


def fit(module, batches, max_steps, callbacks, root, ckpt_path=None):
    trainer = L.Trainer(max_steps=max_steps, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=callbacks, limit_val_batches=0, default_root_dir=root)
    trainer.fit(module, DataLoader(batches, batch_size=None), ckpt_path=ckpt_path, weights_only=False)
    return trainer


def test_callback_records_start_every_n_and_end(tmp_path):
    torch.manual_seed(0)
    V, T = 9, 8
    stream = np.array(list(range(1, V)) * 60)  # a cycle the model learns fast
    module = tiny_module(V, max_steps=7)
    out = tmp_path / "per_position.json"
    cb = PerPositionLoss(stream, block_size=T, n_windows=16, every_n_steps=3, cell_dir=tmp_path, seed=0)
    fit(module, cycle_batches(stream, T, 7), 7, [cb], tmp_path)
    records = json.loads(out.read_text())
    assert [r["step"] for r in records] == [0, 3, 6, 7]  # start, every 3 optimizer steps, end
    assert all(len(r["loss_by_position"]) == T for r in records)
    assert np.mean(records[-1]["loss_by_position"]) < np.mean(records[0]["loss_by_position"])  # it learned
    # the last record is the finished model's curve on the callback's own windows
    assert records[-1]["loss_by_position"] == pytest.approx(loss_by_position(module.model, cb.windows), rel=1e-5)
    assert read_per_position(tmp_path) == records
    assert module.model.training  # the callback put the model back in training mode


def test_resumed_run_keeps_earlier_records_and_recomputes_later_ones(tmp_path):
    V, T = 6, 4
    stream = np.array(list(range(1, V)) * 30)
    out = tmp_path / "per_position.json"
    first = PerPositionLoss(stream, block_size=T, n_windows=4, every_n_steps=2, cell_dir=tmp_path)
    fit(tiny_module(V, 4), cycle_batches(stream, T, 4), 4, [first], tmp_path / "a")
    ckpt = next((tmp_path / "a").rglob("*.ckpt"))
    assert [r["step"] for r in json.loads(out.read_text())] == [0, 2, 4]
    # a killed run had got further than its checkpoint: step 6 is on disk but the model is from step 4
    records = json.loads(out.read_text()) + [{"step": 6, "loss_by_position": [0.0] * T}]
    out.write_text(json.dumps(records))
    second = PerPositionLoss(stream, block_size=T, n_windows=4, every_n_steps=2, cell_dir=tmp_path)
    fit(tiny_module(V, 8), cycle_batches(stream, T, 8), 8, [second], tmp_path / "b", ckpt_path=ckpt)
    resumed = json.loads(out.read_text())
    assert [r["step"] for r in resumed] == [0, 2, 4, 6, 8]
    assert resumed[:2] == records[:2]  # before the resume point: kept as they were
    assert resumed[3]["loss_by_position"] != [0.0] * T  # after it: recomputed


def test_too_short_split_is_a_data_error():
    from research.errors import DataError

    with pytest.raises(DataError, match="fewer than one window"):
        sample_windows(np.arange(5), 8, 2, 0)


@pytest.mark.parametrize("pos", ["rope", "none", "learned"])
def test_eval_beyond_the_training_length(pos):
    """context_multiple 4 scores positions 0..4T-1 on a copy of the model; the first T positions are
    the unextended model's losses on the same tokens (causal), learned positions are refused."""
    from evals.run import run_evals
    from research.models import build_model

    torch.manual_seed(0)
    T, V = 8, 5
    cfg = RunConfig.from_dict({"model": {"arch": "attention_scaling", "n_layer": 1, "n_head": 2, "n_embd": 16,
                                         "block_size": T, "pos": pos, "attn_sum_power": 0.5}})
    model = build_model(cfg.model, V).eval()
    tokens = np.random.default_rng(0).integers(0, V, size=400)
    ctx = EvalContext(model=model, tokenizer=None, config=cfg, load_tokens=lambda split: tokens)
    if pos == "learned":
        (res,) = run_evals(ctx, ["per_position"], {"per_position": {"n_windows": 4, "context_multiple": 4}})
        assert res.status == "failed" and "learned absolute positions stop at block_size 8" in res.reason
        assert "\n" not in res.reason
        return
    res = per_position.evaluate(ctx, {"n_windows": 6, "context_multiple": 4})
    curve = res.details["records"][0]["loss_by_position"]
    assert len(curve) == 4 * T and res.details["trained_context"] == T and model.block_size == T
    assert res.metrics["loss_within"] == pytest.approx(np.mean(curve[:T]), rel=1e-9)
    assert res.metrics["loss_beyond"] == pytest.approx(np.mean(curve[T:]), rel=1e-9)
    windows = torch.from_numpy(sample_windows(tokens, 4 * T, 6, 0))
    with torch.no_grad():
        short = F.cross_entropy(model(windows[:, :T]).transpose(1, 2), windows[:, 1 : T + 1], reduction="none")
    assert curve[:T] == pytest.approx(short.mean(0).tolist(), rel=1e-5)
