"""CoLA (Warstadt, Singh & Bowman 2019): is this sentence acceptable English?

Two protocols researchers use for small LMs (`protocol` option):

- `probe` (BabyLM-style, default): a logistic-regression head trained with torch on frozen
  features, the mean over each sentence's tokens of the final hidden state (the input of
  `lm_head`), standardised with the training set's mean and deviation. Full-batch L-BFGS on the
  L2-regularised cross-entropy, from zero weights, so the fit is deterministic for a given model;
- `zero_shot`: a sentence is acceptable when its log-probability per token (nats) is above a
  threshold; the threshold is the one that maximises MCC on the training set. The sentence is
  scored as lm-eval scores a BLiMP sentence, the continuation `" " + sentence` of an empty
  context (end-of-text, then a leading space; see evals.blimp), so the two grammar evals read
  sentences the same way.

Neither protocol is an lm-evaluation-harness task: lm-eval 0.4.13's `cola` (GLUE, task version
1.0) asks "<sentence>\nQuestion: Does this sentence make sense?\nAnswer:" and picks " no" or " yes"
by log-likelihood, scored by MCC. To get that number, run it through the lm-eval adapter:
`python -m evals.lm_eval CELL --tasks cola`.

Reported on the in-domain dev set (527 sentences), the out-of-domain dev set (516) and both
together (1,043, GLUE's CoLA `validation`): `mcc_*` (Matthews correlation, chance 0) and `acc_*`
(accuracy; always answering "acceptable" scores 719/1,043 = 0.689 here, 0.695 on BabyLM's split).
`stderr` holds the binomial standard error of each accuracy.

Data: HF `nyu-mll/glue`, config `cola` (train and validation) by default, or `path`: the public
release's folder (`raw/` or its parent) holding `in_domain_train.tsv`, `in_domain_dev.tsv` and
`out_of_domain_dev.tsv` (plain or `.gz`), tab-separated (source, label, original mark, sentence).
GLUE's validation split is the release's in-domain dev followed by its out-of-domain dev, and it
carries no domain column, so from HF the first 527 rows are taken as in-domain and the rest as
out-of-domain. `train_limit` fits on a seeded random sample of the 8,551 training sentences.
"""

from __future__ import annotations

import gzip
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from evals.base import EvalContext, EvalResult
from evals.scoring import binomial_stderr, load_hf, local_path, pooled_features, seeded_subset, sentence_logprobs
from research.checks import ranged
from research.config import build
from research.errors import DataError

NAME = "cola"
VERSION = 2
HF_DATASET = "nyu-mll/glue"
IN_DOMAIN_DEV = 527  # rows of in_domain_dev.tsv, the head of GLUE's validation split
FILES = {"train": "in_domain_train.tsv", "in_domain": "in_domain_dev.tsv", "out_of_domain": "out_of_domain_dev.tsv"}


@dataclass
class ColaOptions:
    protocol: Literal["probe", "zero_shot"] = "probe"
    path: str | None = None  # release folder with the TSV files; None = HF nyu-mll/glue cola
    train_limit: int | None = ranged(None, ge=1)  # fit on a seeded random sample of N training sentences
    seed: int = 0
    batch_size: int = ranged(64, ge=1)
    l2: float = ranged(1e-3, ge=0)  # probe: weight of the L2 penalty (on the weights, not the bias)
    max_iter: int = ranged(200, ge=1)  # probe: L-BFGS iterations


OPTIONS = ColaOptions  # the eval's `eval.options.cola` keys, checked when the grid loads


@dataclass
class Split:
    sentences: list[str]
    labels: np.ndarray  # 1 = acceptable


def matthews_corrcoef(labels, preds) -> float:
    """MCC of binary labels; 0 when a row or column of the confusion matrix is empty (as sklearn)."""
    y, p = np.asarray(labels, dtype=bool), np.asarray(preds, dtype=bool)
    tp, tn = float(np.sum(y & p)), float(np.sum(~y & ~p))
    fp, fn = float(np.sum(~y & p)), float(np.sum(y & ~p))
    denom = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return (tp * tn - fp * fn) / denom if denom > 0 else 0.0


