"""Novelty eval cost against a 100k-document training set: embedding, cache, search, n-gram overlap.

    python -m benchmarks.bench_novelty --docs tinystories_sample.txt.gz      # TinyStories text file
    python -m benchmarks.bench_novelty                                       # built-in grammar stories
    python -m benchmarks.bench_novelty --n-docs 100000 --embed-docs 100000   # embed all (slow on CPU)

The documents (a local text file split on <|endoftext|>, or the built-in stories) are repeated to
`--n-docs`, each copy k > 0 with its sentences after the first rotated by k and " (k)" appended,
so every document is distinct and keeps its opening. Held-out documents stand in for generated
stories (`--stories` of them).

Embedding a corpus with the sentence-transformer is the slow part on a CPU, so it is timed on
`--embed-docs` documents and reported as documents per second (and the time that implies for all
`--n-docs`). Unless every document was embedded, the 100k vectors for the search are those real
embeddings repeated with small Gaussian noise (renormalised), written through the same float16
on-disk cache the eval uses. Then, each timed separately: the cache write, the chunked exact top-1
search from the memory-mapped cache (per `--chunk-sizes`), the shared-opening count and the 8-gram
overlap pass over all documents. Peak resident memory (ru_maxrss) is read after every phase.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from evals.novelty import (
    DEFAULT_EMBEDDER,
    cached_embeddings,
    embed_with,
    load_embedder,
    nearest,
    ngram_overlap,
    shared_opening,
)
from research.config import RunConfig
from research.data import load_corpus
from research.errors import run_main
from research.io import atomic_write_json

log = logging.getLogger(__name__)
SENTENCE_RE = re.compile(r"(?<=[.!?])\s+")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def perturbed(doc: str, k: int) -> str:
    if k == 0:
        return doc
    first, *rest = SENTENCE_RE.split(doc.strip())
    shift = k % len(rest) if rest else 0
    return " ".join([first, *rest[shift:], *rest[:shift]]) + f" ({k})"


def scale_to(docs: list[str], n: int) -> list[str]:
    return [perturbed(docs[i % len(docs)], i // len(docs)) for i in range(n)]


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_novelty", description=__doc__.splitlines()[0])
    p.add_argument("--docs", default=None, help="text file (.gz ok) of <|endoftext|>-separated stories; "
                                                "default: the built-in grammar stories")
    p.add_argument("--n-docs", type=int, default=100_000, help="training documents to search")
    p.add_argument("--embed-docs", type=int, default=1000, help="documents actually embedded (throughput)")
    p.add_argument("--stories", type=int, default=64, help="held-out documents used as generated stories")
    p.add_argument("--chunk-sizes", default="2048,16384,65536", help="comma-separated search chunk sizes to time")
    p.add_argument("--embedder", default=DEFAULT_EMBEDDER)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--out", default=None, help="also write the numbers to this JSON file")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    data = {"source": "file", "path": args.docs, "val_fraction": 0.05} if args.docs else \
        {"source": "builtin", "n_docs": 4000}
    corpus = load_corpus(RunConfig.from_dict({"data": data}).data)
    train = scale_to(corpus.train, args.n_docs)
    stories = corpus.val[: args.stories]
    report: dict = {"source": args.docs or "builtin", "base_docs": len(corpus.train), "n_docs": len(train),
                    "stories": len(stories), "embedder": args.embedder, "device": args.device,
                    "threads": torch.get_num_threads(),
                    "mean_doc_chars": round(float(np.mean([len(d) for d in train[: args.embed_docs]])), 1)}

    started = time.perf_counter()
    model = load_embedder(args.embedder, args.device)
    report["embedder_load_s"] = round(time.perf_counter() - started, 2)
    embed = embed_with(model, 64)
    n_embed = min(args.embed_docs, len(train))
    started = time.perf_counter()
    real = embed(train[:n_embed])
    wall = time.perf_counter() - started
    report["embed"] = {"docs": n_embed, "wall_s": round(wall, 2), "docs_per_s": round(n_embed / wall, 1),
                       "implied_s_for_all": round(len(train) / (n_embed / wall), 1)}
    print(f"embedding: {n_embed} docs in {wall:.1f} s = {n_embed / wall:.1f} docs/s "
          f"(all {len(train)}: ~{len(train) / (n_embed / wall) / 60:.1f} min)")
    query = embed(stories)

    rng = np.random.default_rng(0)
    done = {"n": 0}

    def stand_in(texts: list[str]) -> np.ndarray:
        """The real vectors where we have them, else a real one plus noise (for the search timing)."""
        i0 = done["n"]
        done["n"] += len(texts)
        rows = np.arange(i0, i0 + len(texts))
        if rows[-1] < n_embed:
            return real[rows]
        v = real[rows % n_embed] + rng.normal(0, 0.05, size=(len(texts), real.shape[1])).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    with tempfile.TemporaryDirectory() as cache:
        started = time.perf_counter()
        keys = cached_embeddings(train, stand_in, f"bench-{args.embedder}", Path(cache))
        report["cache_write_s"] = round(time.perf_counter() - started, 2)
        report["cache_mb"] = round(keys.nbytes / 2**20, 1)
        report["peak_rss_mb_before_search"] = round(peak_rss_mb(), 1)
        report["search"] = []
        for chunk in [int(c) for c in args.chunk_sizes.split(",")]:
            keys = np.load(next(Path(cache).rglob("*.npy")), mmap_mode="r")  # as the eval reads it
            started = time.perf_counter()
            sims, _ = nearest(query, keys, chunk, args.device)
            wall = time.perf_counter() - started
            report["search"].append({"chunk_size": chunk, "wall_s": round(wall, 3),
                                     "peak_rss_mb": round(peak_rss_mb(), 1)})
            print(f"search: {len(query)} stories x {len(train)} docs, chunk {chunk}: {wall:.2f} s")
        report["novelty_mean"] = round(float(1 - sims.mean()), 4)

    started = time.perf_counter()
    opening, share = shared_opening(train, 4)
    report["opening"] = {"words": " ".join(opening or ()), "share": round(share, 4),
                         "wall_s": round(time.perf_counter() - started, 2)}
    started = time.perf_counter()
    overlaps = ngram_overlap(stories, train, 8)
    report["ngram_overlap"] = {"wall_s": round(time.perf_counter() - started, 2),
                               "mean": round(float(np.mean([o for o in overlaps if o is not None])), 4)}
    report["peak_rss_mb"] = round(peak_rss_mb(), 1)
    print(f"opening {report['opening']}; 8-gram overlap pass: {report['ngram_overlap']['wall_s']} s")
    print(json.dumps({k: v for k, v in report.items() if k not in ("search",)}))
    if args.out:
        atomic_write_json(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
