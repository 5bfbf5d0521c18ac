"""Optimizers and learning-rate schedules, by name (`train.optimizer`, `train.schedule`).

Optimizers: `sgd` (heavy-ball or Nesterov momentum), `adam` (weight decay as an L2 term in the
gradient), `adamw` (decoupled weight decay, Loshchilov & Hutter 2019) and `muon` (Jordan et al.
2024: orthogonalised momentum for the 2-D hidden weight matrices, AdamW for everything else).
`tangent` is Riemannian descent on the sphere of each hidden weight matrix's rows
(`TangentDescent`; direction from momentum SGD or Adam, `train.options.tangent.base`).
Weight decay applies only to tensors of two or more dimensions (matmul weights, embeddings), as
in nanoGPT; norms and biases are not decayed.

Schedules are a factor of `train.lr` per optimizer step, applied by one `LambdaLR` to every
parameter group (both halves of `muon` included): `constant`, `warmup` (linear warm-up, then
constant), `cosine`, `wsd` (warm-up, stable, linear decay) and `step_decay` (Zaremba et al. 2014's
per-epoch decay). All but `constant` start with `train.warmup_steps` of linear warm-up.

Each optimizer and schedule declares the dataclass of its own settings (`OPTIONS`, set by
`@takes`), read from `train.options.<name>` and built when the config loads (research.config), so a
typo or an out-of-range value is refused before training, and one plug-in's setting never sits
unused beside another. A plug-in is called with the train config and its built options.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from research.checks import ranged
from research.errors import ConfigError
from research.registry import Registry


def takes(options: type):
    """Declare the options dataclass a plug-in reads from `train.options.<name>`."""
    def mark(fn):
        fn.OPTIONS = options
        return fn
    return mark


@dataclass
class NoOptions:
    """A plug-in whose settings are all train's own (lr, betas, weight_decay, warmup_steps, min_lr)."""


@dataclass
class SGDOptions:
    """Momentum SGD's settings (0.9 heavy-ball by default; 0 is Zaremba et al. 2014's plain SGD)."""

    momentum: float = ranged(0.9, ge=0, lt=1)
    nesterov: bool = False  # Nesterov momentum (needs momentum > 0)

    def validate(self) -> None:
        if self.nesterov and self.momentum <= 0:
            raise ValueError("nesterov: Nesterov momentum needs momentum > 0")


@dataclass
class MuonOptions:
    """Muon's momentum: Jordan et al. (2024)'s 0.95 with Nesterov on."""

    momentum: float = ranged(0.95, ge=0, lt=1)
    nesterov: bool = True


@dataclass
class TangentOptions:
    """Which base optimizer's update `tangent` projects onto each row's sphere, and, for `sgd`, its momentum."""

    base: Literal["sgd", "adam"] = "adam"
    momentum: float = ranged(0.9, ge=0, lt=1)  # base sgd (and its Euclidean fallback)
    nesterov: bool = False  # base sgd


def param_groups(model: torch.nn.Module, weight_decay: float, params=None) -> list[dict]:
    params = {id(p): p for p in (params if params is not None else model.parameters()) if p.requires_grad}.values()
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def fusable(model: torch.nn.Module) -> bool | None:
    """Use PyTorch's fused Adam/AdamW kernel where every parameter lives on CUDA or the CPU.

    One kernel per step instead of about ten element-wise ops per tensor: the same update up to
    float rounding. PyTorch's CPU default is its per-tensor Python loop, which costs a few
    milliseconds per step of a sub-million-parameter model. None leaves PyTorch's default.
    """
    return all(p.device.type in ("cuda", "cpu") and p.is_floating_point() for p in model.parameters()) or None


@takes(NoOptions)
def adamw(model: torch.nn.Module, cfg, opts=None, params=None) -> torch.optim.Optimizer:
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay, params), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                             fused=fusable(model))


@takes(NoOptions)
def adam(model: torch.nn.Module, cfg, opts) -> torch.optim.Optimizer:
    """Adam (Kingma & Ba 2015); `weight_decay` is added to the gradient (L2), the coupling AdamW removes."""
    return torch.optim.Adam(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                            fused=fusable(model))


