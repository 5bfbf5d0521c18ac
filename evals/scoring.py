"""Log-likelihood primitives shared by every scored eval (HellaSwag, BLiMP, CoLA, perplexity).

`score_continuations` is the one primitive for multiple-choice and minimal-pair tasks: for each
(context, continuation) pair it returns the summed natural-log probability of the continuation's
tokens and their count. It follows lm-evaluation-harness's `loglikelihood` request:

- the pair is tokenized as lm-eval's `_encode_pair` does (trailing spaces of the context move to
  the continuation; the continuation's tokens are those of `encode(context + continuation)` after
  the first `len(encode(context))` tokens), so BPE merges across the boundary are scored as the
  model would see them in running text;
- an empty context starts from the end-of-text token, the document boundary the model was trained
  on (lm-eval uses the EOT token the same way);
- the context is truncated from the LEFT to the model's `block_size`; a continuation longer than the
  window is scored in successive windows, each with as much left context as fits (lm-eval's
  rolling log-likelihood), so every continuation token is scored exactly once;
- windows are sorted by length, batched with right padding (causal models never see the padding)
  and scattered back, so results do not depend on `batch_size` beyond float rounding;
- windows sharing their unscored prefix (a multiple-choice item's context) read it once when the
  model keeps a prefix cache (`read_prefix`), and only the scored positions are projected to
  logits (`score_shared_prefixes`, `scored_logits`).

The strided loss over a flat token stream (the perplexity eval) is `research.evaluation.split_loss`,
the trainer's own; `features` and `pooled_features` read the input of `model.lm_head` (the final
hidden state) for linear probes.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from research.errors import DataError
from research.loss import token_nats


@dataclass
class Score:
    logprob: float  # summed log-probability of the continuation, nats
    tokens: int  # continuation tokens scored
    greedy: bool = True  # every continuation token is the model's most likely next token (lm-eval's is_greedy)


def encode_pair(tokenizer, context: str, continuation: str,
                encoded: dict[str, list[int]] | None = None) -> tuple[list[int], list[int]]:
    """Token ids of (context, continuation) as lm-evaluation-harness splits them; `encoded` keeps
    the contexts' ids across calls (a multiple-choice item's endings share one context)."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    if not context:
        return [tokenizer.eot_id], list(tokenizer.encode(continuation))
    encoded = {} if encoded is None else encoded
    if context not in encoded:
        encoded[context] = list(tokenizer.encode(context))
    ctx = encoded[context]
    whole = list(tokenizer.encode(context + continuation))
    return (ctx or [tokenizer.eot_id]), whole[len(ctx):]


def windows_for(ctx: list[int], cont: list[int], block_size: int | None) -> list[tuple[list[int], list[int]]]:
    """Split one scored sequence into model inputs: (input ids, the targets of its last positions).

    Targets are the continuation tokens; each window's input ends right before its last target
    and reaches back at most `block_size` tokens. Windows are built from the end, so the last
    continuation tokens get the full window of context, and no token is scored twice.
    """
    seq = ctx + cont
    first = len(ctx)  # index in seq of the first scored target
    if not cont:
        return []
    if block_size is None:
        return [(seq[:-1], cont)]
    out = []
    end = len(seq)  # this window scores targets seq[a:end]
    while end > first:
        a = max(first, end - block_size)
        start = max(0, end - 1 - block_size)
        out.append((seq[start : end - 1], seq[a:end]))
        end = a
    return out[::-1]


