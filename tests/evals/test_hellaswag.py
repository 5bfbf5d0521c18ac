"""HellaSwag: lm-eval's query/ending preprocessing on real items, acc vs acc_norm by hand, subsets."""

from __future__ import annotations

import json
import math

import pytest
import torch

from evals import hellaswag
from evals.base import EvalContext
from evals.hellaswag import Item, preprocess, score_items, to_item
from evals.scoring import read_jsonl
from research.config import RunConfig
from research.errors import DataError
from research.models.gpt import GPT
from research.tokenizers.char import CharTokenizer
from tests.evals.lookup_model import LookupModel

TOK = CharTokenizer(list(" ab"))  # ids: EOT 0, <unk> 1, ' ' 2, a 3, b 4


def ctx_for(model, tokenizer):
    return EvalContext(model=model, tokenizer=tokenizer, config=RunConfig.from_dict({}))


def test_acc_sums_and_acc_norm_divides_by_ending_characters():
    # Uniform next-token distribution: every token costs log 5 nats, so the log-likelihood of
    # " b" is -2 log 5 and of " aaaa" is -5 log 5. acc picks the shorter ending (0); acc_norm
    # divides by len("b") = 1 and len("aaaa") = 4: -2 log 5 < -1.25 log 5, so it picks ending 1.
    # (Dividing by the lengths with the leading space, 2 and 5, would tie them.)
    model = LookupModel(torch.zeros(TOK.vocab_size, TOK.vocab_size))
    out = score_items(model, TOK, [Item("a", ["b", "aaaa"], 1), Item("a", ["b", "aaaa"], 0)])
    assert out["acc"] == [0.0, 1.0]
    assert out["acc_norm"] == [1.0, 0.0]


def test_token_normalised_accuracy_divides_by_token_count():
    # Logits 0 for 'a' and ' ', -1 for 'b', -30 elsewhere, whatever the previous token:
    # log p(a) = log p(' ') = -log(2 + e^-1) = -0.862, log p(b) = -1.862.
    # " b": -2.724 in 2 tokens (-1.362 each); " aaaa": -4.31 in 5 tokens (-0.862 each).
    table = torch.full((TOK.vocab_size, TOK.vocab_size), -30.0)
    table[:, [2, 3]] = 0.0
    table[:, 4] = -1.0
    model = LookupModel(table)
    la = -math.log(2 + math.exp(-1))
    assert model.logp(0, 3) == pytest.approx(la, abs=1e-5)
    out = score_items(model, TOK, [Item("a", ["b", "aaaa"], 1)])
    assert out == {"acc": [0.0], "acc_norm": [1.0], "acc_norm_tokens": [1.0]}
    out = score_items(model, TOK, [Item("a", ["bbbb", "aaaa"], 1)])  # same length: every rule agrees
    assert out == {"acc": [1.0], "acc_norm": [1.0], "acc_norm_tokens": [1.0]}


def test_preprocess_on_a_real_wikihow_item(shared_data):
    docs = read_jsonl(shared_data / "hellaswag" / "hellaswag.jsonl.gz")
    doc = next(d for d in docs if d["ind"] == 670)
    item = to_item(doc)
    assert item.query == (
        "Sports and Fitness: How to bowl the leg spinner's variations. To bowl a googly, you grip the ball the same "
        "as you would for a leg break but hold it so your palm faces away from you. As you bowl, you bring your elbow "
        "close to your head and cock your wrist so that back of your hand faces the batsman. You spin the ball by "
        "rotating the fingers."
    )
    # lm-eval keeps the space left where a leading "[title]" was removed, and " [title]" -> ". "
    assert item.endings[0] == (" If you're outside, the batsman only looks at the batsman as they dribble.. "
                               "If you're inside, the batsman lets you line up the batsman with you.")
    assert item.label == 2
    assert preprocess("  a [step] b [title] c ") == "a b. c"


