"""Train, score and store one cell: everything a results folder holds about a run.

The cell folder is filled in a fixed order through `research.cell` (which defines the layout;
see also results/README.md): the resolved config first, then Lightning's per-step log while it
trains, then weights, samples, evals, final metrics and manifest (with the code diff when the
working tree was dirty), and the completion marker last, so a folder without it is unfinished by
definition and the runner may resume or redo it. The cell's progress record says which of these
phases it is in, for `ablations.status`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from ablations import records
from ablations.code_state import git_state
from ablations.requeue import requeue_job, saved_step, slurm_plugins
from research.callbacks import Progress, ResumableCheckpoint, StopOnSignal, StoppedBySignal, Throughput
from research.checkpoint import save_weights
from research.config import RunConfig
from research.csv_log import ResumableCSVLogger
from research.data.batches import ContiguousStreams, RandomWindows, fixed_windows
from research.data.tokens import TokenData, prepare_tokens
from research.errors import ConfigError
from research.evaluation import split_loss
from research.lightning_module import LMModule

log = logging.getLogger(__name__)

#: training sequence length for models without a context limit (RNNs) when train.seq_len is unset
DEFAULT_UNROLL = 64


def seq_len_for(model, cfg) -> int:
    if cfg.train.seq_len is not None:
        return cfg.train.seq_len
    return model.block_size or DEFAULT_UNROLL


def precision_for(cfg) -> str:
    if cfg.train.precision != "auto":
        return cfg.train.precision
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def make_logger(cfg, cell_dir: Path, name: str, resume_step: int = 0):
    """`metrics.csv` always (keeping the rows before `resume_step` of a resumed run), plus the
    configured dashboard logger."""
    csv_logger = ResumableCSVLogger(cell_dir, keep_before_step=resume_step)
    if cfg.train.logger == "tensorboard":
        from lightning.pytorch.loggers import TensorBoardLogger

        return [csv_logger, TensorBoardLogger(cell_dir, name="tb", version="")]
    if cfg.train.logger == "wandb":
        from lightning.pytorch.loggers import WandbLogger

        return [csv_logger, WandbLogger(name=name, save_dir=str(cell_dir))]
    return csv_logger


def train_cell(cell, cell_dir: Path, cache_root: Path) -> dict:
    """Run one cell into `cell_dir`. Returns its metrics.

    The caller empties `cell_dir` for a fresh start; a folder that still holds a checkpoint
    from a killed or preempted run resumes from it.
    """
    cfg = cell.config
    started = time.time()
    cell_dir.mkdir(parents=True, exist_ok=True)
    records.write_progress(cell_dir, "preparing")
    tokens = prepare_tokens(cfg.data, cfg.tokenizer, cache_root, build=may_tokenize())
    shutil.copytree(tokens.path / "tokenizer", records.tokenizer_dir(cell_dir), dirs_exist_ok=True)

    module = make_module(cfg, tokens)
    model = module.model
    seq_len = seq_len_for(model, cfg)
    cfg = resolve_config(module, tokens, seq_len)
    records.write_config(cell_dir, cfg.to_dict())
    t_fit = time.perf_counter()
    earlier_wall_s, sessions = 0.0, 1
    if model.trainable:
        throughput = fit_module(module, tokens, cfg, seq_len, cell_dir, cell.id, started)
        train_s = throughput.train_s or float("nan")
        train_tokens = throughput.steps * throughput.tokens_per_step
        earlier_wall_s, sessions = throughput.earlier_wall_s, throughput.sessions
    else:  # count-based models (n-gram): one pass over the training tokens
        model.fit(tokens.splits["train"])
        train_tokens = int(tokens.splits["train"].size)
        train_s = time.perf_counter() - t_fit
    fit_s = time.perf_counter() - t_fit

    device = "cuda" if torch.cuda.is_available() and cfg.train.accelerator in ("auto", "gpu", "cuda") else "cpu"
    model.to(device).eval()
    metrics = {
        "params": model.num_params(),
        "params_non_embedding": model.num_params(non_embedding=True),
        "flops_per_token": model.flops_per_token(seq_len),
        "seq_len": seq_len,
        "train_tokens": train_tokens,
        "train_s": train_s,
        "tokens_per_s": train_tokens / train_s if train_s > 0 else float("nan"),
        "sessions": sessions,
    }
    metrics.update(model.architecture_metrics())  # variants: layers applied, unique blocks, receptive field
    records.write_progress(cell_dir, "scoring", cfg.train.max_steps, cfg.train.max_steps)
    metrics.update(score_splits(model, tokens, cfg, seq_len, device))
    floor = tokens.meta["corpus"].get("floor_bits_per_byte")
    if floor is not None:  # the built-in grammar's exact entropy: no model can go below it
        metrics["floor_bpb"] = floor

    metrics.update(records.best_logged_val(cell_dir))
    save_weights(model, cell_dir)
    records.write_progress(cell_dir, "sampling", cfg.train.max_steps, cfg.train.max_steps)
    sample_after_training(model, tokens.tokenizer, cfg, cell_dir)
    if cfg.eval.tasks:
        records.write_progress(cell_dir, "evaluating", cfg.train.max_steps, cfg.train.max_steps)
        run_cell_evals(model, tokens.tokenizer, cfg, cell_dir, cache_root, tokens, device)
    metrics["wall_s"] = earlier_wall_s + time.time() - started
    records.write_metrics(cell_dir, metrics)
    records.write_manifest(cell_dir, manifest(cell, started, fit_s, device, tokens, cell_dir))
    records.remove_checkpoints(cell_dir)  # the weights hold the result
    records.mark_done(cell_dir)
    return metrics


def make_module(cfg, tokens: TokenData) -> LMModule:
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    tok = tokens.tokenizer
    return LMModule(cfg.to_dict(), tok.vocab_size, tok.eot_id, tokens.bytes_per_token("val"))


def may_tokenize() -> bool:
    """A training job on a cluster never builds a token cache (a GPU waiting on tokenizing); it is
    built beforehand by `python -m ablations.prepare` (or by `ablations.run` on the submitting host)."""
    return "SLURM_JOB_ID" not in os.environ


def follow_cell(cell, cell_dir: Path, cache_root: Path) -> None:
    """A non-zero rank of a multi-process cell (DDP/FSDP): train alongside rank 0, write nothing.

    Lightning's DDP launcher starts the other ranks by running the same command again with
    LOCAL_RANK set; the runner sends them here (see ablations.run) with the cell rank 0 trains.
    """
    cfg = cell.config
    tokens = prepare_tokens(cfg.data, cfg.tokenizer, cache_root, build=may_tokenize())
    module = make_module(cfg, tokens)
    seq_len = seq_len_for(module.model, cfg)
    resolve_config(module, tokens, seq_len)
    fit_module(module, tokens, cfg, seq_len, cell_dir, cell.id)


def resolve_config(module: LMModule, tokens: TokenData, seq_len: int) -> RunConfig:
    """The config the cell trains with, every derived value filled in, set on `module`: the model's
    own config (`model.match_params` resolved to a width) and `train.steps_per_epoch` from the data
    when unset (step_decay schedules count epochs).

    Recurrent models read the split as `batch_size` contiguous streams (ContiguousStreams: one epoch
    is one pass along them, as Zaremba et al.'s batchify); others sample windows, and an epoch is
    as many tokens as the split holds.
    """
    cfg = dataclasses.replace(module.cfg, model=module.model.cfg)
    t = cfg.train
    if t.steps_per_epoch is None:
        n = len(tokens.splits["train"])
        if module.recurrent:
            steps = ((n - 1) // t.batch_size - 1) // seq_len
        else:
            steps = n // (t.batch_size * seq_len)
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(t, steps_per_epoch=max(1, steps)))
    module.cfg = cfg
    return cfg


def resume_checkpoint(cell_dir: Path) -> tuple[Path | None, int]:
    """The cell's last checkpoint and its step; (None, 0) for a fresh start."""
    step = saved_step(cell_dir)
    return (records.checkpoints(cell_dir)[0] if step else None), step


def fit_module(module: LMModule, tokens: TokenData, cfg, seq_len: int, cell_dir: Path, name: str,
               started: float | None = None) -> Throughput:
    """Train; returns the throughput counter (steps, training seconds, sessions of this cell)."""
    t = cfg.train
    resume_from, start = resume_checkpoint(cell_dir)
    train = tokens.splits["train"]
    if module.recurrent:
        data = ContiguousStreams(train, t.batch_size, seq_len, start_step=start)
    else:  # batch k is a function of (seed, k): a resumed run sees the batches an uninterrupted one would
        scored = tokens.scored.get("train") if t.loss_on == "continuation" else None
        data = RandomWindows(train, t.batch_size, seq_len, seed=t.seed, start_step=start, scored=scored)
    val = fixed_windows(tokens.splits["val"], t.eval_batches, t.batch_size, seq_len)
    if module.recurrent:  # validation windows are independent: no carried state
        val = [(x, y, True) for x, y in val]
    if t.loss_on == "continuation" and module.recurrent and "train" in tokens.scored:
        raise ConfigError("train.loss_on: continuation is for window-trained models; recurrent models read "
                          "contiguous streams (set train.loss_on: all)")
    if t.forget is not None and module.forget is None:
        from research.forget import build_forget

        module.forget = build_forget(cfg, tokens.tokenizer)
    tokens_per_step = t.batch_size * seq_len
    throughput = Throughput(tokens_per_step, t.log_every, started)
    callbacks: list = [throughput, Progress(cell_dir, t.log_every)]
    every = t.eval_every if t.checkpoint_every is None else t.checkpoint_every
    records.checkpoint_dir(cell_dir).mkdir(parents=True, exist_ok=True)
    checkpoint = ResumableCheckpoint(cell_dir, every or t.max_steps)  # every 0: none before the end
    if every:
        callbacks.append(checkpoint)
    if slurm_plugins():  # USR1: save at the next step boundary, requeue, stop (see ablations.requeue)
        callbacks.append(StopOnSignal(checkpoint, then=requeue_job))
    per_position = per_position_callback(cfg, tokens, seq_len, cell_dir)
    if per_position is not None:
        callbacks.append(per_position)
    trainer = build_trainer(cfg, cell_dir, make_logger(cfg, cell_dir, name, start), callbacks)
    loader = DataLoader(data, batch_size=None, pin_memory=torch.cuda.is_available())
    val_loader = DataLoader(val, batch_size=None)
    os.environ["ABLATIONS_CELL"] = name  # for Lightning's DDP launcher: other ranks train this cell
    try:
        trainer.fit(module, loader, val_loader, ckpt_path=resume_from, weights_only=True)
    except StoppedBySignal:
        raise KeyboardInterrupt from None  # saved and requeued: stopped before its last step
    finally:
        os.environ.pop("ABLATIONS_CELL", None)
    if trainer.interrupted or trainer.global_step < t.max_steps:  # e.g. stopped by a SLURM requeue signal
        raise KeyboardInterrupt
    throughput.tokens_per_step = tokens_per_step * trainer.world_size  # each data-parallel rank has its own batch
    throughput.steps = trainer.global_step  # also right after resuming a checkpoint saved without these counts
    return throughput


def per_position_callback(cfg, tokens: TokenData, seq_len: int, cell_dir: Path):
    """The per-position loss recorder, or None when it is off or the validation split is too short.

    Every cell of a grid scores the same windows (seed 0, not the cell's seed), so curves compare.
    """
    from research.callbacks import PerPositionLoss

    every = cfg.eval.per_position_every if cfg.eval.per_position_every is not None else cfg.train.eval_every
    val = tokens.splits["val"]
    if not every or cfg.eval.per_position_windows <= 0 or len(val) <= seq_len + 1:
        return None
    return PerPositionLoss(val, seq_len, cfg.eval.per_position_windows, min(every, cfg.train.max_steps),
                           cell_dir, seed=0, batch_size=cfg.train.batch_size)


def build_trainer(cfg, root: Path, logger, callbacks: list) -> L.Trainer:
    """The Trainer every cell uses (and the benchmark measures): step-based, validation every
    `train.eval_every` steps on a fixed set of batches, no checkpoint files, bar only on a TTY.

    On CPU, subnormal floats are flushed to zero: Adam's second-moment estimates of tiny
    gradients drift into the subnormal range, where x86 arithmetic is many times slower (measured
    here: 190 ms against 40 ms per step of the Shakespeare CPU recipe); the values lost are below
    1e-38 and do not change the result.
    """
    t = cfg.train
    torch.set_flush_denormal(True)
    progress = t.progress_bar if t.progress_bar is not None else sys.stderr.isatty()
    return L.Trainer(
        max_steps=t.max_steps,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=precision_for(cfg),
        logger=logger,
        callbacks=callbacks,
        gradient_clip_val=None,  # LMModule clips (see its on_before_optimizer_step)
        val_check_interval=min(t.eval_every, t.max_steps),
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        log_every_n_steps=t.log_every,
        enable_checkpointing=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        default_root_dir=root,
        plugins=slurm_plugins(),
    )


def score_splits(model, tokens: TokenData, cfg, seq_len: int, device: str) -> dict:
    """Exact loss over the whole validation (and test) split: every token scored once."""
    out: dict = {}
    word_level = tokens.tokenizer.word_level
    for split, prefix in (("val", "val"), ("test", "test")):
        if split not in tokens.splits:
            continue
        res = split_loss(model, tokens.splits[split], seq_len, batch_size=cfg.train.batch_size, device=device,
                         max_tokens=cfg.eval.val_max_tokens, eot_id=tokens.tokenizer.eot_id)
        info = tokens.meta["splits"][split]
        words_per_token = info["words"] / info["tokens"] if word_level else None
        out.update(res.metrics(prefix, tokens.bytes_per_token(split), words_per_token))
        if not math.isfinite(res.loss):
            out[f"{prefix}_loss"] = float("nan")
    return out


def sample_after_training(model, tokenizer, cfg, cell_dir: Path) -> None:
    """`eval.samples` samples of each prompt, stored as the cell's training samples."""
    from research.generate import generate

    e = cfg.eval
    if e.samples <= 0:
        return
    gen = torch.Generator().manual_seed(cfg.train.seed)
    lines = []
    for prompt in e.prompts:
        ids = tokenizer.encode(prompt) if prompt else []
        for i in range(e.samples):
            out = generate(model, ids, e.sample_tokens, tokenizer.eot_id, e.temperature, e.top_k, e.top_p, gen)
            # generate stops at (and drops) end-of-text, so a sample shorter than the limit ended there
            lines.append({"prompt": prompt, "sample": i, "text": tokenizer.display(out, e.detokenize),
                          "tokens": len(out), "stopped_at_eot": len(out) < e.sample_tokens})
    records.write_samples(cell_dir, "samples", lines)


def run_cell_evals(model, tokenizer, cfg, cell_dir: Path, cache_root: Path, tokens: TokenData, device: str) -> None:
    from evals.base import EvalContext
    from evals.run import run_evals
    from research.data import load_corpus

    ctx = EvalContext(model=model, tokenizer=tokenizer, config=cfg, device=device, cell_dir=cell_dir,
                      load_corpus=lambda: load_corpus(cfg.data), cache_dir=cache_root,
                      load_tokens=lambda split: tokens.splits[split], split_sizes=tokens.meta["splits"])
    run_evals(ctx, list(cfg.eval.tasks), cfg.eval.options)


def manifest(cell, started: float, fit_s: float, device: str, tokens: TokenData, cell_dir: Path) -> dict:
    import lightning

    return {
        "cell": cell.id,
        "seed": cell.seed,
        "axes": {k: v for k, v in cell.axes.items()},
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "fit_s": fit_s,
        "device": torch.cuda.get_device_name() if device == "cuda" else f"cpu ({os.cpu_count()} cores)",
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "git": git_state(cell_dir),  # and the code diff in the cell when the tree is dirty
        "token_cache": tokens.path.name,
        "data": tokens.meta["corpus"],
        "splits": tokens.meta["splits"],
    }
