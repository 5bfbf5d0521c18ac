"""Byte-level BPE (as GPT-2) trained on the training split with HF `tokenizers`.

Byte-level means no <unk>: any UTF-8 text round-trips exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

from research.tokenizers.base import EOT, Tokenizer


class BPETokenizer(Tokenizer):
    kind = "bpe"

    def __init__(self, hf: HFTokenizer, lowercase: bool = False):
        self.hf = hf
        self.lowercase = lowercase
        self.eot_id = hf.token_to_id(EOT)
        self.vocab_size = hf.get_vocab_size()

    @classmethod
    def train(cls, cfg, docs: list[str]) -> BPETokenizer:
        if cfg.vocab_size is None:
            from research.errors import ConfigError

            raise ConfigError("tokenizer.vocab_size: required for bpe (e.g. 512, 4096)")
        hf = HFTokenizer(models.BPE())
        if cfg.lowercase:
            hf.normalizer = normalizers.Lowercase()
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=cfg.vocab_size,
            special_tokens=[EOT],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        hf.train_from_iterator(docs, trainer=trainer, length=len(docs) if hasattr(docs, "__len__") else None)
        return cls(hf, cfg.lowercase)

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.hf.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids) -> str:
        return self.hf.decode([i for i in ids if i != self.eot_id], skip_special_tokens=True)

    def state(self) -> dict:
        return {"hf": json.loads(self.hf.to_str()), "lowercase": self.lowercase}

    @classmethod
    def load(cls, path: Path) -> BPETokenizer:
        meta = json.loads((Path(path) / "tokenizer.json").read_text())
        return cls(HFTokenizer.from_str(json.dumps(meta["hf"])), meta["lowercase"])
