"""The streaming token build: the old in-memory build's exact tokens, fresh caches, one build at a time."""

from __future__ import annotations

import gzip
import json
import multiprocessing
import os
import random
import time
from pathlib import Path

import numpy as np
import pytest

from research.config import CleanConfig, DataConfig, TokenizerConfig
from research.data.cleaning import clean_docs
from research.data.tokens import prepare_tokens
from research.errors import DataError
from research.tokenizers import train_tokenizer


# -- the old build, written out here as it was: whole file in memory, split, hold out, clean, encode
def _old_hold_out(docs, fraction, seed):
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    held = set(order[: max(1, round(len(docs) * fraction))])
    return [d for i, d in enumerate(docs) if i not in held], [docs[i] for i in sorted(held)]


def old_build(splits: dict[str, list[str]], data: DataConfig, tok_cfg: TokenizerConfig) -> dict[str, np.ndarray]:
    if "val" not in splits:
        splits = dict(zip(("train", "val"), _old_hold_out(splits["train"], data.val_fraction, data.split_seed)))
    cleaned = {k: clean_docs(v, data.clean)[0] for k, v in splits.items()}
    tok = train_tokenizer(tok_cfg, cleaned["train"])
    out = {}
    for name, docs in cleaned.items():
        pieces = [np.asarray(tok.encode(d) + [tok.eot_id], dtype=np.uint16) for d in docs]
        out[name] = np.concatenate(pieces)
    return out


def _read(path: Path) -> str:
    raw = path.read_bytes()
    return (gzip.decompress(raw) if path.name.endswith(".gz") else raw).decode("utf-8", errors="replace")


@pytest.mark.parametrize("kind,vocab", [("char", None), ("bpe", 512)])
def test_streaming_build_equals_the_in_memory_build_tinystories(shared_data, tmp_path, kind, vocab):
    path = shared_data / "tinystories" / "tinystories_sample.txt.gz"
    data = DataConfig(source="file", path=str(path), num_proc=1)
    tok_cfg = TokenizerConfig(kind=kind, vocab_size=vocab)
    new = prepare_tokens(data, tok_cfg, tmp_path)
    old = old_build({"train": _read(path).split("<|endoftext|>")}, data, tok_cfg)
    for split in ("train", "val"):
        assert np.array_equal(new.splits[split], old[split])
    assert new.meta["splits"]["train"]["tokens"] == old["train"].size
    assert new.meta["tokenizer_sample"]["share"] == 1.0


def test_streaming_build_equals_the_in_memory_build_ptb(shared_data, tmp_path):
    folder = shared_data / "ptb"
    data = DataConfig(source="ptb", path=str(folder), num_proc=1)
    tok_cfg = TokenizerConfig(kind="word", split="whitespace")
    new = prepare_tokens(data, tok_cfg, tmp_path)
    files = {"train": "ptb.train.txt.gz", "val": "ptb.valid.txt", "test": "ptb.test.txt"}
    splits = {k: [ln.strip() for ln in _read(folder / f).splitlines() if ln.strip()] for k, f in files.items()}
    old = old_build(splits, data, tok_cfg)
    for split in ("train", "val", "test"):
        assert np.array_equal(new.splits[split], old[split])


def test_two_processes_give_the_same_tokens(shared_data, tmp_path):
    """num_proc 2 encodes batches in worker processes; the array is the one-process array."""
    path = shared_data / "tinystories" / "tinystories_sample.txt.gz"  # 2,316 stories: three batches
    tok_cfg = TokenizerConfig(kind="char")
    one = prepare_tokens(DataConfig(source="file", path=str(path), num_proc=1), tok_cfg, tmp_path / "a")
    two = prepare_tokens(DataConfig(source="file", path=str(path), num_proc=2), tok_cfg, tmp_path / "b")
    assert two.meta["build"]["num_proc"] == 2
    for split in ("train", "val"):
        assert np.array_equal(one.splits[split], two.splits[split])
    assert one.meta["splits"] == two.meta["splits"]


