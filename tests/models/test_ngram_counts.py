"""The n-gram model's count tables against counts taken with a plain Counter over the n-grams,
and a stream read in chunks against the same stream read whole."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pytest
import torch

from research.config import DataConfig, TokenizerConfig
from research.data import load_corpus
from research.evaluation import split_loss
from research.models.ngram import EOT_ID, NGram, NGramConfig
from research.tokenizers import train_tokenizer


@pytest.fixture(scope="module")
def corpus():
    data = load_corpus(DataConfig(source="builtin", n_docs=60))
    tok = train_tokenizer(TokenizerConfig(kind="char"), data.train)
    return tok, tok.encode_docs(data.train), tok.encode_docs(data.val)


def table_grams(model: NGram, k: int) -> dict[tuple[int, ...], int]:
    """Order k's stored entries as {n-gram tuple: count}, decoding each key (context id, token)."""
    V = model.vocab_size
    grams: list[list[tuple[int, ...]]] = [[()]]
    out = {}
    for j in range(1, k + 1):
        keys, counts = model.table(j)[0].tolist(), model.table(j)[1].tolist()
        grams.append([grams[j - 1][key // V] + (key % V,) for key in keys])
        out = dict(zip(grams[j], (int(c) for c in counts)))
    return out


def reference_counts(x: list[int], order: int, reset: bool) -> dict[int, dict[tuple[int, ...], int]]:
    """Chen & Goodman's tables by hand: raw counts at the top order, N_1+(. g) below it (raw counts
    below it too for a reset_at_eot n-gram opening a sentence, beyond unigrams)."""
    raw = {k: Counter(tuple(x[p - k + 1 : p + 1]) for p in range(k - 1, len(x))
                      if not (reset and EOT_ID in x[p - k + 2 : p])) for k in range(1, order + 1)}
    out = {order: dict(raw[order])}
    for k in range(1, order):
        left = defaultdict(set)
        for g in raw[k + 1]:
            left[g[1:]].add(g[0])
        out[k] = {g: (c if reset and k > 1 and g[0] == EOT_ID else len(left[g])) for g, c in raw[k].items()}
    return out


@pytest.mark.parametrize("reset", [False, True])
def test_counts_equal_a_counter_over_the_ngrams(corpus, reset):
    tok, train, _ = corpus
    x = np.asarray(train[:6000])
    model = NGram(NGramConfig(order=3, reset_at_eot=reset), tok.vocab_size)
    model.fit(x, chunk_tokens=257)  # many chunks: n-grams across chunk boundaries must be counted once
    ref = reference_counts(x.tolist(), 3, reset)
    for k in (1, 2, 3):
        assert table_grams(model, k) == ref[k]


def test_chunked_fit_gives_the_tables_and_perplexity_of_one_pass(corpus, tmp_path):
    tok, train, val = corpus
    path = tmp_path / "train.npy"
    np.save(path, np.asarray(train, dtype=np.uint16))
    stream = np.load(path, mmap_mode="r")  # a memory-mapped uint16 stream, as the token cache stores it
    whole = NGram(NGramConfig(order=4), tok.vocab_size)
    whole.fit(np.asarray(train), chunk_tokens=len(train))
    chunked = NGram(NGramConfig(order=4), tok.vocab_size)
    chunked.fit(stream, chunk_tokens=1000)
    for name, value in whole.state_dict().items():
        assert torch.equal(chunked.state_dict()[name], value), name
    assert split_loss(chunked, val, seq_len=64).loss == split_loss(whole, val, seq_len=64).loss