@takes(SGDOptions)
def sgd(model: torch.nn.Module, cfg, opts: SGDOptions) -> torch.optim.Optimizer:
    """SGD with momentum (default 0.9; 0 is the plain SGD of Zaremba et al. 2014), Nesterov optional."""
    return torch.optim.SGD(param_groups(model, cfg.weight_decay), lr=cfg.lr, momentum=opts.momentum,
                           nesterov=opts.nesterov)


def muon_params(model: torch.nn.Module) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    """(hidden matrices for Muon, the rest for AdamW). Embeddings and the output projection stay
    with AdamW, as Jordan et al. (2024) prescribe: their rows are looked up or scored one token at a
    time, not used as a whole linear map. Vectors (norms, biases) cannot be orthogonalised."""
    lookup = {id(p) for p in model.embedding_parameters()}  # the output projection included
    unique = {id(p): p for p in model.parameters() if p.requires_grad}.values()
    hidden = [p for p in unique if p.dim() == 2 and id(p) not in lookup]
    rest = [p for p in unique if p.dim() != 2 or id(p) in lookup]
    return hidden, rest


class CombinedOptimizer(torch.optim.Optimizer):
    """Several optimizers over disjoint parameters, stepping as one (Lightning's automatic
    optimisation and a scheduler each expect a single optimizer).

    `param_groups` is the list of the inner optimizers' own group dicts, so an LR scheduler that
    sets `group["lr"]` drives every inner optimizer. The per-parameter state lives in the inner
    optimizers; `state` is a merged view and `state_dict()` nests theirs.
    """

    def __init__(self, optimizers: list[torch.optim.Optimizer]):
        self.optimizers = list(optimizers)
        groups = [g for opt in self.optimizers for g in opt.param_groups]
        super().__init__([{"params": g["params"]} for g in groups], {})
        self.param_groups = groups

    @property
    def state(self) -> dict:
        return {p: s for opt in self.optimizers for p, s in opt.state.items()}

    @state.setter
    def state(self, value) -> None:  # the base constructor assigns an empty dict; the inner ones hold state
        pass

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for opt in self.optimizers:
            opt.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"optimizers": [opt.state_dict() for opt in self.optimizers]}

    def load_state_dict(self, state_dict: dict) -> None:
        for opt, sd in zip(self.optimizers, state_dict["optimizers"], strict=True):
            opt.load_state_dict(sd)
        self.param_groups = [g for opt in self.optimizers for g in opt.param_groups]


@takes(MuonOptions)
def muon(model: torch.nn.Module, cfg, opts: MuonOptions) -> torch.optim.Optimizer:
    """`torch.optim.Muon` on the hidden matrices, AdamW on the rest, both at `train.lr`.

    Muon's update is rescaled to AdamW's RMS (`adjust_lr_fn="match_rms_adamw"`, Liu et al. 2025,
    "Muon is Scalable for LLM Training"), so one learning rate and weight decay serve both halves
    and an AdamW learning-rate sweep carries over. Momentum defaults to Muon's 0.95, Nesterov on.
    """
    hidden, rest = muon_params(model)
    if not hidden:
        raise ConfigError(f"train.optimizer: muon needs 2-D hidden weight matrices; {type(model).__name__} has none "
                          "(use adamw)")
    inner = torch.optim.Muon(hidden, lr=cfg.lr, weight_decay=cfg.weight_decay,
                             momentum=opts.momentum, nesterov=opts.nesterov, adjust_lr_fn="match_rms_adamw")
    return CombinedOptimizer([inner, adamw(model, cfg, params=rest)])