def test_release_format_capitalises_ctx_b_and_matches_the_simplified_file(shared_data):
    orig = read_jsonl(shared_data / "hellaswag" / "hellaswag.jsonl.gz")
    doc = next(d for d in orig if d["source_id"].startswith("activitynet") and d["ctx_b"])
    with open(shared_data / "hellaswag" / "hellaswag_val.jsonl") as f:
        simple = next(json.loads(line) for line in f if json.loads(line)["endings"] == doc["endings"])
    ours, theirs = to_item(doc), to_item(simple)
    assert ours.query == doc["activity_label"] + ": " + doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
    assert ours.query.lower() == theirs.query.lower() and ours.query != theirs.query
    assert ours.endings == theirs.endings and ours.label == theirs.label


def tiny_char_setup(docs):
    items = [to_item(d) for d in docs]
    tok = CharTokenizer(sorted({c for it in items for c in it.query + "".join(it.endings) + " "}))
    torch.manual_seed(0)
    return items, tok, GPT(GPT.tiny_config(), tok.vocab_size).eval()


def test_batch_size_does_not_change_predictions(shared_data):
    docs = read_jsonl(shared_data / "hellaswag" / "hellaswag.jsonl.gz")[:12]
    items, tok, model = tiny_char_setup(docs)
    runs = [score_items(model, tok, items, batch_size=bs) for bs in (1, 5, 64)]
    assert runs[0] == runs[1] == runs[2]


def test_local_folder_limit_is_a_seeded_random_sample(shared_data):
    folder = shared_data / "hellaswag"
    assert len(hellaswag.load_items(hellaswag.HellaSwagOptions(path=str(folder)))) == 10042
    assert hellaswag.seeded_subset(10042, 5, 0) == hellaswag.seeded_subset(10042, 5, 0)
    assert hellaswag.seeded_subset(10042, 5, 0) != list(range(5))
    assert hellaswag.seeded_subset(10042, 5, 0) != hellaswag.seeded_subset(10042, 5, 1)
    docs = read_jsonl(folder / "hellaswag.jsonl.gz")
    _, tok, model = tiny_char_setup(docs[:50])
    res = hellaswag.evaluate(ctx_for(model, tok), {"path": str(folder / "hellaswag.jsonl.gz"), "limit": 8,
                                                   "batch_size": 16})
    assert res.n == 8 and res.status == "ok"
    assert set(res.metrics) == {"acc", "acc_norm", "acc_norm_tokens"}
    assert res.stderr["acc"] == pytest.approx(math.sqrt(res.metrics["acc"] * (1 - res.metrics["acc"]) / 8))
    assert res.details["format"] == "original" and "warning" not in res.details
    assert res.details["matches"].startswith("lm-evaluation-harness")


def test_simplified_file_says_it_cannot_give_lm_evals_number(shared_data, tmp_path):
    with open(shared_data / "hellaswag" / "hellaswag_val.jsonl") as f:
        lines = [next(f) for _ in range(4)]
    simple = tmp_path / "hs.jsonl"
    simple.write_text("".join(lines))
    items, tok, model = tiny_char_setup([json.loads(line) for line in lines])
    res = hellaswag.evaluate(ctx_for(model, tok), {"path": str(simple)})
    assert res.status == "ok" and res.n == 4
    assert res.details["format"] == "simplified" and res.details["matches"] is None
    assert "not lm-eval's hellaswag numbers" in res.details["warning"]


def test_offline_without_a_path_names_the_option():
    with pytest.raises(DataError, match="eval.options.hellaswag.path"):
        hellaswag.evaluate(ctx_for(LookupModel(torch.zeros(5, 5)), TOK), {})


def test_bad_local_file_is_a_data_error(tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text('{"question": "?"}\n')
    with pytest.raises(DataError, match="not a HellaSwag item"):
        hellaswag.load_items(hellaswag.HellaSwagOptions(path=str(f)))
