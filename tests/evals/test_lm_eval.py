"""The lm-eval adapter with the real lm-evaluation-harness: local tasks by hand, every architecture
kind, the same decisions as the harness's own HellaSwag and BLiMP evals, and the CLI on a stored cell."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from evals import blimp, hellaswag
from evals.base import EvalContext
from evals.scoring import read_jsonl, score_continuations, seeded_subset
from research.config import RunConfig, TokenizerConfig
from research.errors import ConfigError, run_main
from research.models.gpt import GPT
from research.models.rnn import LSTM
from research.tokenizers.bpe import BPETokenizer
from research.tokenizers.char import CharTokenizer
from tests.evals.lookup_model import LookupModel, random_table
from tests.helpers import store_untrained_cell

lm_eval = pytest.importorskip("lm_eval")
from lm_eval.api.instance import Instance  # noqa: E402

from evals.lm_eval import LmEvalOptions, cell_lm_class, evaluate, main, run_tasks  # noqa: E402

TOK = CharTokenizer(list(" ab"))  # ids: EOT 0, <unk> 1, ' ' 2, a 3, b 4
ID = {c: i for i, c in enumerate(TOK.itos)}


def ctx_for(model, tokenizer=TOK):
    return EvalContext(model=model, tokenizer=tokenizer, config=RunConfig.from_dict({}))


def text_logp(model: LookupModel, text: str, first: str = "<|endoftext|>") -> float:
    """log p(text | first) under the bigram table, by hand."""
    ids = [ID[first]] + [ID[c] for c in text]
    return sum(model.logp(a, b) for a, b in zip(ids, ids[1:]))


def write_tasks(folder):
    """Three local tasks, one per lm-eval request type, reading JSON Lines files written here."""
    mc = [{"ctx": "a", "choices": ["b", "a b"], "label": 0}, {"ctx": "b a", "choices": ["a", "bb"], "label": 1},
          {"ctx": "ab", "choices": ["ba", "b", "a"], "label": 2}]
    rolling = [{"text": "ab ba"}, {"text": "b aab"}]
    gen = [{"prompt": "a", "answer": "b"}, {"prompt": "b", "answer": "b"}]
    tasks = {
        "tiny_mc": (mc, {"output_type": "multiple_choice", "doc_to_text": "ctx", "doc_to_choice": "choices",
                         "doc_to_target": "label", "metric_list": [{"metric": "acc"}, {"metric": "acc_norm"}]}),
        "tiny_rolling": (rolling, {"output_type": "loglikelihood_rolling", "doc_to_text": "", "doc_to_target": "text",
                                   "metric_list": [{"metric": "word_perplexity"}, {"metric": "bits_per_byte"}]}),
        "tiny_gen": (gen, {"output_type": "generate_until", "doc_to_text": "prompt", "doc_to_target": "answer",
                           "generation_kwargs": {"until": [" a"], "max_gen_toks": 10, "do_sample": False},
                           "metric_list": [{"metric": "exact_match"}]}),
    }
    for name, (rows, cfg) in tasks.items():
        data = folder / f"{name}.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        cfg = {"task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
               "test_split": "test", **cfg, "metadata": {"version": 3.0}}
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    return mc, rolling, gen


def greedy_table():
    """Most likely next token: EOT -> a, a -> b, b -> ' ', ' ' -> a (other entries random but lower)."""
    table = random_table(TOK.vocab_size, seed=3)
    for a, b in ((0, 3), (3, 4), (4, 2), (2, 3)):
        table[a, b] = 20.0
    return table


def test_local_tasks_of_every_request_type_by_hand(tmp_path):
    mc, rolling, gen = write_tasks(tmp_path)
    model = LookupModel(greedy_table())
    res = evaluate(ctx_for(model), {"tasks": ["tiny_mc", "tiny_rolling", "tiny_gen"], "include_path": str(tmp_path)})
    # multiple choice: lm-eval scores " " + choice after the context; acc_norm divides by characters
    acc, acc_norm = [], []
    for doc in mc:
        ll = np.array([text_logp(model, " " + c, first=doc["ctx"][-1]) for c in doc["choices"]])
        acc.append(float(np.argmax(ll) == doc["label"]))
        acc_norm.append(float(np.argmax(ll / np.array([len(c) for c in doc["choices"]])) == doc["label"]))
    assert res.metrics["tiny_mc/acc"] == pytest.approx(np.mean(acc))
    assert res.metrics["tiny_mc/acc_norm"] == pytest.approx(np.mean(acc_norm))
    assert 0 < np.mean(acc) < 1  # the items are not all decided the same way
    # rolling: every token after EOT scored once; lm-eval pools nats over all documents' bytes
    nats = -sum(text_logp(model, d["text"]) for d in rolling)
    n_bytes = sum(len(d["text"].encode()) for d in rolling)
    assert res.metrics["tiny_rolling/bits_per_byte"] == pytest.approx(nats / n_bytes / math.log(2), rel=1e-5)
    assert res.metrics["tiny_rolling/word_perplexity"] == pytest.approx(math.exp(nats / 4), rel=1e-5)
    # greedy generation from "a": b, ' ', a ... stopped at the first " a" and cut there -> "b"
    # (from "b": ' ', a -> "" -> wrong)
    assert res.metrics["tiny_gen/exact_match"] == 0.5
    assert res.details["lm_eval_version"] == lm_eval.__version__
    assert res.details["task_versions"] == {"tiny_mc": 3.0, "tiny_rolling": 3.0, "tiny_gen": 3.0}
    assert res.details["n_samples"] == {"tiny_mc": 3, "tiny_rolling": 2, "tiny_gen": 2} and res.n == 7
    assert res.stderr["tiny_mc/acc"] > 0


def requests(kind: str, args: list[tuple]) -> list[Instance]:
    return [Instance(request_type=kind, doc={}, arguments=a, idx=i) for i, a in enumerate(args)]


def test_rolling_windows_score_every_token_once_whatever_the_block_size():
    table = random_table(TOK.vocab_size, seed=1)
    texts = ["abba ab", "a", "b b b a a"]
    expected = [text_logp(LookupModel(table), t) for t in texts]
    for block_size in (None, 1, 2, 3, 64):
        lm = cell_lm_class()(LookupModel(table, block_size=block_size), TOK, batch_size=2)
        got = lm.loglikelihood_rolling(requests("loglikelihood_rolling", [(t,) for t in texts]), disable_tqdm=True)
        assert got == pytest.approx(expected, abs=1e-4), block_size


def plain_loglikelihood(model, ids: list[int], n_cont: int, block_size: int | None) -> float:
    """A plain PyTorch loop: one forward over the last block_size inputs (lm-eval's HF model truncates
    the same way), the last n_cont tokens scored."""
    inputs = ids[:-1] if block_size is None else ids[:-1][-block_size:]
    with torch.no_grad():
        logp = F.log_softmax(model(torch.tensor([inputs]))[0].double(), -1)
    return sum(logp[len(inputs) - n_cont + k, ids[len(ids) - n_cont + k]].item() for k in range(n_cont))


@pytest.mark.parametrize("arch", ["gpt", "lstm"])
def test_loglikelihood_of_transformers_and_recurrent_models_matches_a_plain_loop(arch):
    tok = CharTokenizer(list(" abcdefgh"))
    torch.manual_seed(0)
    model = (GPT(GPT.tiny_config(), tok.vocab_size) if arch == "gpt" else LSTM(LSTM.tiny_config(), tok.vocab_size))
    model.eval()
    lm = cell_lm_class()(model, tok, batch_size=3)
    long_ctx = "abc defg hab " * 5  # 65 characters: longer than the GPT's block_size of 32
    pairs = [("", "abc"), ("ab", " cd"), ("a b ", "gh"), (long_ctx, "ab cd")]
    got = lm.loglikelihood(requests("loglikelihood", pairs), disable_tqdm=True)
    for (context, cont), (ll, _) in zip(pairs, got):
        if context.endswith(" "):  # lm-eval moves trailing spaces to the continuation
            context, cont = context.rstrip(" "), " " + cont
        ids = [tok.eot_id] + tok.encode(context + cont) if not context else tok.encode(context + cont)
        assert ll == pytest.approx(plain_loglikelihood(model, ids, len(cont), model.block_size), abs=1e-4)


def test_harness_hellaswag_and_blimp_decide_as_lm_eval_on_the_same_items(shared_data, tmp_path):
    """The harness's evals against lm-eval's own `hellaswag` and `blimp_*` tasks (read from local files)."""
    hs_docs = read_jsonl(shared_data / "hellaswag" / "hellaswag.jsonl.gz")[:24]
    hs_file = tmp_path / "hellaswag.jsonl"
    hs_file.write_text("".join(json.dumps(d) + "\n" for d in hs_docs))
    pairs = read_jsonl(shared_data / "blimp" / "anaphor_number_agreement.jsonl.gz")
    text = " ".join(e for d in hs_docs for e in d["endings"]) + " ".join(p["sentence_good"] for p in pairs[:200])
    tok = BPETokenizer.train(TokenizerConfig(kind="bpe", vocab_size=400), [text])
    torch.manual_seed(0)
    model = GPT(GPT.tiny_config(), tok.vocab_size).eval()
    blimp_file = shared_data / "blimp" / "anaphor_number_agreement.jsonl.gz"
    opts = LmEvalOptions(tasks=["hellaswag", "blimp_anaphor_number_agreement"], limit=60,
                         data={"hellaswag": str(hs_file), "blimp_anaphor_number_agreement": str(blimp_file)})
    raw = run_tasks(model, tok, opts, log_samples=True)
    theirs = {s["doc_id"]: s for s in raw["samples"]["hellaswag"]}
    assert sorted(theirs) == seeded_subset(24, 60, 0) == list(range(24))
    items = [hellaswag.to_item(d) for d in hs_docs]
    ours = hellaswag.score_items(model, tok, items, batch_size=7)
    our_ll = score_continuations(model, tok, [(it.query, " " + e) for it in items for e in it.endings])
    for i in range(24):
        assert [theirs[i]["acc"], theirs[i]["acc_norm"]] == [ours["acc"][i], ours["acc_norm"][i]]
        their_ll = [r[0] for r in theirs[i]["filtered_resps"]]
        assert their_ll == pytest.approx([s.logprob for s in our_ll[4 * i : 4 * i + 4]], abs=1e-4)
    assert raw["results"]["hellaswag"]["acc,none"] == pytest.approx(np.mean(ours["acc"]))

    bl = {s["doc_id"]: s for s in raw["samples"]["blimp_anaphor_number_agreement"]}
    ids = seeded_subset(1000, 60, 0)
    assert sorted(bl) == ids
    ours_bl = blimp.pair_scores(model, tok, [pairs[i] for i in ids], batch_size=16)
    assert [bl[i]["acc"] for i in ids] == list(ours_bl)
    good, bad = blimp.pair_logprobs(model, tok, [pairs[i] for i in ids])
    for k, i in enumerate(ids):
        assert [r[0] for r in bl[i]["filtered_resps"]] == pytest.approx([good[k], bad[k]], abs=1e-4)


@pytest.fixture
def stored_cell(tmp_path):
    return store_untrained_cell(tmp_path, {"data": {"source": "builtin", "n_docs": 40}, "tokenizer": {"kind": "char"},
                                           "model": {"arch": "gru", "n_layer": 1, "n_embd": 16}})[0]


def test_cli_stores_the_result_in_the_cell_and_errors_are_one_line(stored_cell, tmp_path, capsys):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    write_tasks(tasks)
    assert main([str(stored_cell), "--tasks", "tiny_mc", "--include-path", str(tasks), "--device", "cpu"]) == 0
    stored = json.loads((stored_cell / "evals" / "lm_eval.json").read_text())
    assert stored["name"] == "lm_eval" and stored["status"] == "ok" and stored["n"] == 3
    assert set(stored["metrics"]) == {"tiny_mc/acc", "tiny_mc/acc_norm"}
    assert stored["details"]["lm_eval_version"] == lm_eval.__version__
    assert "tiny_mc/acc = " in capsys.readouterr().out
    assert run_main(main, [str(stored_cell), "--tasks", "tiny_mc", "--data", "hellaswag=x.jsonl"]) == 2
    assert "hellaswag is not in tasks" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="hellaswag is not in tasks"):
        evaluate(ctx_for(LookupModel(greedy_table())), {"tasks": ["tiny_mc"], "data": {"hellaswag": "x"}})
