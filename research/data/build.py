"""The streaming token build: documents in, a memory-mapped token array per split out.

Memory does not grow with the corpus. Documents stream from the source (research.data.streams),
are cleaned and encoded `BATCH_DOCS` at a time, and appended to `<split>.npy` on disk; bytes,
documents and words are counted in the same pass. With `data.num_proc` > 1 the batches are
cleaned and encoded by worker processes and written back in input order, so the output is the
same array for any number of processes. The tokenizer is trained on a seeded sample of the
training split (`tokenizer.train_bytes`), streamed into the trainer.

The passes over the input: one to count documents (only when validation is held out of a single
stream), one for a vocabulary restriction (only with `data.clean.restrict_vocab`), one to train
the tokenizer (only the sampled documents are cleaned) and one to encode.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import random
import resource
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from research.data.cleaning import clean_doc, top_words
from research.data.spans import encode_with_spans, has_spans, plain
from research.data.streams import DocStreams, free_bytes
from research.errors import DataError

log = logging.getLogger(__name__)

BATCH_DOCS = 1000
_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}


# -- which documents go where -----------------------------------------------------------------


def _chain(parts) -> Iterator[str]:
    for part in parts:
        yield from part.docs()


def _held(n: int, fraction: float, count: int | None, seed: int) -> list[int]:
    """The old in-memory hold-out's choice: a seeded shuffle of indices, the first share held."""
    if count is None and fraction <= 0:
        return []
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_out = min(count, n - 1) if count is not None else max(1, round(n * fraction))
    return order[:n_out]


def layout(streams: DocStreams, cfg) -> tuple[dict[str, Callable[[], Iterator[str]]], dict, dict[str, float]]:
    """Re-readable raw document streams per split, what the corpus meta says about the split, and
    each split's input bytes (for progress bars)."""
    meta = dict(streams.meta)

    def size(parts) -> float:
        return float(sum(p.nbytes for p in parts or []))

    if streams.val is not None:
        out = {"train": lambda: _chain(streams.train), "val": lambda: _chain(streams.val)}
        if streams.test is not None:
            out["test"] = lambda: _chain(streams.test)
        return out, meta, {k: size(getattr(streams, k)) for k in out}
    n = sum(1 for _ in _chain(streams.train))
    if n == 1:  # one long text: cut by characters (as nanoGPT cuts Tiny Shakespeare)
        from research.data.sources import hold_out

        doc = list(_chain(streams.train))
        train, val = hold_out(doc, cfg.val_fraction, cfg.split_seed)
        test = None
        if cfg.test_fraction > 0:
            train, test = hold_out(train, cfg.test_fraction / max(1e-9, 1 - cfg.val_fraction), cfg.split_seed + 1)
        out = {"train": lambda: iter(train), "val": lambda: iter(val)}
        if test is not None:
            out["test"] = lambda: iter(test)
        meta["val_split"] = f"held out {cfg.val_fraction:g} of characters"
        return out, meta, {k: float(sum(len(d) for d in v())) for k, v in out.items()}
    labels = np.zeros(n, dtype=np.int8)
    labels[_held(n, cfg.val_fraction, cfg.val_docs, cfg.split_seed)] = 1
    if cfg.test_fraction > 0:
        rest = np.flatnonzero(labels == 0)
        frac = cfg.test_fraction / max(1e-9, 1 - cfg.val_fraction)
        labels[rest[_held(len(rest), frac, None, cfg.split_seed + 1)]] = 2
    meta["val_split"] = (f"held out {cfg.val_docs} documents (seed {cfg.split_seed})" if cfg.val_docs is not None
                         else f"held out {cfg.val_fraction:g} of documents (seed {cfg.split_seed})")

    def split(code: int) -> Iterator[str]:
        return (d for d, label in zip(_chain(streams.train), labels) if label == code)

    out = {name: (lambda c=code: split(c)) for name, code in _SPLIT_CODE.items()
           if name != "test" or cfg.test_fraction > 0}
    total = size(streams.train)
    return out, meta, {k: total * float(np.mean(labels == _SPLIT_CODE[k])) for k in out}


