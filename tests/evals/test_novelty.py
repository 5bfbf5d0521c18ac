"""Novelty: nearest neighbours on hand-built vectors, the embedding cache, opening removal, n-gram
overlap by hand, and the whole eval with the real sentence-transformer on a copied story."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from evals import novelty
from evals.base import EvalContext
from research import cell as cell_files
from research.config import RunConfig
from research.data.corpus import Corpus
from research.tokenizers.char import CharTokenizer
from tests.evals.lookup_model import LookupModel

TRAIN = [
    "Once upon a time, there was a little cat named Tom. Tom liked to sleep in the warm sun all day long.",
    "Once upon a time there was a big red truck. The truck drove up the hill and honked at the birds.",
    "One day, Lily found a shiny stone in the garden. She showed it to her mom and they both smiled.",
    "Once upon a time, a small fish swam in the blue sea. The fish was looking for a friend to play with.",
]


def test_nearest_on_hand_built_vectors():
    keys = np.array([[1, 0, 0], [0, 2, 0], [0, 0, 3], [1, 1, 0], [-1, 0, 0]], dtype=np.float16)
    queries = np.array([[0, 5, 0], [2, 2.1, 0], [0, 0, -1], [-3, 0, 0.01]], dtype=np.float32)
    sims, idx = novelty.nearest(queries, keys, chunk_size=2)  # three chunks: 2 + 2 + 1
    assert idx.tolist() == [1, 3, 0, 4]
    # cosines: exact match 1; (2, 2.1)/|.| . (1, 1)/sqrt 2; [0,0,-1] is orthogonal to keys 0, 1, 3, 4
    expected = [1.0, (2 + 2.1) / np.sqrt(2 * (4 + 2.1**2)), 0.0, 3 / np.sqrt(9 + 1e-4)]
    assert sims == pytest.approx(expected, abs=1e-6)
    # the chunking does not change the answer
    one_chunk = novelty.nearest(queries, keys, chunk_size=100)
    assert (one_chunk[1] == idx).all() and one_chunk[0] == pytest.approx(sims)
    # ties go to the lower index, across chunk boundaries too
    assert novelty.nearest(np.array([[1.0, 0, 0]]), np.array([[1.0, 0, 0]] * 3), chunk_size=1)[1].tolist() == [0]


class CountingEmbedder:
    """A deterministic stand-in for a sentence embedder (letter counts), counting the texts it embeds."""

    def __init__(self):
        self.seen = 0

    def __call__(self, texts):
        self.seen += len(texts)
        out = np.zeros((len(texts), 26), dtype=np.float32)
        for r, t in enumerate(texts):
            for c in t.lower():
                if "a" <= c <= "z":
                    out[r, ord(c) - 97] += 1
        return out


def test_embedding_cache_is_keyed_by_embedder_and_documents(tmp_path):
    embed = CountingEmbedder()
    docs = [f"doc {i} " + "ab" * i for i in range(10)]
    first = novelty.cached_embeddings(docs, embed, "letters", tmp_path, block=3)  # blocks of 3, 3, 3, 1
    assert embed.seen == 10 and first.dtype == np.float16 and first.shape == (10, 26)
    assert np.allclose(first, embed(docs), atol=0.05)
    files = list((tmp_path / "embeddings").glob("letters-*.npy"))
    assert len(files) == 1 and not list((tmp_path / "embeddings").glob(".*"))  # no temporary left behind
    embed.seen = 0
    again = novelty.cached_embeddings(docs, embed, "letters", tmp_path, block=3)
    assert embed.seen == 0 and np.array_equal(again, first)  # read back, nothing embedded
    novelty.cached_embeddings(docs[:9], embed, "letters", tmp_path)  # another list: another file
    novelty.cached_embeddings(docs, embed, "other-model", tmp_path)  # another embedder: another file
    assert embed.seen == 19 and len(list((tmp_path / "embeddings").glob("*.npy"))) == 3
    in_memory = novelty.cached_embeddings(docs, embed, "letters", None, block=4)
    assert np.array_equal(in_memory, first)


def test_shared_opening_found_and_removed():
    opening, share = novelty.shared_opening(TRAIN, 4)
    assert opening == ("once", "upon", "a", "time") and share == pytest.approx(3 / 4)
    assert novelty.strip_opening(TRAIN[0], opening).startswith("there was a little cat")
    assert novelty.strip_opening(TRAIN[1], opening).startswith("there was a big red truck")
    assert novelty.strip_opening(TRAIN[2], opening) == TRAIN[2]  # does not start with it
    assert novelty.strip_opening("Once upon a time.", opening) == ""
    assert novelty.strip_opening("Once upon a", opening) == "Once upon a"
    assert novelty.strip_opening(TRAIN[0], None) == TRAIN[0]


def test_ngram_overlap_by_hand():
    train = ["a b c d e", "x y z", "c d e f"]
    stories = [
        "A b, c d e!",  # 3-grams abc bcd cde: all in doc 0 (case and punctuation ignored)
        "c d e f g",  # cde (doc 0, doc 2), def (doc 2), efg (none): 2 of 3
        "d e x y z",  # dex and exy span two documents, so only xyz counts: 1 of 3
        "q r",  # fewer than 3 words: not scored
    ]
    assert novelty.ngram_overlap(stories, train, n=3, batch_docs=2) == pytest.approx([1.0, 2 / 3, 1 / 3, None])
    assert novelty.ngram_overlap(stories, iter(train), n=3, batch_docs=100)[:3] == pytest.approx([1, 2 / 3, 1 / 3])
    assert novelty.ngram_overlap(["a b c"], [], n=3) == [0.0]


def make_ctx(tmp_path, corpus, model=None, tok=None, **eval_cfg):
    cell = tmp_path / "cell"
    cell.mkdir(parents=True, exist_ok=True)
    return EvalContext(model=model, tokenizer=tok, config=RunConfig.from_dict({"eval": eval_cfg}), cell_dir=cell,
                       load_corpus=lambda: corpus, cache_dir=tmp_path / "_cache")


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_copied_story_has_zero_novelty_and_full_overlap(tmp_path):
    corpus = Corpus(train=TRAIN, val=[])
    ctx = make_ctx(tmp_path, corpus)
    new = "The robot built a rocket from old boxes and flew to the moon to count the craters."
    write_jsonl(ctx.cell_dir / "samples" / "generation.jsonl", [
        {"prompt": "", "completion": TRAIN[1], "text": TRAIN[1]},  # copied from the training set
        {"prompt": "Once upon a time", "completion": " " + new, "text": "Once upon a time " + new},
    ])
    res = novelty.evaluate(ctx, {"ngram": 8})
    ex = res.details["examples"]
    assert res.n == 2 and res.details["stories_from"] == "samples/generation.jsonl"
    assert ex[0]["similarity"] == pytest.approx(1.0, abs=2e-3) and ex[0]["nearest_doc"] == TRAIN[1]
    assert ex[0]["overlap_8gram"] == 1.0 and ex[1]["overlap_8gram"] == 0.0
    assert 1 - ex[1]["similarity"] > 0.3  # a story about something else entirely
    assert res.metrics["overlap_8gram"] == pytest.approx(0.5) and res.metrics["copied_8gram_share"] == 0.5
    assert res.metrics["novelty_p10"] <= res.metrics["novelty_median"] <= res.metrics["novelty_p90"]
    # stripped: the opening "once upon a time" (3 of 4 documents) is removed from both sides
    assert res.details["opening"] == {"words": "once upon a time", "share": 0.75, "removed": True}
    assert ex[0]["stripped_text"].startswith("there was a big red truck")
    assert ex[0]["stripped_similarity"] == pytest.approx(1.0, abs=2e-3)
    assert ex[1]["stripped_text"] == new  # the prompt is gone
    assert res.metrics["novelty_stripped_mean"] > 0
    cached = sorted((tmp_path / "_cache" / "embeddings").glob("*.npy"))
    assert len(cached) == 2  # raw and stripped training sets
    mtimes = [p.stat().st_mtime_ns for p in cached]
    again = novelty.evaluate(ctx, {"ngram": 8})
    assert again.metrics == pytest.approx(res.metrics, abs=1e-6)
    assert [p.stat().st_mtime_ns for p in cached] == mtimes  # read from the cache, not rewritten


def test_stories_from_training_samples_or_generated_now(tmp_path):
    corpus = Corpus(train=TRAIN, val=[])
    ctx = make_ctx(tmp_path, corpus, tok=CharTokenizer(list("ab")))  # a char tokenizer: no separator
    write_jsonl(ctx.cell_dir / "samples" / "samples.jsonl",
                [{"prompt": "", "sample": 0, "text": TRAIN[2], "tokens": 9}])
    res = novelty.evaluate(ctx, {"stripped": False})
    assert res.details["stories_from"] == "samples/samples.jsonl" and "novelty_stripped_mean" not in res.metrics
    assert res.metrics["novelty_mean"] == pytest.approx(0.0, abs=2e-3) and res.metrics["overlap_8gram"] == 1.0

    tok = CharTokenizer(list("ab"))
    table = torch.zeros(tok.vocab_size, tok.vocab_size)
    table[tok.eot_id, tok.stoi["a"]] = table[tok.stoi["a"], tok.stoi["b"]] = table[tok.stoi["b"], tok.eot_id] = 60
    fresh = make_ctx(tmp_path / "x", corpus, LookupModel(table), tok, samples=2)
    res = novelty.evaluate(fresh, {"stripped": False, "generation": {"story_prompts": False}})
    assert res.details["stories_from"] == "generated now (generation eval)" and res.n == 2
    rows = cell_files.read_samples(fresh.cell_dir, "generation")
    assert [r["text"] for r in rows] == ["ab", "ab"]
    assert json.loads((fresh.cell_dir / "evals" / "generation.json").read_text())["n"] == 2
    assert "overlap_8gram" not in res.metrics  # "ab" has fewer than 8 words: not scored, not zero


def test_max_train_docs_is_a_seeded_sample_reported_in_the_metrics(tmp_path):
    train = [f"Story {i}: the {w} went to the market and bought {i} apples." for i, w in
             enumerate(["cat", "dog", "fox", "owl", "bee", "cow", "pig", "hen"] * 3)]
    ctx = make_ctx(tmp_path, Corpus(train=train, val=[]))
    write_jsonl(ctx.cell_dir / "samples" / "generation.jsonl",
                [{"prompt": "", "completion": d, "text": d} for d in train[:6]])
    res = novelty.evaluate(ctx, {"max_train_docs": 5, "stripped": False, "seed": 3})
    keep = sorted(np.random.default_rng(3).choice(len(train), size=5, replace=False).tolist())
    assert res.metrics["train_docs"] == 5
    assert {ex["nearest_doc"] for ex in res.details["examples"]} <= {train[i] for i in keep}
    copied = [ex for ex in res.details["examples"] if ex["text"] in {train[i] for i in keep}]
    assert all(ex["similarity"] == pytest.approx(1.0, abs=2e-3) for ex in copied)


def test_plain_and_stripped_documents_share_one_embedding_pass(tmp_path, monkeypatch):
    """The real embedder sees the training documents once: one encode call holding the 4 plain
    texts and the 3 that stripping changes; scores equal embedding each variant on its own."""
    ctx = make_ctx(tmp_path, Corpus(train=TRAIN, val=[]))
    stories = [TRAIN[1], "Once upon a time, a dog ran to the park to chase the ducks by the pond."]
    write_jsonl(ctx.cell_dir / "samples" / "generation.jsonl",
                [{"prompt": "", "completion": s, "text": s} for s in stories])
    model = novelty.load_embedder(novelty.DEFAULT_EMBEDDER, "cpu")
    calls = []
    encode = model.encode
    monkeypatch.setattr(model, "encode", lambda texts, **kw: calls.append(list(texts)) or encode(texts, **kw))
    res = novelty.evaluate(ctx, {})
    opening = ("once", "upon", "a", "time")
    changed = [novelty.strip_opening(d, opening) for d in TRAIN if novelty.strip_opening(d, opening) != d]
    assert len(changed) == 3
    train_calls = [c for c in calls if TRAIN[0] in c]  # (the stories hold a copy of TRAIN[1])
    assert train_calls == [TRAIN + changed]
    # the reference: each variant embedded on its own, as before, searched with the same exact search
    calls.clear()
    embed = novelty.embed_with(model, 64)
    for prefix, docs, texts in [("novelty", TRAIN, stories),
                                ("novelty_stripped", [novelty.strip_opening(d, opening) for d in TRAIN],
                                 [novelty.strip_opening(s.strip(), opening) for s in stories])]:
        sims, _ = novelty.nearest(embed(texts), np.asarray(embed(docs), dtype=np.float16))
        assert res.metrics[f"{prefix}_mean"] == pytest.approx(float(np.mean(1 - sims)), abs=1e-5)
        assert res.metrics[f"{prefix}_p90"] == pytest.approx(float(np.quantile(1 - sims, 0.9)), abs=1e-5)


def test_embedding_sets_embed_each_distinct_text_once(tmp_path):
    embed = CountingEmbedder()
    plain = [f"the cat {i} " + "xy" * i for i in range(7)]
    other = [d if i % 2 else d.upper() + " changed" for i, d in enumerate(plain)]
    a, b = novelty.cached_embedding_sets([plain, other], embed, "letters", tmp_path, block=3)
    assert embed.seen == 7 + 4  # the 3 shared texts once
    assert np.allclose(a, embed(plain), atol=0.05) and np.allclose(b, embed(other), atol=0.05)
    embed.seen = 0
    assert np.array_equal(novelty.cached_embeddings(other, embed, "letters", tmp_path), b) and embed.seen == 0
    assert not list((tmp_path / "embeddings").glob(".*"))