def best_threshold(scores, labels) -> float:
    """The cut (predict 1 when score > cut) with the highest MCC; midpoints between sorted scores."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    uniq = np.unique(s)
    cuts = np.concatenate([[uniq[0] - 1.0], (uniq[:-1] + uniq[1:]) / 2])  # below all, then between neighbours
    order = np.argsort(s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    k = np.searchsorted(s_sorted, cuts, side="right")  # sentences predicted 0 at each cut
    fn = np.concatenate([[0], np.cumsum(y_sorted)])[k].astype(np.float64)
    tn = k - fn
    tp, fp = y.sum() - fn, (~y).sum() - tn
    denom = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    mcc = np.divide(tp * tn - fp * fn, denom, out=np.zeros_like(denom), where=denom > 0)
    return float(cuts[int(np.argmax(mcc))])  # the lowest cut among equals


def fit_probe(x: torch.Tensor, y: torch.Tensor, l2: float, max_iter: int):
    """Logistic regression by full-batch L-BFGS from zeros; returns a function features -> P(acceptable)."""
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mean) / std
    w = torch.zeros(z.shape[1], requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=max_iter, line_search_fn="strong_wolfe")
    target = y.float()

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, target) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    w, b = w.detach(), b.detach()
    return lambda feats: torch.sigmoid(((feats - mean) / std) @ w + b)


def read_tsv(path: Path) -> Split:
    opener = gzip.open if path.suffix == ".gz" else open
    sentences, labels = [], []
    with opener(path, "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            line = line.rstrip("\n")
            if not line:
                continue
            cols = line.split("\t", 3)
            if len(cols) != 4 or cols[1] not in ("0", "1"):
                raise DataError(f"{path}: line {i + 1} is not a CoLA row (source, label 0/1, mark, sentence)")
            labels.append(int(cols[1]))
            sentences.append(cols[3])
    return Split(sentences, np.array(labels, dtype=np.int64))


def load_splits(opts: ColaOptions) -> dict[str, Split]:
    if opts.path is None:
        ds = load_hf(NAME, HF_DATASET, "cola")
        dev = ds["validation"]
        val_s, val_y = list(dev["sentence"]), np.array(dev["label"], dtype=np.int64)
        return {
            "train": Split(list(ds["train"]["sentence"]), np.array(ds["train"]["label"], dtype=np.int64)),
            "in_domain": Split(val_s[:IN_DOMAIN_DEV], val_y[:IN_DOMAIN_DEV]),
            "out_of_domain": Split(val_s[IN_DOMAIN_DEV:], val_y[IN_DOMAIN_DEV:]),
        }
    root = local_path(NAME, opts.path)
    if (root / "raw").is_dir():
        root = root / "raw"
    out = {}
    for split, name in FILES.items():
        file = next((f for f in (root / name, root / f"{name}.gz") if f.exists()), None)
        if file is None:
            raise DataError(f"eval.options.{NAME}.path: {root} has no {name} (or {name}.gz); use cola_public/raw")
        out[split] = read_tsv(file)
    return out


def evaluate(ctx: EvalContext, options: dict) -> EvalResult:
    opts = build(ColaOptions, options or {}, f"eval.options.{NAME}")
    data = load_splits(opts)
    keep = seeded_subset(len(data["train"].sentences), opts.train_limit, opts.seed)
    train = Split([data["train"].sentences[i] for i in keep], data["train"].labels[keep])
    dev = {k: data[k] for k in ("in_domain", "out_of_domain")}
    model, tok = ctx.model, ctx.tokenizer
    details: dict = {"protocol": opts.protocol, "train_sentences": len(train.sentences),
                     "source": opts.path or f"hf:{HF_DATASET}/cola"}
    if opts.protocol == "zero_shot":
        def score(split: Split) -> np.ndarray:
            res = sentence_logprobs(model, tok, [" " + s for s in split.sentences], opts.batch_size, ctx.device)
            return np.array([s.logprob / max(1, s.tokens) for s in res])

        cut = best_threshold(score(train), train.labels)
        preds = {k: score(s) > cut for k, s in dev.items()}
        details["threshold_nats_per_token"] = cut
    else:
        predict = fit_probe(pooled_features(model, tok, train.sentences, opts.batch_size, ctx.device),
                            torch.as_tensor(train.labels), opts.l2, opts.max_iter)
        preds = {k: predict(pooled_features(model, tok, s.sentences, opts.batch_size, ctx.device)).numpy() > 0.5
                 for k, s in dev.items()}
    preds["dev"] = np.concatenate([preds["in_domain"], preds["out_of_domain"]])
    labels = {k: s.labels for k, s in dev.items()}
    labels["dev"] = np.concatenate([labels["in_domain"], labels["out_of_domain"]])
    metrics, stderr = {}, {}
    for k in ("dev", "in_domain", "out_of_domain"):
        suffix = "" if k == "dev" else f"_{k}"
        acc = float(np.mean(preds[k] == labels[k].astype(bool)))
        metrics[f"mcc{suffix}"] = matthews_corrcoef(labels[k], preds[k])
        metrics[f"acc{suffix}"] = acc
        stderr[f"acc{suffix}"] = binomial_stderr(acc, len(labels[k]))
        details[f"majority_acc{suffix}"] = float(np.mean(labels[k]))
    return EvalResult(NAME, VERSION, metrics=metrics, stderr=stderr, n=len(labels["dev"]), details=details)
