"""The Lightning callbacks a cell trains with, together: throughput, the progress record,
resumable checkpoints, a checkpoint-and-stop on a signal, and the per-position loss curve.

`PerPositionLoss` records the curve during training: at the start of training, every
`every_n_steps` optimizer steps and at the end, it appends {"step", "loss_by_position"} to the
cell's per-position record (`research.cell.write_per_position`, atomically).
Every rank computes (a sharded model needs all ranks in its forward); only global rank 0 writes.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import lightning as L
import numpy as np

from research import cell
from research.per_position import loss_by_position, sample_windows


class Throughput(L.Callback):
    """Training time (validation excluded) and tokens per second, logged every `log_every` steps
    into LMModule's row of the step (`log_step`).

    Timing with `perf_counter` between logging steps costs no device synchronisation beyond the
    one the loss logging already does. The counts travel in the checkpoint (`state_dict`), so a
    resumed run reports the steps, training time and wall time of all its sessions, each up to
    the checkpoint the next one resumed from (steps after it were trained again, and count once).
    """

    def __init__(self, tokens_per_step: int, log_every: int, started: float | None = None):
        self.tokens_per_step, self.log_every = tokens_per_step, log_every
        self.started = time.time() if started is None else started  # this session's start (wall clock)
        self._t0: float | None = None
        self.steps = 0
        self.train_s = 0.0
        self.earlier_wall_s = 0.0  # wall time of the sessions before this one
        self.sessions = 1
        self._last = (0, 0.0)  # (steps, train_s) at the previous log

    def state_dict(self) -> dict:
        running = time.perf_counter() - self._t0 if self._t0 is not None else 0.0
        return {"steps": self.steps, "train_s": self.train_s + running, "sessions": self.sessions,
                "wall_s": self.earlier_wall_s + time.time() - self.started}

    def load_state_dict(self, state: dict) -> None:
        self.steps, self.train_s = int(state["steps"]), float(state["train_s"])
        self.earlier_wall_s, self.sessions = float(state["wall_s"]), int(state["sessions"]) + 1
        self._last = (self.steps, self.train_s)

    def _pause(self) -> None:
        if self._t0 is not None:
            self.train_s += time.perf_counter() - self._t0
            self._t0 = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._t0 is None:
            self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps += 1
        if self.steps % self.log_every == 0:
            self._pause()
            self._t0 = time.perf_counter()
            steps, secs = self.steps - self._last[0], self.train_s - self._last[1]
            pl_module.log_step("perf/tokens_per_s", steps * self.tokens_per_step / max(secs, 1e-9))
            self._last = (self.steps, self.train_s)

    def on_validation_start(self, trainer, pl_module):
        self._pause()

    def on_train_end(self, trainer, pl_module):
        self._pause()


class Progress(L.Callback):
    """The cell's progress record while it trains (`research.cell.write_progress`): phase
    "training" and the optimizer step, so a status reader knows the step without parsing the
    per-step log. Written at the start, then at most every `min_interval_s` seconds (looked at
    every `every` steps), so it costs the step loop nothing measurable; global rank 0 writes."""

    def __init__(self, cell_dir: Path, every: int, min_interval_s: float = 5.0):
        self.cell_dir, self.every, self.min_interval_s = Path(cell_dir), max(1, every), min_interval_s
        self._last = float("-inf")

    def _write(self, trainer) -> None:
        self._last = time.monotonic()
        if trainer.is_global_zero:
            cell.write_progress(self.cell_dir, "training", int(trainer.global_step), trainer.max_steps)

    def on_train_start(self, trainer, pl_module):
        self._write(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step % self.every == 0 and time.monotonic() - self._last >= self.min_interval_s:
            self._write(trainer)


class ResumableCheckpoint(L.Callback):
    """Every `every` steps, the full training state to the cell's last checkpoint, atomically.

    `trainer.save_checkpoint` is collective (every rank calls it; rank 0 writes), then rank 0
    renames the finished file into place, so a kill mid-write leaves the previous checkpoint.
    """

    def __init__(self, cell_dir: Path, every: int):
        self.path, self.every = cell.last_checkpoint(cell_dir), every

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step % self.every or step == 0 or step >= trainer.max_steps:
            return
        self.save(trainer)

    def save(self, trainer) -> None:
        """Write `last.ckpt` now; call it between steps (from a batch-end hook), where the loops'
        counters and the logged rows agree with the weights."""
        for logger in trainer.loggers:  # rows before the checkpoint reach the disk with it
            logger.save()
        tmp = self.path.with_name(f".{self.path.stem}.{os.getpid()}{self.path.suffix}")
        trainer.save_checkpoint(tmp)
        if trainer.is_global_zero:
            os.replace(tmp, self.path)


class StoppedBySignal(BaseException):
    """Raised by `StopOnSignal` to end the fit (a BaseException: no `except Exception` swallows it)."""


class StopOnSignal(L.Callback):
    """On `signum`, save `last.ckpt` at the next step boundary, call `then()` (on rank 0), and end
    the fit with `StoppedBySignal` before the following step.

    The signal handler only sets a flag: it may run in the middle of a step, where a checkpoint
    would pair the weights with loop counters a step off. Every rank must reach the collective
    save at the same step, so any rank's signal counts for all (one small all-reduce per step
    when there are several ranks). The fit ends at the next batch's start, after the saved step
    has logged its row and run its validation as an uninterrupted run does: `trainer.should_stop`
    would instead run an extra validation and log the last train row again under the next step.
    """

    def __init__(self, checkpoint: ResumableCheckpoint, then, signum: int = signal.SIGUSR1):
        self.checkpoint, self.then, self.signum = checkpoint, then, signum
        self.received = self.saved = False
        self._previous = None

    def _handle(self, signum, frame) -> None:
        self.received = True

    def on_train_start(self, trainer, pl_module):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(self.signum, self._handle)

    def teardown(self, trainer, pl_module, stage):
        if self._previous is not None:
            signal.signal(self.signum, self._previous)
            self._previous = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.saved or trainer.global_step >= trainer.max_steps:  # the last step: let the cell finish
            return
        if not trainer.strategy.reduce_boolean_decision(self.received, all=False):
            return
        self.checkpoint.save(trainer)
        self.saved = True
        if trainer.is_global_zero:
            self.then()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.saved:
            raise StoppedBySignal(f"signal {self.signum} at step {trainer.global_step}")


class PerPositionLoss(L.Callback):
    """Record the per-position loss curve during training (see the module docstring).

    On a resumed run the records already in the cell up to the resume step are kept and the
    rest are computed again at the steps an uninterrupted run records, so the file never holds
    two records for one step nor one at a step where the run happened to resume.
    """

    def __init__(self, val_tokens: np.ndarray, block_size: int, n_windows: int, every_n_steps: int,
                 cell_dir: Path, seed: int = 0, batch_size: int = 32):
        if every_n_steps <= 0:
            raise ValueError("every_n_steps must be positive")
        self.windows = sample_windows(val_tokens, block_size, n_windows, seed)
        self.every_n_steps = every_n_steps
        self.cell_dir = Path(cell_dir)
        self.batch_size = batch_size
        self.records: dict[int, list[float]] = {}

    def _record(self, trainer, pl_module) -> None:
        step = int(trainer.global_step)
        model = getattr(pl_module, "model", pl_module)
        self.records[step] = loss_by_position(model, self.windows, self.batch_size, pl_module.device)
        if trainer.is_global_zero:
            cell.write_per_position(self.cell_dir, [{"step": s, "loss_by_position": self.records[s]}
                                                    for s in sorted(self.records)])

    def on_train_start(self, trainer, pl_module):
        step = int(trainer.global_step)
        self.records = {r["step"]: r["loss_by_position"] for r in cell.read_per_position(self.cell_dir)
                        if r["step"] < step}
        if step % self.every_n_steps == 0:  # a resume between recording steps adds no record of its own
            self._record(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = int(trainer.global_step)
        if step % self.every_n_steps == 0 and step not in self.records:
            self._record(trainer, pl_module)

    def on_train_end(self, trainer, pl_module):
        if int(trainer.global_step) not in self.records:
            self._record(trainer, pl_module)
