"""Data: sources -> cleaning -> tokenizer -> cached token arrays -> batches."""

from __future__ import annotations

from research.data.corpus import Corpus


def load_corpus(cfg) -> Corpus:
    """The cleaned documents of a data config (train capped at `data.max_docs`)."""
    from research.data.cleaning import clean_corpus
    from research.data.sources import load_raw

    corpus = clean_corpus(load_raw(cfg), cfg.clean)
    if cfg.max_docs is not None and len(corpus.train) > cfg.max_docs:
        corpus.train = corpus.train[: cfg.max_docs]
        corpus.meta["max_docs"] = cfg.max_docs
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
