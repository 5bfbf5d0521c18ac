"""Word tokenizer: words and punctuation marks, most frequent first, rarer ones mapped to <unk>.

Pre-tokenised corpora (PTB, WikiText) keep their own tokens: text is split on whitespace and
punctuation is split off words, so "dog." and "dog ." give the same ids. Decoding rejoins the
tokens as English prose (research.tokenizers.detokenize), restoring sentence capitals where the
corpus was lower-cased; `display(ids, detokenize=False)` gives the tokens joined by spaces.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from research.tokenizers.base import EOT, UNK, Tokenizer
from research.tokenizers.detokenize import detokenize, lower_cased

# A token is a run of word characters (with inner apostrophes/hyphens), an <angle> token such as
# PTB's <unk>, or a single punctuation mark.
TOKEN_RE = re.compile(r"<[a-z]+>|\w+(?:['’\-]\w+)*|[^\w\s]")


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
        # sentence capitals are restored only where the corpus had none to keep
        self.restore_case = lowercase or lower_cased(self.words)

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
        return detokenize([self.itos[i] for i in ids if i != self.eot_id], self.restore_case)

    def display(self, ids, detokenize: bool = True) -> str:
        if detokenize:
            return self.decode(ids)
        return " ".join(self.itos[i] for i in ids if i != self.eot_id)

    def state(self) -> dict:
        return {"words": self.words, "lowercase": self.lowercase, "split": self.split_mode}

    @classmethod
    def load(cls, path: Path) -> WordTokenizer:
        meta = json.loads((Path(path) / "tokenizer.json").read_text())
        return cls(meta["words"], meta["lowercase"], meta.get("split", "words"))
