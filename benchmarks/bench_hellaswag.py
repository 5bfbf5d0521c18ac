"""HellaSwag scoring throughput: items per second on the full validation set (10,042 items).

    python -m benchmarks.bench_hellaswag --path hellaswag_val.jsonl
    python -m benchmarks.bench_hellaswag --path hellaswag_val.jsonl --limit 2000 --batch-sizes 16,64
    python -m benchmarks.bench_hellaswag --path hellaswag_val.jsonl --limit 1000 --cell CELL_DIR \
        --before 096f801 --repeats 3 --threads 1 --csv benchmarks/results/cpu_hellaswag_before_after.csv

The model is an untrained GPT of the default config (4 layers, 4 heads, 128 wide, block 128: about
0.8M non-embedding parameters) over a byte-level BPE vocabulary trained on the built-in corpus;
scoring cost does not depend on the weights, so an untrained model times the same as a trained one
(its accuracy is chance, about 0.25); `--cell` times a trained cell instead. Each item is 4
(context, ending) requests through evals.scoring; the time covers tokenization, batching and the
forward passes, not data loading.

`--before REV` also times `evals/scoring.py` as it was at git revision REV on the same model and
items, alternating before/after runs `--repeats` times (so a change in the machine's load hits
both), and checks that both give the same per-item decisions; `--csv` writes one row per run.
In that alternation:

- `--lstm` adds an untrained LSTM of the default config (2 layers, 200 wide) over the same
  tokenizer, timed before/after the same way (a scoring at REV that predates the prefix cache
  runs it the uncached way);
- `--peer-hf` (a gpt/llama `--cell`, HellaSwag in the release's format, e.g.
  `../shared/data/hellaswag/hellaswag.jsonl.gz`) adds lm-eval's own Hugging Face model (`HFLM`)
  on the cell exported by research.export, run through lm-eval's `hellaswag` task on the same
  items offline. Its rows time lm-eval's `loglikelihood` call (`peer_hf`, the scoring alone) and
  the whole `simple_evaluate` (`peer_hf_end_to_end`: task building, data loading, metrics too);
  items whose ending is longer than the window are left out, as lm-eval's HF model refuses them,
  and the row's `items` says how many were scored.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch

from evals.hellaswag import HellaSwagOptions, load_items, score_items, to_item
from evals.scoring import seeded_subset
from research.checkpoint import load_cell
from research.config import RunConfig
from research.data import load_corpus
from research.errors import ConfigError, run_main
from research.io import atomic_write_csv, atomic_write_json
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
    p.add_argument("--cell", default=None, help="a trained cell's folder: time its model and tokenizer")
    p.add_argument("--before", default=None, help="git revision whose evals/scoring.py to time against")
    p.add_argument("--repeats", type=int, default=1, help="alternating before/after runs (with --before)")
    p.add_argument("--csv", default=None, help="with --before: one row per run to this CSV file")
    p.add_argument("--lstm", action="store_true", help="with --before: also time an untrained default LSTM")
    p.add_argument("--peer-hf", action="store_true",
                   help="with --before and a gpt/llama --cell: also time lm-eval's HF model on the exported cell")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if (args.lstm or args.peer_hf) and not args.before:
        raise ConfigError("--lstm and --peer-hf time against --before REV; add --before")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cell:
        cell = load_cell(args.cell, args.device)
        model, tok = cell.model.to(args.device).eval(), cell.tokenizer
    else:
        cfg = RunConfig.from_dict({"data": {"source": "builtin", "n_docs": 2000},
                                   "tokenizer": {"kind": "bpe", "vocab_size": args.vocab_size},
                                   "model": {"arch": "gpt"}})
        tok = train_tokenizer(cfg.tokenizer, load_corpus(cfg.data).train)
        torch.manual_seed(0)
        model = build_model(cfg.model, tok.vocab_size).to(args.device).eval()
    docs = load_items(HellaSwagOptions(path=args.path))
    docs = [docs[i] for i in seeded_subset(len(docs), args.limit, 0)]
    items = [to_item(d) for d in docs]
    report = {"items": len(items), "params": model.num_params(),
              "params_non_embedding": model.num_params(non_embedding=True), "vocab_size": tok.vocab_size,
              "device": args.device, "threads": torch.get_num_threads(), "runs": []}
    if args.before:
        return before_after(args, model, tok, items, report, docs)
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


def scoring_at(rev: str) -> types.ModuleType:
    """evals/scoring.py as it was at git revision `rev`, loaded as its own module."""
    src = subprocess.run(["git", "show", f"{rev}:evals/scoring.py"], capture_output=True, text=True, check=True).stdout
    module = types.ModuleType(f"scoring_at_{rev}")
    sys.modules[module.__name__] = module  # dataclasses look their module up there
    exec(compile(src, f"{rev}:evals/scoring.py", "exec"), module.__dict__)
    return module


def decisions(items, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per item: the acc and acc_norm choices (as evals.hellaswag.score_items decides) and the log-likelihoods."""
    ll = np.array([s.logprob for s in scores]).reshape(len(items), -1)
    chars = np.array([[float(len(e)) for e in it.endings] for it in items])
    return ll.argmax(1), (ll / chars).argmax(1), ll


