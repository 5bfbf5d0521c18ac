"""The token cache: each (data, tokenizer) config is tokenized once into flat arrays on disk.

Cells that share data and tokenizer (every seed, every model size) reuse the same folder
`<cache>/tokens/<key>/`: `{train,val,test}.npy` (uint16 when the vocabulary allows), the trained
tokenizer, and `meta.json` (bytes, documents and tokens per split, cleaning counts). The folder is
built under a temporary name and renamed into place, so a killed run never leaves half a cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from research.io import atomic_write_json

#: bump when tokenization or cleaning changes meaning, so stale caches are not reused
CACHE_VERSION = 1


@dataclass
class TokenData:
    tokenizer: object
    splits: dict[str, np.ndarray]  # name -> flat token stream (memory-mapped), EOT after each doc
    meta: dict
    path: Path
    #: split -> uint8 mask parallel to its tokens (1: may be scored), for corpora with context spans
    scored: dict[str, np.ndarray] = field(default_factory=dict)

    def bytes_per_token(self, split: str) -> float:
        return self.meta["splits"][split]["bytes"] / max(1, self.meta["splits"][split]["tokens"])


def cache_key(data_cfg, tok_cfg) -> str:
    blob = json.dumps(
        {"v": CACHE_VERSION, "data": dataclasses.asdict(data_cfg), "tokenizer": dataclasses.asdict(tok_cfg)},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def prepare_tokens(data_cfg, tok_cfg, cache_root: Path) -> TokenData:
    """Load from the cache, or load + clean + train the tokenizer + tokenize + store."""
    folder = Path(cache_root) / "tokens" / cache_key(data_cfg, tok_cfg)
    if not (folder / "meta.json").exists():
        _build(data_cfg, tok_cfg, folder)
    return open_tokens(folder)


def open_tokens(folder: Path) -> TokenData:
    from research.tokenizers import load_tokenizer

    meta = json.loads((folder / "meta.json").read_text())
    splits = {s: np.load(folder / f"{s}.npy", mmap_mode="r") for s in meta["splits"]}
    scored = {s: np.load(folder / f"{s}.scored.npy", mmap_mode="r") for s in meta["splits"]
              if (folder / f"{s}.scored.npy").exists()}
    return TokenData(load_tokenizer(folder / "tokenizer"), splits, meta, folder, scored)


def _build(data_cfg, tok_cfg, folder: Path) -> None:
    from research.data import load_corpus
    from research.data.spans import encode_with_spans, has_spans, plain
    from research.tokenizers import train_tokenizer

    corpus = load_corpus(data_cfg)
    tokenizer = train_tokenizer(tok_cfg, [plain(d) for d in corpus.train])
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        tokenizer.save(tmp / "tokenizer")
        splits = {}
        for name in ("train", "val", "test"):
            docs = getattr(corpus, name)
            if docs is None:
                continue
            if has_spans(docs):  # context spans: tokens plus the mask of which may be scored
                ids, scored = encode_with_spans(tokenizer, docs)
                np.save(tmp / f"{name}.scored.npy", scored)
                docs = [plain(d) for d in docs]
            else:
                ids = tokenizer.encode_docs(docs)
            np.save(tmp / f"{name}.npy", ids)
            splits[name] = {
                "docs": len(docs),
                "tokens": int(ids.size),
                # UTF-8 bytes of the text plus one byte per document for its separator
                "bytes": sum(len(d.encode("utf-8")) for d in docs) + len(docs),
                "words": sum(len(d.split()) for d in docs) + len(docs),
            }
        meta = {"corpus": corpus.meta, "splits": splits, "vocab_size": tokenizer.vocab_size,
                "tokenizer": tok_cfg.kind, "eot_id": tokenizer.eot_id}
        atomic_write_json(tmp / "meta.json", meta)
        try:
            os.rename(tmp, folder)
        except OSError:  # another process finished the same cache first: use theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
