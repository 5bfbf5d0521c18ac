"""Data sources (built-in, local files, presets from local copies), cleaning, token cache, batches."""

from __future__ import annotations

import gzip
import json
import math
import random

import numpy as np
import pandas as pd
import pytest

from research.config import CleanConfig, DataConfig, TokenizerConfig
from research.data import grammar, load_corpus
from research.data.batches import ContiguousStreams, RandomWindows
from research.data.cleaning import fix_mojibake
from research.data.tokens import prepare_tokens
from research.errors import DataError


# -- the built-in grammar ------------------------------------------------------------------------
def test_grammar_is_unambiguous():
    assert grammar.check_ll1() == []


def test_grammar_entropy_matches_monte_carlo():
    """The exact entropy equals the mean surprisal of sampled stories (law of large numbers)."""
    rng = random.Random(0)
    logps = [grammar.sample_story(rng).logprob for _ in range(4000)]
    mean, std = -np.mean(logps), np.std(logps)
    assert abs(mean - grammar.entropy_nats()) < 4 * std / math.sqrt(len(logps))
    assert 0 < grammar.floor_bits_per_byte() < 1


def test_builtin_corpus_is_seeded_and_split():
    a = load_corpus(DataConfig(n_docs=200, grammar_seed=3))
    b = load_corpus(DataConfig(n_docs=200, grammar_seed=3))
    c = load_corpus(DataConfig(n_docs=200, grammar_seed=4))
    assert a.train == b.train and a.val == b.val and a.train != c.train
    assert len(a.train) + len(a.val) == 200 and len(a.val) == 20
    assert a.meta["entropy_nats_per_story"] == pytest.approx(grammar.entropy_nats())


# -- local files ---------------------------------------------------------------------------------
DOCS = ["The cat sat.", "A dog ran home.", "Birds sing at dawn.", "Fish swim.", "It rained all day."] * 4


def test_text_file_with_separator_gzipped(tmp_path):
    path = tmp_path / "corpus.txt.gz"
    path.write_bytes(gzip.compress("<|endoftext|>".join(DOCS).encode()))
    corpus = load_corpus(DataConfig(source="file", path=str(path), val_fraction=0.25))
    assert sorted(corpus.train + corpus.val) == sorted(DOCS) and len(corpus.val) == 5


def test_jsonl_and_parquet(tmp_path):
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text("".join(json.dumps({"story": d}) + "\n" for d in DOCS))
    corpus = load_corpus(DataConfig(source="file", path=str(jsonl), text_field="story"))
    assert len(corpus.train) + len(corpus.val) == len(DOCS)
    parquet = tmp_path / "c.parquet"
    pd.DataFrame({"text": DOCS}).to_parquet(parquet)
    corpus = load_corpus(DataConfig(source="file", path=str(parquet), test_fraction=0.2))
    assert len(corpus.train) + len(corpus.val) + len(corpus.test) == len(DOCS) and corpus.test
    with pytest.raises(DataError, match="data.text_field"):
        load_corpus(DataConfig(source="file", path=str(jsonl)))


def test_folder_with_split_files(tmp_path):
    (tmp_path / "train.txt").write_text("<|endoftext|>".join(DOCS))
    (tmp_path / "validation.txt").write_text("Held out one.<|endoftext|>Held out two.")
    corpus = load_corpus(DataConfig(source="file", path=str(tmp_path)))
    assert corpus.val == ["Held out one.", "Held out two."] and len(corpus.train) == len(DOCS)


# -- presets from the release's own files ---------------------------------------------------------
def test_ptb_from_local_release(shared_data):
    corpus = load_corpus(DataConfig(source="ptb", path=str(shared_data / "ptb")))
    assert len(corpus.train) == 42068 and len(corpus.val) == 3370 and len(corpus.test) == 3761
    tokens = prepare_tokens(DataConfig(source="ptb", path=str(shared_data / "ptb")),
                            TokenizerConfig(kind="word", split="whitespace"), shared_data_cache(corpus))
    # Mikolov's PTB: 10k vocabulary (incl. <eos>), 929k / 73k / 82k tokens
    assert tokens.tokenizer.vocab_size == 10000
    assert [tokens.meta["splits"][s]["tokens"] for s in ("train", "val", "test")] == [929589, 73760, 82430]


def shared_data_cache(_corpus):
    import tempfile
    from pathlib import Path

    return Path(tempfile.mkdtemp())


def test_shakespeare_split_as_nanogpt(shared_data):
    path = shared_data / "tinyshakespeare" / "input.txt"
    corpus = load_corpus(DataConfig(source="shakespeare", path=str(path)))
    text = path.read_text()
    n = len(text)
    # cleaning strips surrounding whitespace only: the final newline of the file
    assert corpus.train == [text[: int(n * 0.9)]] and corpus.val == [text[int(n * 0.9):].strip()]


