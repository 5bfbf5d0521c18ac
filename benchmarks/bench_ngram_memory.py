"""Peak memory of the n-gram model's `fit` on a large token stream, against an earlier revision.

    python -m benchmarks.bench_ngram_memory --mb 100 --orders 3 --before 096f801 \
        --csv benchmarks/results/cpu_ngram_memory.csv

The stream is `--mb` MB of uint16 tokens (mb * 500,000 tokens) in a memory-mapped `.npy`, as the
token cache stores a split: byte-level tokens (byte + 1, end-of-text 0 between documents) of the
shared corpora's documents (benchmarks.bench_data_scale.source_docs), shuffled anew each time
they are repeated, so boundaries differ but the distinct n-grams stay those of the sources. Each
fit runs in its own child process; peak RSS is that process's ru_maxrss, and `base` its RSS
after the imports and opening the stream (before `fit`). `--before REV` also fits with
research/models/ngram.py as it was at git revision REV, and the two count tables must be equal
(a SHA-256 over the state dict).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import resource
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np

from research.errors import run_main
from research.io import atomic_write_csv

VOCAB = 257  # 256 bytes + end-of-text (id 0)


def make_stream(path: Path, mb: int) -> int:
    """Write mb * 500,000 uint16 tokens to `path`; returns the token count."""
    from benchmarks.bench_data_scale import source_docs

    docs = [np.frombuffer(d.encode("utf-8"), dtype=np.uint8).astype(np.uint16) + 1 for d in source_docs()]
    n = mb * 500_000
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint16, shape=(n,))
    rng, at = random.Random(0), 0
    while at < n:
        rng.shuffle(docs)
        for d in docs:
            piece = d[: n - at]
            out[at : at + len(piece)] = piece
            at += len(piece)
            if at < n:
                out[at] = 0
                at += 1
            if at >= n:
                break
    out.flush()
    return n


def ngram_at(rev: str) -> types.ModuleType:
    src = subprocess.run(["git", "show", f"{rev}:research/models/ngram.py"], capture_output=True, text=True,
                         check=True).stdout
    module = types.ModuleType(f"ngram_at_{rev}")
    sys.modules[module.__name__] = module
    exec(compile(src, f"{rev}:research/models/ngram.py", "exec"), module.__dict__)
    return module


def child(args) -> int:
    import research.models.ngram as current

    module = ngram_at(args.child) if args.child != "current" else current
    stream = np.load(args.stream, mmap_mode="r")
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    model = module.NGram(module.NGramConfig(order=args.order), VOCAB)
    started = time.perf_counter()
    model.fit(stream)
    wall = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    digest = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.cpu().numpy().tobytes())
    print(json.dumps({"peak_rss_mb": round(peak, 1), "base_rss_mb": round(base, 1), "fit_s": round(wall, 1),
                      "entries": model.num_params(), "tables_sha256": digest.hexdigest()[:16]}))
    return 0


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_ngram_memory", description=__doc__.splitlines()[0])
    p.add_argument("--mb", type=int, default=100, help="stream size in MB of uint16 tokens")
    p.add_argument("--orders", default="3", help="comma-separated n-gram orders")
    p.add_argument("--before", default=None, help="git revision whose ngram.py to compare with")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/bench_ngram_memory"))
    p.add_argument("--csv", type=Path, default=None)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--stream", default=None, help=argparse.SUPPRESS)
    p.add_argument("--order", type=int, default=3, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        return child(args)
    args.workdir.mkdir(parents=True, exist_ok=True)
    stream = args.workdir / f"stream_{args.mb}mb.npy"
    if not stream.exists():
        make_stream(stream, args.mb)
    tokens = len(np.load(stream, mmap_mode="r"))
    rows = []
    for order in [int(o) for o in args.orders.split(",")]:
        for impl in ([args.before] if args.before else []) + ["current"]:
            out = subprocess.run([sys.executable, "-m", "benchmarks.bench_ngram_memory", "--child", impl,
                                  "--stream", str(stream), "--order", str(order)],
                                 capture_output=True, text=True, check=True).stdout
            row = {"implementation": impl if impl != "current" else "working tree", "order": order,
                   "stream_mb": round(stream.stat().st_size / 1e6, 1), "tokens": tokens, **json.loads(out)}
            rows.append(row)
            print(json.dumps(row))
        if args.before:
            old, new = rows[-2], rows[-1]
            if old["tables_sha256"] != new["tables_sha256"]:
                raise SystemExit(f"order {order}: the count tables differ between {args.before} and the working tree")
    if args.csv:
        atomic_write_csv(args.csv, rows, list(rows[0]))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
