"""The facts world, context spans with a masked loss, the knowledge eval and the forgetting term."""

from __future__ import annotations

import json
import math
import random
import re

import numpy as np
import pytest
import torch

from research.config import RunConfig
from research.data import facts, load_corpus
from research.data.corpus import CONTEXT_END
from research.data.spans import encode_with_spans, plain, split_span

FACTS = {"source": "facts", "facts": {"entities": 12, "held_out": 6, "questions_per_entity": 4}}


def data_cfg(facts_in: str = "context", **extra):
    return RunConfig.from_dict({"data": {**FACTS, "facts_in": facts_in, **extra}}).data


def _names_in(text: str) -> set[str]:
    return set(re.findall(r"[A-Z][a-z]{3}", text))


@pytest.mark.parametrize("facts_in", ["weights", "context"])
def test_held_out_people_appear_in_no_training_document(facts_in):
    cfg = data_cfg(facts_in)
    corpus = load_corpus(cfg)
    world = facts.build_world(cfg.facts)
    held = {p.name for p in world.held_out}
    text = "\n".join(corpus.train + corpus.val)
    assert held and not held & _names_in(text)
    assert {p.name for p in world.trained} <= _names_in(text)
    # every character of a held-out question is one the char tokenizer learns from training text
    chars = set(plain("".join(corpus.train)))
    probes = facts.open_book(world, world.held_out, cfg.facts, seed=3, hop=True)
    assert set("".join(p.prompt + "".join(p.candidates) for p in probes)) <= chars


def test_the_two_regimes_and_seeding():
    weights, context = load_corpus(data_cfg("weights")), load_corpus(data_cfg("context"))
    assert not any(CONTEXT_END in d for d in weights.train)
    assert any(d.count(". ") >= 3 and "Q:" not in d for d in weights.train)  # fact documents
    assert all(CONTEXT_END in d for d in context.train)  # every document starts with its facts
    # a context holds what its answer needs: the answer appears in the context
    for doc in context.train[:50]:
        ctx, qa = split_span(doc)
        assert qa.rsplit("A: ", 1)[1].rstrip(".") in ctx
    assert load_corpus(data_cfg("context")).train == context.train
    other = data_cfg("context", facts={**FACTS["facts"], "seed": 1})
    assert load_corpus(other).train != context.train


def test_spans_are_encoded_apart_and_masked():
    from research.tokenizers.char import CharTokenizer

    tok = CharTokenizer(sorted(set("abc xyz.")))
    ids, scored, _ = encode_with_spans(tok, [f"ab c{CONTEXT_END}xyz.", "zz"])
    assert tok.decode(ids) == "ab cxyz.zz"
    assert ids.tolist().count(tok.eot_id) == 2
    assert scored.tolist() == [0, 0, 0, 0] + [1] * 5 + [1] * 3


def test_jsonl_context_field_becomes_an_unscored_span(tmp_path):
    from research.data.tokens import prepare_tokens

    rows = [{"context": "Tim has a cat.\n", "text": "Q: pet? A: cat."}, {"text": "Plain text."}]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows * 20))
    cfg = RunConfig.from_dict({"data": {"source": "file", "path": str(path), "val_fraction": 0.2}})
    data = prepare_tokens(cfg.data, cfg.tokenizer, tmp_path / "cache")
    ids, scored = np.asarray(data.splits["train"]), np.asarray(data.scored["train"])
    assert ids.shape == scored.shape
    text = data.tokenizer.decode(ids[scored == 1].tolist())
    assert "Tim has" not in text and "Q: pet? A: cat." in text and "Plain text." in text
    assert CONTEXT_END not in data.tokenizer.decode(ids.tolist())


def test_random_windows_mask_follows_the_targets():
    from research.data.batches import RandomWindows

    tokens = np.arange(200, dtype=np.uint16)
    scored = (np.arange(200) % 3 == 0).astype(np.uint8)
    x, y, m = RandomWindows(tokens, 4, 16, seed=0, scored=scored).batch(5)
    assert torch.equal(m, torch.from_numpy(scored[y.numpy()].astype(bool)))


def test_masked_loss_matches_a_plain_loop():
    from research.lightning_module import LMModule

    torch.manual_seed(0)
    logits, targets = torch.randn(3, 7, 11), torch.randint(0, 11, (3, 7))
    mask = torch.rand(3, 7) > 0.4
    total, count = 0.0, 0
    for b in range(3):
        for t in range(7):
            if mask[b, t]:
                total += -(logits[b, t] - torch.logsumexp(logits[b, t], 0))[targets[b, t]].item()
                count += 1
    assert LMModule.loss(logits, targets, mask).item() == pytest.approx(total / count, rel=1e-5)
    assert LMModule.loss(logits, targets, torch.ones_like(mask)).item() == pytest.approx(
        LMModule.loss(logits, targets).item(), rel=1e-6)
    assert LMModule.loss(logits, targets, torch.zeros_like(mask)).item() == 0.0


