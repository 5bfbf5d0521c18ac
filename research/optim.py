"""Optimizers and learning-rate schedules, by name (`train.optimizer`, `train.schedule`).

Weight decay applies only to tensors of two or more dimensions (matmul weights, embeddings), as
in nanoGPT; norms and biases are not decayed.
"""

from __future__ import annotations

import math

import torch

from research.registry import Registry


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    params = {id(p): p for p in model.parameters() if p.requires_grad}.values()
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def adamw(model: torch.nn.Module, cfg) -> torch.optim.Optimizer:
    fused = any(p.is_cuda for p in model.parameters())
    return torch.optim.AdamW(
        param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=fused or None
    )


def cosine(cfg):
    """Linear warm-up to lr, then cosine decay to min_lr (default lr / 10) at max_steps."""
    min_ratio = (cfg.min_lr if cfg.min_lr is not None else cfg.lr / 10) / cfg.lr
    warmup, total = cfg.warmup_steps, max(cfg.max_steps, 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


OPTIMIZERS = Registry("optimizer", {"adamw": "research.optim:adamw"})
SCHEDULES = Registry("schedule", {"cosine": "research.optim:cosine"})


def build_optimizer(model: torch.nn.Module, cfg) -> torch.optim.Optimizer:
    return OPTIMIZERS.get(cfg.optimizer, key="train.optimizer")(model, cfg)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-step LambdaLR over the named schedule's factor(step)."""
    factor = SCHEDULES.get(cfg.schedule, key="train.schedule")(cfg)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
