"""BLiMP: lm-eval's pair accuracy by hand with a lookup-table model (leading space, tie rule), grouping, real files."""

from __future__ import annotations

import json
import math

import pytest
import torch

from evals import blimp
from evals.base import EvalContext
from research.config import RunConfig
from research.errors import ConfigError, DataError
from research.models.gpt import GPT
from research.tokenizers.char import CharTokenizer
from tests.evals.lookup_model import LookupModel

TOK = CharTokenizer(list(" ab"))  # ids: EOT 0, <unk> 1, ' ' 2, a 3, b 4


def ctx_for(model, tokenizer=TOK):
    return EvalContext(model=model, tokenizer=tokenizer, config=RunConfig.from_dict({}))


def b_is_rare():
    """Every next token is 'a' or ' ' with high probability, 'b' with low: more b's, lower log-prob."""
    table = torch.zeros(TOK.vocab_size, TOK.vocab_size)
    table[:, 4] = -5.0
    return LookupModel(table)


def write_paradigm(folder, uid, field, term, pairs):
    rows = [{"sentence_good": g, "sentence_bad": b, "field": field, "linguistics_term": term, "UID": uid,
             "pairID": str(i)} for i, (g, b) in enumerate(pairs)]
    (folder / f"{uid}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_accuracy_ties_and_groups_by_hand(tmp_path):
    # passive_1: right, right, wrong, tie (right under lm-eval's argmax) -> 3 / 4 = 0.75
    write_paradigm(tmp_path, "passive_1", "syntax", "argument_structure",
                   [("aa", "ab"), ("a a", "b b"), ("ab", "aa"), ("ab", "ab")])
    # principle_A_case_2 (the release spells its field syntax/semantics): right, right -> 1.0
    write_paradigm(tmp_path, "principle_A_case_2", "syntax/semantics", "binding", [("a", "b"), ("aaa", "bab")])
    (tmp_path / "models_summary.jsonl").write_text('{"UID": "overall"}\n')  # not a paradigm: ignored
    res = blimp.evaluate(ctx_for(b_is_rare()), {"path": str(tmp_path)})
    assert res.metrics["acc/passive_1"] == 0.75
    assert res.metrics["acc/principle_A_case_2"] == 1.0
    assert res.metrics["acc"] == pytest.approx((0.75 + 1.0) / 2)  # mean over paradigms
    assert res.details["acc_pairs"] == pytest.approx(5 / 6)  # pooled over pairs
    assert res.metrics["acc/field/syntax"] == 0.75
    assert res.metrics["acc/field/syntax_semantics"] == 1.0
    assert res.metrics["acc/phenomenon/binding"] == 1.0
    assert res.details["ties"] == 1 and res.n == 6
    assert res.stderr["acc"] == pytest.approx(math.sqrt(5 / 6 * 1 / 6 / 6))
    assert "acc_doc_start" not in res.metrics
    # acc_doc_start keeps version 1's tie rule: the tie is half right -> (1 + 1 + 0 + 0.5) / 4 and 1.0
    res = blimp.evaluate(ctx_for(b_is_rare()), {"path": str(tmp_path), "doc_start": True})
    assert res.metrics["acc_doc_start"] == pytest.approx((0.625 + 1.0) / 2)


def test_sentences_are_scored_with_lm_evals_leading_space(tmp_path):
    # After end-of-text 'b' is likely and 'a' unlikely; after a space it is the other way round.
    # lm-eval scores " a" against " b" (EOT, ' ', then the letter): the good sentence "a" wins.
    # Scored as a document starts (EOT, then the letter) the bad sentence "b" would win.
    table = torch.zeros(TOK.vocab_size, TOK.vocab_size)
    table[0, 3], table[0, 4] = -4.0, 2.0
    table[2, 3], table[2, 4] = 2.0, -4.0
    model = LookupModel(table)
    write_paradigm(tmp_path, "passive_1", "syntax", "argument_structure", [("a", "b")])
    good = model.logp(0, 2) + model.logp(2, 3)
    bad = model.logp(0, 2) + model.logp(2, 4)
    assert good > bad and model.logp(0, 3) < model.logp(0, 4)
    got_good, got_bad = blimp.pair_logprobs(model, TOK, [{"sentence_good": "a", "sentence_bad": "b"}])
    assert (got_good[0], got_bad[0]) == (pytest.approx(good, abs=1e-5), pytest.approx(bad, abs=1e-5))
    res = blimp.evaluate(ctx_for(model), {"path": str(tmp_path), "doc_start": True})
    assert res.metrics["acc"] == 1.0 and res.metrics["acc_doc_start"] == 0.0


def test_limit_is_per_paradigm_and_paradigms_are_checked(tmp_path):
    write_paradigm(tmp_path, "passive_1", "syntax", "argument_structure", [("aa", "ab")] * 10)
    write_paradigm(tmp_path, "passive_2", "syntax", "argument_structure", [("ab", "aa")] * 10)
    res = blimp.evaluate(ctx_for(b_is_rare()), {"path": str(tmp_path), "limit": 3, "paradigms": ["passive_2"]})
    assert res.n == 3 and res.metrics["acc"] == 0.0 and "acc/passive_1" not in res.metrics
    with pytest.raises(ConfigError, match="unknown passive_9"):
        blimp.evaluate(ctx_for(b_is_rare()), {"path": str(tmp_path), "paradigms": ["passive_9"]})
    with pytest.raises(ConfigError, match="eval.options.blimp.limt"):
        blimp.evaluate(ctx_for(b_is_rare()), {"path": str(tmp_path), "limt": 3})


def test_real_release_files_and_the_identical_pairs(shared_data):
    folder = shared_data / "blimp"
    opts = blimp.BlimpOptions(path=str(folder), paradigms=["passive_1", "principle_A_case_2"])
    data = blimp.load_pairs(opts)
    assert {k: len(v) for k, v in data.items()} == {"passive_1": 1000, "principle_A_case_2": 1000}
    assert sorted(blimp.PARADIGMS) == sorted(p.name.split(".")[0] for p in folder.glob("*.jsonl.gz")
                                            if p.name != "models_summary.jsonl.gz")
    identical = [r for r in data["passive_1"] if r["sentence_good"] == r["sentence_bad"]]
    tok = CharTokenizer(sorted({c for rows in data.values() for r in rows for c in r["sentence_bad"]}))
    torch.manual_seed(0)
    model = GPT(GPT.tiny_config(), tok.vocab_size).eval()
    scores = blimp.pair_scores(model, tok, identical + data["passive_1"][:20], batch_size=7)
    assert [r["pairID"] for r in identical] == ["324", "810"]
    assert list(scores[:2]) == [1.0, 1.0]  # identical sentences always tie, and lm-eval's argmax counts it right
    assert list(blimp.doc_start_scores(model, tok, identical, batch_size=3)) == [0.5, 0.5]


def test_offline_without_a_path_names_the_option():
    with pytest.raises(DataError, match="eval.options.blimp.path"):
        blimp.evaluate(ctx_for(b_is_rare()), {"paradigms": ["passive_1"]})
