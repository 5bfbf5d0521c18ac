"""Recurrent models score shared contexts through their state: the context runs once
(`read_prefix` returns the state after it) and every ending runs on from that state, with the
same log-likelihoods as the uncached path and as an LSTM written out here step by step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evals.scoring import score_token_pairs
from research.models.rnn import GRU, LSTM, RNN
from research.models.rnn_attention import RNNAttention

V = 40


def shared_context_pairs(seed: int = 0) -> list[tuple[list[int], list[int]]]:
    """Items of four endings sharing a context, contexts of ragged lengths (so a batch of
    prefixes is right-padded), and a one-token context (nothing to cache: the uncached path)."""
    rng = np.random.default_rng(seed)
    pairs = []
    for n_ctx in (2, 9, 17, 5, 12, 3):
        ctx = rng.integers(0, V, size=n_ctx).tolist()
        pairs += [(ctx, rng.integers(0, V, size=int(rng.integers(1, 8))).tolist()) for _ in range(4)]
    pairs.append(([7], [3, 4]))
    return pairs


def build(cls, **kw):
    torch.manual_seed(0)
    # weights wide enough that the log-likelihoods of different endings are far apart
    return cls(cls.Config(n_layer=2, n_embd=16, init_range=0.5, **kw), vocab_size=V).eval()


def uncached(model, pairs, batch_size):
    """The old path: every (context, ending) through `forward` in one row."""
    model.read_prefix = lambda idx, lengths: None
    try:
        return score_token_pairs(model, pairs, batch_size=batch_size)
    finally:
        del model.read_prefix


def plain_lstm_logprobs(model: LSTM, seq: list[int]) -> torch.Tensor:
    """Log-probabilities (T, V) after each token of `seq`, a float64 LSTM loop from zero state
    over the model's weights (PyTorch's gate order: input, forget, cell, output)."""
    w = {name: p.detach().double() for name, p in model.rnn.named_parameters()}
    layers, width = model.cfg.n_layer, model.cfg.hidden
    h = [torch.zeros(width, dtype=torch.float64) for _ in range(layers)]
    c = [torch.zeros(width, dtype=torch.float64) for _ in range(layers)]
    outs = []
    for token in seq:
        x = model.tok_emb.weight.detach().double()[token]
        for layer in range(layers):
            gates = (w[f"weight_ih_l{layer}"] @ x + w[f"bias_ih_l{layer}"]
                     + w[f"weight_hh_l{layer}"] @ h[layer] + w[f"bias_hh_l{layer}"])
            i, f, g, o = gates.chunk(4)
            c[layer] = torch.sigmoid(f) * c[layer] + torch.sigmoid(i) * torch.tanh(g)
            h[layer] = torch.sigmoid(o) * torch.tanh(c[layer])
            x = h[layer]
        outs.append(x)
    logits = torch.stack(outs) @ model.lm_head.weight.detach().double().T + model.lm_head.bias.detach().double()
    return torch.log_softmax(logits, -1)


@pytest.mark.parametrize("cls,kw", [(RNN, {}), (GRU, {}), (LSTM, {}), (RNNAttention, {"attn_window": 4}),
                                    (RNNAttention, {"attn_window": 30, "attn_score": "additive"})])
def test_shared_contexts_read_once_score_as_the_uncached_model(cls, kw):
    model = build(cls, **kw)
    pairs = shared_context_pairs()
    read = []
    original = model.read_prefix
    model.read_prefix = lambda idx, lengths: read.append(lengths.tolist()) or original(idx, lengths)
    got = score_token_pairs(model, pairs, batch_size=8)
    del model.read_prefix
    # each multi-token context read once, without its last token (the endings' first input)
    assert sorted(n for batch in read for n in batch) == sorted(len(c) - 1 for c, _ in pairs[:-1:4])
    assert len(read) > 1  # several batches of prefixes, each right-padded to its longest
    old = uncached(model, pairs, batch_size=8)
    for (ctx, cont), new, ref in zip(pairs, got, old):
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ctx + cont[:-1]]))[0].double(), -1)[len(ctx) - 1 :]
        direct = logp.gather(1, torch.tensor(cont)[:, None]).sum().item()
        assert new.logprob == pytest.approx(direct, abs=1e-5)
        assert new.logprob == pytest.approx(ref.logprob, abs=1e-5)
        assert (new.tokens, new.greedy) == (ref.tokens, ref.greedy)
    lls = np.array([s.logprob for s in got[:-1]]).reshape(-1, 4)
    assert (lls.argmax(1) == np.array([s.logprob for s in old[:-1]]).reshape(-1, 4).argmax(1)).all()
    assert np.diff(np.sort(lls, 1), axis=1).min() > 1e-3  # the decisions are not ties


def test_lstm_scores_equal_a_plain_lstm_loop():
    model = build(LSTM)
    pairs = shared_context_pairs(1)
    for (ctx, cont), s in zip(pairs, score_token_pairs(model, pairs, batch_size=6)):
        logp = plain_lstm_logprobs(model, ctx + cont[:-1])[len(ctx) - 1 :]
        assert s.logprob == pytest.approx(logp.gather(1, torch.tensor(cont)[:, None]).sum().item(), abs=1e-5)
        assert s.greedy == bool((logp.argmax(-1) == torch.tensor(cont)).all())


def test_packed_continuations_each_start_from_their_prefix_state():
    """Two endings packed back to back in one row (offsets restart at 0) give the states of two
    separate runs from the prefix, and padding (offset -1) at the end of the row changes nothing."""
    model = build(LSTM)
    prefix, a, b = [5, 6, 7], [1, 2, 3], [4, 9]
    with torch.no_grad():
        cache = model.read_prefix(torch.tensor([prefix + [0, 0]]), torch.tensor([3]))
        h = model.read_after(cache, torch.tensor([0]), torch.tensor([a + b + [0, 0]]),
                             torch.tensor([[0, 1, 2, 0, 1, -1, -1]]))
        want_a = model.rnn(model.tok_emb(torch.tensor([prefix + a])))[0][0, 3:]
        want_b = model.rnn(model.tok_emb(torch.tensor([prefix + b])))[0][0, 3:]
    assert torch.allclose(h[0, :3], want_a, atol=1e-6)
    assert torch.allclose(h[0, 3:5], want_b, atol=1e-6)
