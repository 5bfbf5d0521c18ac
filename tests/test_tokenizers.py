"""Tokenizers: round trips, the end-of-text token, <unk>, and save/load with the run."""

from __future__ import annotations

import pytest

from research.config import DataConfig, TokenizerConfig
from research.data import load_corpus
from research.tokenizers import load_tokenizer, train_tokenizer

TEXTS = ["Once upon a time, a girl named Lily found a red ball.", "\"Can we play?\" asked Tom. \"Yes!\" she said.",
         "Ünïcödé — “quotes” and emoji 🙂 survive."]


@pytest.fixture(scope="module")
def docs():
    return load_corpus(DataConfig(n_docs=300)).train + TEXTS


@pytest.mark.parametrize("cfg", [TokenizerConfig(kind="char"), TokenizerConfig(kind="bpe", vocab_size=300)])
def test_lossless_round_trip(docs, cfg, tmp_path):
    tok = train_tokenizer(cfg, docs)
    for text in TEXTS + docs[:20]:
        assert tok.decode(tok.encode(text)) == text
    tok.save(tmp_path / "tok")
    again = load_tokenizer(tmp_path / "tok")
    assert again.vocab_size == tok.vocab_size and again.encode(TEXTS[1]) == tok.encode(TEXTS[1])


def test_bpe_vocab_size_and_eot(docs):
    tok = train_tokenizer(TokenizerConfig(kind="bpe", vocab_size=300), docs)
    assert tok.vocab_size == 300
    stream = tok.encode_docs(["ab", "cd"])
    assert list(stream).count(tok.eot_id) == 2 and stream[-1] == tok.eot_id
    assert len(tok.encode(docs[0])) < len(docs[0])  # merges compress


def test_char_decode_drops_eot(docs):
    tok = train_tokenizer(TokenizerConfig(kind="char"), docs)
    ids = tok.encode("ab") + [tok.eot_id] + tok.encode("cd")
    assert tok.decode(ids) == "abcd"


def test_word_tokenizer_caps_vocabulary_with_unk(docs, tmp_path):
    tok = train_tokenizer(TokenizerConfig(kind="word", vocab_size=50), docs)
    assert tok.vocab_size == 50
    ids = tok.encode("Once upon a time, a zyzzyva appeared.")
    unk = tok.encode("zyzzyva")[0]
    assert unk in ids and tok.decode([unk]) == "<unk>"
    text = "Once upon a time, a girl found a ball."
    full = train_tokenizer(TokenizerConfig(kind="word"), docs)
    assert full.decode(full.encode(text)) == text  # readable spacing around punctuation
    assert full.encode(full.decode(full.encode(TEXTS[1]))) == full.encode(TEXTS[1])
    full.save(tmp_path / "w")
    assert load_tokenizer(tmp_path / "w").encode(text) == full.encode(text)


def test_word_whitespace_split_keeps_ptb_tokens():
    tok = train_tokenizer(TokenizerConfig(kind="word", split="whitespace"), ["the cat 's N <unk> ran", "a b"])
    assert [tok.itos[i] for i in tok.encode("the cat 's N <unk>")] == ["the", "cat", "'s", "N", "<unk>"]
    assert tok.encode("<unk>") == tok.encode("never-seen")  # the release's own <unk> is our <unk>
