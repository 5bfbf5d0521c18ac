"""The tokenizer interface every eval and model relies on.

Documents are joined with one end-of-text token (`eot_id`) between them; every tokenizer has
one. `decode` turns ids back into readable text (the end-of-text token is dropped).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np

EOT = "<|endoftext|>"
UNK = "<unk>"


class Tokenizer:
    kind: str = ""
    #: True for tokenizers whose tokens are whole words: decoding joins them with spaces, and
    #: per-word perplexity is the split's per-token loss times its tokens per word
    word_level: bool = False
    vocab_size: int
    eot_id: int

    @classmethod
    def train(cls, cfg, docs: list[str]) -> Tokenizer:
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids) -> str:
        raise NotImplementedError

    def display(self, ids, detokenize: bool = True) -> str:
        """Text for people and text evals; only word tokenizers join differently without `detokenize`
        (`eval.detokenize`)."""
        return self.decode(ids)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def encode_docs(self, docs: list[str]) -> np.ndarray:
        """One flat stream: doc, EOT, doc, EOT, ... (an EOT closes every document)."""
        dtype = np.uint16 if self.vocab_size <= 65535 else np.int32
        pieces = []
        eot = np.array([self.eot_id], dtype=dtype)
        for ids in self.encode_batch(docs):
            pieces.append(np.asarray(ids, dtype=dtype))
            pieces.append(eot)
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype=dtype)

    def encode_flat(self, docs: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """`encode_docs` and each document's token count (its EOT included), for the streaming build."""
        dtype = np.uint16 if self.vocab_size <= 65535 else np.int32
        encoded = self.encode_batch(docs)
        lens = np.fromiter((len(ids) + 1 for ids in encoded), dtype=np.int64, count=len(encoded))
        eot = [self.eot_id]
        ids = np.fromiter(itertools.chain.from_iterable(itertools.chain(e, eot) for e in encoded), dtype=dtype,
                          count=int(lens.sum()))
        return ids, lens

    # -- persistence ---------------------------------------------------------------------------
    def state(self) -> dict:
        raise NotImplementedError

    def save(self, path: Path) -> None:
        from research.io import atomic_write_text

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path / "tokenizer.json", json.dumps({"kind": self.kind, **self.state()}, ensure_ascii=False))

    @classmethod
    def load(cls, path: Path) -> Tokenizer:
        raise NotImplementedError
