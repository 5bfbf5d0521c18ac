"""Documents with an unscored context span: token ids plus a parallel "scored" mask.

A document `context + CONTEXT_END + text` is encoded as `encode(context) + encode(text) + [EOT]`,
the two parts separately, so the boundary falls exactly between tokens whatever the tokenizer
merges. `scored[i]` is 1 when token i may be a training target: the text and its closing EOT are,
the context is not (so the model learns to continue from a context, not to produce one).
Documents without the mark are scored whole.
"""

from __future__ import annotations

import numpy as np

from research.data.corpus import CONTEXT_END


def has_spans(docs: list[str]) -> bool:
    return any(CONTEXT_END in d for d in docs)


def split_span(doc: str) -> tuple[str, str]:
    """(context, text) of one document; the context is '' when it has none."""
    context, mark, text = doc.partition(CONTEXT_END)
    return (context, text) if mark else ("", doc)


def plain(doc: str) -> str:
    """The document as running text, the mark removed (what byte counts and tokenizers see)."""
    return doc.replace(CONTEXT_END, "")


def encode_with_spans(tokenizer, docs: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One flat stream (doc, EOT, doc, EOT, ...), its uint8 scored mask and each document's token count."""
    dtype = np.uint16 if tokenizer.vocab_size <= 65535 else np.int32
    ids: list[int] = []
    scored: list[int] = []
    lens: list[int] = []
    for doc in docs:
        context, text = split_span(doc)
        c = list(tokenizer.encode(context)) if context else []
        t = list(tokenizer.encode(text)) + [tokenizer.eot_id]
        ids += c + t
        scored += [0] * len(c) + [1] * len(t)
        lens.append(len(c) + len(t))
    return np.asarray(ids, dtype=dtype), np.asarray(scored, dtype=np.uint8), np.asarray(lens, dtype=np.int64)


def with_context(row: dict, text: str, context_field: str) -> str:
    """A JSON Lines row as one document: its context (if the row has one) as the unscored span."""
    context = row.get(context_field)
    return f"{context}{CONTEXT_END}{text}" if context else text