def doc_caps(cfg, streams: DocStreams) -> dict[str, int | None]:
    """Cleaned documents kept per split: `max_docs` of train; `val_docs` of an official validation split."""
    return {"train": cfg.max_docs, "val": cfg.val_docs if streams.val is not None else None, "test": None}


def restricted_vocab(raw_train: Callable[[], Iterator[str]], cfg) -> set[str] | None:
    if cfg.clean.restrict_vocab is None:
        return None
    counts: Counter = Counter()
    return top_words((c for c in (clean_doc(d, cfg.clean, counts) for d in raw_train()) if c is not None),
                     cfg.clean.restrict_vocab)


# -- the tokenizer's training sample ----------------------------------------------------------


def training_sample(raw_train: Iterator[str], cfg, tok_cfg, vocab, total_bytes: int, record: dict) -> Iterator[str]:
    """Cleaned training documents, each kept with probability train_bytes / split bytes (seeded).

    Only sampled documents are cleaned, unless `data.max_docs` needs every document counted.
    `record` receives the documents and bytes sampled (written to meta.json).
    """
    share = 1.0 if tok_cfg.train_bytes is None or total_bytes <= tok_cfg.train_bytes else \
        tok_cfg.train_bytes / total_bytes
    rng = random.Random(cfg.split_seed)
    counts: Counter = Counter()
    record.update(share=share, docs=0, bytes=0, seed=cfg.split_seed, train_bytes=tok_cfg.train_bytes)
    kept = 0
    for doc in raw_train:
        take = share >= 1 or rng.random() < share
        if not take and cfg.max_docs is None:
            continue
        doc = clean_doc(doc, cfg.clean, counts, vocab)
        if doc is None:
            continue
        kept += 1
        if cfg.max_docs is not None and kept > cfg.max_docs:
            return
        if take:
            doc = plain(doc)
            record["docs"] += 1
            record["bytes"] += len(doc.encode("utf-8"))
            yield doc


# -- encoding in batches ------------------------------------------------------------------------

_WORKER: dict = {}


def _init_worker(tok_dir: str, clean_cfg, vocab) -> None:
    from research.tokenizers import load_tokenizer

    _WORKER.update(tokenizer=load_tokenizer(Path(tok_dir)), clean=clean_cfg, vocab=vocab)


def encode_batch(docs: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict, np.ndarray | None]:
    """Clean and encode one batch: (ids with EOT after each doc, tokens, bytes, words per doc, counts,
    and the scored mask where a document carries an unscored context span, else None)."""
    tok, counts = _WORKER["tokenizer"], Counter()
    kept = [c for c in (clean_doc(d, _WORKER["clean"], counts, _WORKER["vocab"]) for d in docs) if c is not None]
    scored = None
    if has_spans(kept):
        ids, scored, lens = encode_with_spans(tok, kept)
        kept = [plain(d) for d in kept]
    else:
        ids, lens = tok.encode_flat(kept)
    # UTF-8 bytes plus one for the separator; whitespace words plus one for the end of the document
    nbytes = np.fromiter((len(d.encode("utf-8")) + 1 for d in kept), dtype=np.int64, count=len(kept))
    words = np.fromiter((len(d.split()) + 1 for d in kept), dtype=np.int64, count=len(kept))
    return ids, lens, nbytes, words, dict(counts), scored


def _batches(docs: Iterator[str], progress) -> Iterator[list[str]]:
    while batch := list(itertools.islice(docs, BATCH_DOCS)):
        if progress is not None:
            progress(sum(len(d) for d in batch))
        yield batch


def _ordered_map(fn, batches: Iterator[list[str]], pool, depth: int) -> Iterator:
    """`map` over a pool with at most `depth` batches in flight, results in input order."""
    if pool is None:
        yield from map(fn, batches)
        return
    pending: deque = deque()
    for batch in batches:
        pending.append(pool.apply_async(fn, (batch,)))
        if len(pending) >= depth:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


