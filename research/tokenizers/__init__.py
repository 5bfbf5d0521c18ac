"""Tokenizer registry: `tokenizer.kind` -> a class trained on the training split and saved with the run."""

from __future__ import annotations

from research.registry import Registry

TOKENIZERS = Registry(
    "tokenizer",
    {
        "char": "research.tokenizers.char:CharTokenizer",
        "word": "research.tokenizers.word:WordTokenizer",
        "bpe": "research.tokenizers.bpe:BPETokenizer",
    },
)


def train_tokenizer(cfg, docs: list[str]):
    return TOKENIZERS.get(cfg.kind, key="tokenizer.kind").train(cfg, docs)


def load_tokenizer(path):
    """Load a tokenizer saved by `Tokenizer.save` (its kind is recorded in tokenizer.json)."""
    import json
    from pathlib import Path

    from research.errors import UserError

    file = Path(path) / "tokenizer.json"
    if not file.exists():
        raise UserError(f"{file}: no saved tokenizer here")
    meta = json.loads(file.read_text())
    return TOKENIZERS.get(meta["kind"]).load(Path(path))
