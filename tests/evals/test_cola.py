"""CoLA: MCC on known labels, the zero-shot threshold and the probe on separable toy data, real files."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from evals import cola
from evals.base import EvalContext
from research.config import RunConfig
from research.errors import DataError
from research.models.gpt import GPT
from research.tokenizers.char import CharTokenizer
from tests.evals.lookup_model import LookupModel

TOK = CharTokenizer(list(" ab"))  # ids: EOT 0, <unk> 1, ' ' 2, a 3, b 4


def ctx_for(model, tokenizer=TOK):
    return EvalContext(model=model, tokenizer=tokenizer, config=RunConfig.from_dict({}))


def test_mcc_on_known_labels():
    # tp 1, tn 2, fp 0, fn 1: (1*2 - 0*1) / sqrt(1 * 2 * 3 * 2)
    assert cola.matthews_corrcoef([1, 1, 0, 0], [1, 0, 0, 0]) == pytest.approx(2 / math.sqrt(12))
    assert cola.matthews_corrcoef([1, 0, 1, 0], [1, 0, 1, 0]) == 1.0
    assert cola.matthews_corrcoef([1, 0, 1, 0], [0, 1, 0, 1]) == -1.0
    assert cola.matthews_corrcoef([1, 0, 1, 0], [1, 1, 1, 1]) == 0.0  # a constant answer: 0, not nan


def test_threshold_maximises_training_mcc():
    assert cola.best_threshold([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == pytest.approx(0.5)
    cut = cola.best_threshold([0.1, 0.2, 0.8, 0.9, 0.15], [0, 0, 1, 1, 1])  # one outlier: still 0.5 is best
    assert cut == pytest.approx(0.5)
    assert cola.best_threshold([3.0, 3.0], [1, 0]) < 3.0


def write_release(folder, rng):
    """Acceptable sentences are all a's, unacceptable ones contain b's: separable by log-prob and features."""
    def rows(n):
        out = []
        for _ in range(n):
            good = rng.random() < 0.7
            words = ["a" * int(rng.integers(1, 4)) for _ in range(int(rng.integers(2, 5)))]
            if not good:
                words[int(rng.integers(len(words)))] = "bb"
            out.append(f"src\t{int(good)}\t{'' if good else '*'}\t{' '.join(words)}\n")
        return "".join(out)

    folder.mkdir()
    for name, n in (("in_domain_train", 60), ("in_domain_dev", 20), ("out_of_domain_dev", 20)):
        (folder / f"{name}.tsv").write_text(rows(n))


def b_is_rare():
    table = torch.zeros(TOK.vocab_size, TOK.vocab_size)
    table[:, 4] = -5.0
    return LookupModel(table)


@pytest.mark.parametrize("protocol", ["zero_shot", "probe"])
def test_both_protocols_separate_separable_data(tmp_path, protocol):
    write_release(tmp_path / "raw", np.random.default_rng(0))
    res = cola.evaluate(ctx_for(b_is_rare()), {"path": str(tmp_path), "protocol": protocol})
    assert res.status == "ok" and res.n == 40
    for key in ("mcc", "acc", "mcc_in_domain", "acc_in_domain", "mcc_out_of_domain", "acc_out_of_domain"):
        assert res.metrics[key] == 1.0, key
    assert res.details["protocol"] == protocol
    if protocol == "zero_shot":  # log-prob per token of an all-a sentence is about -log(4 + e^-5)
        assert -math.log(4) > res.details["threshold_nats_per_token"] > -3.0


def test_real_release_files(shared_data):
    splits = cola.load_splits(cola.ColaOptions(path=str(shared_data / "cola")))  # finds raw/ below
    counts = {k: (len(s.sentences), int(s.labels.sum()), int((s.labels == 0).sum())) for k, s in splits.items()}
    assert counts == {"train": (8551, 6023, 2528), "in_domain": (527, 365, 162), "out_of_domain": (516, 354, 162)}
    tok = CharTokenizer(sorted({c for s in splits.values() for t in s.sentences for c in t}))
    torch.manual_seed(0)
    model = GPT(GPT.tiny_config(), tok.vocab_size).eval()
    res = cola.evaluate(ctx_for(model, tok), {"path": str(shared_data / "cola" / "raw"), "train_limit": 300})
    assert res.n == 1043 and res.details["train_sentences"] == 300
    assert res.details["majority_acc"] == pytest.approx(719 / 1043)
    assert -1.0 <= res.metrics["mcc"] <= 1.0 and 0.0 <= res.metrics["acc"] <= 1.0


def test_missing_files_and_offline_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="in_domain_train.tsv"):
        cola.evaluate(ctx_for(b_is_rare()), {"path": str(tmp_path)})
    with pytest.raises(DataError, match="eval.options.cola.path"):
        cola.evaluate(ctx_for(b_is_rare()), {})