def test_wikitext2_from_local_release(shared_data):
    folder = shared_data / "wikitext-2"
    corpus = load_corpus(DataConfig(source="wikitext2", path=str(folder)))
    assert corpus.test and all(doc.startswith("= ") for doc in corpus.val[:5])
    assert 550 <= len(corpus.train) <= 650  # WikiText-2 has 600 training articles


def test_missing_local_copy_names_the_file(tmp_path):
    with pytest.raises(DataError, match="ptb.train.txt"):
        load_corpus(DataConfig(source="ptb", path=str(tmp_path)))


# -- cleaning --------------------------------------------------------------------------------------
def test_mojibake_is_repaired():
    assert fix_mojibake("She said â€œhiâ€\x9d and left â€” fast. CafÃ©") == "She said “hi” and left — fast. Café"
    assert fix_mojibake("Plain “quotes” stay. Ã is a letter.") == "Plain “quotes” stay. Ã is a letter."


def test_cleaning_counts_what_it_changed(tmp_path):
    docs = ["Caf\u0065\u0301 open.", "CafÃ© closed.", "A story that stops mid", "Fine story here."] * 5
    path = tmp_path / "c.txt"
    path.write_text("<|endoftext|>".join(docs))
    cfg = DataConfig(source="file", path=str(path), val_fraction=0.2,
                     clean=CleanConfig(drop_incomplete=True))
    corpus = load_corpus(cfg)
    kept = corpus.train + corpus.val
    assert "Café open." in kept and "Café closed." in kept  # NFC and mojibake repair
    assert not any("mid" in d for d in kept)
    counts = corpus.meta["cleaning"]
    assert json.dumps(counts)  # serialisable, recorded with each cell
    flat = json.dumps(counts)
    assert "incomplete" in flat
    # per step: documents changed or dropped, and the characters involved
    both = {k: counts["train"].get(k, 0) + counts["val"].get(k, 0) for k in ("encoding_repaired", "normalized",
            "encoding_repaired_chars", "normalized_chars", "dropped_incomplete", "dropped_incomplete_chars")}
    assert both["encoding_repaired"] == 5 and both["encoding_repaired_chars"] == 5 * 2  # "Ã©" -> "é"
    assert both["normalized"] == 5 and both["normalized_chars"] == 5 * 2  # "e" + combining accent -> "é"
    assert both["dropped_incomplete"] == 5 and both["dropped_incomplete_chars"] == 5 * len("A story that stops mid")
    assert counts["train"]["chars_in"] > counts["train"]["chars_out"] > 0


def test_changed_chars_is_the_differing_span():
    from research.data.cleaning import changed_chars

    assert changed_chars("abc", "abc") == 0
    assert changed_chars("xCafÃ©y", "xCaféy") == 2
    assert changed_chars("aaa", "aa") == 1
    assert changed_chars("", "ab") == 2


# -- token cache and batches -----------------------------------------------------------------------
def test_token_cache_is_reused(tmp_path, monkeypatch):
    data, tok = DataConfig(n_docs=100), TokenizerConfig(kind="char")
    first = prepare_tokens(data, tok, tmp_path)
    import research.data.tokens as tokens_mod

    def fail(*a, **k):
        raise AssertionError("tokenized twice")

    monkeypatch.setattr(tokens_mod, "build_cache", fail)
    second = prepare_tokens(data, tok, tmp_path)
    assert second.path == first.path
    assert np.array_equal(first.splits["train"], second.splits["train"])
    other = DataConfig(n_docs=100, grammar_seed=1)
    monkeypatch.undo()
    assert prepare_tokens(other, tok, tmp_path).path != first.path
    decoded = first.tokenizer.decode(first.splits["val"][:200])
    assert decoded.startswith(load_corpus(data).val[0][:50])


def test_random_windows_are_a_function_of_seed_and_step():
    tokens = np.arange(1000, dtype=np.uint16)
    a, b = RandomWindows(tokens, 4, 16, seed=0), RandomWindows(tokens, 4, 16, seed=0)
    x1, y1 = a.batch(7)
    x2, y2 = b.batch(7)
    assert torch_equal(x1, x2) and torch_equal(y1[:, :-1], x1[:, 1:])
    assert not torch_equal(a.batch(8)[0], x1)


def test_contiguous_streams_continue_across_steps():
    tokens = np.arange(1001, dtype=np.uint16)
    streams = ContiguousStreams(tokens, batch_size=4, seq_len=10)
    (x0, y0, start0), (x1, _, start1) = streams.batch(0), streams.batch(1)
    assert start0 and not start1
    assert torch_equal(x1[:, 0], y0[:, -1])  # step 1 continues exactly where step 0 stopped
    assert int(x0[1, 0]) == 250  # stream b starts at b * (len // B), as Zaremba's batchify


def torch_equal(a, b) -> bool:
    return bool((a == b).all())
