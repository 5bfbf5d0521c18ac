"""Word tokenizer: words and punctuation marks, most frequent first, rarer ones mapped to <unk>.

Pre-tokenised corpora (PTB, WikiText) keep their own tokens: text is split on whitespace and
punctuation is split off words, so "dog." and "dog ." give the same ids. Decoding re-attaches
punctuation and capitalises sentences so generated text reads like prose.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from research.tokenizers.base import EOT, UNK, Tokenizer

# A token is a run of word characters (with inner apostrophes/hyphens), an <angle> token such as
# PTB's <unk>, or a single punctuation mark.
TOKEN_RE = re.compile(r"<[a-z]+>|\w+(?:['’\-]\w+)*|[^\w\s]")
NO_SPACE_BEFORE = set(".,!?;:%)]}'’”")
NO_SPACE_AFTER = set("([{$“")


def detokenize(tokens: list[str]) -> str:
    """Join word tokens into prose: no space before closing punctuation, capital after a stop."""
    out: list[str] = []
    capital = True
    quote_open = False
    for tok in tokens:
        word = tok
        if capital and word[:1].isalpha():
            word = word[:1].upper() + word[1:]
            capital = False
        if tok == '"':
            attach = quote_open  # closing quote hugs the previous word
            if quote_open:  # '"Hi!" said Tom': a stop inside a quote does not end the sentence
                capital = False
            quote_open = not quote_open
        else:
            attach = tok in NO_SPACE_BEFORE or (tok.startswith("'") and len(tok) > 1)
        if out and not attach and not (out[-1] in NO_SPACE_AFTER or (out[-1] == '"' and quote_open and tok != '"')):
            out.append(" ")
        out.append(word)
        if tok in {".", "!", "?"}:
            capital = True
    return "".join(out)


class WordTokenizer(Tokenizer):
    kind = "word"
    word_level = True

    def __init__(self, words: list[str], lowercase: bool = False, split: str = "words"):
        self.words = list(words)
        self.lowercase = lowercase
        self.split_mode = split
        self.itos = [EOT, UNK, *[w for w in self.words if w not in (EOT, UNK)]]
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.eot_id, self.unk_id = 0, 1
        self.vocab_size = len(self.itos)

    def split(self, text: str) -> list[str]:
        text = text.lower() if self.lowercase else text
        return text.split() if self.split_mode == "whitespace" else TOKEN_RE.findall(text)

    @classmethod
    def train(cls, cfg, docs: list[str]) -> WordTokenizer:
        probe = cls([], cfg.lowercase, cfg.split)
        counts: Counter[str] = Counter()
        for d in docs:
            counts.update(probe.split(d))
        counts.pop(UNK, None)
        ranked = sorted(counts, key=lambda w: (-counts[w], w))
        if cfg.vocab_size is not None:
            ranked = ranked[: max(cfg.vocab_size - 2, 0)]
        return cls(ranked, cfg.lowercase, cfg.split)

    def encode(self, text: str) -> list[int]:
        get, unk = self.stoi.get, self.unk_id
        return [get(w, unk) for w in self.split(text)]

    def decode(self, ids) -> str:
        return detokenize([self.itos[i] for i in ids if i != self.eot_id])

    def state(self) -> dict:
        return {"words": self.words, "lowercase": self.lowercase, "split": self.split_mode}

    @classmethod
    def load(cls, path: Path) -> WordTokenizer:
        meta = json.loads((Path(path) / "tokenizer.json").read_text())
        return cls(meta["words"], meta["lowercase"], meta.get("split", "words"))
