"""The baseline zoo's own properties, beyond the generic registry tests (tests/models/test_registry.py).

Recurrent models: a stream processed in chunks with the carried state equals one long pass, and a
reset at end-of-text equals running the documents separately. RNN with attention: weights causal,
within the window, summing to 1. Kneser-Ney: every distribution sums to 1 and matches a hand
computation. Classic transformer: post-norm. Llama: llama2.c's defaults. Then a few real training
steps per baseline on the built-in corpus, and two cells through the real grid runner.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from research.attention import attention_maps
from research.checkpoint import load_cell
from research.config import DataConfig, RunConfig, TokenizerConfig
from research.data import load_corpus
from research.data.batches import ContiguousStreams, RandomWindows
from research.errors import ConfigError
from research.evaluation import split_loss
from research.generate import generate
from research.models import MODELS, build_model
from research.models.ngram import NGram, NGramConfig, modified_discounts
from research.tokenizers import train_tokenizer
from tests.helpers import run_cli, write_grid

V = 23
EOT = 0
RECURRENT = ["rnn", "gru", "lstm", "rnn_attention"]


def recurrent(arch: str, **kw):
    torch.manual_seed(0)
    base = {"arch": arch, "n_layer": 2, "n_embd": 16, **({"attn_window": 5} if arch == "rnn_attention" else {})}
    return build_model(RunConfig.from_dict({"model": {**base, **kw}}).model, V).eval()


def chunked(model, x, size, reset=None):
    state, outs = None, []
    for i in range(0, x.shape[1], size):
        logits, state = model.step(x[:, i : i + size], state, None if reset is None else reset[:, i : i + size])
        outs.append(logits)
    return torch.cat(outs, 1)


@pytest.mark.parametrize("arch", RECURRENT)
def test_state_carried_across_chunks_equals_one_pass(arch):
    model = recurrent(arch)
    x = torch.randint(1, V, (3, 20))
    whole = model(x)
    for size in (1, 7, 20):
        torch.testing.assert_close(chunked(model, x, size), whole, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", RECURRENT)
def test_reset_at_eot_equals_separate_documents(arch):
    model = recurrent(arch)
    x = torch.randint(1, V, (2, 20))
    x[0, [6, 14]] = EOT
    x[1, 11] = EOT
    reset = x == EOT
    for size in (20, 7, 3):  # one call, and chunks whose boundaries fall before/after the resets
        out = chunked(model, x, size, reset)
        for row, bounds in ((0, [0, 7, 15, 20]), (1, [0, 12, 20])):
            for a, b in zip(bounds, bounds[1:]):  # each document from a zero state, as forward
                torch.testing.assert_close(out[row, a:b], model(x[row : row + 1, a:b])[0], atol=1e-5, rtol=1e-5)
    no_reset = torch.zeros_like(reset)
    torch.testing.assert_close(model.step(x, None, no_reset)[0], model(x))
    assert not torch.allclose(model.step(x, None, reset)[0][0, 7:], model(x)[0, 7:])


@pytest.mark.parametrize("score", ["additive", "multiplicative"])
def test_attention_weights_are_causal_windowed_and_normalised(score):
    model = recurrent("rnn_attention", attn_score=score, attn_window=5)
    x = torch.randint(1, V, (2, 12))
    w = model.attention_weights(x)
    assert w.shape == (2, 12, 12)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 12))
    t, s = torch.meshgrid(torch.arange(12), torch.arange(12), indexing="ij")
    outside = (s > t) | (s <= t - 5)
    assert (w[:, outside] == 0).all() and (w[:, ~outside] > 0).all()
    maps = attention_maps(model, x[:1])  # the figure helper asks the model directly
    torch.testing.assert_close(maps[0][0], w[0])


def test_tied_rnn_shares_embedding_and_checks_sizes():
    model = recurrent("lstm", tie_embeddings=True)
    assert model.lm_head.weight is model.tok_emb.weight
    assert model.num_params() == recurrent("lstm").num_params() - V * 16
    with pytest.raises(ConfigError, match="tie_embeddings needs n_hidden"):
        RunConfig.from_dict({"model": {"arch": "gru", "n_embd": 16, "n_hidden": 32, "tie_embeddings": True}})


@pytest.mark.parametrize(("model", "message"), [
    ({"arch": "rnn_attention", "attn_window": 0}, "attn_window must be at least 1"),
    ({"arch": "rnn_attention", "attn_score": "dot"}, "model.attn_score: 'dot' is not one of additive, multiplicative"),
    ({"arch": "ngram", "order": 0}, "order must be at least 1"),
    ({"arch": "ngram", "discount": 1.5}, r"discount must be in \(0, 1\]"),
    ({"arch": "lstm", "n_head": 2}, "model.n_head: unknown key"),
    ({"arch": "lstm", "match_params": 1e5}, "arch 'lstm' has no width"),
])
def test_config_errors_name_the_key(model, message):
    with pytest.raises(ConfigError, match=message):
        cfg = RunConfig.from_dict({"model": model}).model
        build_model(cfg, V)


# -- Kneser-Ney -----------------------------------------------------------------------------------


def ngram(tokens, order: int, discount=None, vocab: int = V) -> NGram:
    model = NGram(NGramConfig(order=order, discount=discount), vocab)
    model.fit(np.asarray(tokens, dtype=np.uint16))
    return model.eval()


def test_kn_matches_hand_computation():
    """Order 2, D = 0.5, stream 0 1 0 1 2 0 1 over V = 4.

    Continuation counts N1+(. w): 0 <- {1, 2}: 2; 1 <- {0}: 1; 2 <- {1}: 1; 3: 0 (total 4, three
    seen types), so P1(w) = max(N - 0.5, 0) / 4 + (0.5 * 3 / 4) / 4. Bigram counts after 1:
    {0: 1, 2: 1}, so P2(w | 1) = max(c - 0.5, 0) / 2 + (0.5 * 2 / 2) P1(w). Context 3 was never
    seen: P2(w | 3) = P1(w).
    """
    model = ngram([0, 1, 0, 1, 2, 0, 1], order=2, discount=0.5, vocab=4)
    p1 = np.array([1.5 / 4, 0.5 / 4, 0.5 / 4, 0.0]) + 1.5 / 16
    p2_after_1 = np.array([0.25, 0.0, 0.25, 0.0]) + 0.5 * p1
    p2_after_0 = np.array([0.0, 2.5 / 3, 0.0, 0.0]) + (0.5 / 3) * p1
    probs = model(torch.tensor([[1, 3, 0]])).exp()[0].double()
    expected = torch.tensor(np.stack([p2_after_1, p1, p2_after_0]))
    torch.testing.assert_close(probs, expected, atol=1e-6, rtol=1e-6)
    assert model.num_params() == 3 + 4  # stored n-grams: unigrams 0, 1, 2 and bigrams 01, 10, 12, 20


def test_modified_kn_discounts_from_counts_of_counts():
    counts = np.array([1] * 10 + [2] * 4 + [3] * 2 + [4] + [9, 0])  # n1..n4 = 10, 4, 2, 1
    y = 10 / (10 + 2 * 4)
    np.testing.assert_allclose(modified_discounts(counts), [1 - 2 * y * 4 / 10, 2 - 3 * y * 2 / 4, 3 - 4 * y / 2])
    assert modified_discounts(np.array([1, 1, 2])) is None  # no n3, n4: the caller falls back to 0.75


@pytest.mark.parametrize("discount", [None, 0.75])
@pytest.mark.parametrize("order", [1, 2, 4])
def test_kn_distributions_sum_to_one(order, discount):
    rng = np.random.default_rng(0)
    train = np.minimum(rng.geometric(0.25, 3000), V - 1)  # skewed, with unseen types and contexts
    model = ngram(train, order, discount)
    x = torch.from_numpy(rng.integers(0, V, (4, 30)))
    logp = model(x)
    assert logp.shape == (4, 30, V) and torch.isfinite(logp).all()
    torch.testing.assert_close(logp.double().exp().sum(-1), torch.ones(4, 30, dtype=torch.float64))
    lower = ngram(train, max(order - 1, 1), discount)
    assert model.num_params() >= lower.num_params()


# -- shared data for the training checks ------------------------------------------------------------


@pytest.fixture(scope="module")
def stories():
    corpus = load_corpus(DataConfig(source="builtin", n_docs=200))
    tok = train_tokenizer(TokenizerConfig(kind="char"), corpus.train)
    return tok, tok.encode_docs(corpus.train), tok.encode_docs(corpus.val)


def test_ngram_orders_on_real_text_and_reload(stories):
    tok, train, val = stories
    losses = {}
    for order in (1, 2, 4):
        model = NGram(NGramConfig(order=order), tok.vocab_size)
        model.fit(train)
        losses[order] = split_loss(model, val, seq_len=64).loss
    assert losses[4] < losses[2] < losses[1] < math.log(tok.vocab_size)
    other = NGram(NGramConfig(order=4), tok.vocab_size)
    other.load_fitted(model.state_dict())
    x = torch.from_numpy(val[:40].astype(np.int64))[None]
    torch.testing.assert_close(other(x), model(x))
    text = generate(other, tok.encode("Once"), 30, tok.eot_id, top_k=5, generator=torch.Generator().manual_seed(0))
    assert 0 < len(text) <= 30


# -- post-norm transformer and llama ------------------------------------------------------------


def test_classic_transformer_is_post_norm_with_scaled_sinusoidal_embeddings():
    torch.manual_seed(0)
    model = build_model(MODELS.get("transformer").tiny_config(), V).eval()
    cfg = model.cfg
    assert (cfg.pos, cfg.norm, cfg.mlp, cfg.bias, cfg.dropout) == ("sinusoidal", "layernorm", "gelu", True, 0.1)
    assert isinstance(model.norm_f, torch.nn.Identity) and model.pos_emb is None
    x = torch.randint(0, V, (2, 16))
    emb = model.embed(x)
    torch.testing.assert_close(emb, model.tok_emb(x) * math.sqrt(cfg.n_embd) + model.pos_table[:16])
    outs = []
    for block in model.blocks:
        block.register_forward_hook(lambda m, args, out: outs.append(out))
    model(x)
    for out in outs:  # each block ends in LayerNorm (weight 1, bias 0 at init): normalised rows
        torch.testing.assert_close(out.mean(-1), torch.zeros(2, 16), atol=1e-5, rtol=0)
        torch.testing.assert_close(out.var(-1, unbiased=False), torch.ones(2, 16), atol=1e-3, rtol=0)
    pre = build_model(dataclasses.replace(MODELS.get("gpt").tiny_config(), pos="sinusoidal"), V).eval()
    assert not torch.allclose(pre.blocks[0](pre.embed(x)).var(-1), torch.ones(2, 16), atol=0.1)


def test_llama_has_llama2c_defaults():
    cfg = RunConfig.from_dict({"model": {"arch": "llama", "n_embd": 288, "n_head": 6, "n_layer": 6}}).model
    assert (cfg.pos, cfg.norm, cfg.mlp, cfg.bias, cfg.tie_embeddings) == ("rope", "rmsnorm", "swiglu", False, True)
    assert cfg.ff_width == 768  # llama2.c stories15M: dim 288 -> hidden_dim 768
    model = build_model(cfg, 32000)
    assert not [n for n, _ in model.named_parameters() if n.endswith("bias")]
    assert model.lm_head.weight is model.tok_emb.weight and model.pos_emb is None
    gqa = build_model(dataclasses.replace(cfg, n_kv_head=2), 32000)
    head = 288 // 6
    assert model.num_params() - gqa.num_params() == 6 * 2 * 288 * (6 - 2) * head  # k and v, six layers


# -- a few real training steps per baseline ---------------------------------------------------------

TRAINABLE = {
    "rnn": {"n_layer": 1, "n_embd": 64},
    "gru": {"n_layer": 1, "n_embd": 64},
    "lstm": {"n_layer": 2, "n_embd": 64, "dropout": 0.1},
    "rnn_attention": {"n_layer": 1, "n_embd": 64, "attn_window": 16, "attn_score": "additive"},
    "transformer": {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32},
    "llama": {"n_layer": 2, "n_head": 2, "n_kv_head": 1, "n_embd": 32, "block_size": 32},
}


@pytest.mark.parametrize("arch", list(TRAINABLE))
def test_a_few_training_steps_lower_the_loss(arch, stories):
    """The trainer's loop without Lightning: TBPTT with carried, detached state and EOT resets for
    recurrent models, random windows for the rest; held-out loss must fall."""
    tok, train, val = stories
    torch.manual_seed(0)
    model = build_model(RunConfig.from_dict({"model": {"arch": arch, **TRAINABLE[arch]}}).model, tok.vocab_size)
    is_rnn = getattr(model, "recurrent", False)
    data = ContiguousStreams(train, 8, 32) if is_rnn else RandomWindows(train, 8, 32, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2 if is_rnn else 3e-3)
    before = split_loss(model, val[:3000], 32, eot_id=tok.eot_id).loss
    state = None
    model.train()
    for step in range(40):
        x, y, *_ = data.batch(step)
        if is_rnn:
            logits, state = model.step(x, state, x == tok.eot_id)
            state = detached(state)
        else:
            logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    after = split_loss(model, val[:3000], 32, eot_id=tok.eot_id).loss
    assert after < before - 0.4, (before, after)


def detached(state):
    if isinstance(state, torch.Tensor):
        return state.detach()
    return type(state)(detached(s) for s in state)


# -- through the real grid runner ----------------------------------------------------------------


def test_lstm_and_ngram_cells_through_the_grid_runner(tmp_path):
    """Two families in one grid (a model axis of whole sections); the LSTM trains with Muon and
    warm-up-stable-decay, so the combined optimizer also runs inside Lightning, checkpoints included."""
    grid = write_grid(tmp_path / "zoo.yaml", name="zoo",
                      grid={"model": [{"arch": "lstm", "n_layer": 1, "n_embd": 32}, {"arch": "ngram", "order": 3}]},
                      train={"max_steps": 20, "optimizer": "muon", "schedule": "wsd", "seq_len": 16})
    proc = run_cli(grid, "--results-dir", tmp_path / "results")
    assert proc.returncode == 0, proc.stderr
    cells = sorted((tmp_path / "results" / "zoo").glob("model-*"))
    assert [c.name.split("-")[1] for c in cells] == ["lstm", "ngram"]
    for cell in cells:
        assert (cell / "DONE").exists()
        metrics = json.loads((cell / "metrics.json").read_text())
        assert math.isfinite(metrics["val_loss"]) and 0 < metrics["val_loss"] < 6
        loaded = load_cell(cell)
        assert loaded.model.num_params() == metrics["params"]
        assert (cell / "samples" / "samples.jsonl").read_text().strip()
    ngram_metrics = json.loads((cells[1] / "metrics.json").read_text())
    assert ngram_metrics["val_loss"] < math.log(loaded.tokenizer.vocab_size) - 1.0


def test_kn_sentence_contexts_never_reach_past_end_of_text():
    """reset_at_eot: a context stops at the last end-of-text (SRILM's sentence-level scoring), so the
    distributions after it are those of the sentence alone, opened by end-of-text as <s>."""
    rng = np.random.default_rng(0)
    train = rng.integers(1, 6, 4000)
    train[rng.random(4000) < 0.15] = EOT
    model = NGram(NGramConfig(order=4, reset_at_eot=True), 6)
    model.fit(train)
    x = torch.tensor([[3, 4, 5, EOT, 2, 1, 3]])
    with torch.no_grad():
        whole = model(x)[0]
        alone = model(x[:, 3:])[0]
        torch.testing.assert_close(whole[3:], alone)
        torch.testing.assert_close(whole.exp().sum(-1), torch.ones(7, dtype=whole.dtype))
        spanning = NGram(NGramConfig(order=4), 6)
        spanning.fit(train)
        assert not torch.allclose(spanning(x)[0][3:], spanning(x[:, 3:])[0])
