"""The log-likelihood primitives against sums computed by hand, and batch-size independence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evals.scoring import (
    encode_pair,
    features,
    pooled_features,
    score_continuations,
    score_token_pairs,
    sentence_logprobs,
    windows_for,
)
from research.models.gpt import GPT
from research.tokenizers.char import CharTokenizer
from tests.evals.lookup_model import LookupModel, random_table

TOK = CharTokenizer(list(" abc"))  # ids: EOT 0, <unk> 1, ' ' 2, a 3, b 4, c 5


def lookup(block_size=None):
    return LookupModel(random_table(TOK.vocab_size), block_size)


def test_continuation_is_the_sum_of_table_entries():
    m = lookup()
    (s,) = score_continuations(m, TOK, [("ab", " c")])
    b, sp, c = 4, 2, 5
    assert s.tokens == 2
    assert s.logprob == pytest.approx(m.logp(b, sp) + m.logp(sp, c), abs=1e-5)


def test_empty_context_starts_from_eot():
    m = lookup()
    (s,) = sentence_logprobs(m, TOK, ["ab"])
    assert s.tokens == 2
    assert s.logprob == pytest.approx(m.logp(TOK.eot_id, 3) + m.logp(3, 4), abs=1e-5)


def test_trailing_context_space_moves_to_the_continuation():
    assert encode_pair(TOK, "ab ", "c") == ([3, 4], [2, 5])


def test_windows_truncate_left_and_cover_each_target_once():
    # ctx 1,2,3 and continuation 4,5,6 with a window of 2: built from the end
    assert windows_for([1, 2, 3], [4, 5, 6], 2) == [([2, 3], [4]), ([4, 5], [5, 6])]
    assert windows_for([1, 2, 3], [4, 5, 6], None) == [([1, 2, 3, 4, 5], [4, 5, 6])]
    assert windows_for([1], [], 4) == []


def test_long_inputs_respect_block_size_and_keep_the_sum():
    m = lookup(block_size=3)
    ctx, cont = "abcab" * 3, "cabcabca"
    (s,) = score_continuations(m, TOK, [(ctx, cont)])
    ids = TOK.encode(ctx + cont)
    want = sum(m.logp(p, n) for p, n in zip(ids[len(ctx) - 1 : -1], ids[len(ctx):]))
    assert s.tokens == len(cont)
    assert s.logprob == pytest.approx(want, abs=1e-4)
    assert max(length for _, length in m.calls) <= 3


def tiny_gpt(block_size=16):
    torch.manual_seed(0)
    cfg = GPT.tiny_config()
    cfg.block_size = block_size
    return GPT(cfg, TOK.vocab_size).eval()


def test_gpt_context_is_truncated_from_the_left():
    m = tiny_gpt(block_size=8)
    ctx, cont = "abc abc abc abc", " cab"
    (s,) = score_continuations(m, TOK, [(ctx, cont)])
    ids = TOK.encode(ctx + cont)
    window = torch.tensor([ids[-9:-1]])  # the last 8 inputs predict the last 8 tokens
    logp = torch.log_softmax(m(window)[0], -1)
    want = sum(logp[t, ids[-8 + t]].item() for t in range(4, 8))
    assert s.tokens == 4
    assert s.logprob == pytest.approx(want, abs=1e-4)


def test_results_do_not_depend_on_batch_size():
    m = tiny_gpt(block_size=16)
    rng = np.random.default_rng(0)
    alphabet = np.array(list(" abc"))
    pairs = [("".join(rng.choice(alphabet, rng.integers(0, 30))), "".join(rng.choice(alphabet, rng.integers(1, 25))))
             for _ in range(23)]
    runs = [score_continuations(m, TOK, pairs, batch_size=bs) for bs in (1, 4, 64)]
    for other in runs[1:]:
        assert [s.tokens for s in other] == [s.tokens for s in runs[0]]
        np.testing.assert_allclose([s.logprob for s in other], [s.logprob for s in runs[0]], atol=1e-4)


def test_token_pairs_need_a_context_token():
    with pytest.raises(ValueError, match="EOT"):
        score_token_pairs(lookup(), [([], [3])])


def test_features_capture_the_lm_head_input():
    m = lookup()
    idx = torch.tensor([[3, 4, 5]])
    h = features(m, idx)
    assert torch.equal(h, torch.nn.functional.one_hot(idx, TOK.vocab_size).float())
    pooled = pooled_features(m, TOK, ["ab", "c"], batch_size=1)
    want = torch.zeros(2, TOK.vocab_size)
    want[0, 3] = want[0, 4] = 0.5
    want[1, 5] = 1.0
    assert torch.allclose(pooled, want)
    assert pooled_features(tiny_gpt(), TOK, ["abc", "a"]).shape == (2, 32)  # n_embd of the tiny config


@pytest.mark.parametrize("overrides", [{}, {"pos": "rope", "n_kv_head": 1}, {"pos": "sinusoidal", "norm": "rmsnorm",
                                                                             "mlp": "swiglu"}])
def test_shared_contexts_read_once_score_as_the_uncached_model(overrides):
    """Endings sharing a context go through the prefix cache (each context read once, as one
    `read_prefix` row), and their log-likelihoods equal the plain forward's, computed here."""
    torch.manual_seed(0)
    model = GPT(GPT.Config(n_layer=2, n_head=2, n_embd=32, block_size=32, **overrides), vocab_size=50).eval()
    rng = np.random.default_rng(0)
    pairs = []
    for _ in range(5):
        ctx = rng.integers(0, 50, size=int(rng.integers(2, 20))).tolist()
        pairs += [(ctx, rng.integers(0, 50, size=int(rng.integers(1, 9))).tolist()) for _ in range(4)]
    # a long context with short endings batched with a short one with long endings: the padding
    # of the first runs past block_size
    pairs += [(list(range(1, 31)), [5]), (list(range(1, 31)), [6, 7])]
    pairs += [([9, 8], rng.integers(0, 50, size=12).tolist()) for _ in range(2)]
    pairs.append(([7], [3, 4]))  # a context of one token: nothing to cache, the uncached path
    read = []
    original = model.read_prefix
    model.read_prefix = lambda idx, lengths: read.append(lengths.tolist()) or original(idx, lengths)
    got = score_token_pairs(model, pairs, batch_size=6)
    assert sorted(n for batch in read for n in batch) == sorted([len(c) - 1 for c, _ in pairs[:20:4]] + [29, 1])
    for (ctx, cont), s in zip(pairs, got):
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ctx + cont[:-1]]))[0].double(), -1)[len(ctx) - 1 :]
        assert s.logprob == pytest.approx(logp.gather(1, torch.tensor(cont)[:, None]).sum().item(), abs=1e-5)
        assert s.tokens == len(cont)
        assert s.greedy == bool((logp.argmax(-1) == torch.tensor(cont)).all())


def test_variants_without_the_plain_layers_keep_the_uncached_path():
    from research.models.windowed import WindowedGPT

    model = WindowedGPT(WindowedGPT.tiny_config(), vocab_size=20)
    assert model.read_prefix(torch.zeros(1, 3, dtype=torch.long), torch.tensor([3])) is None
