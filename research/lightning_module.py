"""The one LightningModule: next-token cross-entropy for any registered model.

The module builds its network from the run config (`model.arch` through the model registry), so
a checkpoint's hyperparameters are enough to rebuild it; besides, it holds the loss, the optimizer
and schedule, and the logging (`train/loss`, `val/loss`, `val/bpb`, `lr`). Losses are in nats per
token; bits per byte use the split's bytes-per-token ratio, so tokenizers compare fairly.

Recurrent models (`model.recurrent`) get contiguous streams and truncated back-propagation
through time: the hidden state is carried (detached) from one batch to the next and reset at
each epoch's start. A non-finite loss stops the run with `DivergedError` (checked on logging
steps only, so the hot loop has no per-step host synchronisation).

The per-step row (`train/loss`, `train/grad_norm`, `lr`, `train/forget`, `perf/tokens_per_s`)
bypasses Lightning's `self.log`: each of its calls costs about a millisecond of Python (a result
collection per key, moved between devices), as much as a whole step of a tiny model. The values
are queued with `log_step` on logging steps only and written as one row at the batch's end, to
the same loggers, at the step and with the float32 rounding and `epoch` column `self.log` gave.
"""

from __future__ import annotations

import math

import lightning as L
import torch
import torch.nn.functional as F

from research.errors import DivergedError
from research.loss import token_nats
from research.models import build_model
from research.optim import build_optimizer, build_scheduler


