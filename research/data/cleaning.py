"""Document cleaning, with a count of everything changed or dropped (recorded with each cell).

Why each step: HF copies of TinyStories carry UTF-8 decoded as cp1252 ('â€œ' for '“'), so bytes
and tokens differ by source unless repaired; NFC makes visually equal strings byte-equal; a
story cut off mid-sentence teaches a model to stop mid-sentence.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

# Characters that a UTF-8 byte sequence turns into when decoded as cp1252 (or latin-1 for the
# five bytes cp1252 leaves undefined). A run of them that re-encodes to valid UTF-8 is mojibake.
_CP1252_EXTRA = "€‚ƒ„…†‡ˆ‰Š‹ŒŽ‘’“”•–—˜™š›œžŸ"
_MOJIBAKE_RUN = re.compile(f"[\u00c2-\u00f4][\u0080-\u00bf{re.escape(_CP1252_EXTRA)}]+")
_SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]]*\s*$")
_WORD = re.compile(r"[A-Za-z]+(?:'[a-z]+)?")


def _to_byte(ch: str) -> int:
    try:
        return ch.encode("cp1252")[0]
    except UnicodeEncodeError:
        code = ord(ch)
        if code < 256:
            return code  # latin-1 control range, undefined in cp1252
        raise


def fix_mojibake(text: str) -> str:
    """Repair UTF-8 text that was decoded as cp1252 somewhere upstream ('â€œ' -> '“')."""

    def repair(m: re.Match) -> str:
        run = m.group(0)
        try:
            return bytes(_to_byte(c) for c in run).decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            return run

    return _MOJIBAKE_RUN.sub(repair, text) if not text.isascii() else text


def is_complete(doc: str) -> bool:
    """A document is complete when it ends a sentence (., !, ? or …, optionally closing a quote)."""
    return bool(_SENTENCE_END.search(doc))


def changed_chars(before: str, after: str) -> int:
    """Characters in the span where two versions of a document differ (after the common prefix and
    suffix): the size of an edit without the cost of a full diff."""
    if before == after:
        return 0
    n = min(len(before), len(after))
    head = next((i for i in range(n) if before[i] != after[i]), n)
    tail = 0
    while tail < n - head and before[-1 - tail] == after[-1 - tail]:
        tail += 1
    return max(len(before), len(after)) - head - tail


def clean_doc(doc: str, cfg, counts: Counter, vocab: set[str] | None = None) -> str | None:
    """One cleaned document, or None when it is dropped. `counts` records, per step, the documents
    it changed or dropped (`<step>`) and the characters involved (`<step>_chars`: the changed span,
    or the whole dropped document)."""
    counts["docs_in"] += 1
    counts["chars_in"] += len(doc)

    def step(name: str, before: str, after: str) -> None:
        counts[name] += after != before
        counts[f"{name}_chars"] += changed_chars(before, after)

    def drop(name: str, text: str) -> None:
        counts[name] += 1
        counts[f"{name}_chars"] += len(text)

    if cfg.fix_encoding:
        fixed = fix_mojibake(doc)
        step("encoding_repaired", doc, fixed)
        doc = fixed
    if cfg.normalize != "none":
        norm = unicodedata.normalize(cfg.normalize, doc)
        step("normalized", doc, norm)
        doc = norm
    doc = doc.strip()
    if len(doc) < cfg.min_chars:
        drop("dropped_short", doc)
        return None
    if cfg.drop_incomplete and not is_complete(doc):
        drop("dropped_incomplete", doc)
        return None
    if vocab is not None and any(w.lower() not in vocab for w in _WORD.findall(doc)):
        drop("dropped_vocab", doc)
        return None
    counts["docs_out"] += 1
    counts["chars_out"] += len(doc)
    return doc


def clean_docs(docs: list[str], cfg, vocab: set[str] | None = None) -> tuple[list[str], dict]:
    counts: Counter[str] = Counter(docs_in=0, chars_in=0, docs_out=0, chars_out=0)
    out = [c for c in (clean_doc(d, cfg, counts, vocab) for d in docs) if c is not None]
    return out, dict(counts)


def top_words(docs, n: int) -> set[str]:
    counts: Counter[str] = Counter()
    for d in docs:
        counts.update(w.lower() for w in _WORD.findall(d))
    return {w for w, _ in counts.most_common(n)}