def before_after(args, model, tok, items, report, docs) -> int:
    import evals.scoring as after

    before = scoring_at(args.before)
    pairs = [(it.query, " " + e) for it in items for e in it.endings]
    bs = int(args.batch_sizes.split(",")[0])
    subjects = {args.cell or f"untrained default {model.cfg.arch}": model}
    if args.lstm:
        cfg = RunConfig.from_dict({"model": {"arch": "lstm"}}).model
        torch.manual_seed(0)
        subjects["untrained default lstm"] = build_model(cfg, tok.vocab_size).to(args.device).eval()
    peer = PeerHF(args, model, tok, docs, bs) if args.peer_hf else None
    rows, results = [], {}
    try:
        for repeat in range(args.repeats):
            for label, subject in subjects.items():
                for name, module in (("before", before), ("after", after)):
                    started = time.perf_counter()
                    scores = module.score_continuations(subject, tok, pairs, bs, args.device)
                    wall = time.perf_counter() - started
                    results[label, name] = decisions(items, scores)
                    rows.append(row(repeat, name, args.before if name == "before" else "working tree", label,
                                    subject, tok, len(items), bs, wall))
            if peer is not None:
                scoring_s, total_s = peer.run()
                for name, wall in (("peer_hf", scoring_s), ("peer_hf_end_to_end", total_s)):
                    rows.append(row(repeat, name, f"lm-eval {peer.version} HFLM", args.cell, model, tok,
                                    len(peer.keep), bs, wall))
    finally:
        if peer is not None:
            peer.close()
    summary = {}
    for label, subject in subjects.items():
        (acc_b, norm_b, ll_b), (acc_a, norm_a, ll_a) = results[label, "before"], results[label, "after"]
        means = {name: round(float(np.mean([r["items_per_s"] for r in rows
                                            if r["cell"] == label and r["scoring"] == name])), 1)
                 for name in ("before", "after")}
        summary[label] = {"params": subject.num_params(), "before_items_per_s_mean": means["before"],
                          "after_items_per_s_mean": means["after"],
                          "speedup": round(means["after"] / means["before"], 2),
                          "acc_differing": int((acc_b != acc_a).sum()),
                          "acc_norm_differing": int((norm_b != norm_a).sum()),
                          "max_loglik_gap_nats": float(np.abs(ll_b - ll_a).max())}
        for r in rows:
            if r["cell"] == label and r["scoring"] in ("before", "after"):
                r.update({k: summary[label][k] for k in ("acc_differing", "acc_norm_differing", "max_loglik_gap_nats")})
    if peer is not None:
        summary["peer_hf"] = {"items": len(peer.keep), **{
            f"{name}_items_per_s_mean": round(float(np.mean([r["items_per_s"] for r in rows if r["scoring"] == name])), 1)
            for name in ("peer_hf", "peer_hf_end_to_end")}}
    report.update(summary=summary, runs=rows)
    print(json.dumps(summary, indent=1))
    if args.csv:
        atomic_write_csv(args.csv, rows, list(rows[0]))
    if args.out:
        atomic_write_json(args.out, report)
    return 0


def row(repeat, scoring, revision, label, model, tok, items, batch_size, wall) -> dict:
    return {"repeat": repeat, "scoring": scoring, "revision": revision, "cell": label, "arch": model.cfg.arch,
            "params": model.num_params(), "vocab_size": tok.vocab_size, "items": items, "batch_size": batch_size,
            "threads": torch.get_num_threads(), "wall_s": round(wall, 2), "items_per_s": round(items / wall, 1),
            "acc_differing": "", "acc_norm_differing": "", "max_loglik_gap_nats": ""}


class PeerHF:
    """lm-eval's HF model on the exported cell, through lm-eval's own `hellaswag` task, offline."""

    def __init__(self, args, model, tok, docs: list[dict], batch_size: int):
        from lm_eval.models.huggingface import HFLM

        from research.export import export_hf

        if not args.cell or not docs or "ctx_a" not in docs[0]:
            raise ConfigError("--peer-hf needs --cell and --path to HellaSwag in the release's format "
                              "(ctx_a, ctx_b, activity_label), e.g. ../shared/data/hellaswag/hellaswag.jsonl.gz")
        import lm_eval

        self.version = lm_eval.__version__
        self.tmp = tempfile.TemporaryDirectory()
        root = Path(self.tmp.name)
        export_hf(model, tok, root / "hf")
        # lm-eval's HF model refuses a continuation longer than the context window
        self.keep = [d for d in docs if all(len(tok.encode(" " + e)) <= model.block_size for e in d["endings"])]
        (root / "items.jsonl").write_text("".join(json.dumps(d) + "\n" for d in self.keep))
        self.data = {"hellaswag": str(root / "items.jsonl")}
        self.lm = HFLM(pretrained=str(root / "hf"), backend="causal", batch_size=batch_size,
                       device=args.device, dtype="float32")

    def run(self) -> tuple[float, float]:
        """(seconds in lm-eval's loglikelihood call, seconds of the whole simple_evaluate)."""
        from benchmarks.lm_eval_agreement import lm_eval_samples

        timed = []
        scorer = type(self.lm).loglikelihood.__get__(self.lm)

        def loglikelihood(requests, *a, **kw):
            started = time.perf_counter()
            out = scorer(requests, *a, **kw)
            timed.append(time.perf_counter() - started)
            return out

        self.lm.loglikelihood = loglikelihood
        started = time.perf_counter()
        try:
            lm_eval_samples(self.lm, ["hellaswag"], self.data)
        finally:
            del self.lm.loglikelihood
        return sum(timed), time.perf_counter() - started

    def close(self) -> None:
        self.tmp.cleanup()


if __name__ == "__main__":
    raise SystemExit(run_main(main))
