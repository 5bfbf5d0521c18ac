"""Perplexity on the cell's own held-out splits, in units that compare across tokenizers.

For the validation split (and the test split, where the corpus has one) it reports:

- `<split>_loss`: mean negative log-likelihood in nats per token;
- `<split>_ppl`: exp of that, per token (only comparable between cells with the same tokenizer);
- `<split>_bpb`: bits per UTF-8 byte, loss / ln 2 / (bytes per token). Bytes are the UTF-8 bytes of
  the split's cleaned documents plus 1 per document for the separator, as counted in the token
  cache's meta.json when the context has it (`split_sizes`), else counted from the corpus (the EOT token that closes
  every document is predicted too, so it is charged one byte). This is the tokenizer-independent
  number: char, word and BPE models compare on it;
- `<split>_word_ppl` (word tokenizers only): exp(total nats / words), words being whitespace-split
  words plus 1 per document for the EOT, so a word model's figure reads like the per-word
  perplexities published for PTB and WikiText;
- `<split>_tokens`: tokens scored.

The stream is the cell's tokenized split (document, EOT, document, EOT, ...), scored with
`research.evaluation.split_loss`, the trainer's own: windows of the model's block_size advancing by
`stride` (default: the window, i.e. non-overlapping, the same number as the trainer's final
`val_loss`); a smaller stride gives every token more context. The last window starts at a multiple
of the stride and may be short (the Hugging Face perplexity guide's rule; see that module for why
not lm-eval's slid-back last window). Recurrent models carry their state across the split instead,
where a stride has no meaning. With `max_tokens`, only the first `max_tokens` predictions are
scored and bytes per token is the whole split's average.

Version 2: the ragged tail is scored with the short last window; version 1 slid that window back
to full length, so its figures differ in the last (tokens - 1) mod stride predictions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from evals.base import EvalContext, EvalResult
from research.checks import ranged
from research.config import build
from research.errors import ConfigError
from research.evaluation import split_loss

NAME = "perplexity"
VERSION = 2


@dataclass
class PerplexityOptions:
    max_tokens: int | None = ranged(None, ge=1)  # score only the first N predictions of each split
    stride: int | None = ranged(None, ge=1)  # window advance; None = the window (non-overlapping)
    window: int | None = ranged(None, ge=1)  # tokens per window; None = the model's block_size (or train.seq_len)
    batch_size: int = ranged(16, ge=1)


OPTIONS = PerplexityOptions  # the eval's `eval.options.perplexity` keys, checked when the grid loads


def evaluate(ctx: EvalContext, options: dict) -> EvalResult:
    opts = build(PerplexityOptions, options or {}, f"eval.options.{NAME}")
    if ctx.load_tokens is None:
        raise ConfigError(f"{NAME}: the eval context has no token streams (load_tokens); run it through evals.run")
    model = ctx.model
    recurrent = model.recurrent
    window = opts.window or model.block_size or ctx.config.train.seq_len or 256
    if opts.stride is not None and not 1 <= opts.stride <= window:
        raise ConfigError(f"eval.options.{NAME}.stride: must be between 1 and the window ({window})")
    # byte and word counts: the token cache's meta.json, else counted from the corpus
    sizes = ctx.split_sizes
    corpus = ctx.load_corpus() if sizes is None and ctx.load_corpus is not None else None
    word_level = ctx.tokenizer.word_level
    metrics: dict[str, float] = {}
    details: dict = {"window": window, "stride": None if recurrent else (opts.stride or window),
                     "units": "loss: nats/token; bpb: bits per UTF-8 byte (+1 byte per document)"}
    n_total = 0
    for split in ("val", "test"):
        counts = sizes.get(split) if sizes is not None else _counts(corpus, split)
        if (sizes is not None or corpus is not None) and counts is None:
            continue
        try:
            tokens = ctx.load_tokens(split)
        except (KeyError, FileNotFoundError):
            continue
        if len(tokens) < 2:
            continue
        res = split_loss(model, tokens, window, opts.batch_size, ctx.device, opts.max_tokens,
                         eot_id=ctx.tokenizer.eot_id, stride=None if recurrent else opts.stride)
        loss = res.nats / max(1, res.tokens)
        metrics[f"{split}_loss"] = loss
        metrics[f"{split}_ppl"] = math.exp(min(loss, 700.0))
        metrics[f"{split}_tokens"] = res.tokens
        if counts is not None:
            metrics[f"{split}_bpb"] = loss / math.log(2) / (counts["bytes"] / len(tokens))
            details[f"{split}_bytes"] = counts["bytes"]
            if word_level:
                metrics[f"{split}_word_ppl"] = math.exp(min(loss * len(tokens) / counts["words"], 700.0))
                details[f"{split}_words"] = counts["words"]
        n_total += res.tokens
    if not metrics:
        raise ConfigError(f"{NAME}: the cell has no validation tokens to score")
    if sizes is None and corpus is None:
        details["note"] = "no corpus available: bits per byte not computed"
    return EvalResult(NAME, VERSION, metrics=metrics, n=n_total, details=details)


def _counts(corpus, split: str) -> dict | None:
    """UTF-8 bytes and whitespace words of a split, plus one of each per document (its EOT)."""
    docs = getattr(corpus, split, None) if corpus is not None else None
    if docs is None:
        return None
    return {"bytes": sum(len(d.encode("utf-8")) for d in docs) + len(docs),
            "words": sum(len(d.split()) for d in docs) + len(docs)}
