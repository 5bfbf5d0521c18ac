"""Loss at each context position: how the loss falls as the model sees more context.

`loss_by_position` is the mean cross-entropy (nats/token) of predicting token t+1 from tokens
0..t, for t = 0..T-1, over a fixed set of validation windows of T+1 tokens. Windows start at
random offsets of the flat validation stream (documents joined by end-of-text), as in the
per-token loss curves of Kaplan et al. 2020 (fig. 20) and Olsson et al. 2022 ("In-context learning
and induction heads"); the set is drawn once from `seed`, so every record scores the same tokens.

Recurrent models (no `block_size`) are scored with plain `forward(idx)` on each window from a
zero initial state, so position t means "t tokens since the state was reset".

`research.callbacks.PerPositionLoss` records the curve during training.
"""

from __future__ import annotations

import numpy as np
import torch

from research.errors import DataError
from research.loss import token_nats


def sample_windows(tokens: np.ndarray, window: int, n_windows: int, seed: int) -> np.ndarray:
    """`n_windows` slices of `window + 1` consecutive tokens at seeded random offsets, shape (N, window+1)."""
    tokens = np.asarray(tokens)
    span = len(tokens) - (window + 1)
    if span < 0:
        raise DataError(f"per-position loss: the validation split has {len(tokens)} tokens, fewer than one "
                        f"window of {window + 1}; use a shorter window or more validation data")
    starts = np.random.default_rng(seed).integers(0, span + 1, size=n_windows)
    return tokens[starts[:, None] + np.arange(window + 1)[None, :]].astype(np.int64)


@torch.no_grad()
def loss_by_position(model, windows: np.ndarray, batch_size: int = 32, device="cpu") -> list[float]:
    """Mean loss (nats) at each position 0..T-1 over `windows` (N, T+1): input = [:, :-1], target = [:, 1:]."""
    was_training = model.training
    model.eval()
    total = torch.zeros(windows.shape[1] - 1, dtype=torch.float64)
    try:
        for i in range(0, len(windows), batch_size):
            chunk = torch.from_numpy(windows[i : i + batch_size]).to(device)
            nll = token_nats(model(chunk[:, :-1]), chunk[:, 1:])  # (B, T)
            total += nll.sum(0).double().cpu()
    finally:
        model.train(was_training)
    return (total / len(windows)).tolist()