@torch.no_grad()
def score_token_pairs(model, pairs: Sequence[tuple[list[int], list[int]]], batch_size: int = 32,
                      device: str = "cpu") -> list[Score]:
    """`score_continuations` on already tokenized pairs (the context must hold at least one token)."""
    block_size = model.block_size
    # Identical windows are computed once and shared, so identical inputs (BLiMP's 7 pairs with the
    # same good and bad sentence, HellaSwag's shared prefixes) always get bit-identical scores.
    unique: dict[tuple, int] = {}
    jobs = []  # (input ids, target ids of its last positions)
    uses = []  # (pair index, job index)
    for i, (ctx, cont) in enumerate(pairs):
        if cont and not ctx:
            raise ValueError("an empty context must start from the EOT token (see encode_pair)")
        for inp, targets in windows_for(list(ctx), list(cont), block_size):
            key = (tuple(inp), tuple(targets))
            if key not in unique:
                unique[key] = len(jobs)
                jobs.append((inp, targets))
            uses.append((i, unique[key]))
    job_logp = np.zeros(len(jobs), dtype=np.float64)
    job_greedy = np.ones(len(jobs), dtype=bool)

    def score(rows: list[int], logits: torch.Tensor, targets: torch.Tensor, row: torch.Tensor) -> None:
        """Sum the scored positions' log-probabilities (and greedy misses) into their jobs."""
        logp = torch.zeros(len(rows), dtype=torch.float64, device=logits.device)
        logp.index_add_(0, row, -token_nats(logits, targets).double())
        miss = torch.zeros(len(rows), dtype=torch.long, device=logits.device)
        miss.index_add_(0, row, (logits.argmax(-1) != targets).long())
        job_logp[rows] = logp.cpu().numpy()
        job_greedy[rows] = (miss == 0).cpu().numpy()

    was_training = model.training
    model.eval()
    try:
        done = score_shared_prefixes(model, jobs, batch_size, device, score)
        # Longest first: similar lengths share a batch; ties keep input order, so the grouping is a
        # pure function of the data and batch_size.
        order = sorted((j for j in range(len(jobs)) if j not in done), key=lambda j: -len(jobs[j][0]))
        for b in range(0, len(order), batch_size):
            rows = order[b : b + batch_size]
            batch = [jobs[j] for j in rows]
            width = max(len(inp) for inp, _ in batch)
            x = torch.zeros(len(batch), width, dtype=torch.long)
            y = torch.zeros(len(batch), width, dtype=torch.long)
            mask = torch.zeros(len(batch), width, dtype=torch.bool)
            for r, (inp, targets) in enumerate(batch):
                L, n = len(inp), len(targets)
                x[r, :L] = torch.as_tensor(inp)
                y[r, L - n : L] = torch.as_tensor(targets)
                mask[r, L - n : L] = True
            x, y, mask = x.to(device), y.to(device), mask.to(device)
            where = mask.flatten().nonzero().squeeze(1)  # scored positions, row-major
            logits = scored_logits(model, x, where)
            if logits is None:  # a model without a final lm_head: every position, then the scored ones
                full = model(x)
                logits = full.reshape(-1, full.shape[-1]).index_select(0, where)
            score(rows, logits, y.flatten().index_select(0, where), torch.div(where, width, rounding_mode="floor"))
    finally:
        model.train(was_training)
    totals = np.zeros(len(pairs), dtype=np.float64)
    counts = np.zeros(len(pairs), dtype=np.int64)
    greedy = np.ones(len(pairs), dtype=bool)
    for i, j in uses:
        totals[i] += job_logp[j]
        counts[i] += len(jobs[j][1])
        greedy[i] &= job_greedy[j]
    return [Score(float(t), int(c), bool(g)) for t, c, g in zip(totals, counts, greedy)]