class NpyWriter:
    """A `.npy` file that grows: a fixed 128-byte header, rewritten with the length when closed."""

    HEADER = 128

    def __init__(self, path: Path, dtype):
        self.path, self.dtype, self.n = path, np.dtype(dtype), 0
        self.f = open(path, "wb")
        self.f.write(b"\0" * self.HEADER)

    def write(self, ids: np.ndarray) -> None:
        self.f.write(np.ascontiguousarray(ids, dtype=self.dtype).tobytes())
        self.n += len(ids)

    def close(self) -> None:
        d = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": (self.n,)}
        text = repr(d).encode("latin1")
        pad = self.HEADER - 10 - len(text) - 1
        self.f.seek(0)
        self.f.write(b"\x93NUMPY\x01\x00" + (self.HEADER - 10).to_bytes(2, "little") + text + b" " * pad + b"\n")
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()


class ScoredWriter:
    """The split's scored mask (`<split>.scored.npy`), opened at the first document with a context
    span; the tokens written before it are all scored."""

    def __init__(self, path: Path):
        self.path, self.writer = path, None

    def write(self, scored: np.ndarray | None, n_before: int, n: int) -> None:
        if scored is None and self.writer is None:
            return
        if self.writer is None:
            self.writer = NpyWriter(self.path, np.uint8)
            self.writer.write(np.ones(n_before, dtype=np.uint8))
        self.writer.write(np.ones(n, dtype=np.uint8) if scored is None else scored[:n])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def encode_split(raw: Iterator[str], writer: NpyWriter, cap_docs: int | None, cap_tokens: int | None,
                 pool, depth: int, progress, scored_writer: ScoredWriter | None = None) -> tuple[dict, dict]:
    """Stream one split into `writer` (and its scored mask into `scored_writer`); returns its sizes
    and cleaning counts."""
    sizes = {"docs": 0, "tokens": 0, "bytes": 0, "words": 0}
    counts: Counter = Counter()
    for ids, lens, nbytes, words, c, scored in _ordered_map(encode_batch, _batches(raw, progress), pool, depth):
        counts.update(c)
        k = len(lens)
        if cap_docs is not None:
            k = min(k, cap_docs - sizes["docs"])
        if cap_tokens is not None:  # keep documents until the one that reaches the cap
            before = np.cumsum(lens[:k]) - lens[:k] + sizes["tokens"]
            k = int(np.searchsorted(before, cap_tokens, side="left"))
        n_ids = int(lens[:k].sum())
        if scored_writer is not None:
            scored_writer.write(scored, writer.n, n_ids)
        writer.write(ids[:n_ids])
        sizes["docs"] += k
        sizes["tokens"] += n_ids
        sizes["bytes"] += int(nbytes[:k].sum())
        sizes["words"] += int(words[:k].sum())
        if k < len(lens):
            break
    counts.setdefault("docs_in", 0)
    counts.setdefault("docs_out", 0)
    return sizes, dict(counts)