def _tiny_model(vocab: int):
    from research.models import build_model

    cfg = RunConfig.from_dict({"model": {"arch": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 16,
                                         "block_size": 256}})
    torch.manual_seed(0)
    return build_model(cfg.model, vocab).eval()


def _tokenizer(cfg):
    from research.tokenizers.char import CharTokenizer

    corpus = load_corpus(cfg)
    return CharTokenizer(sorted(set(plain("".join(corpus.train)))))


def _plain_logprob(model, tok, prompt: str, cand: str) -> float:
    """Independent: one forward pass over EOT + prompt + candidate, the candidate's tokens summed."""
    ctx, whole = tok.encode(prompt), tok.encode(prompt + cand)
    seq = torch.tensor([[tok.eot_id, *whole]])
    with torch.no_grad():
        logp = torch.log_softmax(model(seq[:, :-1]).double(), -1)[0]
    return sum(logp[i, seq[0, i + 1]].item() for i in range(len(ctx), len(whole)))


def test_knowledge_scorer_matches_an_independent_computation():
    from evals.knowledge import predictions

    cfg = data_cfg("context")
    tok, world = _tokenizer(cfg), facts.build_world(cfg.facts)
    model = _tiny_model(tok.vocab_size)
    probes = facts.counterfactual(world, cfg.facts, seed=0)[:6] + facts.closed_book(world, world.held_out)[:4]
    expected = [int(np.argmax([_plain_logprob(model, tok, p.prompt, c) for c in p.candidates])) for p in probes]
    assert predictions(model, tok, probes).tolist() == expected


def test_forget_term_is_kl_from_uniform_and_keeps_a_teachers_answers():
    from research.forget import ForgetTerm, candidate_logprobs, probe_pairs

    cfg = data_cfg("context")
    tok, world = _tokenizer(cfg), facts.build_world(cfg.facts)
    model = _tiny_model(tok.vocab_size)
    probe = facts.closed_book(world, world.trained)[0]
    got = candidate_logprobs(model, probe_pairs(tok, probe), "cpu")
    want = [_plain_logprob(model, tok, probe.prompt, c) for c in probe.candidates]
    assert got.tolist() == pytest.approx(want, abs=1e-4)

    forget_cfg = RunConfig.from_dict({"data": {**FACTS, "facts_in": "context"},
                                      "train": {"forget": {"weight": 2.0, "probes": 5}}})
    term = ForgetTerm(forget_cfg.train.forget, cfg, tok, seed=0)
    expected = 0.0  # KL(uniform || softmax over candidates), averaged over the step's 5 probes
    for pairs in random.Random(0 * 1_000_003 + 3).sample(term.closed, 5):  # step 3 of seed 0
        logp = torch.log_softmax(torch.tensor([_pair_logprob(model, c, x) for c, x in pairs]), 0)
        expected += sum(1 / 8 * (math.log(1 / 8) - lp.item()) for lp in logp) / 5
    assert term(model, step=3).item() == pytest.approx(2.0 * expected, rel=1e-4)
    assert term(model, step=4).item() != pytest.approx(2.0 * expected, rel=1e-4)  # other questions
    # with the model itself as teacher the KL part is zero: the term is the closed-book part alone
    with_teacher = ForgetTerm(forget_cfg.train.forget, cfg, tok, teacher=model, seed=0)
    assert with_teacher(model, step=3).item() == pytest.approx(2.0 * expected, rel=1e-4)
    term(model).backward()  # differentiable: the term trains the model
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def _pair_logprob(model, ctx: list[int], cont: list[int]) -> float:
    seq = torch.tensor([ctx + cont])
    with torch.no_grad():
        logp = torch.log_softmax(model(seq[:, :-1]).double(), -1)[0]
    return sum(logp[i, seq[0, i + 1]].item() for i in range(len(ctx) - 1, seq.size(1) - 1))


