"""Token-cache build at scale: wall time, MB/s and peak memory against corpus size and num_proc.

    python -m benchmarks.bench_data_scale                          # 100 MB, char and BPE 4096, num_proc 1 and 2
    python -m benchmarks.bench_data_scale --sizes 1000,2000 --num-proc 1
    python -m benchmarks.bench_data_scale --sizes 20 --tokenizers char --out /tmp/x.csv   # quick look

Each corpus (`--sizes` in MB) is text joined from `../shared/data` (TinyStories prefixes, the PTB
and WikiText-2 training text) cut into ~1.1 KB documents, repeated in a seeded shuffled order
until the size is reached, separated by `<|endoftext|>`; without that folder, the built-in grammar's
stories. Each build runs in its own child process (`python -m benchmarks.bench_data_scale --child`)
so its peak RSS (ru_maxrss of the build process, and of its largest worker) is its own. In the
same child, after the build, the tokenizer it trained encodes the first `--raw-mb` MB of the same
text with its own batch encoder (`encode_flat`: HF `encode_batch` for BPE, one table lookup for
char) in one thread: the physical limit the build is compared with, per core.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from research.errors import run_main

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SEP = "<|endoftext|>"
DOC_BYTES = 1100
TOKENIZERS = {"char": {"kind": "char"}, "bpe4096": {"kind": "bpe", "vocab_size": 4096}}


def source_docs() -> list[str]:
    texts = []
    for rel in ("tinystories/tinystories_sample.txt.gz", "tinystories/tinystories_10k.txt.gz",
                "ptb/ptb.train.txt.gz", "wikitext-2/wiki.train.tokens.gz"):
        p = SHARED / rel
        if p.exists():
            texts.append(gzip.decompress(p.read_bytes()).decode("utf-8", errors="replace"))
    if not texts:
        from research.data import grammar

        texts = [SEP.join(s.text for s in grammar.generate_stories(20000, 0))]
    docs = []
    for text in texts:
        for piece in text.split(SEP):
            piece = piece.strip()
            while len(piece) > DOC_BYTES:
                cut = piece.rfind(" ", 0, DOC_BYTES)
                cut = cut if cut > 0 else DOC_BYTES
                docs.append(piece[:cut])
                piece = piece[cut:].strip()
            if piece:
                docs.append(piece)
    return docs


def make_corpus(path: Path, mb: int) -> int:
    """Write about `mb` MB of documents; returns the bytes written."""
    docs = source_docs()
    rng = random.Random(0)
    target, written = mb * 1_000_000, 0
    with open(path, "w", encoding="utf-8") as f:
        while written < target:
            rng.shuffle(docs)
            for d in docs:
                f.write(d + SEP)
                written += len(d.encode()) + len(SEP)
                if written >= target:
                    break
    return path.stat().st_size


def child(args) -> int:
    """One build in this process; prints a JSON line with its measurements."""
    os.environ["RAYON_NUM_THREADS"] = "1"  # one core per process, so num_proc is the core count
    from research.config import DataConfig, TokenizerConfig
    from research.data.tokens import build_cache, open_tokens

    data = DataConfig(source="file", path=args.corpus, num_proc=args.child_num_proc)
    tok = TokenizerConfig(**TOKENIZERS[args.tokenizer])
    folder = Path(args.cache) / "tokens" / "bench"
    folder.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    build_cache(data, tok, folder)
    wall = time.perf_counter() - t0
    build_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    worker_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    tokens = open_tokens(folder)
    meta = tokens.meta
    # the raw encoder on the same text, one thread
    budget = args.raw_mb * 1_000_000
    docs, size = [], 0
    with open(args.corpus, encoding="utf-8") as f:
        carry = ""
        while size < budget and (block := f.read(1 << 22)):
            parts = (carry + block).split(SEP)
            carry = parts.pop()
            for d in parts:
                docs.append(d.strip())
                size += len(d.encode()) + len(SEP)
    t1 = time.perf_counter()
    for i in range(0, len(docs), 1000):
        tokens.tokenizer.encode_flat(docs[i:i + 1000])
    raw_s = time.perf_counter() - t1
    print(json.dumps({"wall_s": wall, "build_rss_mb": build_rss, "worker_rss_mb": worker_rss,
                      "tokens": sum(s["tokens"] for s in meta["splits"].values()),
                      "bytes": sum(s["bytes"] for s in meta["splits"].values()),
                      "sample_bytes": meta["tokenizer_sample"]["bytes"],
                      "raw_mb_s": size / 1e6 / raw_s, "raw_mb": size / 1e6}))
    return 0


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_data_scale", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="100", help="corpus sizes in MB, comma-separated (default 100)")
    p.add_argument("--tokenizers", default="char,bpe4096", help=f"of {', '.join(TOKENIZERS)}")
    p.add_argument("--num-proc", default="1,2", help="data.num_proc values, comma-separated")
    p.add_argument("--raw-mb", type=int, default=50, help="MB of the text the raw encoder is timed on")
    p.add_argument("--workdir", type=Path, default=None, help="where corpora and caches go (default: a temp dir)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/cpu_data_scale.csv"))
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--corpus", help=argparse.SUPPRESS)
    p.add_argument("--cache", help=argparse.SUPPRESS)
    p.add_argument("--tokenizer", help=argparse.SUPPRESS)
    p.add_argument("--child-num-proc", type=int, help=argparse.SUPPRESS)
    return p.parse_args(argv)


COLUMNS = ["corpus_mb", "tokenizer", "num_proc", "wall_s", "mb_per_s", "mb_per_s_per_core", "raw_encode_mb_per_s",
           "build_over_raw_per_core", "peak_rss_mb", "worker_peak_rss_mb", "tokens", "tokenizer_sample_mb", "cpus",
           "contended"]


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        return child(args)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_data_scale."))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for mb in [int(s) for s in args.sizes.split(",")]:
        corpus = work / f"corpus_{mb}mb.txt"
        if not corpus.exists():
            make_corpus(corpus, mb)
        size = corpus.stat().st_size
        for tok in args.tokenizers.split(","):
            for n in [int(s) for s in args.num_proc.split(",")]:
                cache = work / f"cache_{mb}_{tok}_{n}"
                shutil.rmtree(cache, ignore_errors=True)
                cmd = [sys.executable, "-m", "benchmarks.bench_data_scale", "--child", "--corpus", str(corpus),
                       "--cache", str(cache), "--tokenizer", tok, "--child-num-proc", str(n),
                       "--raw-mb", str(args.raw_mb)]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:
                    sys.stderr.write(proc.stderr[-3000:])
                    return proc.returncode
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                mb_s = size / 1e6 / r["wall_s"]
                rows.append({"corpus_mb": round(size / 1e6), "tokenizer": tok, "num_proc": n,
                             "wall_s": round(r["wall_s"], 1), "mb_per_s": round(mb_s, 2),
                             "mb_per_s_per_core": round(mb_s / n, 2), "raw_encode_mb_per_s": round(r["raw_mb_s"], 2),
                             "build_over_raw_per_core": round(mb_s / n / r["raw_mb_s"], 3),
                             "peak_rss_mb": round(r["build_rss_mb"]), "worker_peak_rss_mb": round(r["worker_rss_mb"]),
                             "tokens": r["tokens"], "tokenizer_sample_mb": round(r["sample_bytes"] / 1e6, 1),
                             "cpus": os.cpu_count(), "contended": "yes (2 cores shared by 7 sessions)"})
                print(json.dumps(rows[-1]), flush=True)
                shutil.rmtree(cache, ignore_errors=True)
                _append(args.out, rows[-1])
        if args.workdir is None:
            corpus.unlink()
    return 0


def _append(path: Path, row: dict) -> None:
    """One line per finished build, so a long run keeps what it measured."""
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        if new:
            w.writeheader()
        w.writerow(row)


if __name__ == "__main__":
    sys.exit(run_main(main))
