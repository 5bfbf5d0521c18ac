"""BLiMP: pair accuracy by hand with a lookup-table model, the tie rule, grouping, real files."""

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
    # passive_1: right, right, wrong, tie -> (1 + 1 + 0 + 0.5) / 4 = 0.625
    write_paradigm(tmp_path, "passive_1", "syntax", "argument_structure",
                   [("aa", "ab"), ("a a", "b b"), ("ab", "aa"), ("ab", "ab")])
    # principle_A_case_2 (the release spells its field syntax/semantics): right, right -> 1.0
    write_paradigm(tmp_path, "principle_A_case_2", "syntax/semantics", "binding", [("a", "b"), ("aaa", "bab")])
    (tmp_path / "models_summary.jsonl").write_text('{"UID": "overall"}\n')  # not a paradigm: ignored
    res = blimp.evaluate(ctx_for(b_is_rare()), {"path": str(tmp_path)})
    assert res.metrics["acc/passive_1"] == 0.625
    assert res.metrics["acc/principle_A_case_2"] == 1.0
    assert res.metrics["acc"] == pytest.approx((0.625 + 1.0) / 2)  # mean over paradigms
    assert res.details["acc_pairs"] == pytest.approx(4.5 / 6)  # pooled over pairs
    assert res.metrics["acc/field/syntax"] == 0.625
    assert res.metrics["acc/field/syntax_semantics"] == 1.0
    assert res.metrics["acc/phenomenon/binding"] == 1.0
    assert res.details["ties"] == 1 and res.n == 6
    assert res.stderr["acc"] == pytest.approx(math.sqrt(0.75 * 0.25 / 6))


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
    assert list(scores[:2]) == [0.5, 0.5]  # identical sentences always tie, whatever the batching


def test_offline_without_a_path_names_the_option():
    with pytest.raises(DataError, match="eval.options.blimp.path"):
        blimp.evaluate(ctx_for(b_is_rare()), {"paradigms": ["passive_1"]})
