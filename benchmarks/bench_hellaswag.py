"""HellaSwag scoring throughput: items per second on the full validation set (10,042 items).

    python -m benchmarks.bench_hellaswag --path hellaswag_val.jsonl
    python -m benchmarks.bench_hellaswag --path hellaswag_val.jsonl --limit 2000 --batch-sizes 16,64

The model is an untrained GPT of the default config (4 layers, 4 heads, 128 wide, block 128: about
0.8M non-embedding parameters) over a byte-level BPE vocabulary trained on the built-in corpus;
scoring cost does not depend on the weights, so an untrained model times the same as a trained one
(its accuracy is chance, about 0.25). Each item is 4 (context, ending) requests through
evals.scoring; the time covers tokenization, batching and the forward passes, not data loading.
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import torch

from evals.hellaswag import HellaSwagOptions, load_items, score_items, to_item
from evals.scoring import seeded_subset
from research.config import RunConfig
from research.data import load_corpus
from research.errors import run_main
from research.io import atomic_write_json
from research.models import build_model
from research.tokenizers import train_tokenizer

log = logging.getLogger(__name__)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_hellaswag", description=__doc__.splitlines()[0])
    p.add_argument("--path", default=None, help="HellaSwag JSONL (simplified or release format); default: HF")
    p.add_argument("--limit", type=int, default=None, help="seeded random subset of N items (default: all)")
    p.add_argument("--batch-sizes", default="32", help="comma-separated evaluation batch sizes to time")
    p.add_argument("--vocab-size", type=int, default=512, help="BPE vocabulary size")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--out", default=None, help="also write the numbers to this JSON file")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = RunConfig.from_dict({"data": {"source": "builtin", "n_docs": 2000},
                               "tokenizer": {"kind": "bpe", "vocab_size": args.vocab_size}, "model": {"arch": "gpt"}})
    tok = train_tokenizer(cfg.tokenizer, load_corpus(cfg.data).train)
    torch.manual_seed(0)
    model = build_model(cfg.model, tok.vocab_size).to(args.device).eval()
    docs = load_items(HellaSwagOptions(path=args.path))
    items = [to_item(docs[i]) for i in seeded_subset(len(docs), args.limit, 0)]
    report = {"items": len(items), "params": model.num_params(),
              "params_non_embedding": model.num_params(non_embedding=True), "vocab_size": tok.vocab_size,
              "device": args.device, "threads": torch.get_num_threads(), "runs": []}
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        started = time.perf_counter()
        out = score_items(model, tok, items, batch_size=bs, device=args.device)
        wall = time.perf_counter() - started
        run = {"batch_size": bs, "wall_s": round(wall, 2), "items_per_s": round(len(items) / wall, 1),
               "acc": sum(out["acc"]) / len(items), "acc_norm": sum(out["acc_norm"]) / len(items)}
        report["runs"].append(run)
        print(f"batch {bs}: {len(items)} items in {wall:.1f} s = {run['items_per_s']} items/s "
              f"(acc {run['acc']:.4f}, acc_norm {run['acc_norm']:.4f})")
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}))
    if args.out:
        atomic_write_json(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