def test_teacher_must_be_a_finished_cell(tmp_path):
    from research.checks import check_runnable
    from research.errors import UserError

    cfg = RunConfig.from_dict({"data": FACTS, "train": {"forget": {"teacher": str(tmp_path / "nope")}}})
    with pytest.raises(UserError, match=r"train.forget.teacher '.*nope' is not a finished cell folder"):
        check_runnable(cfg, "grid.yaml")
    with pytest.raises(Exception, match="train.forget: needs data.source: facts"):
        RunConfig.from_dict({"train": {"forget": {"weight": 1.0}}})
    with pytest.raises(Exception, match=r"^train.forget.weight: "):
        RunConfig.from_dict({"data": FACTS, "train": {"forget": {"weight": 0}}})


def test_a_cell_trains_with_spans_forgetting_and_the_knowledge_eval(tmp_path):
    """The real runner and Lightning Trainer: masked loss, the forgetting term, the eval's table row."""
    from ablations.run import main
    from research.errors import run_main
    from tests.helpers import write_grid

    grid = write_grid(tmp_path / "g.yaml", name="rk", grid={"train.forget": [{"weight": 1.0, "probes": 2}]},
                      data={**FACTS, "facts_in": "context"},
                      model={"arch": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 96},
                      train={"max_steps": 4, "batch_size": 2, "eval_every": 4, "eval_batches": 1, "log_every": 2,
                             "warmup_steps": 1, "loss_on": "continuation"},
                      eval={"samples": 0, "per_position_every": 0, "tasks": ["knowledge"],
                            "options": {"knowledge": {"limit": 2}}})
    assert run_main(main, [str(grid), "--results-dir", str(tmp_path / "r")]) == 0
    (cell,) = [p for p in (tmp_path / "r" / "rk").iterdir() if (p / "DONE").exists()]
    result = json.loads((cell / "evals" / "knowledge.json").read_text())
    assert result["status"] == "ok" and result["n"] == 12 and result["version"] == 1
    assert set(result["metrics"]) == {"closed_book", "open_book_trained", "open_book_held_out", "counterfactual_follow",
                                      "counterfactual_recall", "multihop_closed", "multihop_open_held_out"}
    assert "train/forget" in (cell / "metrics.csv").read_text().splitlines()[0]


def test_knowledge_figure_draws_one_line_per_setting(tmp_path, monkeypatch):
    from paper import knowledge
    from paper.collect import GridRecord, PaperCell

    cells = []
    for regime in ("weights", "context"):
        for width, params in ((16, 9000), (32, 30000)):
            for seed in (0, 1):
                metrics = {"params": params, **{k: 0.1 * seed + (0.5 if regime == "context" else 0.1)
                                                for k, _ in knowledge.SCORES}}
                cells.append(PaperCell("rk", f"{regime}{width}s{seed}", "", seed, "done", metrics,
                                        axes={"model.n_embd": width, "data.facts_in": regime}))
    grid = GridRecord("rk", tmp_path, ["model.n_embd", "data.facts_in"], "", cells)
    drawn = []
    real = knowledge.plt.Axes.errorbar
    monkeypatch.setattr(knowledge.plt.Axes, "errorbar",
                        lambda ax, x, y, **kw: drawn.append((tuple(x), tuple(y))) or real(ax, x, y, **kw))
    assert knowledge.knowledge_vs_params([grid], tmp_path) == "knowledge_vs_params"
    assert (tmp_path / "knowledge_vs_params.png").exists()
    assert len(drawn) == 2 * 4  # two settings x four panels, each over the two sizes
    assert drawn[0][0] == (9000.0, 30000.0) and drawn[0][1] == pytest.approx((0.15, 0.15))  # mean of seeds
    assert knowledge.knowledge_vs_params([GridRecord("rk", tmp_path, [], "", [])], tmp_path) is None


def test_the_teacher_is_a_frozen_finished_cell_with_the_same_tokenizer(tmp_path):
    from research.errors import ConfigError
    from research.forget import load_teacher
    from research.tokenizers.char import CharTokenizer
    from tests.helpers import store_untrained_cell

    raw = {"data": {**FACTS, "facts_in": "weights"}, "tokenizer": {"kind": "char"},
           "model": {"arch": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 96}}
    cell_dir, _, tok, _ = store_untrained_cell(tmp_path, raw)
    cfg = RunConfig.from_dict({**raw, "train": {"forget": {"teacher": str(cell_dir)}}})
    with pytest.raises(ConfigError, match="is not a finished cell folder"):
        load_teacher(cfg, tok)
    (cell_dir / "DONE").write_text("done\n")
    teacher = load_teacher(cfg, tok)
    assert not any(p.requires_grad for p in teacher.parameters())
    with pytest.raises(ConfigError, match="has another tokenizer"):
        load_teacher(cfg, CharTokenizer(list("abc")))