def test_a_file_rewritten_in_place_is_tokenized_again(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("<|endoftext|>".join(f"Story {i} is here." for i in range(40)))
    data, tok = DataConfig(source="file", path=str(path)), TokenizerConfig(kind="char")
    first = prepare_tokens(data, tok, tmp_path / "cache")
    assert prepare_tokens(data, tok, tmp_path / "cache").path == first.path
    path.write_text("<|endoftext|>".join(f"Tale {i} is new!" for i in range(40)))  # same path, same config
    second = prepare_tokens(data, tok, tmp_path / "cache")
    assert second.path != first.path
    assert "Tale" in second.tokenizer.decode(second.splits["train"][:40])


def _build_and_report(cache: str, path: str, out: str) -> None:
    t = prepare_tokens(DataConfig(source="file", path=path), TokenizerConfig(kind="char"), Path(cache))
    Path(out).write_text(json.dumps({"pid": os.getpid(), "built_by": t.meta["build"]["pid"], "path": str(t.path)}))


def test_two_runners_building_at_once_build_one_cache_once(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("<|endoftext|>".join(f"Story number {i} ends well." for i in range(3000)))
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_build_and_report, args=(str(tmp_path / "cache"), str(path), str(tmp_path / f"{i}")))
             for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    reports = [json.loads((tmp_path / f"{i}").read_text()) for i in range(2)]
    assert reports[0]["path"] == reports[1]["path"]
    assert reports[0]["built_by"] == reports[1]["built_by"] in {r["pid"] for r in reports}  # built once
    entries = sorted(p.name for p in (tmp_path / "cache" / "tokens").iterdir())
    assert len(entries) == 2 and entries[1].endswith(".lock")  # the cache and its lock; no temporary folder


def test_tokenizer_trains_on_a_seeded_sample(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("<|endoftext|>".join(f"Story {i}: the cat sat on mat {i % 7}." for i in range(2000)))
    data, tok = DataConfig(source="file", path=str(path)), TokenizerConfig(kind="bpe", vocab_size=300,
                                                                           train_bytes=20_000)
    a = prepare_tokens(data, tok, tmp_path / "a").meta["tokenizer_sample"]
    b = prepare_tokens(data, tok, tmp_path / "b").meta["tokenizer_sample"]
    assert a == b and a["train_bytes"] == 20_000
    assert 0.5 * 20_000 < a["bytes"] < 1.5 * 20_000  # about train_bytes of the ~70 kB split


def test_validation_sized_in_documents_and_tokens(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("<|endoftext|>".join(f"Story {i} is a story." for i in range(200)))
    tok = TokenizerConfig(kind="char")
    by_docs = prepare_tokens(DataConfig(source="file", path=str(path), val_docs=7), tok, tmp_path / "a")
    assert by_docs.meta["splits"]["val"]["docs"] == 7 and by_docs.meta["splits"]["train"]["docs"] == 193
    by_tokens = prepare_tokens(DataConfig(source="file", path=str(path), val_tokens=50), tok, tmp_path / "b")
    val = by_tokens.meta["splits"]["val"]
    assert val["tokens"] >= 50 and val["tokens"] - 50 < 25 and val["tokens"] == by_tokens.splits["val"].size


# -- bad input: one line naming the file and the fix; nothing half-built left behind ---------------
def test_truncated_json_shard_names_the_shard(tmp_path):
    folder = tmp_path / "TinyStories_all_data"
    folder.mkdir()
    rows = [{"story": f"Once upon a time {i}."} for i in range(20)]
    (folder / "data00.json").write_text(json.dumps(rows))
    (folder / "data01.json").write_text(json.dumps(rows)[:-40])
    with pytest.raises(DataError, match=r"data01\.json: not valid JSON .*truncated"):
        prepare_tokens(DataConfig(source="file", path=str(folder), text_field="story"), TokenizerConfig(), tmp_path)
    assert not any((tmp_path / "tokens").glob(".*/"))


def test_truncated_jsonl_names_the_line(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps({"text": f"Doc {i}."}) + "\n" for i in range(10)) + '{"text": "cut')
    with pytest.raises(DataError, match=r"c\.jsonl:11: not valid JSON"):
        prepare_tokens(DataConfig(source="file", path=str(path)), TokenizerConfig(), tmp_path)


def test_invalid_utf8_is_replaced_or_refused(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes(b"<|endoftext|>".join([b"Good story.", b"Bad \xff byte.", b"Fine again."] * 5))
    ok = prepare_tokens(DataConfig(source="file", path=str(path)), TokenizerConfig(), tmp_path / "a")
    assert "\ufffd" in ok.tokenizer.decode(np.concatenate([ok.splits["train"], ok.splits["val"]]))
    with pytest.raises(DataError, match=r"c\.txt: invalid UTF-8 in document 2 .*invalid_utf8: replace"):
        prepare_tokens(DataConfig(source="file", path=str(path), clean=CleanConfig(invalid_utf8="error")),
                       TokenizerConfig(), tmp_path / "b")


def test_empty_shard_is_named(tmp_path):
    (tmp_path / "data00.json").write_text(json.dumps([{"story": "A tale."}] * 5))
    (tmp_path / "data01.json").write_text("")
    with pytest.raises(DataError, match=r"data01\.json: empty file"):
        prepare_tokens(DataConfig(source="file", path=str(tmp_path), text_field="story"), TokenizerConfig(),
                       tmp_path / "cache")


def test_full_disk_leaves_no_cache(tmp_path, monkeypatch):
    """A write that fails with ENOSPC (simulated: a real full disk cannot be made portably in a test)."""
    import errno

    from research.data import build

    path = tmp_path / "c.txt"
    path.write_text("<|endoftext|>".join(f"Story {i}." for i in range(50)))

    def full(self, ids):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(build.NpyWriter, "write", full)
    with pytest.raises(DataError, match="disk is full while writing the train tokens"):
        prepare_tokens(DataConfig(source="file", path=str(path)), TokenizerConfig(), tmp_path / "cache")
    assert [p.suffix for p in (tmp_path / "cache" / "tokens").iterdir()] == [".lock"]


def test_corpus_that_would_not_fit_is_refused_before_building(tmp_path, monkeypatch):
    from research.data import build

    path = tmp_path / "c.txt"
    path.write_text("<|endoftext|>".join(f"Story {i}." for i in range(50)))
    monkeypatch.setattr(build, "free_bytes", lambda folder: 100)
    t0 = time.time()
    with pytest.raises(DataError, match="needs about .* GB and the disk has"):
        prepare_tokens(DataConfig(source="file", path=str(path)), TokenizerConfig(), tmp_path / "cache")
    assert time.time() - t0 < 10


def test_large_inputs_build_in_a_child_process(tmp_path, monkeypatch):
    """Above CHILD_BUILD_BYTES the build runs in a spawned process: same tokens, errors still one line."""
    import research.data.tokens as tokens_mod

    path = tmp_path / "c.txt"
    path.write_text("<|endoftext|>".join(f"Story {i} is short." for i in range(100)))
    here = prepare_tokens(DataConfig(source="file", path=str(path)), TokenizerConfig(), tmp_path / "a")
    monkeypatch.setattr(tokens_mod, "CHILD_BUILD_BYTES", 0)
    child = prepare_tokens(DataConfig(source="file", path=str(path)), TokenizerConfig(), tmp_path / "b")
    assert child.meta["build"]["pid"] != os.getpid() == here.meta["build"]["pid"]
    assert np.array_equal(here.splits["train"], child.splits["train"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": "cut')
    with pytest.raises(DataError, match=r"bad\.jsonl:2: not valid JSON"):
        prepare_tokens(DataConfig(source="file", path=str(bad)), TokenizerConfig(), tmp_path / "c")
