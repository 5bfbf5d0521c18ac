"""Character tokenizer: one id per Unicode character seen in training, plus <unk> and end-of-text."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np

from research.tokenizers.base import EOT, UNK, Tokenizer


class CharTokenizer(Tokenizer):
    kind = "char"

    def __init__(self, chars: list[str], lowercase: bool = False):
        self.chars = list(chars)
        self.lowercase = lowercase
        self.itos = [EOT, UNK, *self.chars]
        self.stoi = {c: i for i, c in enumerate(self.itos)}
        self.eot_id, self.unk_id = 0, 1
        self.vocab_size = len(self.itos)
        # Codepoint -> id table for vectorised encoding of the common (BMP) case.
        self._table = np.full(0x10000, self.unk_id, dtype=np.int32)
        for c in self.chars:
            if ord(c) < 0x10000:
                self._table[ord(c)] = self.stoi[c]

    @classmethod
    def train(cls, cfg, docs: list[str]) -> CharTokenizer:
        if cfg.vocab_size is not None:
            from research.errors import ConfigError

            raise ConfigError("tokenizer.vocab_size: the char tokenizer takes every character seen; remove the key")
        # code-point counts with one bincount per ~4M characters (a Counter over characters is ~10x slower)
        seen = np.zeros(0x110000, dtype=bool)
        buf: list[str] = []
        size = 0
        for d in itertools.chain(docs, [None]):
            if d is not None:
                buf.append(d.lower() if cfg.lowercase else d)
                size += len(d)
            if size >= 1 << 22 or (d is None and buf):
                codes = np.frombuffer("".join(buf).encode("utf-32-le"), dtype=np.uint32)
                seen[np.unique(codes)] = True
                buf, size = [], 0
        return cls([chr(c) for c in np.flatnonzero(seen)], lowercase=cfg.lowercase)

    def encode(self, text: str) -> list[int]:
        if self.lowercase:
            text = text.lower()
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        if codes.size and codes.max() >= 0x10000:
            return [self.stoi.get(c, self.unk_id) for c in text]
        return self._table[codes].tolist()

    def encode_flat(self, docs: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """One table lookup over the whole batch, EOTs inserted at the document ends."""
        if self.lowercase:
            docs = [d.lower() for d in docs]
        codes = np.frombuffer("".join(docs).encode("utf-32-le"), dtype=np.uint32)
        if codes.size and codes.max() >= 0x10000:
            return super().encode_flat(docs)
        chars = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
        dtype = np.uint16 if self.vocab_size <= 65535 else np.int32
        ids = np.insert(self._table[codes].astype(dtype), np.cumsum(chars), self.eot_id)
        return ids, chars + 1

    def decode(self, ids) -> str:
        return "".join(self.itos[i] for i in ids if i != self.eot_id)

    def state(self) -> dict:
        return {"chars": self.chars, "lowercase": self.lowercase}

    @classmethod
    def load(cls, path: Path) -> CharTokenizer:
        meta = json.loads((Path(path) / "tokenizer.json").read_text())
        return cls(meta["chars"], meta["lowercase"])