def score_shared_prefixes(model, jobs: list[tuple[list[int], list[int]]], batch_size: int, device: str,
                          score) -> set[int]:
    """Score the jobs whose unscored prefix (the input before the first scored position) is shared
    with another job, reading each prefix once through the model's cache; returns their indices.

    A HellaSwag item's four endings share the context: the context runs once (`read_prefix`), and
    the endings, batched, run against its keys and values (`read_after`), so the context's cost
    is paid once instead of four times. A prefix's continuations are packed back to back in one
    row (no padding between them), and a batch holds as many prefixes as keep its continuations
    within `batch_size` (measured faster on a CPU than `batch_size` prefixes, whose masked
    attention grows with the packed rows). A model without a cache (`read_prefix` returns None)
    has every job scored by the caller's uncached path instead.
    """
    groups: dict[tuple, list[int]] = {}
    for j, (inp, targets) in enumerate(jobs):
        p = len(inp) - len(targets)
        if p > 0:
            groups.setdefault(tuple(inp[:p]), []).append(j)
    shared = sorted((g for g in groups.items() if len(g[1]) > 1), key=lambda g: -len(g[0]))
    done: set[int] = set()
    b = 0
    while b < len(shared):
        chunk, n_rows = [], 0
        while b < len(shared) and (not chunk or n_rows + len(shared[b][1]) <= batch_size):
            chunk.append(shared[b])
            n_rows += len(shared[b][1])
            b += 1
        lengths = torch.tensor([len(prefix) for prefix, _ in chunk])
        prefixes = torch.zeros(len(chunk), int(lengths.max()), dtype=torch.long)
        for g, (prefix, _) in enumerate(chunk):
            prefixes[g, : len(prefix)] = torch.as_tensor(prefix)
        cache = model.read_prefix(prefixes.to(device), lengths)
        if cache is None:
            return done
        # each prefix's continuations packed back to back in one row (see read_after's offsets)
        rows = [j for _, members in chunk for j in members]
        width = max(sum(len(jobs[j][1]) for j in members) for _, members in chunk)
        x = torch.zeros(len(chunk), width, dtype=torch.long)
        y = torch.zeros(len(chunk), width, dtype=torch.long)
        offsets = torch.full((len(chunk), width), -1, dtype=torch.long)  # -1: padding
        owner = torch.full((len(chunk), width), -1, dtype=torch.long)  # index in `rows` of each scored token
        r = 0
        for g, (_, members) in enumerate(chunk):
            at = 0
            for j in members:
                inp, targets = jobs[j]
                n = len(targets)
                x[g, at : at + n] = torch.as_tensor(inp[len(inp) - n :])
                y[g, at : at + n] = torch.as_tensor(targets)
                offsets[g, at : at + n] = torch.arange(n)
                owner[g, at : at + n] = r
                at, r = at + n, r + 1
        x, y, offsets, owner = x.to(device), y.to(device), offsets.to(device), owner.to(device)
        h = model.read_after(cache, torch.arange(len(chunk), device=device), x, offsets)
        where = (owner >= 0).flatten().nonzero().squeeze(1)
        logits = model.lm_head(h.reshape(-1, h.shape[-1]).index_select(0, where))
        score(rows, logits, y.flatten().index_select(0, where), owner.flatten().index_select(0, where))
        done.update(rows)
    return done


def scored_logits(model, x: torch.Tensor, where: torch.Tensor) -> torch.Tensor | None:
    """Logits at the flat positions `where` of `x` only, (len(where), V), or None for a model
    whose forward does not end in `lm_head`.

    The final hidden states are gathered before the output projection (a pre-hook on `lm_head`),
    so the projection and the softmax run only where a continuation token is scored: in a
    multiple-choice item most positions are the shared context, and for a small model the
    vocabulary projection is most of the compute.
    """
    head = getattr(model, "lm_head", None)
    if not isinstance(head, torch.nn.Module):
        return None

    def gather(module, args):
        h = args[0]
        return (h.reshape(-1, h.shape[-1]).index_select(0, where),)

    handle = head.register_forward_pre_hook(gather)
    try:
        out = model(x)
    finally:
        handle.remove()
    out = out[0] if isinstance(out, tuple) else out
    return out if out.dim() == 2 and out.shape[0] == len(where) else None


def score_continuations(model, tokenizer, pairs: Sequence[tuple[str, str]], batch_size: int = 32,
                        device: str = "cpu") -> list[Score]:
    """Summed log-probability (nats) and token count of each continuation given its context."""
    encoded: dict[str, list[int]] = {}
    return score_token_pairs(model, [encode_pair(tokenizer, c, x, encoded) for c, x in pairs], batch_size, device)


