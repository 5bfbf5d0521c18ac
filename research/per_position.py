"""Loss at each context position: how the loss falls as the model sees more context.

`loss_by_position` is the mean cross-entropy (nats/token) of predicting token t+1 from tokens
0..t, for t = 0..T-1, over a fixed set of validation windows of T+1 tokens. Windows start at
random offsets of the flat validation stream (documents joined by end-of-text), as in the
per-token loss curves of Kaplan et al. 2020 (fig. 20) and Olsson et al. 2022 ("In-context learning
and induction heads"); the set is drawn once from `seed`, so every record scores the same tokens.

Recurrent models (no `block_size`) are scored with plain `forward(idx)` on each window from a
zero initial state, so position t means "t tokens since the state was reset".

`PerPositionLoss` is a Lightning callback recording the curve during training: at the start of
training, every `every_n_steps` optimizer steps and at the end, it appends {"step", "loss_by_position"}
to a JSON list at `out_path` (written atomically; the format paper.collect.read_per_position reads).
Every rank computes (a sharded model needs all ranks in its forward); only global rank 0 writes.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import torch

from research.errors import DataError
from research.io import atomic_write_json
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


def read_records(path: Path) -> list[dict]:
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else []


class PerPositionLoss(L.Callback):
    """Record the per-position loss curve during training (see the module docstring).

    On a resumed run the records already in `out_path` up to the resume step are kept and the
    rest are computed again at the steps an uninterrupted run records, so the file never holds
    two records for one step nor one at a step where the run happened to resume.
    """

    def __init__(self, val_tokens: np.ndarray, block_size: int, n_windows: int, every_n_steps: int,
                 out_path: Path, seed: int = 0, batch_size: int = 32):
        if every_n_steps <= 0:
            raise ValueError("every_n_steps must be positive")
        self.windows = sample_windows(val_tokens, block_size, n_windows, seed)
        self.every_n_steps = every_n_steps
        self.out_path = Path(out_path)
        self.batch_size = batch_size
        self.records: dict[int, list[float]] = {}

    def _record(self, trainer, pl_module) -> None:
        step = int(trainer.global_step)
        model = getattr(pl_module, "model", pl_module)
        self.records[step] = loss_by_position(model, self.windows, self.batch_size, pl_module.device)
        if trainer.is_global_zero:
            atomic_write_json(self.out_path, [{"step": s, "loss_by_position": self.records[s]}
                                              for s in sorted(self.records)])

    def on_train_start(self, trainer, pl_module):
        step = int(trainer.global_step)
        self.records = {r["step"]: r["loss_by_position"] for r in read_records(self.out_path) if r["step"] < step}
        if step % self.every_n_steps == 0:  # a resume between recording steps adds no record of its own
            self._record(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = int(trainer.global_step)
        if step % self.every_n_steps == 0 and step not in self.records:
            self._record(trainer, pl_module)

    def on_train_end(self, trainer, pl_module):
        if int(trainer.global_step) not in self.records:
            self._record(trainer, pl_module)