class LMModule(L.LightningModule):
    def __init__(self, config: dict, vocab_size: int, eot_id: int, bytes_per_token: float = 1.0):
        super().__init__()
        from research.config import RunConfig

        # Not logged: the cell's config.yaml is its one configuration, written once resolved
        # (Lightning's hparams.yaml would hold `config` before match_params picked the width).
        self.save_hyperparameters(logger=False)
        self.cfg = RunConfig.from_dict(config)
        self.model = build_model(self.cfg.model, vocab_size)
        self.vocab_size = vocab_size
        self.eot_id = eot_id
        self.bytes_per_token = bytes_per_token
        self.recurrent = self.model.recurrent
        self._state = None
        compile_ = self.cfg.train.compile
        if compile_ is None:  # compile pays off on GPU; on CPU its start-up time dominates tiny runs
            compile_ = torch.cuda.is_available() and self.cfg.train.accelerator in ("auto", "gpu", "cuda")
        # The loss is compiled together with the model, so the full-precision upcast of the
        # (tokens x vocabulary) logits fuses into the cross-entropy kernel instead of being
        # materialised: with a 32k vocabulary that copy alone is gigabytes per step.
        # The compiled function closes over the network only, not this LightningModule: Lightning
        # sets attributes on the module at every hook, which would fail dynamo's guards on `self`
        # and recompile until it falls back to eager (measured: half the throughput at 42M).
        model, loss = self.model, self.loss

        def model_loss(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
            return loss(model(x), y, mask)

        self._train_loss = torch.compile(model_loss) if compile_ else model_loss
        #: train.forget's term (research.forget.ForgetTerm), set by the trainer, which has the tokenizer
        self.forget = None
        self._row: dict = {}  # this step's metrics, written by on_train_batch_end
        #: whether the batch being trained writes a row (set at its start)
        self.logging_step = False

    # Lightning sets `_current_fx_name` around every hook it calls (about 45 times a step);
    # nn.Module.__setattr__'s checks for parameters and submodules cost more than the hook itself
    # in a tiny model, and a string is neither (Lightning's own `_ResultMetric` skips them too).
    def __setattr__(self, name: str, value) -> None:
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    # -- the per-step row -------------------------------------------------------------------------
    def on_train_batch_start(self, batch, batch_idx):
        # the last batch of every `train.log_every` logs (Lightning's `log_every_n_steps` rule)
        self.logging_step = (self.global_step + 1) % self.cfg.train.log_every == 0

    def log_step(self, name: str, value) -> None:
        """Queue `value` (a number or a scalar tensor) for this logging step's row."""
        self._row[name] = value

    # -- loss -----------------------------------------------------------------------------------
    @staticmethod
    def loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mean cross-entropy (nats per token) over every target, or over the targets `mask` keeps
        (train.loss_on: continuation; a batch with none scored gives 0)."""
        if mask is None:
            return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1))
        nats = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="none")
        keep = mask.reshape(-1).to(nats.dtype)
        return (nats * keep).sum() / keep.sum().clamp(min=1)

    def training_step(self, batch, batch_idx):
        if self.recurrent:
            x, y, epoch_start = batch
            if epoch_start or self._state is None:
                self._state = None
            reset = (x == self.eot_id) if self.model.resets_at_eot else None
            logits, state = self.model.step(x, self._state, reset)
            self._state = _detach(state)
            loss = self.loss(logits, y)
        else:  # a third item is the scored mask (train.loss_on: continuation)
            loss = self._train_loss(*batch)
        if self.forget is not None:
            term = self.forget(self.model, self.global_step)
            if self.logging_step:
                self.log_step("train/forget", term)
            loss = loss + term
        if self.logging_step:
            self.log_step("train/loss", loss)
            # the progress bar reads its values back with .item() at every batch end, a host
            # sync per step: only feed it when one is shown
            if self.trainer.progress_bar_callback is not None:
                self.log("train/loss", loss, prog_bar=True, logger=False)
            if not torch.isfinite(loss):
                raise DivergedError(f"loss became {loss.item()} at step {self.global_step + 1}")
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch[0], batch[1]
        loss = token_nats(self.model(x), y).mean()  # sliced: validation never holds float32 logits
        n = x.shape[0]  # recurrent batches carry a third item, so Lightning cannot infer it
        self.log("val/loss", loss, on_epoch=True, prog_bar=self.trainer.progress_bar_callback is not None,
                 sync_dist=True, batch_size=n)
        self.log("val/bpb", loss / math.log(2) / self.bytes_per_token, on_epoch=True, sync_dist=True, batch_size=n)

    def on_before_optimizer_step(self, optimizer):
        """Clip the gradient norm here rather than through the Trainer: Lightning refuses to clip
        for optimizers that unscale internally (fused AdamW, used on CUDA and CPU) under mixed precision,
        and this way the norm before clipping is logged too."""
        clip = self.cfg.train.grad_clip
        if clip is None:
            return
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        if self.logging_step:
            self.log_step("train/grad_norm", norm)

    def on_train_batch_end(self, outputs, batch, batch_idx):
        """Write the step's row; the module's hook runs after the callbacks' (Throughput queues
        its rate there). `lr` is read after the scheduler stepped: the rate of the next step."""
        if not self.logging_step:
            self._row.clear()  # a callback's value queued off a logging step is not written
            return
        self.log_step("lr", self.optimizers().param_groups[0]["lr"])
        row = {name: _scalar(v) for name, v in self._row.items()}
        row["epoch"] = self.current_epoch
        self._row = {}
        for logger in self.trainer.loggers:
            # the batches stepped before this one, the step Lightning gives its own rows
            logger.log_metrics(row, step=self.trainer.fit_loop.epoch_loop._batches_that_stepped)
            logger.save()

    def configure_optimizers(self):
        optimizer = build_optimizer(self.model, self.cfg.train)
        scheduler = build_scheduler(optimizer, self.cfg.train)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _scalar(value) -> float:
    """A logged value as `self.log` would write it: numbers through a float32 tensor, tensors
    of other precisions in float32 (float64 kept)."""
    if not isinstance(value, torch.Tensor):
        value = torch.tensor(value, dtype=torch.float32)
    elif value.dtype not in (torch.float32, torch.float64):
        value = value.float()
    return value.item()


def _detach(state):
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.detach()
    return type(state)(_detach(s) for s in state)
