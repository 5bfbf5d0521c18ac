"""Golden loss curves: every registered model's debug size trained a few dozen steps from a fixed
seed, against the curve stored in `golden_losses.json` (torchtitan keeps such curves as test assets).

A change to a model's defaults (initialisation, positions, norms) or to the numerics of the
optimizer, schedule, batching or loss moves the curve and fails here, naming the architecture and
the first step that moved. The loop uses the harness's own optimizer and schedule builders and the
config defaults, so a changed default shows too. An intended change regenerates the file:

    ABLATIONS_UPDATE_GOLDEN=1 python -m pytest tests/models/test_golden.py

The n-gram has no gradient steps: its "curve" is its loss on the same batches after fitting.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from research.config import DataConfig, RunConfig, TokenizerConfig
from research.data import load_corpus
from research.data.batches import ContiguousStreams, RandomWindows
from research.models import MODELS, build_model
from research.optim import build_optimizer, build_scheduler
from research.tokenizers import train_tokenizer

GOLDEN = Path(__file__).with_name("golden_losses.json")
STEPS, BATCH, T = 30, 8, 32
TRAIN = {"max_steps": STEPS, "batch_size": BATCH, "seq_len": T, "lr": 3e-3, "warmup_steps": 5}
#: float reductions differ across CPUs and thread counts; 30 steps amplify that to about 1e-4 nats
TOLERANCE = 5e-3


@pytest.fixture(scope="module")
def stories():
    docs = load_corpus(DataConfig(source="builtin", n_docs=200))
    tok = train_tokenizer(TokenizerConfig(kind="char"), docs.train)
    return tok, tok.encode_docs(docs.train)


@pytest.fixture
def one_thread():
    """One intra-op thread, so that the reduction order, and so the curve, does not depend on the machine's cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


#: settings beyond a model's defaults, each with its own stored curve: key -> (arch, model keys, train keys)
SETTINGS = {
    "attention_scaling attn_sum_power_learned": ("attention_scaling", {"attn_sum_power_learned": True}, {}),
    "attention_scaling attn_scaling=log_n": ("attention_scaling", {"attn_scaling": "log_n", "attn_sum_power": 0.0}, {}),
    "gpt optimizer=tangent": ("gpt", {}, {"optimizer": "tangent"}),
}


def loss_curve(name: str, tok, train: np.ndarray, model_keys: dict | None = None,
               train_keys: dict | None = None) -> list[float]:
    torch.manual_seed(0)
    model_cfg = MODELS.get(name).tiny_config()
    cfg = RunConfig.from_dict({"model": {**vars(model_cfg), **(model_keys or {})},
                               "train": {**TRAIN, **(train_keys or {})}})
    model = build_model(cfg.model, tok.vocab_size)
    recurrent = getattr(model, "recurrent", False)
    seq = min(T, model.block_size or T)
    data = ContiguousStreams(train, BATCH, seq) if recurrent else RandomWindows(train, BATCH, seq, seed=0)
    if getattr(model, "trainable", True) is False:
        model.fit(train)
        with torch.no_grad():
            return [round(F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item(), 6)
                    for x, y, *_ in (data.batch(s) for s in range(STEPS))]
    opt = build_optimizer(model, cfg.train)
    sched = build_scheduler(opt, cfg.train)
    model.train()
    state, curve = None, []
    for step in range(STEPS):
        x, y, *_ = data.batch(step)
        if recurrent:
            reset = (x == tok.eot_id) if getattr(model.cfg, "reset_at_eot", False) else None
            logits, state = model.step(x, state, reset)
            state = detached(state)
        else:
            logits = model(x)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        opt.step()
        sched.step()
        curve.append(round(loss.item(), 6))
    return curve


def detached(state):
    if isinstance(state, torch.Tensor):
        return state.detach()
    return type(state)(detached(s) for s in state)


@pytest.mark.parametrize("name", MODELS.names())
def test_loss_curve_matches_golden(name, stories, one_thread):
    tok, train = stories
    check_golden(name, loss_curve(name, tok, train))


@pytest.mark.parametrize("key", SETTINGS)
def test_setting_curve_matches_golden(key, stories, one_thread):
    tok, train = stories
    arch, model_keys, train_keys = SETTINGS[key]
    check_golden(key, loss_curve(arch, tok, train, model_keys, train_keys))


def check_golden(name: str, curve: list[float]) -> None:
    golden = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
    if os.environ.get("ABLATIONS_UPDATE_GOLDEN"):
        golden[name] = curve
        GOLDEN.write_text(json.dumps(dict(sorted(golden.items())), indent=1) + "\n")
        return
    assert name in golden, (f"{GOLDEN.name} has no curve for '{name}': "
                            "run ABLATIONS_UPDATE_GOLDEN=1 pytest tests/models/test_golden.py")
    expected = golden[name]
    assert len(curve) == len(expected)
    moved = [s for s, (a, b) in enumerate(zip(curve, expected)) if abs(a - b) > TOLERANCE]
    assert not moved, (f"{name}: the loss curve moved from step {moved[0]} (ours {curve[moved[0]]:.4f}, "
                       f"golden {expected[moved[0]]:.4f} nats/token); if the change is intended, regenerate "
                       f"with ABLATIONS_UPDATE_GOLDEN=1")
    assert curve[-1] < curve[0] or name == "ngram", curve
