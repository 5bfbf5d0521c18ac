"""Forgetting what is available externally: a loss term that moves stored facts out of the weights.

`train.forget: {weight, teacher, probes}` adds to each training step's loss

    weight * ( mean_q KL(U || p_student(. | closed-book q))  +  mean_r KL(p_teacher(. | r) || p_student(. | r)) )

over answer candidates (the distribution is the softmax of each candidate's summed token
log-probability, the same scores the knowledge eval ranks):

- `q` are `probes` closed-book questions about trained people drawn at each step (single- and
  multi-hop). U is uniform over the candidates: the model is pushed to have no opinion on facts it
  could only know from its weights.
- `r` are `probes` open-book questions about the same people (the facts in the context), used only
  when `teacher` names a finished cell folder. The teacher's answers there are fixed targets:
  whatever skill it had at reading a context is to be kept while the stored copy is erased (the
  brainstorm's "distil the knowledge out of the model"). The teacher is frozen, never trained,
  and must share the cell's tokenizer (same data and tokenizer config).

Without a teacher the ordinary training loss on the documents is what keeps the open-book skill.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import torch
import torch.nn.functional as F

from research import cell as cell_files
from research.data import facts
from research.errors import ConfigError


def probe_pairs(tokenizer, probe: facts.Probe) -> list[tuple[list[int], list[int]]]:
    """(context ids, continuation ids) of each candidate, the context starting from end-of-text as a
    training document does; the continuation split is the one evals.scoring.encode_pair makes."""
    ctx = list(tokenizer.encode(probe.prompt))
    out = []
    for cand in probe.candidates:
        whole = list(tokenizer.encode(probe.prompt + cand))
        out.append(([tokenizer.eot_id, *ctx], whole[len(ctx):]))
    return out


def candidate_logprobs(model, pairs: list[tuple[list[int], list[int]]], device) -> torch.Tensor:
    """Summed log-probability (nats) of each pair's continuation, differentiable; pairs fit the window."""
    width = max(len(c) + len(x) for c, x in pairs) - 1
    n = len(pairs)
    inp = torch.zeros(n, width, dtype=torch.long)
    tgt = torch.zeros(n, width, dtype=torch.long)
    mask = torch.zeros(n, width, dtype=torch.bool)
    for r, (c, x) in enumerate(pairs):
        seq = c + x
        inp[r, : len(seq) - 1] = torch.as_tensor(seq[:-1])
        tgt[r, : len(seq) - 1] = torch.as_tensor(seq[1:])
        mask[r, len(c) - 1 : len(seq) - 1] = True
    inp, tgt, mask = inp.to(device), tgt.to(device), mask.to(device)
    logp = F.log_softmax(model(inp).float(), dim=-1).gather(-1, tgt.unsqueeze(-1)).squeeze(-1)
    return (logp * mask).sum(-1)


class ForgetTerm:
    def __init__(self, cfg, data_cfg, tokenizer, teacher=None, seed: int = 0):
        self.weight, self.n = cfg.weight, cfg.probes
        world = facts.build_world(data_cfg.facts)
        closed = facts.closed_book(world, world.trained) + facts.closed_book(world, world.trained, hop=True)
        self.closed = [probe_pairs(tokenizer, p) for p in closed]
        self.teacher = teacher
        self.open: list = []
        self.targets: torch.Tensor | None = None
        if teacher is not None:
            opened = facts.open_book(world, world.trained, data_cfg.facts, seed=seed + 7)
            self.open = [probe_pairs(tokenizer, p) for p in opened]
        self.seed = seed

    def _distribution(self, model, probes: list, device) -> torch.Tensor:
        k = len(probes[0])
        flat = [pair for probe in probes for pair in probe]
        return F.log_softmax(candidate_logprobs(model, flat, device).view(len(probes), k), dim=-1)

    def __call__(self, model, step: int = 0) -> torch.Tensor:
        """The term at training step `step`: its questions are a function of (seed, step), so a
        resumed run draws what an uninterrupted one would."""
        device = next(model.parameters()).device
        rng = random.Random(self.seed * 1_000_003 + step)
        picked = rng.sample(self.closed, min(self.n, len(self.closed)))
        logp = self._distribution(model, picked, device)
        # KL(U || p) = -log K - mean_k log p_k
        loss = (-math.log(logp.size(-1)) - logp.mean(-1)).mean()
        if self.teacher is not None:
            picked = rng.sample(self.open, min(self.n, len(self.open)))
            self.teacher.to(device)
            with torch.no_grad():
                target = self._distribution(self.teacher, picked, device)
            student = self._distribution(model, picked, device)
            loss = loss + F.kl_div(student, target, log_target=True, reduction="batchmean")
        return self.weight * loss


def load_teacher(cfg, tokenizer):
    """The frozen teacher model of `train.forget.teacher`, refused in one line unless it is a
    finished cell with this cell's tokenizer."""
    from research.checkpoint import load_cell

    folder = Path(cfg.train.forget.teacher).expanduser()
    if cell_files.cell_status(folder) != "done" or not cell_files.has_weights(folder):
        raise ConfigError(f"train.forget.teacher: '{folder}' is not a finished cell folder with its weights "
                          "(results/<grid>/<cell>); train the teacher first")
    cell = load_cell(folder)
    if cell.tokenizer.state() != tokenizer.state():
        raise ConfigError(f"train.forget.teacher: '{folder}' has another tokenizer; the teacher needs the "
                          "same data and tokenizer config as this cell")
    for p in cell.model.parameters():
        p.requires_grad_(False)
    return cell.model


def build_forget(cfg, tokenizer) -> ForgetTerm | None:
    f = cfg.train.forget
    if f is None:
        return None
    teacher = load_teacher(cfg, tokenizer) if f.teacher else None
    return ForgetTerm(f, cfg.data, tokenizer, teacher, seed=cfg.train.seed)
