"""Perplexity: nats/token, bits per byte and per-word perplexity against hand sums."""

from __future__ import annotations

import math

import pytest
import torch

from evals import perplexity
from evals.base import EvalContext
from research.config import RunConfig
from research.data.corpus import Corpus
from research.errors import ConfigError
from research.tokenizers.char import CharTokenizer
from research.tokenizers.word import WordTokenizer
from tests.evals.lookup_model import LookupModel, random_table


def make_ctx(model, tok, corpus):
    return EvalContext(model=model, tokenizer=tok, config=RunConfig.from_dict({}), load_corpus=lambda: corpus,
                       load_tokens=lambda split: tok.encode_docs(corpus.split(split)))


def hand_loss(model, ids):
    return -sum(model.logp(int(p), int(n)) for p, n in zip(ids[:-1], ids[1:])) / (len(ids) - 1)


def test_char_model_loss_ppl_and_bits_per_byte():
    tok = CharTokenizer(list(" abé"))
    corpus = Corpus(train=["ab"], val=["ab a", "ba"], test=["é a"])
    model = LookupModel(random_table(tok.vocab_size), block_size=3)
    res = perplexity.evaluate(make_ctx(model, tok, corpus), {})
    val_ids, test_ids = tok.encode_docs(corpus.val), tok.encode_docs(corpus.test)
    val = hand_loss(model, val_ids)
    assert res.metrics["val_loss"] == pytest.approx(val, rel=1e-5)
    assert res.metrics["val_ppl"] == pytest.approx(math.exp(val), rel=1e-5)
    assert res.metrics["val_tokens"] == 7  # 8 tokens (6 chars + 2 EOT), the first is never predicted
    # ASCII: 6 bytes + 1 per document = 8 bytes for 8 tokens, so bits/byte = nats/token / ln 2
    assert res.metrics["val_bpb"] == pytest.approx(val / math.log(2), rel=1e-5)
    # "é a" is 4 UTF-8 bytes + 1 separator = 5 bytes over 4 tokens (3 chars + EOT)
    test = hand_loss(model, test_ids)
    assert res.metrics["test_bpb"] == pytest.approx(test / math.log(2) / (5 / 4), rel=1e-5)
    assert "val_word_ppl" not in res.metrics  # only for word tokenizers
    strided = perplexity.evaluate(make_ctx(model, tok, corpus), {"stride": 1})
    assert strided.metrics["val_loss"] == pytest.approx(val, rel=1e-5)  # context-free model: stride cannot matter


def test_word_model_reports_per_word_perplexity():
    tok = WordTokenizer(["a", "b", "."])
    corpus = Corpus(train=["a b."], val=["a b.", "b a a."])  # tokens: 3 + 1 + 4 + 1 = 9; words: 2 + 1 + 3 + 1 = 7
    model = LookupModel(random_table(tok.vocab_size, seed=3))
    res = perplexity.evaluate(make_ctx(model, tok, corpus), {})
    loss = hand_loss(model, tok.encode_docs(corpus.val))
    assert res.metrics["val_word_ppl"] == pytest.approx(math.exp(loss * 9 / 7), rel=1e-5)
    assert "test_loss" not in res.metrics  # the corpus has no test split


def test_max_tokens_and_bad_stride():
    tok = CharTokenizer(list(" ab"))
    corpus = Corpus(train=["ab"], val=["ab ab ab ab"] * 5)
    model = LookupModel(torch.zeros(tok.vocab_size, tok.vocab_size), block_size=4)
    res = perplexity.evaluate(make_ctx(model, tok, corpus), {"max_tokens": 10})
    assert res.metrics["val_tokens"] == 10
    assert res.metrics["val_loss"] == pytest.approx(math.log(tok.vocab_size), rel=1e-6)  # uniform
    with pytest.raises(ConfigError, match="stride"):
        perplexity.evaluate(make_ctx(model, tok, corpus), {"stride": 9})


def test_byte_counts_come_from_the_token_cache_without_reading_the_corpus(tmp_path):
    """With the cache's meta.json counts the corpus is never loaded, and the numbers are the same."""
    from research.config import DataConfig, TokenizerConfig
    from research.data import load_corpus
    from research.data.tokens import prepare_tokens

    path = tmp_path / "c.txt"
    path.write_text("<|endoftext|>".join(f"Caf\u00e9 {i} is open." for i in range(30)))
    data = DataConfig(source="file", path=str(path))
    tokens = prepare_tokens(data, TokenizerConfig(kind="word"), tmp_path / "cache")
    corpus = load_corpus(data)
    model = LookupModel(random_table(tokens.tokenizer.vocab_size), block_size=4)

    def no_corpus():
        raise AssertionError("the corpus was read")

    cached = EvalContext(model=model, tokenizer=tokens.tokenizer, config=RunConfig.from_dict({}),
                         load_corpus=no_corpus, load_tokens=lambda s: tokens.splits[s],
                         split_sizes=tokens.meta["splits"])
    counted = EvalContext(model=model, tokenizer=tokens.tokenizer, config=RunConfig.from_dict({}),
                          load_corpus=lambda: corpus, load_tokens=lambda s: tokens.splits[s])
    a, b = perplexity.evaluate(cached, {}).metrics, perplexity.evaluate(counted, {}).metrics
    assert a["val_bpb"] == pytest.approx(b["val_bpb"], rel=1e-12)
    assert a["val_word_ppl"] == pytest.approx(b["val_word_ppl"], rel=1e-12)
