"""Agreement of the harness's HellaSwag and BLiMP evals with lm-evaluation-harness, item by item.

    python -m benchmarks.lm_eval_agreement results/<grid>/<cell> --hellaswag hellaswag.jsonl.gz \\
        --blimp ../shared/data/blimp --paradigms passive_1,anaphor_number_agreement --hf

For the same items it counts the items decided differently and the largest log-likelihood gap
(nats, over every scored continuation) between:

- `adapter`: the harness's evals and lm-eval's own `hellaswag` / `blimp_<paradigm>` tasks run on
  the cell through evals.lm_eval (lm-eval builds the requests, splits the tokens and computes
  acc/acc_norm; the cell computes log-likelihoods);
- `hf` (with --hf, gpt/llama cells): the same, with lm-eval's own Hugging Face model (`HFLM`) on
  the cell exported by research.export: lm-eval's and transformers' code end to end;
- `blimp_doc_start`: lm-eval against the harness's version-1 BLiMP scoring (no leading space,
  ties half), i.e. the pairs whose decision the leading space and tie rule change.

Data are local files (HellaSwag in the release's format; BLiMP as the authors' folder); the
result is printed and written as JSON (--out).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

import numpy as np

from evals import blimp, hellaswag
from evals.lm_eval import LmEvalOptions, cell_lm_class
from evals.scoring import read_jsonl, score_continuations
from research.checkpoint import load_cell
from research.errors import run_main
from research.io import atomic_write_json

log = logging.getLogger(__name__)


def lm_eval_samples(lm, tasks: list[str], data: dict[str, str]) -> dict[str, dict[int, dict]]:
    """task -> doc id -> lm-eval's per-item record, with `lm` an lm-eval LM instance."""
    import lm_eval

    from evals.lm_eval import task_manager, task_specs

    opts = LmEvalOptions(tasks=tasks, data=data)
    manager = task_manager(opts)
    raw = lm_eval.simple_evaluate(model=lm, tasks=task_specs(opts, manager), task_manager=manager,
                                  log_samples=True, bootstrap_iters=0)
    return {t: {s["doc_id"]: s for s in rows} for t, rows in raw["samples"].items()}


def compare(ours_ll: list[list[float]], ours_dec: dict[str, list[float]], theirs: dict[int, dict]) -> dict:
    gaps = [abs(a - r[0]) for i, lls in enumerate(ours_ll) for a, r in zip(lls, theirs[i]["filtered_resps"])]
    out = {"items": len(ours_ll), "max_loglik_gap_nats": float(max(gaps))}
    for metric, decisions in ours_dec.items():
        if metric not in theirs[0]:
            continue  # ours only (acc_norm_tokens)
        out[f"{metric}_differs"] = int(sum(decisions[i] != theirs[i][metric] for i in range(len(ours_ll))))
    return out


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.lm_eval_agreement", description=__doc__.splitlines()[0])
    p.add_argument("cell_dir", type=Path)
    p.add_argument("--hellaswag", required=True, help="HellaSwag JSONL in the release's format (ctx_a, ctx_b, ...)")
    p.add_argument("--blimp", required=True, help="folder of <paradigm>.jsonl[.gz]")
    p.add_argument("--paradigms", required=True, help="comma-separated BLiMP paradigms")
    p.add_argument("--hf", action="store_true", help="also compare lm-eval's HF model on the exported cell")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    cell = load_cell(args.cell_dir)
    model, tok = cell.model, cell.tokenizer
    docs = read_jsonl(args.hellaswag)
    items = [hellaswag.to_item(d) for d in docs]
    ends = [(it.query, " " + e) for it in items for e in it.endings]
    flat = score_continuations(model, tok, ends, args.batch_size)
    hs_ll, k = [], 0
    for it in items:
        hs_ll.append([s.logprob for s in flat[k : k + len(it.endings)]])
        k += len(it.endings)
    hs_dec = hellaswag.score_items(model, tok, items, args.batch_size)
    paradigms = [p.strip() for p in args.paradigms.split(",") if p.strip()]
    pairs = blimp.load_pairs(blimp.BlimpOptions(path=args.blimp, paradigms=paradigms))
    files = {p: next(f for f in Path(args.blimp).glob(f"{p}.jsonl*")) for p in paradigms}
    ours_bl = {}
    for p in paradigms:
        good, bad = blimp.pair_logprobs(model, tok, pairs[p], True, args.batch_size)
        ours_bl[p] = ([[g, b] for g, b in zip(good, bad)], {"acc": list((good >= bad).astype(float))},
                      blimp.doc_start_scores(model, tok, pairs[p], args.batch_size))
    tasks = ["hellaswag"] + [f"blimp_{p}" for p in paradigms]
    data = {"hellaswag": args.hellaswag} | {f"blimp_{p}": str(files[p]) for p in paradigms}
    lms = {"adapter": cell_lm_class()(model, tok, batch_size=args.batch_size)}
    tmp = None
    if args.hf:
        from lm_eval.models.huggingface import HFLM

        from research.export import export_hf

        tmp = tempfile.TemporaryDirectory()
        export_hf(model, tok, Path(tmp.name) / "hf")
        lms["hf"] = HFLM(pretrained=str(Path(tmp.name) / "hf"), backend="causal", batch_size=args.batch_size,
                         device="cpu", dtype="float32")
    report = {"cell": str(args.cell_dir), "arch": cell.config.model.arch, "tokenizer": tok.kind}
    for name, lm in lms.items():
        keep = list(range(len(items)))
        if name == "hf":  # lm-eval's HF model refuses a continuation longer than the context window
            keep = [i for i, it in enumerate(items)
                    if all(len(tok.encode(" " + e)) <= model.block_size for e in it.endings)]
            short = Path(tmp.name) / "hellaswag_fitting.jsonl"
            short.write_text("".join(json.dumps(docs[i]) + "\n" for i in keep))
            data = data | {"hellaswag": str(short)}
        theirs = lm_eval_samples(lm, tasks, data)
        rows = {"hellaswag": compare([hs_ll[i] for i in keep], {m: [d[i] for i in keep] for m, d in hs_dec.items()},
                                     theirs["hellaswag"])}
        for p in paradigms:
            rows[f"blimp_{p}"] = compare(ours_bl[p][0], ours_bl[p][1], theirs[f"blimp_{p}"])
        report[name] = rows
        if name == "adapter":
            report["blimp_doc_start"] = {p: {"pairs": len(pairs[p]), "decided_differently": int(sum(
                (ours_bl[p][2][i] != theirs[f"blimp_{p}"][i]["acc"]) for i in range(len(pairs[p])))),
                "ties_in_doc_start": int(np.sum(ours_bl[p][2] == 0.5))} for p in paradigms}
        if args.out:
            atomic_write_json(args.out, report)
    if tmp is not None:
        tmp.cleanup()
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
