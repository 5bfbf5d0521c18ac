"""HellaSwag (Zellers et al. 2019): pick the right ending of a video caption or WikiHow step.

Scored exactly as lm-evaluation-harness 0.4.13's `hellaswag` task (task version 1.0;
`lm_eval/tasks/hellaswag/hellaswag.yaml` and `utils.py`), checked item for item against it
(tests/evals/test_lm_eval.py):

- query = preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize()), each ending
  preprocessed, continuation = " " + ending; `preprocess` strips, replaces " [title]" with ". ",
  removes `[...]` WikiHow markers and collapses double spaces;
- `acc`: the ending with the highest summed log-likelihood is right; `acc_norm`: the highest
  log-likelihood divided by the ending's length in characters. As in lm-eval's
  `process_results`, that length is `len(choice)` of the preprocessed ending, without the " "
  target delimiter it is scored with (`completion_len = [len(i) for i in doc_to_choice(doc)]`);
- `acc_norm_tokens` (ours, as llm.c scores it) divides by the ending's token count instead. It is
  reported under its own name because it depends on the tokenizer.

Ties go to the first ending (numpy argmax). Chance is 0.25. The standard error is the binomial
one, sqrt(p (1 - p) / n).

Data: the HF dataset `Rowan/hellaswag` (validation split, 10,042 items) by default, or a local
JSON Lines file (`path`, `.jsonl` or `.jsonl.gz`, or a folder holding one) either in the release's
own format (`activity_label`, `ctx_a`, `ctx_b`, `endings`, `label`) or the simplified
`ctx`/`endings`/`label` one, whose `ctx` already is `activity_label: ctx_a ctx_b`. The simplified
file cannot reproduce lm-eval's number: lm-eval capitalises `ctx_b`, and once the two halves are
joined that cannot be redone, so the query differs on most items. Such a result says so
(`details["format"] == "simplified"` and `details["warning"]`); the release's own file or the HF
dataset is the way to get lm-eval's number. `limit` scores a seeded random sample of N items,
never the first N.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import numpy as np

from evals.base import EvalContext, EvalResult
from evals.scoring import binomial_stderr, load_hf, local_path, read_jsonl, score_continuations, seeded_subset
from research.checks import ranged
from research.config import build
from research.errors import DataError

log = logging.getLogger(__name__)

NAME = "hellaswag"
VERSION = 2
HF_DATASET = "Rowan/hellaswag"
SIMPLIFIED_WARNING = (
    "simplified ctx/endings/label file: ctx_b is not capitalised as lm-eval does, so acc/acc_norm are not "
    "lm-eval's hellaswag numbers; use the release's file (ctx_a, ctx_b, activity_label) or the HF dataset"
)


@dataclass
class HellaSwagOptions:
    path: str | None = None  # local JSONL file or folder; None = HF `Rowan/hellaswag`
    split: str = "validation"  # HF split
    limit: int | None = ranged(None, ge=1)  # seeded random subset of N items
    seed: int = 0
    batch_size: int = ranged(32, ge=1)


OPTIONS = HellaSwagOptions  # the eval's `eval.options.hellaswag` keys, checked when the grid loads


@dataclass
class Item:
    query: str
    endings: list[str]  # preprocessed, without the leading space
    label: int


def preprocess(text: str) -> str:
    """lm-evaluation-harness's HellaSwag `preprocess`, verbatim in effect."""
    text = text.strip()
    text = text.replace(" [title]", ". ")  # brackets are artifacts of the WikiHow part
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def to_item(doc: dict) -> Item:
    if "ctx_a" in doc:
        ctx = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
        query = preprocess(doc["activity_label"] + ": " + ctx)
    else:
        query = preprocess(doc["ctx"])
    return Item(query, [preprocess(e) for e in doc["endings"]], int(doc["label"]))


def load_items(opts: HellaSwagOptions) -> list[dict]:
    if opts.path is None:
        return list(load_hf(NAME, HF_DATASET, split=opts.split))
    p = local_path(NAME, opts.path)
    if p.is_dir():
        files = sorted(p.glob("*.jsonl")) + sorted(p.glob("*.jsonl.gz"))
        if not files:
            raise DataError(f"eval.options.{NAME}.path: no .jsonl or .jsonl.gz file in {p}")
        p = next((f for f in files if "val" in f.name), files[0])
    docs = read_jsonl(p)
    for i, d in enumerate(docs):
        if "endings" not in d or "label" not in d or not ("ctx" in d or "ctx_a" in d):
            raise DataError(f"{p}: line {i + 1} is not a HellaSwag item (needs ctx or ctx_a/ctx_b, endings, label)")
    return docs


def score_items(model, tokenizer, items: list[Item], batch_size: int = 32, device: str = "cpu") -> dict:
    """Per-item predictions; pure function of the items (batching only groups the work)."""
    pairs = [(it.query, " " + e) for it in items for e in it.endings]
    scores = score_continuations(model, tokenizer, pairs, batch_size, device)
    out = {"acc": [], "acc_norm": [], "acc_norm_tokens": []}
    k = 0
    for it in items:
        ss = scores[k : k + len(it.endings)]
        k += len(it.endings)
        ll = np.array([s.logprob for s in ss])
        chars = np.array([float(len(e)) for e in it.endings])
        toks = np.array([float(max(1, s.tokens)) for s in ss])
        out["acc"].append(float(np.argmax(ll) == it.label))
        out["acc_norm"].append(float(np.argmax(ll / chars) == it.label))
        out["acc_norm_tokens"].append(float(np.argmax(ll / toks) == it.label))
    return out


def evaluate(ctx: EvalContext, options: dict) -> EvalResult:
    opts = build(HellaSwagOptions, options or {}, f"eval.options.{NAME}")
    docs = load_items(opts)
    keep = seeded_subset(len(docs), opts.limit, opts.seed)
    items = [to_item(docs[i]) for i in keep]
    per_item = score_items(ctx.model, ctx.tokenizer, items, opts.batch_size, ctx.device)
    n = len(items)
    metrics = {k: float(np.mean(v)) if n else float("nan") for k, v in per_item.items()}
    stderr = {k: binomial_stderr(v, n) for k, v in metrics.items()}
    subset = opts.limit is not None and opts.limit < len(docs)
    details = {"items_total": len(docs), "subset_seed": opts.seed if subset else None,
               "source": opts.path or f"hf:{HF_DATASET}/{opts.split}", "chance": 0.25,
               "matches": "lm-evaluation-harness 0.4.13 hellaswag (task v1.0)",
               "format": "original" if all("ctx_a" in d for d in docs) else "simplified"}
    if details["format"] == "simplified":
        details["matches"] = None
        details["warning"] = SIMPLIFIED_WARNING
        log.warning("hellaswag: %s", SIMPLIFIED_WARNING)
    return EvalResult(NAME, VERSION, metrics=metrics, stderr=stderr, n=n, details=details)
