"""Data: sources -> cleaning -> tokenizer -> cached token arrays -> batches."""

from __future__ import annotations

from research.data.corpus import Corpus


def load_corpus(cfg) -> Corpus:
    """The cleaned documents of a data config, in memory (the token cache streams them instead).

    The same splits as the token cache: train capped at `data.max_docs`, an official validation
    split at `data.val_docs` (`data.val_tokens` needs a tokenizer and applies to the cache only).
    """
    from collections import Counter

    from research.data.build import doc_caps, layout, restricted_vocab
    from research.data.cleaning import clean_doc
    from research.data.sources import open_streams

    streams = open_streams(cfg)
    raw, meta, _ = layout(streams, cfg)
    caps = doc_caps(cfg, streams)
    vocab = restricted_vocab(raw["train"], cfg)
    splits, stats = {}, {}
    for name, stream in raw.items():
        counts: Counter = Counter(docs_in=0, docs_out=0)
        docs = []
        for doc in stream():
            doc = clean_doc(doc, cfg.clean, counts, vocab)
            if doc is not None:
                if caps[name] is not None and len(docs) >= caps[name]:
                    break
                docs.append(doc)
        splits[name], stats[name] = docs, dict(counts)
    if cfg.max_docs is not None:
        meta["max_docs"] = cfg.max_docs
    corpus = Corpus(splits["train"], splits["val"], splits.get("test"), {**meta, "cleaning": stats})
    if not corpus.train or not corpus.val:
        raise_empty(cfg, corpus)
    return corpus


def raise_empty(cfg, corpus: Corpus) -> None:
    from research.errors import DataError

    split = "train" if not corpus.train else "val"
    raise DataError(
        f"data.source '{cfg.source}': the {split} split is empty after cleaning "
        f"({corpus.meta.get('cleaning')}); check data.path, data.separator and data.clean"
    )
