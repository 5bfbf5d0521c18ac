"""Generated stories from a fixed prompt set: the samples every text-quality eval reads.

For each prompt, `samples` completions are drawn with the cell's `eval.temperature`, `eval.top_k`
and `eval.top_p` (options override them) from one seeded `torch.Generator`, stopping at the
end-of-text token or after `max_tokens` new tokens. The prompt set is the cell's `eval.prompts`
(default: "" = unconditional, from end-of-text) plus, unless `story_prompts: false`, the built-in
story openings below; an explicit `prompts` option replaces both.

Text is the tokenizer's own decoding of prompt + completion ids, so word-level models come out
detokenised (punctuation and clitics re-attached, sentence capitals restored where the corpus was
lower-cased: research.tokenizers.detokenize), unless `eval.detokenize: false`. The judge and
novelty evals read these texts.
Every sample goes to `<cell>/samples/generation.jsonl` as {prompt, sample, completion, text,
n_tokens, stopped_at_eot}; `text` is the whole story (prompt included).

Metrics: `mean_tokens` (new tokens per completion, in the cell's own tokens), `eot_share` (share
of completions that ended with end-of-text rather than at the length limit) and `distinct_1`,
`distinct_2` (distinct word n-grams / all word n-grams over all completions; Li et al. 2016, "A
Diversity-Promoting Objective Function for Neural Conversation Models"). Words for distinct-n
are lowercased `\\w+` runs and punctuation marks, so the number compares across tokenizers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from evals.base import EvalContext, EvalResult
from research import cell
from research.checks import ranged
from research.config import build
from research.generate import generate_batch

NAME = "generation"
VERSION = 2  # 2: word tokens rejoined by research.tokenizers.detokenize (clitics, WikiText joins, case)

#: Openings in the style of TinyStories (Eldan & Li 2023), the children's stories most cells
#: train on; short and common-word only, so word-level vocabularies cover them.
STORY_PROMPTS = [
    "Once upon a time, there was a little girl named Lily.",
    "One day, a boy named Tom went to the park.",
    "The sun was shining and the birds were singing.",
    "Sara had a big red ball.",
]

WORD_RE = re.compile(r"\w+|[^\w\s]")


@dataclass
class GenerationOptions:
    prompts: list[str] | None = None  # replaces the prompt set below when given
    story_prompts: bool = True  # add STORY_PROMPTS to the cell's eval.prompts
    samples: int | None = ranged(None, ge=0)  # per prompt; None: eval.samples
    max_tokens: int | None = ranged(None, ge=1)  # new tokens per sample; None: eval.sample_tokens
    temperature: float | None = ranged(None, ge=0)  # None: eval.temperature
    top_k: int | None = ranged(None, ge=0)  # None: eval.top_k (0 turns it off)
    top_p: float | None = ranged(None, gt=0, le=1)  # None: eval.top_p (1.0 turns it off)
    seed: int | None = None  # None: train.seed


OPTIONS = GenerationOptions  # the eval's `eval.options.generation` keys, checked when the grid loads


def prompt_set(ctx: EvalContext, opts: GenerationOptions) -> list[str]:
    if opts.prompts is not None:
        return list(opts.prompts)
    prompts = list(ctx.config.eval.prompts)
    if opts.story_prompts:
        prompts += STORY_PROMPTS
    return list(dict.fromkeys(prompts))  # ordered, without repeats


def generate_samples(ctx: EvalContext, options: dict | None = None) -> list[dict]:
    """The samples as records (see the module docstring), without writing anything."""
    opts = build(GenerationOptions, options or {}, f"eval.options.{NAME}")
    e = ctx.config.eval
    n = e.samples if opts.samples is None else opts.samples
    max_tokens = e.sample_tokens if opts.max_tokens is None else opts.max_tokens
    temperature = e.temperature if opts.temperature is None else opts.temperature
    top_k = e.top_k if opts.top_k is None else opts.top_k
    top_p = e.top_p if opts.top_p is None else opts.top_p
    seed = ctx.config.train.seed if opts.seed is None else opts.seed
    gen = torch.Generator().manual_seed(seed)
    tok = ctx.tokenizer
    records = []
    for prompt in prompt_set(ctx, opts):
        prompt_ids = list(tok.encode(prompt)) if prompt else []
        shown_prompt = tok.display(prompt_ids, e.detokenize)
        for i, (out, stopped) in enumerate(generate_batch(ctx.model, prompt_ids, n, max_tokens, tok.eot_id,
                                                          temperature, top_k, top_p, gen)):
            text = tok.display(prompt_ids + out, e.detokenize)
            # the completion as it reads inside the story (a word model capitalises only sentence starts)
            completion = text[len(shown_prompt):] if text.startswith(shown_prompt) else tok.display(out, e.detokenize)
            records.append({"prompt": prompt, "sample": i, "completion": completion, "text": text,
                            "n_tokens": len(out), "stopped_at_eot": stopped})
    return records


def distinct_n(texts: list[str], n: int) -> float | None:
    """Distinct word n-grams over all n-grams in `texts` (None when there are none)."""
    grams: list[tuple[str, ...]] = []
    for t in texts:
        words = WORD_RE.findall(t.lower())
        grams.extend(zip(*(words[i:] for i in range(n))))
    return len(set(grams)) / len(grams) if grams else None


def evaluate(ctx: EvalContext, options: dict) -> EvalResult:
    records = generate_samples(ctx, options)
    if ctx.cell_dir is not None:
        cell.write_samples(ctx.cell_dir, "generation", records)
    return summarize(records)


def summarize(records: list[dict]) -> EvalResult:
    """The eval's result for a list of sample records (also used when novelty generates them)."""
    if not records:
        return EvalResult(NAME, VERSION, status="skipped", reason="no samples requested (samples: 0 or no prompts)")
    completions = [r["completion"] for r in records]
    metrics = {
        "mean_tokens": sum(r["n_tokens"] for r in records) / len(records),
        "eot_share": sum(r["stopped_at_eot"] for r in records) / len(records),
    }
    for n in (1, 2):
        value = distinct_n(completions, n)
        if value is not None:  # no n-grams at all: missing, not zero
            metrics[f"distinct_{n}"] = value
    details = {
        "prompts": list(dict.fromkeys(r["prompt"] for r in records)),
        "units": "mean_tokens: new tokens of the cell's tokenizer per completion; eot_share, distinct_n: fractions",
        "examples": records[:3],
    }
    return EvalResult(NAME, VERSION, metrics=metrics, n=len(records), details=details)