def sentence_logprobs(model, tokenizer, sentences: Sequence[str], batch_size: int = 32,
                      device: str = "cpu") -> list[Score]:
    """Log-probability of each whole sentence, read from a document boundary (EOT) onwards."""
    return score_continuations(model, tokenizer, [("", s) for s in sentences], batch_size, device)


def features(model, idx: torch.Tensor) -> torch.Tensor:
    """The input of `model.lm_head` (the final hidden state), (B, T, C), captured with a forward hook."""
    captured = []
    handle = model.lm_head.register_forward_hook(lambda module, args, output: captured.append(args[0]))
    try:
        with torch.no_grad():
            model(idx)
    finally:
        handle.remove()
    return captured[0]


@torch.no_grad()
def pooled_features(model, tokenizer, texts: Sequence[str], batch_size: int = 32, device: str = "cpu") -> torch.Tensor:
    """Mean of the final hidden states over each text's tokens, (N, C) float32 on the CPU.

    The input is EOT followed by the text (its last `block_size - 1` tokens when longer); the EOT
    position is left out of the mean, since its state is the same for every text.
    """
    block_size = model.block_size
    seqs = []
    for t in texts:
        ids = list(tokenizer.encode(t)) or [tokenizer.eot_id]
        if block_size is not None:
            ids = ids[-(block_size - 1):] if block_size > 1 else ids[-1:]
        seqs.append(([tokenizer.eot_id] if block_size is None or block_size > 1 else []) + ids)
    out = [None] * len(seqs)
    was_training = model.training
    model.eval()
    try:
        order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
        for b in range(0, len(order), batch_size):
            rows = order[b : b + batch_size]
            width = max(len(seqs[i]) for i in rows)
            x = torch.zeros(len(rows), width, dtype=torch.long)
            mask = torch.zeros(len(rows), width, dtype=torch.bool)
            for r, i in enumerate(rows):
                x[r, : len(seqs[i])] = torch.as_tensor(seqs[i])
                skip = 1 if len(seqs[i]) > 1 else 0
                mask[r, skip : len(seqs[i])] = True
            h = features(model, x.to(device)).float().cpu()
            pooled = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
            for r, i in enumerate(rows):
                out[i] = pooled[r]
    finally:
        model.train(was_training)
    return torch.stack(out) if out else torch.zeros(0, 0)


# ---------------------------------------------------------------------------------------------
# Data and statistics helpers the scored evals share


def seeded_subset(n: int, limit: int | None, seed: int) -> list[int]:
    """Indices of a seeded random sample of `limit` of `n` items, in their original order.

    A random sample, not the first N: dataset files are often sorted (by source, by domain), so a
    prefix is a biased subset. The same (n, limit, seed) always gives the same items.
    """
    if limit is None or limit >= n:
        return list(range(n))
    return sorted(np.random.default_rng(seed).choice(n, size=limit, replace=False).tolist())


def binomial_stderr(p: float, n: int) -> float:
    """Standard error of a proportion p over n independent items: sqrt(p (1 - p) / n)."""
    return float(np.sqrt(p * (1.0 - p) / n)) if n > 0 else float("nan")


def read_jsonl(path) -> list[dict]:
    """JSON Lines, plain or gzip-compressed (by the `.gz` suffix)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_hf(eval_name: str, dataset: str, *args, **kwargs):
    """`datasets.load_dataset`, turning any failure (offline, no such split) into a one-line DataError."""
    try:
        import datasets

        return datasets.load_dataset(dataset, *args, **kwargs)
    except Exception as e:  # offline, hub errors, missing scripts: all fixed the same way
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise DataError(
            f"{eval_name}: could not load '{dataset}' from the Hugging Face hub ({reason}); "
            f"set eval.options.{eval_name}.path to a local copy"
        ) from None


def local_path(eval_name: str, path) -> Path:
    """The user's `eval.options.<eval>.path`, checked to exist."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"eval.options.{eval_name}.path: {p} does not exist; point it at the downloaded files")
    return p
