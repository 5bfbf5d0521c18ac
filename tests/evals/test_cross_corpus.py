"""Cross-corpus bits per byte against a hand sum; unencodable text counted; options checked early."""

from __future__ import annotations

import math

import pytest

from evals import cross_corpus
from evals.base import EvalContext
from evals.run import check_eval_config
from research.config import RunConfig
from research.errors import ConfigError, UserError
from research.tokenizers.char import CharTokenizer
from tests.evals.lookup_model import LookupModel, random_table


def corpus_dir(root, name: str, val: list[str]) -> str:
    folder = root / name
    folder.mkdir()
    (folder / "train.txt").write_text("|".join(["ab ba", "a b"]))
    (folder / "valid.txt").write_text("|".join(val))
    return str(folder)


def hand_bpb(model, tok, docs: list[str], cut: bool = False) -> float:
    """Every token after a leading end-of-text predicted from its predecessor (a bigram model)."""
    ids = [tok.eot_id]
    for i, d in enumerate(docs):
        ids += tok.encode(d)
        if not (cut and i == len(docs) - 1):
            ids.append(tok.eot_id)
    nats = -sum(model.logp(p, n) for p, n in zip(ids[:-1], ids[1:]))
    n_bytes = sum(len(d.encode("utf-8")) for d in docs) + len(docs) - int(cut)
    return nats / math.log(2) / n_bytes


@pytest.fixture
def setup(tmp_path):
    tok = CharTokenizer(list(" abé"))
    model = LookupModel(random_table(tok.vocab_size, seed=1), block_size=8)
    own = corpus_dir(tmp_path, "own", ["ab a", "bé ba b"])
    other = corpus_dir(tmp_path, "other", ["aZb!", "ab"])  # Z and ! are not in the vocabulary
    options = {"corpora": {"own": {"source": "file", "path": own, "separator": "|"},
                           "other": {"source": "file", "path": other, "separator": "|"}}}
    ctx = EvalContext(model=model, tokenizer=tok, config=RunConfig.from_dict({"train": {"seq_len": 5}}))
    return ctx, model, tok, options


def test_bits_per_byte_match_a_hand_sum(setup):
    ctx, model, tok, options = setup
    res = cross_corpus.evaluate(ctx, options)
    assert res.status == "ok"
    assert res.metrics["own_bpb"] == pytest.approx(hand_bpb(model, tok, ["ab a", "bé ba b"]), rel=1e-6)
    own = res.details["corpora"]["own"]
    assert own["bytes"] == 4 + 8 + 2  # "é" is two UTF-8 bytes; one byte per end-of-text
    assert own["tokens"] == 4 + 7 + 2
    assert res.metrics["own_unk_share"] == 0 and res.metrics["n_failed"] == 0


def test_unseen_characters_are_scored_as_unk_and_counted(setup):
    ctx, model, tok, options = setup
    res = cross_corpus.evaluate(ctx, options)
    assert res.metrics["other_bpb"] == pytest.approx(hand_bpb(model, tok, ["aZb!", "ab"]), rel=1e-6)
    other = res.details["corpora"]["other"]
    assert other["unk_tokens"] == 2 and other["unseen"] == ["!", "Z"]
    assert res.metrics["other_unk_share"] == pytest.approx(2 / 8)
    assert "other" in res.details["note"] and "own" not in res.details["note"]


def test_byte_cap_cuts_the_last_document_and_charges_no_end_of_text(setup):
    ctx, model, tok, options = setup
    res = cross_corpus.evaluate(ctx, {**options, "max_bytes": 8})  # "ab a" + EOT = 5 bytes, then "bé" = 3
    own = res.details["corpora"]["own"]
    assert own["bytes"] == 8 and own["cut"] and own["docs"] == 2
    assert res.metrics["own_bpb"] == pytest.approx(hand_bpb(model, tok, ["ab a", "bé"], cut=True), rel=1e-6)
    # a cut that falls inside a two-byte character keeps the text before it
    assert cross_corpus.take_bytes(["bé"], 2) == (["b"], True)


def test_missing_corpus_is_counted_not_dropped(setup, tmp_path):
    ctx, model, tok, options = setup
    gone = tmp_path / "gone"
    corpus_dir(tmp_path, "gone", ["ab"])
    options["corpora"]["gone"] = {"source": "file", "path": str(gone), "separator": "|"}
    for f in gone.iterdir():
        f.unlink()
    res = cross_corpus.evaluate(ctx, options)
    assert res.metrics["n_failed"] == 1 and "gone_bpb" not in res.metrics
    assert "no data files" in res.details["corpora"]["gone"]["error"]


def test_options_are_checked_before_training(tmp_path):
    def cfg(options):
        return RunConfig.from_dict({"eval": {"tasks": ["cross_corpus"], "options": {"cross_corpus": options}}}).eval

    with pytest.raises(ConfigError, match="eval.options.cross_corpus.corpora: name at least one corpus"):
        check_eval_config(cfg({}))
    with pytest.raises(ConfigError, match=r"corpora\.ptb\.sorce: unknown key; did you mean 'source'"):
        check_eval_config(cfg({"corpora": {"ptb": {"sorce": "ptb"}}}))
    with pytest.raises(UserError, match="corpora.ptb: data.path '.*nowhere' does not exist"):
        check_eval_config(cfg({"corpora": {"ptb": {"source": "ptb", "path": str(tmp_path / "nowhere")}}}))
    check_eval_config(cfg({"corpora": {"grammar": {"source": "builtin", "n_docs": 20}}}))
