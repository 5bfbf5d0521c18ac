"""Generation eval: prompts to detokenised completions, EOT stopping, distinct-n, seeded JSONL."""

from __future__ import annotations

import json

import pytest
import torch

from evals import generation
from evals.base import EvalContext
from research.config import RunConfig
from research.generate import generate, generate_batch
from research.models.gpt import GPT
from research.tokenizers.char import CharTokenizer
from research.tokenizers.word import WordTokenizer
from tests.evals.lookup_model import LookupModel


def chain_model(vocab_size: int, edges: dict[int, int], block_size: int | None = None) -> LookupModel:
    """Next token is edges[prev] with probability ~1 (logit gap 60), so any sampling follows the chain."""
    table = torch.zeros(vocab_size, vocab_size)
    for prev, nxt in edges.items():
        table[prev, nxt] = 60.0
    return LookupModel(table, block_size)


def ctx_for(model, tok, tmp_path=None, **eval_cfg) -> EvalContext:
    cfg = RunConfig.from_dict({"eval": eval_cfg})
    return EvalContext(model=model, tokenizer=tok, config=cfg, cell_dir=tmp_path)


def test_word_model_stops_at_eot_and_reads_as_prose(tmp_path):
    tok = WordTokenizer(["the", "cat", "sat", "."])
    ids = tok.stoi
    # unconditional: EOT -> the -> cat -> sat -> . -> EOT
    model = chain_model(tok.vocab_size, {tok.eot_id: ids["the"], ids["the"]: ids["cat"], ids["cat"]: ids["sat"],
                                         ids["sat"]: ids["."], ids["."]: tok.eot_id})
    ctx = ctx_for(model, tok, tmp_path, samples=3, sample_tokens=10, prompts=["", "the cat"])
    res = generation.evaluate(ctx, {"story_prompts": False})
    rows = [json.loads(line) for line in (tmp_path / "samples" / "generation.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and res.n == 6
    assert rows[0] == {"prompt": "", "sample": 0, "completion": "The cat sat.", "text": "The cat sat.",
                       "n_tokens": 4, "stopped_at_eot": True}
    # the prompt is part of the story; the completion continues it mid-sentence (no capital)
    assert rows[3]["text"] == "The cat sat." and rows[3]["completion"] == " sat." and rows[3]["n_tokens"] == 2
    assert res.metrics["eot_share"] == 1.0
    assert res.metrics["mean_tokens"] == pytest.approx((4 * 3 + 2 * 3) / 6)
    # completions: 3 x "the cat sat ." and 3 x "sat .": 4 distinct words of 18; 3 distinct bigrams of 12
    assert res.metrics["distinct_1"] == pytest.approx(4 / 18)
    assert res.metrics["distinct_2"] == pytest.approx(3 / 12)


def test_length_limit_is_not_an_eot_stop():
    tok = CharTokenizer(list("ab"))
    a, b = tok.stoi["a"], tok.stoi["b"]
    model = chain_model(tok.vocab_size, {tok.eot_id: a, a: b, b: a})  # never ends
    res = generation.evaluate(ctx_for(model, tok, samples=2, sample_tokens=5), {"story_prompts": False})
    # "ababa" twice is one distinct word of two, and no bigram at all: distinct_2 is left out, not 0
    assert res.metrics == {"mean_tokens": 5.0, "eot_share": 0.0, "distinct_1": 0.5}
    assert res.details["examples"][0]["text"] == "ababa"


def test_distinct_n_by_hand():
    assert generation.distinct_n(["a b a b", "a c"], 1) == pytest.approx(3 / 6)
    assert generation.distinct_n(["a b a b", "a c"], 2) == pytest.approx(3 / 4)  # ab, ba, ab | ac
    assert generation.distinct_n(["Hi!", "hi"], 1) == pytest.approx(2 / 3)  # case folded, "!" is a word
    assert generation.distinct_n(["one"], 2) is None


def test_sampling_is_seeded_and_prompt_set_has_story_openings(tmp_path):
    tok = CharTokenizer(list(" .,abcdefghijklmnopqrstuvwxyzLOST"))
    torch.manual_seed(0)
    model = GPT(GPT.tiny_config(), tok.vocab_size).eval()
    ctx = ctx_for(model, tok, samples=2, sample_tokens=12, temperature=1.0, top_k=None)
    first = generation.generate_samples(ctx, {"seed": 3})
    again = generation.generate_samples(ctx, {"seed": 3})
    other = generation.generate_samples(ctx, {"seed": 4})
    assert first == again and first != other
    assert [r["prompt"] for r in first[::2]] == ["", *generation.STORY_PROMPTS]
    assert all(r["text"].startswith(tok.decode(tok.encode(r["prompt"]))) for r in first)
    only = generation.generate_samples(ctx, {"prompts": ["Once"], "samples": 1, "max_tokens": 3})
    assert [r["prompt"] for r in only] == ["Once"] and only[0]["n_tokens"] <= 3


def test_batched_sampling_matches_single_sampling_when_greedy():
    torch.manual_seed(1)
    model = GPT(GPT.tiny_config(), 11).eval()
    block = model.block_size
    prompt = list(range(1, 10)) * 2  # longer than needed to exercise cropping once generation passes block_size
    steps = block + 5
    single = generate(model, prompt, steps, eot_id=0, temperature=0)
    batched = generate_batch(model, prompt, 3, steps, eot_id=0, temperature=0)
    assert all(out == single for out, _ in batched)
    assert all(stopped == (len(single) < steps) for _, stopped in batched)
    # top_k=1 is greedy at any temperature
    topk = generate_batch(model, prompt, 2, 8, eot_id=0, temperature=1.5, top_k=1,
                          generator=torch.Generator().manual_seed(0))
    assert [out for out, _ in topk] == [single[:8]] * 2


@pytest.mark.slow
def test_evals_run_on_a_trained_cell(tmp_path):
    """The three evals through `python -m evals.run` on a cell the grid runner trained (about a minute)."""
    from paper.collect import read_per_position
    from tests.helpers import run_cli, write_grid

    grid = write_grid(tmp_path / "g.yaml", grid={"model.n_embd": [16]})
    assert run_cli(grid, "--results-dir", tmp_path / "res").returncode == 0
    (cell,) = [p for p in (tmp_path / "res" / "tiny").iterdir() if (p / "DONE").exists()]
    done = run_cli(cell, "--evals", "generation,per_position,novelty", module="evals.run")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in (cell / "samples" / "generation.jsonl").read_text().splitlines()]
    assert len(rows) == 1 + len(generation.STORY_PROMPTS)  # eval.samples: 1 per prompt
    assert [r["step"] for r in read_per_position(cell)] == [12]  # train.max_steps of the tiny grid
    result = json.loads((cell / "evals" / "novelty.json").read_text())
    assert result["status"] == "ok" and result["details"]["stories_from"] == "samples/generation.jsonl"
    assert list((tmp_path / "res" / "_cache" / "embeddings").glob("*.npy"))


def test_samples_after_training_stop_at_end_of_text_and_say_so(tmp_path):
    from ablations.train_cell import sample_after_training
    from research.cell import read_samples

    tok = WordTokenizer(["the", "cat", "sat", "'s", "."], split="whitespace")
    ids = tok.stoi
    model = chain_model(tok.vocab_size, {tok.eot_id: ids["the"], ids["the"]: ids["cat"], ids["cat"]: ids["'s"],
                                         ids["'s"]: ids["."], ids["."]: tok.eot_id})
    cfg = RunConfig.from_dict({"eval": {"samples": 1, "sample_tokens": 10, "prompts": ["", "cat"]}})
    sample_after_training(model, tok, cfg, tmp_path / "s")
    rows = read_samples(tmp_path / "s", "samples")
    assert rows[0] == {"prompt": "", "sample": 0, "text": "The cat's.", "tokens": 4, "stopped_at_eot": True}
    assert rows[1]["text"] == "'s." and rows[1]["stopped_at_eot"]
    short = RunConfig.from_dict({"eval": {"samples": 1, "sample_tokens": 2, "prompts": [""], "detokenize": False}})
    sample_after_training(model, tok, short, tmp_path / "t")
    (row,) = read_samples(tmp_path / "t", "samples")
    assert row["text"] == "the cat" and not row["stopped_at_eot"]  # cut by the limit, tokens joined raw


def test_the_shared_generate_function_stops_at_end_of_text():
    """research.generate.generate (the web app's sampler): the story ends at end-of-text, which is
    neither returned nor streamed, whatever the token limit."""
    tok = CharTokenizer(list("ab"))
    a, b = tok.stoi["a"], tok.stoi["b"]
    model = chain_model(tok.vocab_size, {tok.eot_id: a, a: b, b: tok.eot_id})
    streamed = []
    out = generate(model, [], 50, tok.eot_id, temperature=1.0, generator=torch.Generator().manual_seed(0),
                   stream=streamed.append)
    assert out == [a, b] == streamed and tok.decode(out) == "ab"
