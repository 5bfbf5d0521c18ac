"""Eval registry: `eval.tasks` in a run config (or `python -m evals.run --evals`) picks by name.

Each entry is a module exposing `NAME`, `VERSION` and `evaluate(ctx: EvalContext, options: dict)
-> EvalResult` (see evals.base). One file per eval, one line here.
"""

from __future__ import annotations

from research.registry import Registry

EVALS = Registry(
    "eval",
    {
        "perplexity": "evals.perplexity:evaluate",
        "hellaswag": "evals.hellaswag:evaluate",
        "blimp": "evals.blimp:evaluate",
        "cola": "evals.cola:evaluate",
        "judge": "evals.judge:evaluate",
        "generation": "evals.generation:evaluate",
        "novelty": "evals.novelty:evaluate",
        "per_position": "evals.per_position:evaluate",
        "lm_eval": "evals.lm_eval:evaluate",
        "cross_corpus": "evals.cross_corpus:evaluate",
        "knowledge": "evals.knowledge:evaluate",
    },
)
