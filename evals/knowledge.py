"""Knowledge vs reasoning on the `facts` world: what a model stores, and what it reads from a context.

Each question has the 8 values of its attribute (towns, pets or foods) as candidates, scored by the
summed log-likelihood of the candidate after the prompt (evals.scoring.score_token_pairs, the
primitive of the multiple-choice evals), read from end-of-text as a training document starts; the
prediction is the argmax (acc, chance 1/8). Reported, each the share of its questions (every
trained or held-out person x town, pet, food):

- `closed_book`: trained people, no context (recall from the weights);
- `open_book_trained`: trained people, the needed fact (with distractors) in the context;
- `open_book_held_out`: held-out people, who occur in no training document: the reasoning score,
  since the answer can only come from the context;
- `counterfactual_follow`: trained people, the context states another value than the trained one;
  the share answered with the context's value (`counterfactual_recall`: with the trained value);
- `multihop_closed`: "Where does X's friend live?" for trained people, no context;
- `multihop_open_held_out`: the same for held-out people with both facts (friend, friend's
  attribute) in the context.

`stderr` is the binomial standard error of each share. Options: `seed` (contexts' distractors,
the counterfactual values and the `limit` sample; the same for every cell of a grid) and `limit`
(questions per set, a seeded sample; None: all).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evals.base import EvalContext, EvalResult
from evals.scoring import binomial_stderr, encode_pair, score_token_pairs, seeded_subset
from research.checks import ranged
from research.config import build
from research.data import facts

NAME = "knowledge"
VERSION = 1


@dataclass
class KnowledgeOptions:
    seed: int = ranged(1234, free="any integer seeds the contexts and the sample")
    limit: int | None = ranged(None, ge=1)  # questions per set: a seeded sample (the same for every cell); None: all


OPTIONS = KnowledgeOptions


def probe_sets(data_cfg, seed: int) -> dict[str, list[facts.Probe]]:
    world = facts.build_world(data_cfg.facts)
    cfg = data_cfg.facts
    return {
        "closed_book": facts.closed_book(world, world.trained),
        "open_book_trained": facts.open_book(world, world.trained, cfg, seed),
        "open_book_held_out": facts.open_book(world, world.held_out, cfg, seed + 1),
        "counterfactual": facts.counterfactual(world, cfg, seed + 2),
        "multihop_closed": facts.closed_book(world, world.trained, hop=True),
        "multihop_open_held_out": facts.open_book(world, world.held_out, cfg, seed + 3, hop=True),
    }


def predictions(model, tokenizer, probes: list[facts.Probe], device: str = "cpu") -> np.ndarray:
    """The argmax candidate of each probe by summed log-likelihood (ties: the first)."""
    pairs = []
    for p in probes:
        for cand in p.candidates:
            ctx, cont = encode_pair(tokenizer, p.prompt, cand)
            pairs.append(([tokenizer.eot_id, *ctx], cont))  # read from a document start, as trained
    scores = score_token_pairs(model, pairs, device=device)
    k = len(probes[0].candidates)
    logp = np.array([s.logprob for s in scores]).reshape(len(probes), k)
    return logp.argmax(axis=1)


def evaluate(ctx: EvalContext, options: dict) -> EvalResult:
    opts = build(KnowledgeOptions, options, f"eval.options.{NAME}")
    data = ctx.config.data
    if data.source != "facts":
        return EvalResult(NAME, VERSION, status="skipped", reason="needs data.source: facts")
    metrics, stderr, n = {}, {}, 0
    for name, probes in probe_sets(data, opts.seed).items():
        probes = [probes[i] for i in seeded_subset(len(probes), opts.limit, opts.seed)]
        pred = predictions(ctx.model, ctx.tokenizer, probes, ctx.device)
        answers = np.array([p.answer for p in probes])
        if name == "counterfactual":
            trained = np.array([p.stored for p in probes])
            parts = {"counterfactual_follow": pred == answers, "counterfactual_recall": pred == trained}
        else:
            parts = {name: pred == answers}
        for key, hits in parts.items():
            metrics[key] = float(hits.mean())
            stderr[key] = binomial_stderr(metrics[key], len(hits))
        n += len(probes)
    return EvalResult(NAME, VERSION, metrics, stderr, n=n,
                      details={"chance": 1 / len(facts.TOWNS), "seed": opts.seed, "unit": "share of questions"})

