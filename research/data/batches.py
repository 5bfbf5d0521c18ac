"""Batches sampled straight from the cached token arrays, with no per-sample Python work.

`RandomWindows`: batch `s` is a pure function of (seed, s): B random offsets, one fancy index.
So a resumed run sees exactly the batches an uninterrupted one would. `ContiguousStreams`:
Zaremba-style batchify for truncated back-propagation through time: B parallel streams, step s
reads the s-th consecutive T-token chunk of each (wrapping at the end of an epoch).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import IterableDataset


def window_batch(tokens: np.ndarray, offsets: np.ndarray, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    idx = offsets[:, None] + np.arange(seq_len + 1)[None, :]  # (B, T+1)
    chunk = torch.from_numpy(np.asarray(tokens[idx], dtype=np.int64))
    return chunk[:, :-1], chunk[:, 1:]


def window_mask(scored: np.ndarray, offsets: np.ndarray, seq_len: int) -> torch.Tensor:
    """Which targets of each window may be scored (the mask of `window_batch`'s `y`)."""
    idx = offsets[:, None] + np.arange(1, seq_len + 1)[None, :]  # (B, T): the targets' positions
    return torch.from_numpy(np.asarray(scored[idx], dtype=bool))


class RandomWindows(IterableDataset):
    """With `scored` (a mask parallel to `tokens`), batches are (x, y, mask): only targets where the
    mask is set count in the loss (train.loss_on: continuation)."""

    def __init__(self, tokens: np.ndarray, batch_size: int, seq_len: int, seed: int, start_step: int = 0,
                 scored: np.ndarray | None = None):
        if len(tokens) <= seq_len + 1:
            raise ValueError(f"the training split has {len(tokens)} tokens, fewer than one window of {seq_len + 1}")
        self.tokens, self.batch_size, self.seq_len = tokens, batch_size, seq_len
        self.seed, self.start_step, self.scored = seed, start_step, scored

    def batch(self, step: int, rank: int = 0) -> tuple[torch.Tensor, ...]:
        rng = np.random.default_rng([self.seed, step] if rank == 0 else [self.seed, step, rank])
        offsets = rng.integers(0, len(self.tokens) - self.seq_len - 1, size=self.batch_size)
        if self.scored is None:
            return window_batch(self.tokens, offsets, self.seq_len)
        return (*window_batch(self.tokens, offsets, self.seq_len), window_mask(self.scored, offsets, self.seq_len))

    def __iter__(self):
        rank = _rank()  # each data-parallel rank draws its own batches
        step = self.start_step
        while True:
            yield self.batch(step, rank)
            step += 1


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class ContiguousStreams(IterableDataset):
    def __init__(self, tokens: np.ndarray, batch_size: int, seq_len: int, start_step: int = 0):
        n = (len(tokens) - 1) // batch_size
        if n <= seq_len:
            raise ValueError(f"the training split is too short for {batch_size} streams of {seq_len + 1} tokens")
        self.streams = np.asarray(tokens[: n * batch_size + 1])
        self.n, self.batch_size, self.seq_len, self.start_step = n, batch_size, seq_len, start_step
        self.steps_per_epoch = (n - 1) // seq_len

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
        k = step % self.steps_per_epoch
        starts = np.arange(self.batch_size) * self.n + k * self.seq_len
        x, y = window_batch(self.streams, starts, self.seq_len)
        return x, y, k == 0  # the last flag: a new epoch starts, so carried state is reset

    def __iter__(self):
        step = self.start_step
        while True:
            yield self.batch(step)
            step += 1


def fixed_windows(tokens: np.ndarray, n_batches: int, batch_size: int, seq_len: int, seed: int = 1234):
    """The same validation batches at every estimate, so curves compare like with like."""
    if len(tokens) <= seq_len + 1:
        seq_len = len(tokens) - 2
    ds = RandomWindows(tokens, batch_size, seq_len, seed)
    return [ds.batch(i) for i in range(n_batches)]