class TangentDescent(torch.optim.Optimizer):
    """Riemannian descent on the sphere of each matrix row: only the rows' directions learn.

    Per step and per 2-D weight W (rows w_i): the base optimizer's update u (the momentum buffer
    of SGD, or Adam's bias-corrected m / (sqrt(v) + eps)) is projected onto the tangent space of
    each row's sphere, u_i - (u_i . w_i / |w_i|^2) w_i; the row steps along it, w_i - lr * u_i',
    and is retracted to its norm before the step, w_i |w_i| / |w_i - lr u_i'| (the projection
    retraction on the sphere, Absil, Mahony & Sepulchre 2008, "Optimization Algorithms on Matrix
    Manifolds"; Bonnabel 2013's Riemannian SGD). Row norms stay at their initial values, so
    weight decay, which only shrinks norms, does not apply here. The moments live in the ambient
    space (not transported between tangent spaces) and Adam's scaling is per coordinate, which is
    not intrinsic to a sphere: Becigneul & Ganea (2019, "Riemannian Adaptive Optimization
    Methods") adapt per manifold instead. This is the simple, extrinsic variant the brainstorm
    asks to test, not their RAdam.
    """

    def __init__(self, params, lr: float, base: str = "adam", betas=(0.9, 0.95), eps: float = 1e-8,
                 momentum: float = 0.9, nesterov: bool = False):
        if base not in ("sgd", "adam"):
            raise ConfigError(f"train.options.tangent.base: '{base}' is not one of sgd, adam")
        super().__init__(params, {"lr": lr, "base": base, "betas": betas, "eps": eps, "momentum": momentum,
                                  "nesterov": nesterov})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    sphere_step_(p, self.direction(p, group), group["lr"])
        return loss

    def direction(self, p: torch.Tensor, group: dict) -> torch.Tensor:
        """The base optimizer's update for p (before the learning rate), updating its state."""
        g, state = p.grad, self.state[p]
        if group["base"] == "sgd":
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = g.clone()
            else:
                buf.mul_(group["momentum"]).add_(g)
            return g + group["momentum"] * buf if group["nesterov"] else buf
        beta1, beta2 = group["betas"]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32)
            state["exp_avg"], state["exp_avg_sq"] = torch.zeros_like(p), torch.zeros_like(p)
        state["step"] += 1
        t = state["step"].item()
        state["exp_avg"].lerp_(g, 1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(g, g, value=1 - beta2)
        denom = (state["exp_avg_sq"] / (1 - beta2 ** t)).sqrt_().add_(group["eps"])
        return state["exp_avg"] / (1 - beta1 ** t) / denom


def sphere_step_(w: torch.Tensor, update: torch.Tensor, lr: float) -> None:
    """In place: each row of w steps by -lr times the update's tangent part, then back to its norm."""
    norms = w.norm(dim=1, keepdim=True)
    tiny = torch.finfo(w.dtype).tiny
    radial = (update * w).sum(dim=1, keepdim=True) / norms.square().clamp_min(tiny)
    w.sub_(lr * (update - radial * w))
    w.mul_(norms / w.norm(dim=1, keepdim=True).clamp_min(tiny))


@takes(TangentOptions)
def tangent(model: torch.nn.Module, cfg, opts: TangentOptions) -> torch.optim.Optimizer:
    """`TangentDescent` on the hidden weight matrices, the base optimizer's Euclidean step elsewhere.

    The rule for what is not on a sphere ("Euclidean fallback", the split Muon uses): vectors (norm
    gains, biases, learned attention powers) have no rows, and the embedding and output
    projection rows are scored one token at a time, so their norms carry per-token information
    (frequency, confidence); they take the plain update of the base, AdamW (with its decoupled
    weight decay) for `base: adam` and momentum SGD for `sgd`, at the same lr.
    """
    hidden, rest = muon_params(model)
    if not hidden:
        raise ConfigError(f"train.optimizer: tangent needs 2-D hidden weight matrices; {type(model).__name__} has "
                          "none (use adamw)")
    inner = TangentDescent(hidden, lr=cfg.lr, base=opts.base, betas=(cfg.beta1, cfg.beta2),
                           momentum=opts.momentum, nesterov=opts.nesterov)
    if opts.base == "adam":
        fallback = adamw(model, cfg, params=rest)
    else:
        fallback = torch.optim.SGD(param_groups(model, cfg.weight_decay, rest), lr=cfg.lr, momentum=opts.momentum,
                                   nesterov=opts.nesterov)
    return CombinedOptimizer([inner, fallback])


# -- schedules: (cfg, options) -> factor(step) -----------------------------------------------------


@dataclass
class WSDOptions:
    """The cool-down's length: Hägele et al. (2024) find a 20% linear decay matches cosine."""

    decay_fraction: float = ranged(0.2, gt=0, le=1)  # share of max_steps in the final linear decay


@dataclass
class StepDecayOptions:
    """Zaremba et al. (2014)'s per-epoch decay (small model: halved each epoch after the 4th)."""

    lr_decay: float = ranged(0.5, gt=0, le=1)  # lr factor per epoch once decay starts
    decay_after_epochs: int = ranged(4, ge=0)  # epochs at full lr before the first decay


def warm(step: int, warmup: int) -> float:
    """Linear warm-up factor: (step + 1) / (warmup + 1) during the first `warmup` steps, then 1."""
    return (step + 1) / (warmup + 1) if step < warmup else 1.0


def min_ratio(cfg) -> float:
    return (cfg.min_lr if cfg.min_lr is not None else cfg.lr / 10) / cfg.lr


@takes(NoOptions)
def constant(cfg, opts):
    """The learning rate itself at every step (no warm-up)."""
    return lambda step: 1.0


@takes(NoOptions)
def warmup(cfg, opts):
    """Linear warm-up to lr over warmup_steps, then constant."""
    return lambda step: warm(step, cfg.warmup_steps)


@takes(NoOptions)
def cosine(cfg, opts):
    """Linear warm-up to lr, then cosine decay to min_lr (default lr / 10) at max_steps."""
    floor = min_ratio(cfg)
    warmup, total = cfg.warmup_steps, max(cfg.max_steps, 1)

    def factor(step: int) -> float:
        if step < warmup:
            return warm(step, warmup)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


@takes(WSDOptions)
def wsd(cfg, opts: WSDOptions):
    """Warm-up, stable at lr, then linear decay to min_lr over the last `decay_fraction` of max_steps.

    Hägele et al. (2024), "Scaling Laws and Compute-Optimal Training Beyond Fixed Training
    Durations": a 20% linear cool-down matches cosine. The floor is min_lr (default lr / 10, as
    cosine); set `min_lr: 0` for their cool-down to zero.
    """
    floor = min_ratio(cfg)
    total = max(cfg.max_steps, 1)
    decay_steps = max(1, round(opts.decay_fraction * total))
    decay_start = total - decay_steps

    def factor(step: int) -> float:
        if step >= decay_start:
            return 1.0 - (1.0 - floor) * min(1.0, (step - decay_start + 1) / decay_steps)
        return warm(step, cfg.warmup_steps)

    return factor


@takes(StepDecayOptions)
def step_decay(cfg, opts: StepDecayOptions):
    """lr * lr_decay ** max(0, epoch + 1 - decay_after_epochs), epoch = step // steps_per_epoch.

    Zaremba et al. (2014), as their ptb_word_lm.py: full lr for `decay_after_epochs` epochs, then
    multiplied by `lr_decay` once per epoch (small model: lr 1, 4 epochs, decay 0.5). Warm-up, if
    any, multiplies in (their recipe has none: set warmup_steps 0). Their loss is summed over the
    T unrolled steps (mean over the batch), ours is the mean per token: their lr 1 and gradient clip
    5 are lr T and clip 5 / T here (PyTorch's word_language_model example: lr 20, clip 0.25).
    """
    if not cfg.steps_per_epoch:
        raise ConfigError("train.steps_per_epoch: step_decay needs the optimizer steps per epoch "
                          "(set it, or train through ablations.run which fills it in from the data)")

    def factor(step: int) -> float:
        epoch = step // cfg.steps_per_epoch
        return warm(step, cfg.warmup_steps) * opts.lr_decay ** max(0, epoch + 1 - opts.decay_after_epochs)

    return factor


OPTIMIZERS = Registry("optimizer", {
    "sgd": "research.optim:sgd",
    "adam": "research.optim:adam",
    "adamw": "research.optim:adamw",
    "muon": "research.optim:muon",
    "tangent": "research.optim:tangent",
})
SCHEDULES = Registry("schedule", {
    "constant": "research.optim:constant",
    "warmup": "research.optim:warmup",
    "cosine": "research.optim:cosine",
    "wsd": "research.optim:wsd",
    "step_decay": "research.optim:step_decay",
})


def options_of(fn, name: str, cfg):
    """The plug-in's options as the config loader built them (`train.options.<name>`); its defaults
    for a TrainConfig made in code without them."""
    opts = cfg.options.get(name)
    return opts if isinstance(opts, fn.OPTIONS) else fn.OPTIONS(**(opts or {}))


def build_optimizer(model: torch.nn.Module, cfg) -> torch.optim.Optimizer:
    fn = OPTIMIZERS.get(cfg.optimizer, key="train.optimizer")
    return fn(model, cfg, options_of(fn, cfg.optimizer, cfg))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-step LambdaLR over the named schedule's factor(step)."""
    fn = SCHEDULES.get(cfg.schedule, key="train.schedule")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn(cfg, options_of(fn, cfg.schedule, cfg)))