def peak_rss_mb() -> float:
    """Peak resident memory of this process, in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1 << 20) if sys.platform == "darwin" else rss / 1024


def available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# -- the whole build ----------------------------------------------------------------------------


def build_into(data_cfg, tok_cfg, out: Path, streams: DocStreams | None = None, progress_factory=None) -> dict:
    """Build every split into the (empty, temporary) folder `out`; returns meta.json's content.

    `progress_factory(stage, total_bytes)` returns a callback taking bytes consumed (or None).
    """
    from research.data.sources import open_streams
    from research.tokenizers import train_tokenizer

    started = time.time()
    streams = streams if streams is not None else open_streams(data_cfg)
    raw, meta, sizes = layout(streams, data_cfg)
    caps = doc_caps(data_cfg, streams)
    total_train = sizes["train"]
    _check_room(streams, tok_cfg, out)

    def bar(stage, total):
        return progress_factory(stage, total) if progress_factory is not None else None

    vocab = restricted_vocab(raw["train"], data_cfg)
    sample: dict = {}
    docs = training_sample(_progressed(raw["train"](), bar("tokenizer sample", int(total_train))), data_cfg, tok_cfg,
                           vocab, total_train, sample)
    tokenizer = train_tokenizer(tok_cfg, docs)
    for _ in docs:  # a trainer may stop early; the sample record counts what it saw
        pass
    tokenizer.save(out / "tokenizer")
    dtype = np.uint16 if tokenizer.vocab_size <= 65535 else np.int32
    num_proc = data_cfg.num_proc or available_cpus()
    _init_worker(str(out / "tokenizer"), data_cfg.clean, vocab)
    pool = _pool(out / "tokenizer", data_cfg, vocab, num_proc) if num_proc > 1 else None
    splits, cleaning = {}, {}
    try:
        for name, stream in raw.items():
            writer = NpyWriter(out / f"{name}.npy", dtype)
            scored = ScoredWriter(out / f"{name}.scored.npy")
            try:
                splits[name], cleaning[name] = encode_split(
                    stream(), writer, caps[name], data_cfg.val_tokens if name == "val" else None,
                    pool, 2 * num_proc, bar(f"encode {name}", int(sizes[name])), scored)
                writer.close()
                scored.close()
            except OSError as e:
                if e.errno == errno.ENOSPC:
                    raise DataError(f"{out.parent}: the disk is full while writing the {name} tokens "
                                    f"({writer.n:,} written); free space or point the token cache at a larger "
                                    "disk") from None
                raise
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    _WORKER.clear()
    if data_cfg.max_docs is not None:
        meta["max_docs"] = data_cfg.max_docs
    meta["cleaning"] = cleaning
    for name in ("train", "val"):
        if splits.get(name, {}).get("docs", 0) == 0:
            raise DataError(f"data.source '{data_cfg.source}': the {name} split is empty after cleaning "
                            f"({cleaning.get(name)}); check data.path, data.separator and data.clean")
    return {"corpus": meta, "splits": splits, "vocab_size": tokenizer.vocab_size, "tokenizer": tok_cfg.kind,
            "eot_id": tokenizer.eot_id, "tokenizer_sample": sample,
            "build": {"wall_s": round(time.time() - started, 3), "num_proc": num_proc, "pid": os.getpid(),
                      "peak_rss_mb": round(peak_rss_mb(), 1)}}


def _progressed(docs: Iterator[str], progress) -> Iterator[str]:
    if progress is None:
        yield from docs
        return
    done = 0
    for d in docs:
        yield d
        done += len(d)
        if done >= 1 << 20:
            progress(done)
            done = 0
    progress(done)


def _pool(tok_dir: Path, data_cfg, vocab, num_proc: int):
    import multiprocessing

    # spawn, not fork: a forked copy of a process holding torch threads can deadlock
    ctx = multiprocessing.get_context("spawn")
    return ctx.Pool(num_proc, initializer=_init_worker, initargs=(str(tok_dir), data_cfg.clean, vocab))


#: token-array bytes per input byte that a build needs at least: char stores 2 bytes per character
_MIN_OUT_PER_IN = {"char": 2.0}


def _check_room(streams: DocStreams, tok_cfg, out: Path) -> None:
    """Refuse at once a corpus whose tokens cannot fit on the cache's disk (not after an hour)."""
    need = sum(p.nbytes for p in (*streams.train, *(streams.val or []), *(streams.test or []))
               if p.path is not None and not p.path.name.endswith(".gz"))
    need = int(need * _MIN_OUT_PER_IN.get(tok_cfg.kind, 0.25))
    have = free_bytes(out)
    if need > have:
        raise DataError(f"{out.parent}: the token cache needs about {need / 1e9:.1f} GB and the disk has "
                        f"{have / 1e9:.1f} GB free; free space or point the token cache at a larger disk")
