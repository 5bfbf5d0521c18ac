"""Exact loss over a whole split: every token predicted once, in order.

Non-overlapping windows of `seq_len + 1` tokens (each window's first token is context only);
recurrent models read the split as parallel streams and carry their state across windows, as
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
               max_tokens: int | None = None, eot_id: int | None = None) -> SplitLoss:
    was_training = model.training
    model.eval()
    # a slice of the memory-mapped split: windows are read (and widened to int64) one batch at a time
    tokens = tokens if isinstance(tokens, np.ndarray) else np.asarray(tokens)
    tokens = tokens if max_tokens is None else tokens[: max_tokens + 1]
    try:
        if model.recurrent:
            return _stream_loss(model, tokens, seq_len, batch_size, device, eot_id)
        return _window_loss(model, tokens, seq_len, batch_size, device)
    finally:
        model.train(was_training)


def _long(ids: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(ids, dtype=np.int64))


def _window_loss(model, tokens, seq_len, batch_size, device) -> SplitLoss:
    n_windows = (len(tokens) - 1) // seq_len
    nats, count = 0.0, 0
    starts = np.arange(n_windows) * seq_len
    rest = (len(tokens) - 1) - n_windows * seq_len
    for i in range(0, n_windows, batch_size):
        idx = starts[i : i + batch_size, None] + np.arange(seq_len + 1)[None, :]
        chunk = _long(tokens[idx]).to(device)
        nats += token_nats(model(chunk[:, :-1]), chunk[:, 1:]).sum().item()
        count += chunk[:, 1:].numel()
    if rest > 0:  # the tail shorter than one window
        chunk = _long(tokens[n_windows * seq_len :][None, :]).to(device)
        nats += token_nats(model(chunk[:, :-1]), chunk[:, 1:]).sum().item()
        count += chunk.shape[1] - 1
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
