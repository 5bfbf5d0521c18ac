"""Exact loss over a whole split: every token but the first predicted once, in order.

This is the one rolling loss of the harness: the trainer's final `val_loss`/`test_loss`, the
perplexity eval and the cross-corpus eval all call `split_loss`. Window models read the split in
windows of `seq_len` inputs whose starts advance by `stride` (default `seq_len`: non-overlapping);
each window scores only the targets no earlier window scored, so with a smaller stride every
target after the first window has at least `seq_len - stride` tokens of context, at
`seq_len / stride` times the compute (the Hugging Face perplexity guide's strided method,
https://huggingface.co/docs/transformers/perplexity, without its one unscored token per window).

The ragged tail: window starts are multiples of the stride, so the last window may be short
and its targets keep the context the stride gives every other window, no more (the guide's
choice). lm-evaluation-harness's `loglikelihood_rolling` slides its last window back to full
length instead; we do not, so that the default reading is exactly the non-overlapping windows
a recurrent or window model was validated on during training, and the perplexity eval's
default equals the trainer's `val_loss`. The two differ only in the context of the last
`(len - 1) mod stride` targets.

Recurrent models read the split as parallel streams and carry their state across windows, as
in training. The result is the sum of nats and the number of predicted tokens, so callers can
turn it into nats per token, perplexity, or bits per byte with the split's byte count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from research.loss import token_nats


@dataclass
class SplitLoss:
    nats: float
    tokens: int

    @property
    def loss(self) -> float:
        return self.nats / max(1, self.tokens)

    def metrics(self, prefix: str, bytes_per_token: float, words_per_token: float | None = None) -> dict:
        out = {
            f"{prefix}_loss": self.loss,  # nats per token
            f"{prefix}_ppl": math.exp(min(self.loss, 700.0)),
            f"{prefix}_bpb": self.loss / math.log(2) / bytes_per_token,  # bits per UTF-8 byte
            f"{prefix}_tokens": self.tokens,
        }
        if words_per_token is not None:  # per-word perplexity: total nats over whitespace words
            out[f"{prefix}_word_ppl"] = math.exp(min(self.loss / words_per_token, 700.0))
        return out


@torch.no_grad()
def split_loss(model, tokens: np.ndarray, seq_len: int, batch_size: int = 32, device="cpu",
               max_tokens: int | None = None, eot_id: int | None = None, stride: int | None = None) -> SplitLoss:
    """With `max_tokens`, only the first `max_tokens` predictions are scored. `stride` is for
    window models only: a recurrent model's state already carries the whole past."""
    if stride is not None and model.recurrent:
        raise ValueError("stride: a recurrent model carries its state across the split; it has no windows")
    stride = seq_len if stride is None else stride
    if not 1 <= stride <= seq_len:
        raise ValueError(f"stride must be in [1, seq_len={seq_len}], got {stride}")
    was_training = model.training
    model.eval()
    # a slice of the memory-mapped split: windows are read (and widened to int64) one batch at a time
    tokens = tokens if isinstance(tokens, np.ndarray) else np.asarray(tokens)
    tokens = tokens if max_tokens is None else tokens[: max_tokens + 1]
    try:
        if model.recurrent:
            return _stream_loss(model, tokens, seq_len, batch_size, device, eot_id)
        return _window_loss(model, tokens, seq_len, stride, batch_size, device)
    finally:
        model.train(was_training)


def _long(ids: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(ids, dtype=np.int64))


def _window_loss(model, tokens, seq_len, stride, batch_size, device) -> SplitLoss:
    """Windows start at 0, stride, 2 stride, ... until one reaches the last target; window k's
    inputs are tokens[start : end] (end = min(start + seq_len, last)) and it scores the targets
    after the previous window's end. Only the last window can be short; the full ones are read
    in batches (one fancy index each), the short one alone."""
    last = len(tokens) - 1  # index of the last target
    if last < 1:
        return SplitLoss(0.0, 0)
    n = 1 + max(0, -(-(last - seq_len) // stride))  # the fewest windows whose last one reaches `last`
    starts = np.arange(n) * stride
    ends = np.minimum(starts + seq_len, last)
    scored = ends - np.concatenate([[0], ends[:-1]])  # targets each window adds
    full = n if ends[-1] - starts[-1] == seq_len else n - 1
    nats, count = 0.0, 0
    for i in range(0, full, batch_size):
        rows = slice(i, min(i + batch_size, full))
        idx = starts[rows, None] + np.arange(seq_len + 1)[None, :]
        chunk = _long(tokens[idx]).to(device)
        nll = token_nats(model(chunk[:, :-1]), chunk[:, 1:])
        if stride < seq_len:  # a window scores only its last `scored` targets
            keep = torch.arange(seq_len)[None, :] >= torch.from_numpy(seq_len - scored[rows])[:, None]
            nll = nll.masked_fill(~keep.to(device), 0.0)
        nats += nll.sum().item()
        count += int(scored[rows].sum())
    if full < n:  # the short last window
        chunk = _long(tokens[starts[-1] :][None, :]).to(device)
        nats += token_nats(model(chunk[:, :-1]), chunk[:, 1:])[:, -scored[-1] :].sum().item()
        count += int(scored[-1])
    return SplitLoss(nats, count)


def _stream_loss(model, tokens, seq_len, batch_size, device, eot_id) -> SplitLoss:
    """Parallel streams as in training; the last (len - 1) mod batch_size tokens are not scored."""
    batch_size = max(1, min(batch_size, (len(tokens) - 1) // max(seq_len, 1)))
    n = (len(tokens) - 1) // batch_size
    streams = tokens[: n * batch_size + 1]
    state, nats, count = None, 0.0, 0
    reset_at_eot = model.resets_at_eot and eot_id is not None
    for k in range(0, n, seq_len):
        T = min(seq_len, n - k)
        starts = np.arange(batch_size) * n + k
        idx = starts[:, None] + np.arange(T + 1)[None, :]
        chunk = _long(streams[idx]).to(device)
        x, y = chunk[:, :-1], chunk[:, 1:]
        logits, state = model.step(x, state, (x == eot_id) if reset_at_eot else None)
        nats += token_nats(logits, y).sum().item()
        count += y.numel()
    return SplitLoss(nats, count)
